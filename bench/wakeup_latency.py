"""How soon a blocked worker wakes when a job arrives.

A waiter process blocks in wait_for_queued_job(poll_interval=P); the parent enqueues a
job and measures the time from just before enqueue_string() to the waiter holding the
job (reported by the waiter through a pipe). Runs ROUNDS rounds, with inotify (the
default on Linux) and with inotify disabled (pure polling, as on a network
filesystem's other hosts). Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/wakeup_latency.py [--rounds 20] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

import dirqueue._index
from dirqueue import DirQueue


def waiter(qdir: str, poll_interval: float, inotify: bool, rounds: int, conn: Connection) -> None:
    if not inotify:
        # Pure polling for this process, as on a host whose peers raise no events.
        dirqueue._index.open_notifier = lambda: None  # type: ignore[assignment]
    q = DirQueue(qdir, create=True)  # It waits before the first enqueue.
    conn.send("ready")
    for _ in range(rounds):
        job = q.wait_for_queued_job(timeout=30, poll_interval=poll_interval)
        got = time.time()
        assert job is not None
        job.finish()
        conn.send(got)


def run(qdir: str, poll_interval: float, inotify: bool, rounds: int) -> list[float]:
    parent, child = mp.Pipe()
    proc = mp.Process(target=waiter, args=(qdir, poll_interval, inotify, rounds, child))
    proc.start()
    assert parent.recv() == "ready"
    q = DirQueue(qdir)
    delays = []
    for i in range(rounds):
        time.sleep(0.3 + (i % 7) * 0.05)  # Let the waiter settle into waiting.
        sent = time.time()
        q.enqueue_string(b"wake up")
        delays.append(parent.recv() - sent)
    proc.join(timeout=30)
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    rows = []
    for inotify in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            delays = run(os.path.join(tmp, "q"), args.poll_interval, inotify, args.rounds)
        rows.append(
            {
                "wake_by": "inotify + poll" if inotify else "poll only",
                "poll_interval_s": args.poll_interval,
                "median_ms": round(statistics.median(delays) * 1000, 2),
                "max_ms": round(max(delays) * 1000, 2),
                "rounds": len(delays),
            }
        )
    m = machine(tempfile.gettempdir())
    print(f"{args.rounds} wake-ups each; {describe(m)}")
    print_table(
        ["wake by", "poll interval", "median", "max"],
        [
            [r["wake_by"], f"{r['poll_interval_s']} s", f"{r['median_ms']} ms", f"{r['max_ms']} ms"]
            for r in rows
        ],
    )
    write_results("wakeup_latency", {"machine": m, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
