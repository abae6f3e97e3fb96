"""What the engine costs per job: enqueue and drain rates, and two builds side by side.

    .venv/bin/python bench/engine_cost.py [--jobs N] [--rounds R] [--dir DIR ...]
                                          [--src NAME=PATH ...]

For each directory (default: /dev/shm, where the disk's noise is gone and the software's
own cost shows, and a temporary directory on disk), enqueues N jobs of 100 bytes
(default 3000, ``durable=False``) into a fresh queue, then drains them with
pickup + get_data + finish, in a fresh process per measurement. ``--src NAME=PATH``
adds a build of dirqueue to compare (``PATH`` is a ``src`` directory, for example one
extracted with ``git archive REV src | tar -x -C /tmp/old``); the builds take turns,
round after round, and the table gives each one's median and its ratio to the first.
The JSON written to bench/results/ records the machine and every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

_ONE_RUN = r"""
import json, shutil, sys, tempfile, time
from dirqueue import DirQueue
jobs, base = int(sys.argv[1]), sys.argv[2]
root = tempfile.mkdtemp(dir=base)
try:
    q = DirQueue(root + "/q", durable=False)
    q.enqueue_string(b"warm up"); q.pickup_queued_job().finish()
    payload = b"x" * 100
    start = time.perf_counter()
    for _ in range(jobs):
        q.enqueue_string(payload)
    enqueue = jobs / (time.perf_counter() - start)
    start = time.perf_counter()
    while (job := q.pickup_queued_job()) is not None:
        job.get_data()
        job.finish()
    drain = jobs / (time.perf_counter() - start)
finally:
    shutil.rmtree(root)
print(json.dumps({"enqueue": enqueue, "drain": drain}))
"""


def _measure(src: str, jobs: int, directory: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, str(jobs), directory],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", action="append", dest="dirs")
    parser.add_argument("--src", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    builds: list[tuple[str, str]] = [("this", here)]
    for spec in args.src:
        name, _, path = spec.partition("=")
        builds.append((name, path))
    # Each run makes its own queue with mkdtemp below these: no fixed name is used.
    tmpfs = "/dev/shm"  # noqa: S108
    dirs = args.dirs or [d for d in (tmpfs, tempfile.gettempdir()) if os.path.isdir(d)]
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {
        d: {name: [] for name, _ in builds} for d in dirs
    }
    for _ in range(args.rounds):
        for directory in dirs:
            for name, src in builds:  # Interleaved: the VM's speed drifts minute to minute.
                rounds[directory][name].append(_measure(src, args.jobs, directory))
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for directory in dirs:
        print(describe(machine(directory)))
        base = rounds[directory][builds[0][0]]
        for name, _ in builds:
            runs = rounds[directory][name]
            med = {k: statistics.median(r[k] for r in runs) for k in ("enqueue", "drain")}
            ref = {k: statistics.median(r[k] for r in base) for k in ("enqueue", "drain")}
            summary.setdefault(directory, {})[name] = med
            rows.append([
                f"{directory} {name}",
                f"{med['enqueue']:,.0f}",
                f"{med['enqueue'] / ref['enqueue']:.2f}",
                f"{med['drain']:,.0f}",
                f"{med['drain'] / ref['drain']:.2f}",
            ])
    print(f"{args.jobs} jobs of 100 bytes, durable=False, median of {args.rounds} rounds")
    print_table(["where, build", "enqueue/s", "ratio", "drain/s", "ratio"], rows)
    write_results("engine_cost", {
        "machine": {d: machine(d) for d in dirs}, "jobs": args.jobs, "builds": dict(builds),
        "medians": summary, "rounds": rounds,
    })


if __name__ == "__main__":
    main()
