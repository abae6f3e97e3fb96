"""Elastic workers on a burst: how soon the pool grows, and what it costs in throughput.

    .venv/bin/python bench/elastic.py [--jobs 500] [--seconds 0.1] [--most 6]
                                      [--grow-intervals 1,0.2] [--dir DIR]

Each row drains a burst of ``--jobs`` jobs (each sleeps ``--seconds`` in a Python
handler) with ``run_workers(..., until_empty=True)``: once with a fixed ``--most``
workers, then with ``1:MOST`` at each grow interval. For the elastic rows, the time
from the start to the last worker started (``to most``), and for all, the run's time
and throughput, and the throughput against the fixed pool's. Prints a table and
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from typing import Any

from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue, Job, run_workers

_SECONDS = 0.1


def handle(job: Job) -> None:
    time.sleep(_SECONDS)


def one_run(root: str, jobs: int, workers: int | tuple[int, int], grow: float) -> dict[str, Any]:
    qdir = tempfile.mkdtemp(dir=root)
    q = DirQueue(qdir)
    q.enqueue_many(str(i) for i in range(jobs))
    most = workers if isinstance(workers, int) else workers[1]
    reached: list[float] = []
    started = time.monotonic()

    def on_scale(count: int, note: str) -> None:
        if count == most and not reached:
            reached.append(time.monotonic() - started)

    reports = run_workers(
        q, handle, workers, until_empty=True, grow_interval=grow, on_scale=on_scale,
        poll_interval=0.2,
    )
    elapsed = time.monotonic() - started
    done = sum(r.jobs for r in reports)
    assert done == jobs, f"{done} jobs done of {jobs}"
    return {
        "workers": str(workers if isinstance(workers, int) else f"{workers[0]}:{workers[1]}"),
        "grow_interval": grow if not isinstance(workers, int) else None,
        "to_most_s": round(reached[0], 3) if reached else None,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(jobs / elapsed, 1),
    }


def main() -> None:
    global _SECONDS  # noqa: PLW0603 (read by the forked workers' handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--most", type=int, default=6)
    parser.add_argument("--grow-intervals", default="1,0.2")
    parser.add_argument("--dir", default=None, help="where the queues go (default: /tmp)")
    args = parser.parse_args()
    _SECONDS = args.seconds
    logging.disable(logging.WARNING)
    root = tempfile.mkdtemp(prefix="dq-elastic-", dir=args.dir)
    rows = [one_run(root, args.jobs, args.most, 0.0)]
    for grow in (float(g) for g in args.grow_intervals.split(",")):
        rows.append(one_run(root, args.jobs, (1, args.most), grow))
    fixed = rows[0]["jobs_per_s"]
    for row in rows:
        row["vs_fixed"] = round(row["jobs_per_s"] / fixed, 2)
    m = machine(root)
    print(f"{args.jobs} jobs of {args.seconds} s each; {describe(m)}")
    print_table(
        ["workers", "grow interval s", "to most s", "run s", "jobs/s", "vs fixed"],
        [
            [r["workers"], r["grow_interval"] if r["grow_interval"] is not None else "-",
             r["to_most_s"] if r["to_most_s"] is not None else "-",
             r["seconds"], r["jobs_per_s"], r["vs_fixed"]]
            for r in rows
        ],
    )
    write_results("elastic", {
        "machine": m, "jobs": args.jobs, "job_seconds": args.seconds, "rows": rows,
    })


if __name__ == "__main__":
    main()
