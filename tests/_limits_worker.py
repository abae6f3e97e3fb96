"""A worker for test_group_limits.py: ``python _limits_worker.py QDIR OUT NAME [hold]``.

Waits for ``OUT/go`` (after creating ``OUT/NAME.ready``), then takes jobs
until ``OUT/stop`` exists and none is left; for each, appends
``start JOBID GROUP TIME`` and ``end JOBID GROUP TIME`` to ``OUT/NAME.log``, sleeping
the job's ``sleep`` metadata in between. With ``hold``: takes one job, writes
``OUT/NAME.holding`` and sleeps until killed. Each job's attempt number goes to
``OUT/NAME.attempts``. Times are the filesystem's clock (a
worker under faketime logs the same time line as the others); ``DQ_LIFETIME``, if set,
is the queue's ``active_file_lifetime``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dirqueue import DirQueue
from dirqueue._judge import filesystem_now


def main() -> None:
    qdir, out, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    hold = sys.argv[4:] == ["hold"]
    lifetime = os.environ.get("DQ_LIFETIME")
    queue = (
        DirQueue(qdir, active_file_lifetime=float(lifetime)) if lifetime else DirQueue(qdir)
    )
    # The start barrier: all workers begin together, however slowly each started.
    (out / f"{name}.ready").touch()
    deadline = time.monotonic() + 60
    while not (out / "go").exists():
        if time.monotonic() > deadline:
            sys.exit(f"{name}: no start signal")
        time.sleep(0.005)
    with open(out / f"{name}.log", "a", buffering=1) as log:
        while True:
            stop = (out / "stop").exists()
            job = queue.wait_for_queued_job(timeout=0 if stop else 0.2, poll_interval=0.02)
            if job is None:
                if stop:
                    return
                continue
            group = job.metadata.get("dq.group", "-")
            log.write(f"start {job.jobid} {group} {filesystem_now(queue.config)!r}\n")
            with open(out / f"{name}.attempts", "a") as attempts:
                attempts.write(f"{job.jobid} {job.attempt}\n")
            if hold:
                (out / f"{name}.holding").write_text(job.jobid)
                time.sleep(600)
            time.sleep(float(job.metadata.get("sleep", "0")))
            log.write(f"end {job.jobid} {group} {filesystem_now(queue.config)!r}\n")
            job.finish()


if __name__ == "__main__":
    main()
