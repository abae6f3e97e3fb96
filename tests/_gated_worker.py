"""A worker with a gate: it signals itself (SIGSTOP or SIGKILL) at one exact step.
``after-update`` (the default): right after its first ``Job.update_control`` returns,
the step after which a held job is moved or returned (``retry_later``: the attempt
counted and the lock checked, the move to ``deferred/`` next; the worker's failure
policy: the attempt recorded, the return next). ``in-update``: inside
``update_control``, after its last check of the lock and before the new control file
replaces the old.

Run as ``python _gated_worker.py QDIR LIFETIME SIGNAL ACTION [GATE]``:

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


def main(qdir: str, lifetime: float, sig: str, action: str, where: str) -> None:
    gate = [getattr(signal, f"SIG{sig}")]
    if where == "after-update":
        real = Job.update_control

        def gated(self: Job, *args: Any, **kwargs: Any) -> None:
            real(self, *args, **kwargs)
            if gate:
                os.kill(os.getpid(), gate.pop())

        Job.update_control = gated  # type: ignore[method-assign]
    else:  # "in-update": after update_control's last checks, before its rename.
        checked = Job._require_ours
        lexists = os.path.lexists
        updates = []

        def gated_check(self: Job, action: str) -> Any:
            if action == "update":
                updates.append(action)
            return checked(self, action)

        def gated_lexists(path: str) -> bool:
            there = lexists(path)
            if len(updates) == 2 and gate:  # Is the job still in queue/? Then stop.
                os.kill(os.getpid(), gate.pop())
            return there

        Job._require_ours = gated_check  # type: ignore[method-assign]
        os.path.lexists = gated_lexists
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
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4],
         sys.argv[5] if len(sys.argv) > 5 else "after-update")
