"""What durability costs: enqueues per second with and without fsync, and in batches.

    .venv/bin/python bench/durability.py [--dir DIR] [--jobs N] [--size BYTES] [--repeat R]

Enqueues N jobs (default 1000) of SIZE bytes into a fresh queue under DIR (default:
a temporary directory; pass one on the filesystem you care about, since fsync cost
is the storage's), in each mode, and prints a table. The JSON written to
bench/results/ records the machine, filesystem and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from dirqueue import DirQueue

RESULTS = Path(__file__).parent / "results"


def _machine(directory: str) -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fstype = subprocess.run(
        ["/usr/bin/stat", "-f", "-c", "%T", directory], capture_output=True, text=True, check=False
    ).stdout.strip()
    device = subprocess.run(
        ["/bin/df", "--output=source", directory], capture_output=True, text=True, check=False
    ).stdout.split()[-1:]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": fstype,
        "device": device[0] if device else "unknown",
    }


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
    machine = _machine(args.dir or tempfile.gettempdir())
    base = rows[1]["jobs_per_s"]
    print(f"{args.jobs} jobs of {args.size} bytes; {machine['cpus']} CPUs ({machine['cpu']}),"
          f" {machine['filesystem']} on {machine['device']}, Python {machine['python']}")
    print(f"{'mode':<34} {'enqueues/s':>11} {'vs durable':>11}  {'min-max of runs':>15}")
    for row in rows:
        runs = row["runs"]
        print(f"{row['mode']:<34} {row['jobs_per_s']:>11.0f} {row['jobs_per_s'] / base:>10.1f}x"
              f"  {min(runs):>7}-{max(runs):<7}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"durability-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({
        "command": "bench/durability.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "jobs": args.jobs, "size": args.size, "machine": machine, "results": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
