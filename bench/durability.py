"""What durability costs: enqueues per second with and without fsync, and in batches.

    .venv/bin/python bench/durability.py [--dir DIR] [--jobs N] [--size BYTES] [--repeat R]

Enqueues N jobs (default 1000) of SIZE bytes into a fresh queue under DIR (default:
a temporary directory; pass one on the filesystem you care about, since fsync cost
is the storage's), in each mode, and prints a table. The JSON written to
bench/results/ records the machine, filesystem and figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue


def _run(root: str, name: str, jobs: int, size: int, *, durable: bool, batch: int) -> float:
    qdir = os.path.join(root, name)
    q = DirQueue(qdir, durable=durable)
    q.enqueue_string("warm up: make the directories")
    payload = b"x" * size
    start = time.perf_counter()
    if batch == 1:
        for _ in range(jobs):
            q.enqueue_string(payload)
    else:
        for _ in range(jobs // batch):
            q.enqueue_many([payload] * batch)
    elapsed = time.perf_counter() - start
    shutil.rmtree(qdir)
    return (jobs // batch * batch) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to make the queues (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per mode")
    parser.add_argument("--size", type=int, default=100, help="bytes of data per job")
    parser.add_argument("--repeat", type=int, default=5, help="runs per mode (median shown)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="dq-bench-", dir=args.dir)
    modes = [
        ("durable=False, one at a time", False, 1),
        ("durable=True, one at a time", True, 1),
        ("durable=True, enqueue_many(10)", True, 10),
        ("durable=True, enqueue_many(100)", True, 100),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _, _ in modes}
    try:
        # Modes interleaved, run after run, so that a burst of load elsewhere on the
        # machine hits them all alike; the median of the runs is reported.
        for run in range(args.repeat):
            for label, durable, batch in modes:
                rates[label].append(
                    _run(root, f"q{run}-{batch}-{durable}", args.jobs, args.size,
                         durable=durable, batch=batch)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows: list[dict[str, Any]] = [
        {
            "mode": label, "durable": durable, "batch": batch,
            "jobs_per_s": statistics.median(rates[label]),
            "runs": [round(r) for r in rates[label]],
        }
        for label, durable, batch in modes
    ]
    m = machine(args.dir or tempfile.gettempdir())
    base = rows[1]["jobs_per_s"]
    print(f"{args.jobs} jobs of {args.size} bytes; {describe(m)}")
    print_table(
        ["mode", "enqueues/s", "vs durable", "min-max of runs"],
        [
            [
                row["mode"],
                f"{row['jobs_per_s']:.0f}",
                f"{row['jobs_per_s'] / base:.1f}x",
                f"{min(row['runs'])}-{max(row['runs'])}",
            ]
            for row in rows
        ],
    )
    write_results(
        "durability", {"jobs": args.jobs, "size": args.size, "machine": m, "results": rows}
    )

if __name__ == "__main__":
    main()
