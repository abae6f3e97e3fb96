"""What coordination costs: unique enqueues beside plain ones, and how soon a dependant
starts after its last parent has finished.

1. Enqueue rate (five rounds in turn, the median of each): N plain enqueues, N unique
   ones (each its own key: a key claimed, linked and sealed besides the job), and N
   unique ones of a key already held (the enqueue finds the job there and writes
   nothing).
2. Dependant start latency: one worker process runs a parent and, next, its one
   dependant; the time from the parent's handler returning (the worker then finishes
   it, releases nothing, settles its dependants: one rename into queue/) to the
   dependant's handler starting. ROUNDS rounds; median and 99th percentile.

Both on the directory given (default: a fresh one under /dev/shm, tmpfs), durable as
DirQueue's default. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/coord.py [--jobs 2000] [--rounds 200] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue, Job, Worker


def enqueue_rate(base: str, jobs: int, how: str) -> float:
    """Enqueues per second of ``jobs`` enqueues of kind ``how``."""
    q = DirQueue(tempfile.mkdtemp(dir=base), create=True)
    if how == "held key":
        q.enqueue_string(b"x", unique_key="held")
    started = time.perf_counter()
    for i in range(jobs):
        if how == "plain":
            q.enqueue_string(b"x")
        elif how == "unique key":
            q.enqueue_string(b"x", unique_key=f"key{i}")
        else:
            q.enqueue_string(b"x", unique_key="held")
    return jobs / (time.perf_counter() - started)


def chain_worker(qdir: str, rounds: int, conn: Connection) -> None:
    q = DirQueue(qdir)
    times: dict[str, float] = {}

    def handler(job: Job) -> None:
        role = job.get_data().decode()
        if role == "child":
            times["child_start"] = time.perf_counter()
        else:
            times["parent_end"] = time.perf_counter()

    worker = Worker(q, handler, poll_interval=0.5)
    conn.send("ready")
    for _ in range(rounds):
        conn.recv()  # A parent and its dependant are queued.
        worker.run_once(timeout=10)  # The parent.
        worker.run_once(timeout=10)  # Its dependant, promoted by the step before.
        conn.send(times["child_start"] - times["parent_end"])


def dependant_latency(base: str, rounds: int) -> list[float]:
    qdir = tempfile.mkdtemp(dir=base)
    q = DirQueue(qdir, create=True)
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=chain_worker, args=(qdir, rounds, child))
    proc.start()
    try:
        assert parent.recv() == "ready"
        delays = []
        for _ in range(rounds):
            first = q.enqueue_string(b"parent")
            q.enqueue_string(b"child", depends_on=[first], priority=0)
            parent.send("go")
            delays.append(parent.recv())
        return delays
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=200)
    tmpfs = "/dev/shm"  # noqa: S108 - a private mkdtemp below, not a fixed name
    parser.add_argument("--dir", default=tmpfs if os.path.isdir(tmpfs) else None)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="dq-coord-", dir=args.dir)
    m = machine(base)
    print(describe(m))
    # Rounds taken in turn, the median kept: a shared machine's noise falls on all
    # three alike.
    kinds = ("plain", "unique key", "held key")
    rounds: dict[str, list[float]] = {how: [] for how in kinds}
    for _ in range(5):
        for how in kinds:
            rounds[how].append(enqueue_rate(base, args.jobs // 5, how))
    rates = {how: statistics.median(rounds[how]) for how in kinds}
    plain = rates["plain"]
    rows: list[list[Any]] = [
        [how, f"{rate:,.0f}", f"{rate / plain:.2f}"] for how, rate in rates.items()
    ]
    print_table(["enqueue", "jobs/s", "x plain"], rows)
    delays = sorted(dependant_latency(base, args.rounds))
    median = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print()
    print_table(
        ["dependant start after its parent", "median ms", "p99 ms", "max ms"],
        [["one worker, tmpfs", f"{median * 1e3:.2f}", f"{p99 * 1e3:.2f}",
          f"{delays[-1] * 1e3:.2f}"]],
    )
    write_results("coord", {
        "machine": m,
        "jobs": args.jobs,
        "enqueue_per_second": rates,
        "unique_over_plain": rates["unique key"] / plain,
        "dependant_latency_seconds": {
            "rounds": args.rounds, "median": median, "p99": p99, "max": delays[-1],
        },
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
