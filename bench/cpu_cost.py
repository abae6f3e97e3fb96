"""Jobs per CPU-second: dirqueue builds beside the format's bare floor, on a loaded machine.

    .venv/bin/python bench/cpu_cost.py [--dir /dev/shm] [--jobs N] [--rounds R]
                                       [--src NAME=PATH ...]

bench/peers.py times the wall clock, which on a machine shared with other work swings
several-fold from one second to the next. This counts the CPU time (user + system)
that the processes of one measurement used instead: a job's cost in CPU, which other
processes on the CPUs change far less. For each build (this tree's ``src``, and each
``--src NAME=PATH``) and the bare floor (bench/_peer_queues.py), in turns, round after
round, each in a fresh process: enqueue N jobs of 100 bytes, drain a queue N deep
(filled by the floor, as peers.py fills it), and 2 producers + 2 consumers moving N
jobs (the CPU of all four; a consumer that finds nothing sleeps 1 ms, as in
peers.py). Prints the median jobs per CPU-second and each build's
ratio to the floor; the JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

BENCH = Path(__file__).resolve().parent

_ONE = r"""
import json, multiprocessing as mp, os, resource, shutil, sys, tempfile, time
sys.path.insert(0, BENCH)
from _peer_queues import PYTHON_PEERS, Bare, payload
peer, workload, n, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
root = tempfile.mkdtemp(dir=base)
qdir = os.path.join(root, "q")
fork = mp.get_context("fork")

def cpu(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime

def produce(count, first):
    q = PYTHON_PEERS[peer](qdir)
    for i in range(count):
        q.put(payload(first + i))

def consume(total, done):
    q = PYTHON_PEERS[peer](qdir)
    while True:
        with done.get_lock():
            if done.value >= total:
                return
        if q.take() is not None:
            with done.get_lock():
                done.value += 1
        else:
            time.sleep(0.001)  # As bench/peers.py's consumers do.

try:
    if workload == "drain":
        filler = fork.Process(target=Bare(qdir).fill, args=(n,))
        filler.start(); filler.join()
    q = PYTHON_PEERS[peer](qdir)
    if workload == "enqueue":
        q.put(payload(0)); q.take()
        start = cpu()
        for i in range(n):
            q.put(payload(i))
        used = cpu() - start
    elif workload == "drain":
        start = cpu()
        count = 0
        while q.take() is not None:
            count += 1
        assert count == n, count
        used = cpu() - start
    else:
        done = fork.Value("i", 0)
        before = cpu(resource.RUSAGE_CHILDREN)
        procs = [fork.Process(target=produce, args=(n // 2, p * n)) for p in range(2)]
        procs += [fork.Process(target=consume, args=(n, done)) for _ in range(2)]
        for p in procs: p.start()
        for p in procs: p.join()
        assert done.value >= n
        used = cpu(resource.RUSAGE_CHILDREN) - before
finally:
    shutil.rmtree(root, ignore_errors=True)
print(json.dumps({"cpu_rate": n / used}))
""".replace("BENCH", repr(str(BENCH)))

WORKLOADS = ("enqueue", "drain", "many")


def _measure(src: str, peer: str, workload: str, jobs: int, base: str) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", _ONE, peer, workload, str(jobs), base],
        env=env, capture_output=True, text=True, check=True, timeout=900,
    ).stdout
    rate: float = json.loads(out)["cpu_rate"]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/dev/shm")  # noqa: S108 - tmpfs, mkdtemp below it
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--src", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    builds = [("dirqueue", str(BENCH.parent / "src"))]
    builds += [(name, path) for name, _, path in (s.partition("=") for s in args.src)]
    runs: dict[str, dict[str, list[float]]] = {w: {} for w in WORKLOADS}
    for _ in range(args.rounds):
        for workload in WORKLOADS:
            for name, src in [*builds, ("bare floor", builds[0][1])]:
                peer = "bare" if name == "bare floor" else "dirqueue"
                rate = _measure(src, peer, workload, args.jobs, args.dir)
                runs[workload].setdefault(name, []).append(rate)
                print(f"{workload} {name}: {rate:,.0f} jobs per CPU-second", file=sys.stderr)
    print(describe(machine(args.dir)))
    print(f"{args.jobs} jobs of 100 bytes, durable=False; jobs per CPU-second (user +"
          f" system), median of {args.rounds} interleaved rounds; in brackets, x the floor")
    names = [name for name, _ in builds] + ["bare floor"]
    rows: list[list[Any]] = []
    for workload in WORKLOADS:
        floor = statistics.median(runs[workload]["bare floor"])
        row: list[Any] = [workload]
        for name in names:
            med = statistics.median(runs[workload][name])
            row.append(f"{med:,.0f} ({med / floor:.2f})")
        rows.append(row)
    print_table(["workload", *names], rows)
    write_results("cpu_cost", {"machine": machine(args.dir), "jobs": args.jobs,
                               "builds": dict(builds), "rounds": runs})


if __name__ == "__main__":
    main()
