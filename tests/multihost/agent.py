"""A queue client that multi-host tests run inside a simulated host.

    agent.py produce QDIR COUNT TAG            enqueue COUNT jobs whose data is TAG-i
    agent.py consume QDIR OUT STOPFILE         take jobs until STOPFILE exists and the
                                               queue stays empty for 2 s; append each
                                               job's data to OUT as it is finished
    agent.py hold QDIR READYFILE [heartbeat]   take one job, write READYFILE, sleep
    agent.py wait QDIR TIMEOUT                 wait for one job; print its data and delay

Each prints one line of JSON on stdout when it ends.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from dirqueue import DirQueue


def produce(qdir: str, count: int, tag: str) -> dict[str, object]:
    q = DirQueue(qdir)
    for i in range(count):
        q.enqueue_string(f"{tag}-{i}", {"host": socket.gethostname(), "i": str(i)})
    return {"produced": count}


def consume(qdir: str, out: str, stopfile: str) -> dict[str, object]:
    q = DirQueue(qdir)
    done = 0
    with open(out, "a") as log:
        while True:
            job = q.wait_for_queued_job(timeout=2.0, poll_interval=0.2)
            if job is None:
                if os.path.exists(stopfile):
                    break
                continue
            with job:
                log.write(job.get_data().decode() + "\n")
                log.flush()
                os.fsync(log.fileno())
            done += 1
    return {"consumed": done, "host": socket.gethostname()}


def hold(qdir: str, readyfile: str, heartbeat: bool) -> dict[str, object]:
    q = DirQueue(qdir, lock_heartbeat=heartbeat)
    job = q.wait_for_queued_job(timeout=30, poll_interval=0.2)
    if job is None:
        return {"held": None}
    with open(readyfile, "w") as fh:
        fh.write(job.jobid)
    time.sleep(3600)  # The test kills us here, mid-job.
    return {"held": job.jobid}


def wait(qdir: str, timeout: float) -> dict[str, object]:
    q = DirQueue(qdir)
    job = q.wait_for_queued_job(timeout=timeout, poll_interval=0.5)
    if job is None:
        return {"data": None}
    with job:
        data = job.get_data().decode()
    return {"data": data, "now": time.time()}


def main(argv: list[str]) -> int:
    cmd, qdir = argv[1], argv[2]
    if cmd == "produce":
        result = produce(qdir, int(argv[3]), argv[4])
    elif cmd == "consume":
        result = consume(qdir, argv[3], argv[4])
    elif cmd == "hold":
        result = hold(qdir, argv[3], len(argv) > 4 and argv[4] == "heartbeat")
    elif cmd == "wait":
        result = wait(qdir, float(argv[3]))
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
