"""Worker processes for test_multiprocess.py, run as ``python _mp_worker.py ROLE ...``.

Each process reports that it is ready by creating ``SYNC/ready.NAME`` and then waits
for ``SYNC/go`` (the start barrier), so that all of them start working at once.

Roles:
  producer QDIR SYNC NAME COUNT      enqueue COUNT jobs with payload ``NAME:i``
  consumer QDIR SYNC NAME            take jobs until SYNC/producers-done exists and
                                     the queue has nothing left to take; append each
                                     payload as a line to SYNC/NAME.out
  holder   QDIR SYNC NAME            take one job, write its id to SYNC/NAME.holding,
                                     then sleep (to be killed)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from dirqueue import DirQueue


def barrier(sync: Path, name: str) -> None:
    (sync / f"ready.{name}").touch()
    deadline = time.monotonic() + 30
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            sys.exit(f"{name}: no start signal")
        time.sleep(0.005)


def produce(queue: DirQueue, sync: Path, name: str, count: int) -> None:
    barrier(sync, name)
    for i in range(count):
        queue.enqueue_string(f"{name}:{i}", {"producer": name, "i": str(i)}, priority=i % 3)


def consume(queue: DirQueue, sync: Path, name: str) -> None:
    barrier(sync, name)
    done_flag = sync / "producers-done"
    with open(sync / f"{name}.out", "ab", buffering=0) as out:
        while True:
            # Read the flag *before* looking: a None after the last enqueue means
            # every job is taken (by us or by another consumer).
            done = done_flag.exists()
            job = queue.wait_for_queued_job(timeout=0 if done else 0.2, poll_interval=0.05)
            if job is None:
                if done:
                    return
                continue
            with job:
                data = job.get_data()
                expected = f"{job.metadata['producer']}:{job.metadata['i']}".encode()
                if data != expected:
                    sys.exit(f"{name}: job {job.jobid} holds {data!r}, not {expected!r}")
                out.write(data + b"\n")


def hold(queue: DirQueue, sync: Path, name: str) -> None:
    job = queue.pickup_queued_job()
    if job is None:
        sys.exit(f"{name}: nothing to hold")
    tmp = sync / f"{name}.holding.tmp"
    tmp.write_text(job.jobid)
    os.replace(tmp, sync / f"{name}.holding")
    time.sleep(MAX_LIFETIME_SECONDS)


#: However the test ends, no worker outlives this (SIGALRM's default action ends it).
MAX_LIFETIME_SECONDS = 120


def main(argv: list[str]) -> None:
    signal.alarm(MAX_LIFETIME_SECONDS)
    role, qdir, sync_dir, name = argv[:4]
    sync = Path(sync_dir)
    if role == "producer":
        produce(DirQueue(qdir), sync, name, int(argv[4]))
    elif role == "consumer":
        consume(DirQueue(qdir), sync, name)
    elif role == "holder":
        hold(DirQueue(qdir), sync, name)
    else:
        sys.exit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
