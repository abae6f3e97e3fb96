"""make demo: dirqueue's processing server, end to end, with the real ``dq`` command.

1. Five processes submit 300 jobs (and 2 poisoned ones) at once with ``dq submit``.
2. ``dq stats`` shows the queue.
3. A few jobs are run the spooler way, one process per job (``dq deque``), which
   rebuilds the handler's table of primes every time.
4. ``dq server --workers 2 --handler ./demo_handler.py:handle --until-empty`` runs the rest
   in two persistent workers that build the table once each.
5. A summary: jobs per worker, throughput, the failure policy at work (the poisoned
   jobs end in failed/ after 3 attempts), and ``dq stats`` after.

Run with ``--keep`` to keep the queue directory for a look around.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DQ = str(BIN / "dq")
SUBMITTERS = 4
JOBS = 300
POISONED = 2
COLD_JOBS = 4


def dq(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own dq, our own arguments
        [DQ, *args], text=True, capture_output=True, check=True, timeout=300, **kwargs  # type: ignore[call-overload]
    )


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def indent(text: str) -> str:
    return "".join(f"   {line}\n" for line in text.splitlines())


def make_inputs(inputs: Path) -> tuple[list[str], list[str]]:
    rng = random.Random(42)
    files: list[str] = []
    for i in range(JOBS):
        path = inputs / f"job{i:03d}.txt"
        path.write_text(" ".join(str(rng.randrange(6_000_000)) for _ in range(200)))
        files.append(str(path))
    poisoned: list[str] = []
    for i in range(POISONED):
        path = inputs / f"poison{i}.txt"
        path.write_text("12 -7 99")  # -7 is outside the table: the handler raises
        poisoned.append(str(path))
    return files, poisoned


def submit_concurrently(qdir: Path, files: list[str], poisoned: list[str]) -> bool:
    heading(
        f"{SUBMITTERS + 1} processes run 'dq submit' at once"
        f" ({JOBS} jobs, a quarter of them urgent at priority 10,"
        f" and {POISONED} poisoned ones at priority 90)"
    )
    batches = [
        ["--meta", f"batch={n}", *files[n - 1 :: SUBMITTERS]] for n in range(1, SUBMITTERS)
    ]
    urgent = files[SUBMITTERS - 1 :: SUBMITTERS]
    batches.append(["--priority", "10", "--meta", "batch=urgent", *urgent])
    batches.append(["--priority", "90", "--meta", "batch=poison", *poisoned])
    started = time.monotonic()
    procs = [
        subprocess.Popen(  # noqa: S603
            [DQ, "submit", "--dir", str(qdir), *batch],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for batch in batches
    ]
    submitted: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            print(err, file=sys.stderr)
            return False
        submitted.extend(out.split())
        print(f"   {err.strip().splitlines()[-1]}")
    print(
        f"   {len(submitted)} job ids, {len(set(submitted))} distinct,"
        f" in {time.monotonic() - started:.2f}s"
    )
    return True


def run_cold(qdir: Path, env: dict[str, str]) -> float:
    heading(f"the spooler way: one process per job, 'dq deque' x {COLD_JOBS}")
    started = time.monotonic()
    for _ in range(COLD_JOBS):
        subprocess.run(  # noqa: S603
            [DQ, "deque", "--dir", str(qdir), "--", sys.executable, str(HERE / "demo_handler.py")],
            env=env, check=False, timeout=120, capture_output=True,
        )
    cold = (time.monotonic() - started) / COLD_JOBS
    print(f"   {cold * 1000:.0f} ms per job: each process rebuilds the table of primes")
    return cold


def run_server(qdir: Path, env: dict[str, str]) -> float | None:
    heading(
        "the server way: dq server --workers 2 --handler ./demo_handler.py:handle --until-empty"
    )
    started = time.monotonic()
    server = subprocess.run(  # noqa: S603
        [DQ, "server", "--dir", str(qdir), "--workers", "2", "--until-empty",
         "--poll-interval", "0.2", "--handler", "./demo_handler.py:handle"],
        cwd=HERE, env=env, text=True, stderr=subprocess.PIPE, check=False, timeout=300,
    )
    elapsed = time.monotonic() - started
    print(indent(server.stderr), end="")  # dq server's summary is on stderr.
    # 4: the run ended and moved jobs to failed/, as the poisoned ones must be.
    return elapsed if server.returncode in (0, 4) else None


def summarize(results: Path, cold: float, elapsed: float) -> None:
    heading("summary")
    per_worker: collections.Counter[str] = collections.Counter()
    started: list[tuple[int, str, str]] = []  # (start time, priority, pid)
    for path in results.iterdir():
        if path.name != "cache-loads.log":
            pid, _, started_ns = path.read_text().split()
            per_worker[pid] += 1
            started.append((int(started_ns), path.name[:2], pid))
    loads = (results / "cache-loads.log").read_text().splitlines()
    server_loads = len(loads) - COLD_JOBS
    served = sum(per_worker.values()) - COLD_JOBS
    workers = {pid: n for pid, n in per_worker.items() if n > 1}
    listing = ", ".join(f"pid {pid}: {n}" for pid, n in sorted(workers.items()))
    print(f"   jobs per worker:    {listing}"
          f" (and {len(per_worker) - len(workers)} single-job processes: 1 each)")
    print(f"   server throughput:  {served / elapsed:.0f} jobs/s over {elapsed:.2f}s,"
          f" {elapsed / max(served, 1) * 1000:.1f} ms per job")
    print(f"   one process per job: {1 / cold:.1f} jobs/s ({cold * 1000:.0f} ms per job)")
    print(f"   table of primes built {server_loads} times by the server"
          f" (once per worker) for {served} jobs")
    # Order: the server's jobs by the time their handler started.
    by_server = [prio for _, prio, pid in sorted(started) if pid in workers]
    urgent = by_server.count("10")
    last_urgent = max((i + 1 for i, prio in enumerate(by_server) if prio == "10"), default=0)
    print(f"   order:              {urgent} priority-10 jobs (submitted alongside the rest)"
          f" started {'first' if last_urgent == urgent else 'mostly first'}:"
          f" the last as job {last_urgent} of {len(by_server)}")
    done_once = sum(per_worker.values())
    print(f"   every job done exactly once: {done_once == JOBS}"
          f" ({done_once} result files for {JOBS} good jobs)")


def main() -> int:
    keep = "--keep" in sys.argv
    base = Path(tempfile.mkdtemp(prefix="dirqueue-demo-"))
    qdir = base / "queue"
    inputs = base / "inputs"
    results = base / "results"
    inputs.mkdir()
    results.mkdir()
    env = {**os.environ, "DEMO_RESULTS": str(results)}
    try:
        files, poisoned = make_inputs(inputs)
        if not submit_concurrently(qdir, files, poisoned):
            return 1
        heading("dq stats (before)")
        print(indent(dq("stats", "--dir", str(qdir)).stdout), end="")
        cold = run_cold(qdir, env)
        elapsed = run_server(qdir, env)
        if elapsed is None:
            return 1
        summarize(results, cold, elapsed)
        heading("dq list --failed (the poisoned jobs, after 3 attempts each)")
        print(indent(dq("list", "--dir", str(qdir), "--failed").stdout), end="")
        heading("dq stats (after)")
        print(indent(dq("stats", "--dir", str(qdir)).stdout), end="")
    finally:
        if keep:
            print(f"\nqueue kept in {qdir}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
