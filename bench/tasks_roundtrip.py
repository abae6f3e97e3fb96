"""Tasks through the queue: the round trip and the rate.

1. Round trip: one ``dq server --tasks`` worker waits; the script submits a task and
   ``get()``s its answer, ROUNDS times, one at a time. Prints the median and p99 of
   submit-to-answer, with huey (SQLite storage, its consumer polling) beside it when
   huey is installed (``pip install huey``, in the bench extra).
2. Rate: N jobs through ``dq server --workers 2`` (a durable queue, the default) in
   REPEAT interleaved rounds: task jobs (``--tasks``, answers kept) and three plain
   baselines (see :data:`KINDS`): a do-nothing ``--handler``, one that reads its data,
   and one that reads its data and has its return value kept (``--keep-results``).
   Each rate is the server's own (its ``--json`` summary's seconds, not process
   start-up); the table gives each kind's median, and the median over rounds of
   tasks / each baseline, taken within a round. It also gives the CPU time a job
   takes (the server's processes', less what one takes to start and stop), which a
   neighbour's load moves far less than the rates: the baseline's over the tasks' is
   the ratio the rates would show on an idle machine.

On tmpfs (``/dev/shm``) by default. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/tasks_roundtrip.py [--rounds 500] [--jobs 5000] [--repeat 5]
        [--rate-only] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

HERE = Path(__file__).resolve().parent


def _env(queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "TASKS_BENCH_QUEUE": queue,
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def dirqueue_round_trip(work: str, rounds: int) -> dict[str, float]:
    queue = os.path.join(work, "rt")
    os.environ["TASKS_BENCH_QUEUE"] = queue
    sys.path.insert(0, str(HERE))
    import _tasks_bench  # noqa: PLC0415 - after its queue is chosen

    _tasks_bench.q.create()
    server = subprocess.Popen(
        [sys.executable, "-m", "dirqueue", "server", "--dir", queue, "--tasks",
         "_tasks_bench", "-q"],
        env=_env(queue), start_new_session=True, stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(20):  # Warm up: imports, the worker's caches, the waiter's inotify.
            assert _tasks_bench.echo.submit(i).get(timeout=30) == i
        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            answer = _tasks_bench.echo.submit(i).get(timeout=30)
            samples.append(time.perf_counter() - started)
            assert answer == i
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return _percentiles(samples)


HUEY_TASKS = '''
import os
from huey import SqliteHuey
huey = SqliteHuey(filename=os.environ["HUEY_DB"])

@huey.task()
def echo(x):
    return x
'''


def huey_round_trip(work: str, rounds: int) -> dict[str, float] | None:
    try:
        import huey  # noqa: F401, PLC0415 - optional: the bench extra
    except ImportError:
        return None
    module_dir = Path(work) / "huey_mod"
    module_dir.mkdir()
    (module_dir / "huey_bench_tasks.py").write_text(HUEY_TASKS)
    os.environ["HUEY_DB"] = str(Path(work) / "huey.db")
    sys.path.insert(0, str(module_dir))
    import huey_bench_tasks  # noqa: PLC0415 - written just above

    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "huey_bench_tasks.huey", "-w", "1",
         "-q"],
        cwd=module_dir, env={**os.environ, "PYTHONPATH": str(module_dir)},
        start_new_session=True, stderr=subprocess.DEVNULL,
    )
    try:
        for i in range(20):
            assert huey_bench_tasks.echo(i).get(blocking=True, timeout=30) == i
        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            answer = huey_bench_tasks.echo(i).get(blocking=True, timeout=30)
            samples.append(time.perf_counter() - started)
            assert answer == i
    finally:
        os.killpg(consumer.pid, signal.SIGTERM)
        consumer.wait(30)
    return _percentiles(samples)


#: The rate's kinds, each through the same ``dq server --workers 2`` (a durable queue,
#: the server's default): task jobs, whose answers are kept (and fsynced, as a durable
#: queue's answers are), and three plain baselines, from the one the issue's 0.7x names
#: loosely ("the same workers' plain-job rate") to one that does a task's work.
KINDS: dict[str, list[str]] = {
    "tasks": ["--tasks", "_tasks_bench"],
    # A do-nothing handler: the engine's own rate, which no real handler reaches.
    "noop": ["--handler", "_tasks_bench:noop"],
    # A handler that reads its job's data, as every real handler (and a task) does.
    "read": ["--handler", "_tasks_bench:read"],
    # ... and whose return value is kept as the job's answer: a task's work done by a
    # plain handler (what is left between it and "tasks" is the tasks layer's own cost).
    "read-keep": ["--handler", "_tasks_bench:read", "--keep-results"],
}
BASELINES: Final = ("noop", "read", "read-keep")


def fill(work: str, jobs: int, kind: str, run: int) -> str:
    """A queue of ``jobs`` jobs of ``kind`` for round ``run``; its path."""
    queue = os.path.join(work, f"{kind}-{run}")
    submit = (
        "import _tasks_bench as t\n"
        f"for i in range({jobs}): t.echo.submit(i)\n"
        if kind == "tasks" else
        "import _tasks_bench as t\n"
        f"t.q.enqueue_many([str(i) for i in range({jobs})])\n"
    )
    subprocess.run([sys.executable, "-c", submit], env=_env(queue), check=True, timeout=600)
    return queue


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(queue: str, jobs: int, kind: str) -> dict[str, Any]:
    """``dq server --workers 2 --until-empty`` on ``queue``: its own rate (its
    ``--json`` summary's seconds, not the processes' start-up), and the CPU seconds
    its processes used (start-up included)."""
    cpu = _children_cpu()
    done = subprocess.run(
        [sys.executable, "-m", "dirqueue", "server", "--dir", queue, "--workers", "2",
         "--until-empty", "--json", *KINDS[kind]],
        env=_env(queue), capture_output=True, text=True, check=True, timeout=600,
    )
    summary = json.loads(done.stdout)
    assert summary["finished"] == jobs, summary
    if kind in ("tasks", "read-keep"):
        assert len(os.listdir(os.path.join(queue, "results"))) == jobs
    cpu = _children_cpu() - cpu
    shutil.rmtree(queue)
    return {"jobs": jobs, "seconds": summary["seconds"], "per_second": jobs / summary["seconds"],
            "cpu_seconds": cpu}


def start_up_cpu(work: str) -> dict[str, float]:
    """The CPU seconds a server of each kind takes to start and stop around one job
    (the least of three): taken from each drain's, it leaves the jobs' own."""
    return {
        kind: min(drain(fill(work, 1, kind, -1 - i), 1, kind)["cpu_seconds"] for i in range(3))
        for kind in KINDS
    }


def rate_rounds(work: str, jobs: int, rounds: int) -> list[dict[str, dict[str, Any]]]:
    """ROUNDS rounds of every kind. A round fills its four queues first, then drains
    them back to back (no submission between two drains), starting from another kind
    each round: a neighbour's load falls on every kind alike, and each ratio is taken
    within one round."""
    kinds = list(KINDS)
    out = []
    for run in range(rounds):
        order = kinds[run % len(kinds):] + kinds[:run % len(kinds)]
        queues = {kind: fill(work, jobs, kind, run) for kind in order}
        out.append({kind: drain(queues[kind], jobs, kind) for kind in order})
    return out


def summarize(
    rounds: list[dict[str, dict[str, Any]]], start_up: dict[str, float]
) -> dict[str, Any]:
    """Median rate of each kind, and the median over rounds of tasks / each baseline;
    the same for the CPU time a job takes (its server's, less its start-up), whose
    ratio (baseline's / tasks') is what the rates' would be on an idle machine."""
    for r in rounds:
        for kind, run in r.items():
            run["cpu_us_per_job"] = max(
                0.0, (run["cpu_seconds"] - start_up[kind]) / run["jobs"] * 1e6)
    medians = {k: statistics.median(r[k]["per_second"] for r in rounds) for k in KINDS}
    cpu = {k: statistics.median(r[k]["cpu_us_per_job"] for r in rounds) for k in KINDS}
    ratios = {
        b: sorted(r["tasks"]["per_second"] / r[b]["per_second"] for r in rounds)
        for b in BASELINES
    }
    cpu_ratios = {
        b: sorted(r[b]["cpu_us_per_job"] / r["tasks"]["cpu_us_per_job"] for r in rounds)
        for b in BASELINES
    }
    return {
        "per_second": medians,
        "ratio_median": {b: statistics.median(v) for b, v in ratios.items()},
        "ratio_range": {b: [v[0], v[-1]] for b, v in ratios.items()},
        "cpu_us_per_job": cpu,
        "cpu_ratio_median": {b: statistics.median(v) for b, v in cpu_ratios.items()},
        "start_up_cpu_seconds": start_up,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5, help="rate rounds (each kind once)")
    parser.add_argument("--rate-only", action="store_true", help="skip the round trips")
    tmpfs = "/dev/shm"  # noqa: S108 - a private mkdtemp below, not a fixed name
    parser.add_argument("--dir", default=tmpfs if os.path.isdir(tmpfs) else None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tasks-bench-", dir=args.dir)
    trip = huey_trip = None
    try:
        m = machine(work)
        print(describe(m))
        if not args.rate_only:
            trip = dirqueue_round_trip(work, args.rounds)
            huey_trip = huey_round_trip(work, args.rounds)
        start_up = start_up_cpu(work)
        rounds = rate_rounds(work, args.jobs, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if trip is not None:
        print(f"\nround trip, submit -> answer, {args.rounds} rounds, one waiting worker")
        rows = [["dirqueue tasks", f"{trip['median_ms']:.2f}", f"{trip['p99_ms']:.2f}"]]
        if huey_trip is not None:
            rows.append(["huey (SqliteHuey)", f"{huey_trip['median_ms']:.2f}",
                         f"{huey_trip['p99_ms']:.2f}"])
        print_table(["", "median ms", "p99 ms"], rows)
    summary = summarize(rounds, start_up)
    names = {
        "tasks": "tasks (answers kept)",
        "noop": "plain, do-nothing handler",
        "read": "plain, handler reads data",
        "read-keep": "plain, reads data, answer kept",
    }
    print(f"\nthrough 2 workers, {args.jobs} jobs a run, {args.repeat} interleaved rounds")
    rows = []
    for kind, name in names.items():
        ratio = summary["ratio_median"].get(kind)
        low_high = summary["ratio_range"].get(kind)
        cpu_ratio = summary["cpu_ratio_median"].get(kind)
        rows.append([
            name, f"{summary['per_second'][kind]:.0f}",
            "" if ratio is None else f"{ratio:.2f}",
            "" if low_high is None else f"{low_high[0]:.2f}-{low_high[1]:.2f}",
            f"{summary['cpu_us_per_job'][kind]:.0f}",
            "" if cpu_ratio is None else f"{cpu_ratio:.2f}",
        ])
    print_table(["", "jobs/s", "tasks/this", "range", "CPU us/job", "by CPU"], rows)
    print("each round's jobs/s:")
    for kind, name in names.items():
        print(f"  {name}: " + " ".join(f"{r[kind]['per_second']:.0f}" for r in rounds))
    write_results("tasks_roundtrip", {
        "machine": m, "rounds": args.rounds, "jobs": args.jobs,
        "round_trip": {"dirqueue": trip, "huey": huey_trip},
        "rate": {**summary, "rounds": rounds},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
