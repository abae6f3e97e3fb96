"""How fast ordered pickup stays as the queue grows.

Fills a queue with N jobs (non-durable enqueues, to fill quickly), then times
pickup+finish of a sample of jobs, ordered and unordered, and one listing.
Each measurement runs in a fresh process, whose peak memory (max RSS) is reported too.
Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/pickup_scale.py [--sizes 1000,10000,100000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue


def fill(qdir: str, n: int) -> float:
    q = DirQueue(qdir, durable=False)
    start = time.perf_counter()
    for i in range(n):
        q.enqueue_string(b"x", {"i": str(i)}, priority=i % 100)
    return time.perf_counter() - start


def drain_sample(qdir: str, sample: int, ordered: bool) -> tuple[float, float, bool]:
    q = DirQueue(qdir, ordered=ordered)
    first = time.perf_counter()
    job = q.pickup_queued_job()
    first_time = time.perf_counter() - first
    assert job is not None
    last = job.jobid
    job.finish()
    in_order = True
    start = time.perf_counter()
    for _ in range(sample):
        job = q.pickup_queued_job()
        assert job is not None
        if job.jobid < last:
            in_order = False
        last = job.jobid
        job.finish()
    return first_time, sample / (time.perf_counter() - start), in_order


def _in_child(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """Run ``fn(*args)`` in a fresh process; its result and its peak RSS in KiB."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_measured, fn, *args).result(timeout=3600)


def _measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    result = fn(*args)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _list_all(qdir: str) -> tuple[float, int]:
    q = DirQueue(qdir)
    start = time.perf_counter()
    listed = sum(1 for _ in q.jobs())
    return time.perf_counter() - start, listed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--dir", help="where to make the queues (default: a temp dir)")
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = tempfile.mkdtemp(prefix="dq-bench-", dir=args.dir)
        try:
            qdir = os.path.join(tmp, "q")
            fill_s = fill(qdir, n)
            os.sync()  # Let writeback of the fill settle so it is not timed as pickups.
            time.sleep(1)
            (list_s, listed), list_rss = _in_child(_list_all, qdir)
            sample = min(args.sample, n // 3)
            (first_o, rate_o, in_order), rss_o = _in_child(drain_sample, qdir, sample, True)
            (first_u, rate_u, _), rss_u = _in_child(drain_sample, qdir, sample, False)
            rows.append(
                {
                    "queued": n,
                    "enqueue_per_s_nondurable": round(n / fill_s),
                    "list_all_s": round(list_s, 3),
                    "listed": listed,
                    "list_all_max_rss_mib": round(list_rss / 1024, 1),
                    "ordered_first_pickup_ms": round(first_o * 1000, 1),
                    "ordered_pickups_per_s": round(rate_o),
                    "ordered_in_order": in_order,
                    "ordered_max_rss_mib": round(rss_o / 1024, 1),
                    "unordered_first_pickup_ms": round(first_u * 1000, 1),
                    "unordered_pickups_per_s": round(rate_u),
                    "unordered_max_rss_mib": round(rss_u / 1024, 1),
                }
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    m = machine(args.dir or tempfile.gettempdir())
    print(f"pickup+finish of {args.sample} jobs from a queue of N; {describe(m)}")
    print_table(
        [
            "queued",
            "enqueue/s",
            "list all",
            "ordered: 1st pickup",
            "pickup+finish/s",
            "max RSS",
            "unordered: 1st pickup",
            "pickup+finish/s",
            "max RSS",
        ],
        [
            [
                r["queued"],
                r["enqueue_per_s_nondurable"],
                f"{r['list_all_s']} s",
                f"{r['ordered_first_pickup_ms']} ms",
                r["ordered_pickups_per_s"],
                f"{r['ordered_max_rss_mib']} MiB",
                f"{r['unordered_first_pickup_ms']} ms",
                r["unordered_pickups_per_s"],
                f"{r['unordered_max_rss_mib']} MiB",
            ]
            for r in rows
        ],
    )
    write_results("pickup_scale", {"sample": args.sample, "machine": m, "rows": rows})
    return 0 if all(r["ordered_in_order"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
