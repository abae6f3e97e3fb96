"""System calls per job, counted with strace: per enqueue, and per pickup + get_data() +
finish().

    .venv/bin/python bench/syscalls.py [--jobs N] [--dir DIR] [--durable] [--show]

A child process makes a queue under DIR (default: a temporary directory), warms it up
(imports, directories, the heartbeat thread), then enqueues N jobs of 100 bytes and
takes them all, under ``strace -f``. It marks where each phase starts and ends with a
``stat()`` of a path that cannot exist, and the calls between the marks are divided by
N. Every thread of the child is counted. ``--show`` also prints the calls of one job
from the middle of each phase, in order, to see where each comes from.

Prints a table by call type and writes the JSON to bench/results/. Without strace it
says so and exits 0 (``apt-get install strace``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

_MARK = "/nonexistent-dq-syscalls-mark/"
_PHASES = ("enqueue", "pickup")
# "1234 openat(AT_FDCWD, ..." -> "openat"; resumed halves ("<... openat resumed>") and
# signal or exit lines ("--- SIGCHLD", "+++ exited") are not calls of their own.
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")

_CHILD = """
import os, sys
from dirqueue import DirQueue

qdir, jobs, durable = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
q = DirQueue(qdir, durable=durable)

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

for _ in range(20):  # warm up: imports, directories, the heartbeat thread
    q.enqueue_string(b"w" * 100)
take_all(20)
mark("enqueue-begin")
for _ in range(jobs):
    q.enqueue_string(b"x" * 100)
mark("enqueue-end")
mark("pickup-begin")
take_all(jobs)
mark("pickup-end")
""".replace("MARK", repr(_MARK))


def _trace(root: str, jobs: int, *, durable: bool) -> list[str]:
    strace = shutil.which("strace")
    assert strace is not None
    out = os.path.join(root, "strace.out")
    qdir = os.path.join(root, "q")
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    subprocess.run(
        [strace, "-f", "-qq", "-o", out, sys.executable, "-c", _CHILD, qdir, str(jobs),
         "1" if durable else "0"],
        check=True,
        env=env,
    )
    with open(out) as fh:
        return fh.read().splitlines()


def _phases(lines: list[str]) -> dict[str, list[str]]:
    """The calls of each phase, in order, the marks themselves left out."""
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        if _MARK in line:
            what = line.split(_MARK, 1)[1].split('"', 1)[0]
            phase, _, edge = what.rpartition("-")
            current = phase if edge == "begin" else None
            if current is not None:
                found[current] = []
            continue
        if current is not None and _CALL.match(line):
            found[current].append(line)
    return found


def _count(calls: list[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in calls:
        match = _CALL.match(line)
        if match:
            counts[match.group(1)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to make the queue (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per phase")
    parser.add_argument("--durable", action="store_true", help="durable=True (fsyncs)")
    parser.add_argument("--show", action="store_true", help="print one job's calls per phase")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        print("skipped: strace is not installed (apt-get install strace)")
        return
    root = tempfile.mkdtemp(prefix="dq-syscalls-", dir=args.dir)
    try:
        phases = _phases(_trace(root, args.jobs, durable=args.durable))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_job = {p: {k: v / args.jobs for k, v in _count(phases[p]).items()} for p in _PHASES}
    names = sorted(
        set().union(*(per_job[p] for p in _PHASES)),
        key=lambda n: (-sum(per_job[p].get(n, 0) for p in _PHASES), n),
    )
    m = machine(args.dir or tempfile.gettempdir())
    mode = "durable=True" if args.durable else "durable=False"
    print(f"system calls per job, {args.jobs} jobs of 100 bytes, {mode}; {describe(m)}")
    rows: list[list[object]] = [
        [name, *(f"{per_job[p].get(name, 0):.2f}" for p in _PHASES)] for name in names
    ]
    rows.append(["total", *(f"{sum(per_job[p].values()):.2f}" for p in _PHASES)])
    print_table(["call", "enqueue", "pickup+get_data+finish"], rows)
    if args.show:
        for phase in _PHASES:
            calls = phases[phase]
            middle = len(calls) // 2
            size = round(len(calls) / args.jobs)
            print(f"\none job's calls, {phase} (about {size} from the middle of the phase):")
            for line in calls[middle : middle + size]:
                print("  " + line[:160])
    payload: dict[str, Any] = {
        "jobs": args.jobs,
        "durable": args.durable,
        "machine": m,
        "per_job": per_job,
        "total_per_job": {p: sum(per_job[p].values()) for p in _PHASES},
    }
    write_results("syscalls", payload)


if __name__ == "__main__":
    main()
