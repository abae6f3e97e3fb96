"""A timed-out attempt whose worker process was killed: counting it.

A Python handler that runs past the worker's ``timeout`` cannot be stopped safely from
inside its process, so :func:`dirqueue.workers.run_workers`'s supervisor kills the whole
worker. That worker can no longer say what became of its job; the supervisor, which
knows the job and the attempt (the worker reported both as the handler started), does
it with :func:`count_timed_out`, through the public queue API: it takes the job (a lock
whose owner is provably dead may be broken), counts the attempt, and returns the job to
the queue or moves it to ``failed/``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ._format import with_attempts
from ._jobsettings import InvalidJobSettingError, settings_of
from ._outcomes import Outcome, StepResult, retry_backoff
from ._results import DEFAULT_RESULT_TTL, answer_ttl, keep_failure
from .errors import DirQueueError
from .failed import FailedStore, attempts_of
from .queue import DirQueue

__all__ = ["count_timed_out"]

_log = logging.getLogger("dirqueue")


@contextlib.contextmanager
def _quiet_break(jobid: str) -> Iterator[None]:
    """Within the block, no "broke stale lock" warning for ``jobid``: the supervisor
    breaks the lock of the worker it killed itself, and says so already."""

    def keep(record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        message = record.msg if isinstance(record.msg, str) else ""
        return not (message.startswith("broke stale lock") and args[:1] == (jobid,))

    _log.addFilter(keep)
    try:
        yield
    finally:
        _log.removeFilter(keep)


def count_timed_out(
    queue: DirQueue,
    jobid: str,
    attempt: int,
    error: str,
    max_attempts: int,
    *,
    retry_delay: float = 0.0,
    retry_delay_max: float = 3600.0,
    keep_results: bool = False,
) -> StepResult | None:
    """Count the attempt at ``jobid`` whose worker was killed for running past its
    time limit (``error`` says so): take the job (its lock's owner is dead), count
    the attempt, and put it back in the queue (after ``retry_delay``'s back-off, as
    any failed attempt), or in ``failed/`` if that was its last. What became of it,
    as the worker would have said (:attr:`Outcome.RETRIED` or :attr:`Outcome.FAILED`);
    None if neither. A job that wants its answer kept (see :mod:`dirqueue._results`)
    gets the time-out as it.

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
        with _quiet_break(jobid):
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
            # The pickup that broke the dead worker's lock may have counted this
            # attempt already (as "worker died"): count it once, with its real error.
            attempts = max(attempts_of(job.control), attempt)
            # The job's own settings, where it has them (a bad one was refused by
            # its worker before it ran, so none is here: the worker's hold then).
            with contextlib.suppress(InvalidJobSettingError):
                own = settings_of(job.metadata)
                max_attempts = own.max_attempts or max_attempts
                if own.retry_delay is not None:
                    retry_delay = own.retry_delay
                    retry_delay_max = max(retry_delay_max, retry_delay)
            if attempts >= max_attempts:
                ttl = answer_ttl(job.metadata, keep_results, DEFAULT_RESULT_TTL)
                keep_failure(
                    quiet.config, jobid, None, error, "", attempts, ttl, "JobTimeoutError"
                )
                FailedStore(quiet).add(job, error, attempts=attempts)
                return StepResult(
                    Outcome.FAILED, jobid, attempts, error, max_attempts=max_attempts
                )
            delay = retry_backoff(attempts, retry_delay, retry_delay_max)
            # retry_later counts one more attempt: the one that timed out.
            job.update_control(with_attempts(job.control, attempts - 1, error))
            job.retry_later(delay, error=error)
            return StepResult(
                Outcome.RETRIED, jobid, attempts, error, retry_in=delay,
                max_attempts=max_attempts,
            )
        finally:
            if job.is_active:
                job.return_to_queue()
    except DirQueueError as err:
        _log.warning("could not count the timed-out attempt at job %s: %s", jobid, err)
    return None
