"""What ``dq web`` costs: its pages on a deep queue, and twenty pollers beside a worker.

1. Fills a queue with DEPTH jobs (100,000 by default), starts ``dq web`` on it, and
   times each page REPEAT times over HTTP, each request more than a second after the
   one before so that none is answered from the overview the dashboard keeps for a
   second (every one reads the queue afresh): the overview, the first and a middle
   page of jobs, a metadata filter, one job.
2. Times a worker (pickup and finish in a loop, in its own process) draining JOBS of
   those jobs, alone and then with POLLERS threads each fetching the overview's live
   part once a second (the browsers of twenty people), alternately ROUNDS times, and
   reports the worker's rate each way and the cost (the issue's bound: at most 10%).

Prints tables and writes JSON to bench/results/.

    .venv/bin/python bench/web_load.py [--dir PARENT] [--depth 100000] [--jobs 3000]
        [--pollers 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

DRAIN = """
import sys, time
from dirqueue import DirQueue
q = DirQueue(sys.argv[1], durable=False)
n = int(sys.argv[2])
start = time.perf_counter()
for _ in range(n):
    job = q.pickup_queued_job()
    job.finish()
print(time.perf_counter() - start)
"""


def fill(qdir: str, depth: int) -> float:
    q = DirQueue(qdir, durable=False, create=True)
    start = time.perf_counter()
    batch = 5000
    for first in range(0, depth, batch):
        items = [
            (f"job {i}\n", {"owner": f"user{i % 50}", "task": "app.resize"})
            for i in range(first, min(depth, first + batch))
        ]
        q.enqueue_many(items)
    return time.perf_counter() - start


def start_web(qdir: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dirqueue", "web", "--dir", qdir, "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"at (http://\S+)/ ", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"dq web did not start: {line!r}")
    return proc, found.group(1)


def fetch(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as res:  # noqa: S310 - our own 127.0.0.1
        res.read()
    return time.perf_counter() - start


def pages(base: str, qdir: str, repeat: int) -> list[dict[str, Any]]:
    names = sorted(os.listdir(os.path.join(qdir, "queue")))
    some_job = names[len(names) // 2]
    targets = [
        ("overview", "/"),
        ("jobs, first page", "/q/0/jobs"),
        ("jobs, page at row 50,000", "/q/0/jobs?start=50000"),
        ("jobs, priority filter", "/q/0/jobs?priority=50"),
        ("jobs, metadata filter", "/q/0/jobs?meta=owner%3Duser7"),
        ("one job", f"/q/0/job/{some_job}"),
    ]
    found = []
    for name, path in targets:
        times = []
        for _ in range(repeat):
            time.sleep(1.1)  # Past the dashboard's one-second overview.
            times.append(fetch(base + path))
        found.append({"page": name, "path": path, "seconds": times,
                      "median": statistics.median(times), "max": max(times)})
    return found


def drain(qdir: str, jobs: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", DRAIN, qdir, str(jobs)], capture_output=True, text=True,
        env=ENV, check=True,
    ).stdout
    return jobs / float(out.strip())


def drain_with_pollers(qdir: str, jobs: int, base: str, pollers: int) -> tuple[float, int]:
    stop = threading.Event()
    polls = [0]

    def poll() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                fetch(base + "/live/0")
                polls[0] += 1
            except OSError:
                pass
            stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # Every poller under way.
    try:
        rate = drain(qdir, jobs)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=70)
    return rate, polls[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dir", default=None, help="parent directory of the queue")
    ap.add_argument("--depth", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=3000, help="jobs drained per run")
    ap.add_argument("--pollers", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="requests per page")
    args = ap.parse_args()
    parent = tempfile.mkdtemp(prefix="dq-web-", dir=args.dir)
    qdir = os.path.join(parent, "q")
    proc = None
    try:
        m = machine(parent)
        print(describe(m))
        took = fill(qdir, args.depth)
        print(f"filled {args.depth:,} jobs in {took:.1f} s")
        proc, base = start_web(qdir)
        found = pages(base, qdir, args.repeat)
        print(f"\npages of a {args.depth:,}-job queue, {args.repeat} requests each (ms)")
        print_table(["page", "median", "max"], [
            (p["page"], f"{p['median'] * 1000:.0f}", f"{p['max'] * 1000:.0f}") for p in found
        ])
        alone, polled, counts = [], [], []
        for _ in range(args.rounds):
            alone.append(drain(qdir, args.jobs))
            rate, n = drain_with_pollers(qdir, args.jobs, base, args.pollers)
            polled.append(rate)
            counts.append(n)
        a, p = statistics.median(alone), statistics.median(polled)
        cost = (a - p) / a * 100
        print(f"\na worker draining {args.jobs:,} jobs from the {args.depth:,}-deep queue,"
              f" {args.rounds} rounds each (jobs/s)")
        print_table(["", "median", "runs"], [
            ("alone", f"{a:,.0f}", " ".join(f"{r:,.0f}" for r in alone)),
            (f"{args.pollers} pollers, 1/s each", f"{p:,.0f}",
             " ".join(f"{r:,.0f}" for r in polled)),
        ])
        print(f"cost of the pollers: {cost:.1f}% of the worker's rate"
              f" ({sum(counts):,} polls answered)")
        write_results("web_load", {
            "machine": m, "depth": args.depth, "fill_seconds": took, "pages": found,
            "drain": {"jobs": args.jobs, "pollers": args.pollers, "alone": alone,
                      "with_pollers": polled, "polls": counts, "cost_percent": cost},
        })
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
