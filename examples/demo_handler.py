"""The demo's job handler: for each number in a job, how many primes are up to it.

It needs a table of primes that takes a good fraction of a second to build. A
persistent worker (``dq server --handler ./demo_handler.py:handle``) builds it once and
keeps it warm for every job after; a process started per job
(``dq deque -- python demo_handler.py``) pays for it every time. That is the whole
point of a processing server.

Each job writes ``$DEMO_RESULTS/JOBID`` (the worker's pid and the count), and each
table build appends a line to ``$DEMO_RESULTS/cache-loads.log``.
"""

from __future__ import annotations

import bisect
import os
import sys
import time

from dirqueue import Job

LIMIT = 6_000_000
_table: list[int] | None = None


def prime_table() -> list[int]:
    """Every prime up to LIMIT, in order; built on first use and kept."""
    global _table  # noqa: PLW0603 - the warm cache is the point of the demo
    if _table is None:
        started = time.perf_counter()
        sieve = bytearray([1]) * (LIMIT + 1)
        sieve[0] = sieve[1] = 0
        for n in range(2, int(LIMIT**0.5) + 1):
            if sieve[n]:
                sieve[n * n :: n] = bytes(len(range(n * n, LIMIT + 1, n)))
        _table = [n for n in range(LIMIT + 1) if sieve[n]]
        _log_load(time.perf_counter() - started)
    return _table


def _log_load(seconds: float) -> None:
    results = os.environ.get("DEMO_RESULTS")
    if results:
        with open(os.path.join(results, "cache-loads.log"), "a") as log:
            log.write(f"{os.getpid()} {seconds:.3f}\n")


def count_primes(data: bytes) -> int:
    """The sum, over the whitespace-separated numbers in ``data``, of primes up to each."""
    table = prime_table()
    numbers = [int(word) for word in data.split()]
    for n in numbers:
        if not 0 <= n <= LIMIT:
            raise ValueError(f"{n} is outside the table (0 to {LIMIT})")
    return sum(bisect.bisect_right(table, n) for n in numbers)


def _record(jobid: str, primes: int, started_ns: int) -> None:
    results = os.environ.get("DEMO_RESULTS")
    if results:
        with open(os.path.join(results, jobid), "x") as out:
            out.write(f"{os.getpid()} {primes} {started_ns}\n")


def handle(job: Job) -> None:
    """The ``dq server --handler`` entry point."""
    started_ns = time.time_ns()
    _record(job.jobid, count_primes(job.get_data()), started_ns)


def main(argv: list[str]) -> int:
    """The one-process-per-job way: ``python demo_handler.py DATAFILE`` (as dq deque runs it)."""
    started_ns = time.time_ns()
    with open(argv[-1], "rb") as fh:
        primes = count_primes(fh.read())
    _record(os.environ["DQ_JOBID"], primes, started_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
