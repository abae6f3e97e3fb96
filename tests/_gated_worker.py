"""A worker with a gate: it signals itself (SIGSTOP or SIGKILL) right after its first
``Job.update_control`` returns, the step after which a held job is moved or returned
(``retry_later``: the attempt counted and the lock checked, the move to ``deferred/``
next; the worker's failure policy: the attempt recorded, the return next). For tests
that force a stop or a crash at that exact point.

Run as ``python _gated_worker.py QDIR LIFETIME SIGNAL ACTION``:

  ACTION ``retry_later``: pick up a job, print ``ready JOBID``, wait for a line on stdin,
  then ``job.retry_later(30)``; print ``deferred`` or ``lost`` (JobLostError).

  ACTION ``fail-retry-N``: one step of a ``Worker`` (``max_attempts=2``, retry delay N
  seconds) whose handler raises; print the step's outcome.

SIGNAL is ``STOP`` or ``KILL``. The test kills the process in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from dirqueue import DirQueue, JobLostError, Worker
from dirqueue.job import Job


def main(qdir: str, lifetime: float, sig: str, action: str) -> None:
    real = Job.update_control
    gate = [getattr(signal, f"SIG{sig}")]

    def gated(self: Job, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        if gate:
            os.kill(os.getpid(), gate.pop())

    Job.update_control = gated  # type: ignore[method-assign]
    queue = DirQueue(qdir, active_file_lifetime=lifetime)
    if action == "retry_later":
        job = queue.pickup_queued_job()
        assert job is not None
        print("ready", job.jobid, flush=True)
        sys.stdin.readline()
        try:
            job.retry_later(30)
        except JobLostError:
            print("lost", flush=True)
        else:
            print("deferred", flush=True)
        return
    delay = float(action.removeprefix("fail-retry-"))

    def handler(job: Job) -> None:
        raise RuntimeError("the one real failure")

    worker = Worker(queue, handler, max_attempts=2, retry_delay=delay, until_empty=True)
    print(worker.run_once().outcome.value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4])
