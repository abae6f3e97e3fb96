"""How fast ordered pickup stays as the queue grows.

Fills a queue with N jobs (non-durable enqueues, to fill quickly), then times
pickup+finish of a sample of jobs, ordered and unordered, and one listing.
Prints a table and writes JSON to bench/results/pickup_scale.json.

    python bench/pickup_scale.py [--sizes 1000,10000,100000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pickup_scale.json"))
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = tempfile.mkdtemp(prefix="dq-bench-")
        try:
            qdir = os.path.join(tmp, "q")
            fill_s = fill(qdir, n)
            os.sync()  # Let writeback of the fill settle so it is not timed as pickups.
            time.sleep(1)
            q = DirQueue(qdir)
            start = time.perf_counter()
            listed = sum(1 for _ in q.jobs())
            list_s = time.perf_counter() - start
            sample = min(args.sample, n // 3)
            first_o, rate_o, in_order = drain_sample(qdir, sample, ordered=True)
            first_u, rate_u, _ = drain_sample(qdir, sample, ordered=False)
            rows.append(
                {
                    "queued": n,
                    "enqueue_per_s_nondurable": round(n / fill_s),
                    "list_all_s": round(list_s, 3),
                    "listed": listed,
                    "ordered_first_pickup_ms": round(first_o * 1000, 1),
                    "ordered_pickups_per_s": round(rate_o),
                    "ordered_in_order": in_order,
                    "unordered_first_pickup_ms": round(first_u * 1000, 1),
                    "unordered_pickups_per_s": round(rate_u),
                }
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    header = ["queued", "enqueue/s", "list all (s)", "ordered 1st (ms)", "ordered pickup+finish/s", "unordered 1st (ms)", "unordered pickup+finish/s"]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (r["queued"], r["enqueue_per_s_nondurable"], r["list_all_s"], r["ordered_first_pickup_ms"], r["ordered_pickups_per_s"], r["unordered_first_pickup_ms"], r["unordered_pickups_per_s"])))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    with open(args.out, "w") as fh:
        json.dump({"machine": machine, "sample": args.sample, "rows": rows}, fh, indent=2)
    print(f"wrote {args.out}")
    return 0 if all(r["ordered_in_order"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
