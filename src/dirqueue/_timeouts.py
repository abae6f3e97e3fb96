"""A timed-out attempt whose worker process was killed: counting it.

A Python handler that runs past the worker's ``timeout`` cannot be stopped safely from
inside its process, so :func:`dirqueue.worker.run_workers`'s supervisor kills the whole
worker. That worker can no longer say what became of its job; the supervisor, which
knows the job and the attempt (the worker reported both as the handler started), does
it with :func:`count_timed_out`, through the public queue API: it takes the job (a lock
whose owner is provably dead may be broken), counts the attempt, and returns the job to
the queue or moves it to ``failed/``.
"""

from __future__ import annotations

import logging

from ._outcomes import job_limits
from ._results import DEFAULT_RESULT_TTL, answer_ttl, keep_failure
from .errors import DirQueueError
from .failed import FailedStore, attempts_of, record_attempts
from .queue import DirQueue

__all__ = ["count_timed_out"]

_log = logging.getLogger("dirqueue")


def count_timed_out(
    queue: DirQueue, jobid: str, attempt: int, error: str, max_attempts: int,
    *, keep_results: bool = False,
) -> bool | None:
    """Count the attempt at ``jobid`` whose worker was killed for running past its
    time limit (``error`` says so): take the job (its lock's owner is dead), count
    the attempt, and put it back in the queue, or in ``failed/`` if that was its last.
    True if it moved the job to ``failed/``, False if it returned it, None if neither.
    The job's own ``max_attempts`` metadata counts over ``max_attempts``, and a job
    that wants its answer kept (see :mod:`dirqueue._results`) gets the time-out as it.

    The job stays locked instead if its lock cannot be broken yet (a queue library
    that breaks a dead owner's lock only after ``active_file_lifetime``).
    """
    if not jobid:
        return None
    # A queue of our own, without the heartbeat thread: the supervisor holds the job
    # for a moment, and will fork again.
    quiet = DirQueue(
        queue.dir,
        data_file_mode=queue.data_file_mode,
        queue_file_mode=queue.queue_file_mode,
        ordered=queue.ordered,
        queue_fanout=queue.queue_fanout,
        buf_size=queue.buf_size,
        active_file_lifetime=queue.active_file_lifetime,
        durable=queue.durable,
        min_free_bytes=queue.min_free_bytes,
        lock_heartbeat=False,
    )
    quiet.hostname = queue.hostname
    try:
        job = quiet.pickup_queued_job(jobid)
        if job is None:
            _log.warning(
                "job %s (%s) stays locked by its dead worker until its lock is judged"
                " stale; its attempt is counted then",
                jobid,
                error,
            )
            return None
        try:
            counted = attempts_of(job.control)
            attempts = max(counted, attempt)
            max_attempts = job_limits(job.metadata, max_attempts, 0)[0]
            if attempts >= max_attempts:
                ttl = answer_ttl(job.metadata, keep_results, DEFAULT_RESULT_TTL)
                keep_failure(
                    quiet.config, jobid, None, error, "", attempts, ttl, "JobTimeoutError"
                )
                FailedStore(quiet).add(job, error, attempts=attempts)
                _log.warning(
                    "job %s failed (attempt %d of %d): %s; moved to failed/",
                    jobid, attempts, max_attempts, error,
                )
                return True
            if counted < attempts:
                record_attempts(job, attempts)
            job.return_to_queue()
            _log.warning(
                "job %s failed (attempt %d of %d): %s; returned to the queue",
                jobid, attempts, max_attempts, error,
            )
            return False
        finally:
            if job.is_active:
                job.return_to_queue()
    except DirQueueError as err:
        _log.warning("could not count the timed-out attempt at job %s: %s", jobid, err)
    return None
