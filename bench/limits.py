"""The cost of groups' limits: system calls of the limit check per job when the group
has room, and jobs/s with a concurrency limit equal to the number of workers against no
limit.

    .venv/bin/python bench/limits.py [--jobs N] [--workers W] [--rounds R] [--dir DIR]

1. System calls (strace, as bench/syscalls.py counts them): one process takes N jobs
   without a group, then N jobs of a group limited to 4 (always room: it holds one at a
   time), each a pickup, ``get_data()`` and ``finish()``; the table gives the calls per
   job of each and the difference. Skipped without strace.
2. Throughput: W worker processes drain N jobs of no work (the worst case for the
   check's share), once with no group and once all of group ``g`` limited to W, in
   interleaved rounds (unlimited, limited, unlimited, ...); the table gives each one's
   median jobs/s and the ratio.

Prints the tables and writes the JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
_MARK = "/nonexistent-dq-limits-mark/"
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")

_TRACED = """
import os, sys
from dirqueue import DirQueue, limits

qdir, jobs = sys.argv[1], int(sys.argv[2])
q = DirQueue(qdir)

def mark(what):
    try:
        os.stat(MARK + what)
    except OSError:
        pass

def take_all(n):
    for _ in range(n):
        job = q.pickup_queued_job()
        job.get_data()
        job.finish()

q.enqueue_string(b"w")
limits.set_limit(q, "g", 4)
for group in (None, "g"):  # warm up: imports, directories, the limits read
    for _ in range(20):
        q.enqueue_string(b"w" * 100, group=group)
    take_all(20)
for phase, group in (("plain", None), ("grouped", "g")):
    for _ in range(jobs):
        q.enqueue_string(b"x" * 100, group=group)
    mark(phase + "-begin")
    take_all(jobs)
    mark(phase + "-end")
""".replace("MARK", repr(_MARK))

_WORKER = """
import os, sys, time
from dirqueue import DirQueue

qdir, go = sys.argv[1], sys.argv[2]
q = DirQueue(qdir)
open(go + "." + str(os.getpid()), "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
while (job := q.pickup_queued_job()) is not None:
    job.get_data()
    job.finish()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC}


def syscalls(root: str, jobs: int) -> dict[str, Any] | None:
    """Calls per job without a group and with one that has room."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = os.path.join(root, "strace.out")
    subprocess.run(
        [strace, "-f", "-qq", "-o", out, sys.executable, "-c", _TRACED,
         os.path.join(root, "traced"), str(jobs)],
        check=True, env=_env(),
    )  # fmt: skip
    counts: dict[str, collections.Counter[str]] = {}
    current: str | None = None
    with open(out) as fh:
        for line in fh:
            if _MARK in line:
                what = line.split(_MARK, 1)[1].split('"', 1)[0]
                phase, _, edge = what.rpartition("-")
                current = phase if edge == "begin" else None
                if current is not None:
                    counts[current] = collections.Counter()
                continue
            match = _CALL.match(line)
            if current is not None and match:
                counts[current][match.group(1)] += 1
    per_job = {
        phase: {call: n / jobs for call, n in sorted(c.items())} for phase, c in counts.items()
    }
    return {
        "per_job": per_job,
        "total": {phase: sum(c.values()) / jobs for phase, c in counts.items()},
    }


def drain(root: str, jobs: int, workers: int, limited: bool) -> float:
    """Jobs/s of ``workers`` processes draining ``jobs`` jobs (all of a group limited
    to ``workers`` when ``limited``)."""
    from dirqueue import DirQueue, limits  # noqa: PLC0415 - after sys.path is set

    qdir = tempfile.mkdtemp(dir=root)
    q = DirQueue(qdir)
    q.enqueue_string(b"w")
    q.pickup_queued_job().finish()  # type: ignore[union-attr]
    if limited:
        limits.set_limit(q, "g", workers)
    group = "g" if limited else None
    for _ in range(jobs):
        q.enqueue_string(b"x" * 100, group=group)
    go = os.path.join(qdir, "go")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, qdir, go], env=_env())
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 120
        while len([n for n in os.listdir(qdir) if n.startswith("go.")]) < workers:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start")
            time.sleep(0.01)
        started = time.monotonic()
        open(go, "w").close()
        for proc in procs:
            if proc.wait(timeout=600) != 0:
                raise SystemExit("a worker failed")
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    left = list(DirQueue(qdir).jobs())
    if left:
        raise SystemExit(f"{len(left)} jobs left undone")
    shutil.rmtree(qdir, ignore_errors=True)
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to make the queues (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per run")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--strace-jobs", type=int, default=500, help="jobs per traced phase")
    args = parser.parse_args()
    sys.path.insert(0, SRC)
    root = tempfile.mkdtemp(prefix="dq-limits-bench-", dir=args.dir)
    try:
        m = machine(root)
        print(describe(m))
        calls = syscalls(root, args.strace_jobs)
        if calls is None:
            print("system calls: skipped, strace is not installed (apt-get install strace)")
        else:
            plain, grouped = calls["per_job"]["plain"], calls["per_job"]["grouped"]
            names = sorted(set(plain) | set(grouped))
            rows = [
                [n, f"{plain.get(n, 0):.2f}", f"{grouped.get(n, 0):.2f}",
                 f"{grouped.get(n, 0) - plain.get(n, 0):+.2f}"]
                for n in names
                if abs(grouped.get(n, 0) - plain.get(n, 0)) >= 0.005
            ]
            total = calls["total"]
            rows.append(["total", f"{total['plain']:.2f}", f"{total['grouped']:.2f}",
                         f"{total['grouped'] - total['plain']:+.2f}"])
            print(f"\nsystem calls per job (pickup, get_data, finish), {args.strace_jobs} jobs,"
                  " calls that differ")
            print_table(["call", "no group", "group with room", "extra"], rows)
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            rounds.append({
                "unlimited": drain(root, args.jobs, args.workers, limited=False),
                "limited": drain(root, args.jobs, args.workers, limited=True),
            })
        med = {k: statistics.median(r[k] for r in rounds) for k in ("unlimited", "limited")}
        print(f"\n{args.workers} workers, {args.jobs} jobs of no work, median of"
              f" {args.rounds} interleaved rounds")
        print_table(
            ["run", "jobs/s", "ratio"],
            [["no group", f"{med['unlimited']:.0f}", "1.00"],
             [f"group limited to {args.workers}", f"{med['limited']:.0f}",
              f"{med['limited'] / med['unlimited']:.2f}"]],
        )
        write_results("limits", {
            "machine": m, "jobs": args.jobs, "workers": args.workers,
            "syscalls": calls, "rounds": rounds, "medians": med,
            "ratio": med["limited"] / med["unlimited"],
        })
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
