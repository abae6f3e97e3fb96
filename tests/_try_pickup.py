"""Run as ``python tests/_try_pickup.py QDIR SECONDS LIFETIME``: try a pickup every 0.2 s
for SECONDS (by the monotonic clock, which faketime shifts but does not stretch) or until
one succeeds, finish what was taken, and print what happened as JSON: the job id taken
(or null), after how long, this process's host and pid, and how far its clock is from
the queue directory's mtime (the skew a faked clock adds)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from dirqueue import DirQueue


def main(qdir: str, seconds: float, lifetime: float) -> None:
    q = DirQueue(qdir, active_file_lifetime=lifetime)
    start = time.monotonic()
    taken = None
    while time.monotonic() - start < seconds:
        job = q.pickup_queued_job()
        if job is not None:
            taken = job.jobid
            job.finish()
            break
        time.sleep(0.2)
    print(json.dumps({
        "taken": taken,
        "after": time.monotonic() - start,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "skew": time.time() - os.stat(qdir).st_mtime,
    }))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
