"""A worker for test_group_limits.py: ``python _limits_worker.py QDIR OUT NAME [hold]``.

Waits for ``OUT/go`` (after creating ``OUT/NAME.ready``), then takes jobs
until ``OUT/stop`` exists and none is left; for each, appends
``start JOBID GROUP TIME`` and ``end JOBID GROUP TIME`` to ``OUT/NAME.log``, sleeping
the job's ``sleep`` metadata in between. With ``hold``: takes one job, writes
``OUT/NAME.holding`` and sleeps until killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dirqueue import DirQueue


def main() -> None:
    qdir, out, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    hold = sys.argv[4:] == ["hold"]
    queue = DirQueue(qdir)
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
            log.write(f"start {job.jobid} {group} {time.time()!r}\n")
            if hold:
                (out / f"{name}.holding").write_text(job.jobid)
                time.sleep(600)
            time.sleep(float(job.metadata.get("sleep", "0")))
            log.write(f"end {job.jobid} {group} {time.time()!r}\n")
            job.finish()


if __name__ == "__main__":
    main()
