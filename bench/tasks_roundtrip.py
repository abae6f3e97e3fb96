"""Tasks through the queue: the round trip and the rate.

1. Round trip: one ``dq server --tasks`` worker waits; the script submits a task and
   ``get()``s its answer, ROUNDS times, one at a time. Prints the median and p99 of
   submit-to-answer, with huey (SQLite storage, its consumer polling) beside it when
   huey is installed (``pip install huey``, in the bench extra).
2. Rate: N task jobs through ``dq server --workers 2 --tasks`` (answers kept), and N
   plain jobs through the same 2 workers with a do-nothing ``--handler``; each rate is
   the server's own (its ``--json`` summary's seconds, not process start-up).

On tmpfs (``/dev/shm``) by default. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/tasks_roundtrip.py [--rounds 500] [--jobs 5000] [--repeat 3]
        [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def rate(work: str, jobs: int, *, tasks: bool, run: int, handler: str = "noop") -> dict[str, Any]:
    queue = os.path.join(work, f"{'tasks' if tasks else handler}-{run}")
    env = _env(queue)
    submit = (
        "import _tasks_bench as t\n"
        f"for i in range({jobs}): t.echo.submit(i)\n"
        if tasks else
        "import _tasks_bench as t\n"
        f"t.q.enqueue_many([str(i) for i in range({jobs})])\n"
    )
    subprocess.run([sys.executable, "-c", submit], env=env, check=True, timeout=600)
    how = ["--tasks", "_tasks_bench"] if tasks else ["--handler", f"_tasks_bench:{handler}"]
    done = subprocess.run(
        [sys.executable, "-m", "dirqueue", "server", "--dir", queue, "--workers", "2",
         "--until-empty", "--json", *how],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )
    summary = json.loads(done.stdout)
    assert summary["finished"] == jobs, summary
    if tasks:
        assert len(os.listdir(os.path.join(queue, "results"))) == jobs
    return {"jobs": jobs, "seconds": summary["seconds"], "per_second": jobs / summary["seconds"]}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["per_second"])[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="rate runs of each kind")
    tmpfs = "/dev/shm"  # noqa: S108 - a private mkdtemp below, not a fixed name
    parser.add_argument("--dir", default=tmpfs if os.path.isdir(tmpfs) else None)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tasks-bench-", dir=args.dir)
    try:
        m = machine(work)
        print(describe(m))
        trip = dirqueue_round_trip(work, args.rounds)
        huey_trip = huey_round_trip(work, args.rounds)
        # Taken in turns, REPEAT times each, so that a neighbour's load falls on both.
        task_runs, plain_runs, read_runs = [], [], []
        for run in range(args.repeat):
            task_runs.append(rate(work, args.jobs, tasks=True, run=run))
            plain_runs.append(rate(work, args.jobs, tasks=False, run=run))
            read_runs.append(rate(work, args.jobs, tasks=False, run=run, handler="read"))
        task_rate = _median_run(task_runs)
        plain_rate = _median_run(plain_runs)
        read_rate = _median_run(read_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nround trip, submit -> answer, {args.rounds} rounds, one waiting worker")
    rows = [["dirqueue tasks", f"{trip['median_ms']:.2f}", f"{trip['p99_ms']:.2f}"]]
    if huey_trip is not None:
        rows.append(["huey (SqliteHuey)", f"{huey_trip['median_ms']:.2f}",
                     f"{huey_trip['p99_ms']:.2f}"])
    print_table(["", "median ms", "p99 ms"], rows)
    ratio = task_rate["per_second"] / plain_rate["per_second"]
    print(f"\nthrough 2 workers, {args.jobs} jobs a run, median of {args.repeat} runs each")
    print_table(
        ["", "jobs/s", "seconds"],
        [["tasks (answers kept)", f"{task_rate['per_second']:.0f}", task_rate["seconds"]],
         ["plain jobs, do-nothing handler", f"{plain_rate['per_second']:.0f}",
          plain_rate["seconds"]],
         ["plain jobs, handler reads data", f"{read_rate['per_second']:.0f}",
          read_rate["seconds"]],
         ["tasks / do-nothing", f"{ratio:.2f}", ""],
         ["tasks / reads data", f"{task_rate['per_second'] / read_rate['per_second']:.2f}",
          ""]],
    )
    write_results("tasks_roundtrip", {
        "machine": m, "rounds": args.rounds, "jobs": args.jobs,
        "round_trip": {"dirqueue": trip, "huey": huey_trip},
        "rate": {"tasks": task_rate, "plain": plain_rate, "plain_reading": read_rate,
                 "ratio": ratio, "task_runs": task_runs, "plain_runs": plain_runs,
                 "plain_reading_runs": read_runs},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
