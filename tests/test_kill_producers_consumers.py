"""Producers and consumers SIGKILLed at random moments, round after round.

Every round forks two producers and two consumers on one queue, releases them
together, then ends each one at a random moment: most by SIGKILL (anywhere, mid-write,
mid-link, mid-job), the rest by SIGTERM, which they obey between jobs. Producers log
each job id after its enqueue returned (acknowledged); consumers log each job id
before finishing it. After the rounds a repair run and a drain, then:

- every acknowledged job was processed at least once, with the data it was given;
- a job processed twice was, every time but the last, in the hands of a consumer
  that was SIGKILLed (a consumer that was not killed always finished its job);
- no consumer ever met a half-written or corrupt job (none moved to corrupt/);
- after repair() nothing is left: no tmp file, lock, or data file without a job.

A SIGKILL leaves the page cache alone, so plain write(2)s to the logs survive it; the
logs need no fsync (power loss is the durability benchmark's subject, not this one's).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import signal
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dirqueue import DirQueue
from durability_checks import assert_no_half_jobs, assert_no_orphans, deferred_jobs

ROUNDS = int(os.environ.get("DIRQUEUE_KILL_ROUNDS", "30"))
pytestmark = pytest.mark.timeout(150)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class _Log:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def _producer(qdir: str, log: _Log, stop: list[bool]) -> None:
    q = DirQueue(qdir, queue_fanout=random.random() < 0.5)
    rng = random.Random(os.getpid())
    n = 0
    while not stop[0]:
        payloads = []
        for _ in range(3 if rng.random() < 0.25 else 1):
            n += 1
            payloads.append(f"{os.getpid()}-{n}-".encode() + b"x" * rng.randint(0, 5000))
        items = [(p, {"sha": _sha(p)}) for p in payloads]
        if len(items) > 1:
            ids = q.enqueue_many(items)
        elif rng.random() < 0.15:
            # A delayed job: deferred/ first, then queue/ when due.
            ids = [q.enqueue_string(*items[0], delay=rng.uniform(0.01, 0.2))]
        else:
            ids = [q.enqueue_string(*items[0])]
        for jobid, payload in zip(ids, payloads, strict=True):
            log(f"ACK {jobid} {_sha(payload)}")


def _consumer(qdir: str, log: _Log, stop: list[bool]) -> None:
    # A short lifetime, so that jobs of killed consumers come back within the round.
    q = DirQueue(qdir, active_file_lifetime=0.5)
    rng = random.Random(os.getpid())
    while not stop[0]:
        job = q.pickup_queued_job()
        if job is None:
            time.sleep(0.002)
            continue
        if rng.random() < 0.15:
            # A failed attempt: deferred for a short back-off, to come back later.
            job.retry_later(rng.uniform(0.0, 0.1), error="not now")
            continue
        data = job.get_data()
        ok = _sha(data) == job.metadata.get("sha") and len(data) == job.get_data_size_bytes()
        log(f"{'DONE' if ok else 'BAD'} {job.jobid} {os.getpid()}")
        job.finish()


def _child(role: str, qdir: str, logdir: Path, go: int) -> None:
    stop = [False]

    def on_term(signum: int, frame: Any) -> None:
        stop[0] = True  # Only a flag: the loop stops between jobs.

    signal.signal(signal.SIGTERM, on_term)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # Blocked by _fork.
    random.seed(os.getpid())
    log = _Log(logdir / f"{role}-{os.getpid()}.log")
    warnings.resetwarnings()
    warnings.simplefilter("always")
    warnings.showwarning = lambda message, *rest: log(f"WARN {message}".replace("\n", " "))

    class _LogWarnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(f"WARN {record.getMessage()}".replace("\n", " "))

    logging.getLogger("dirqueue").addHandler(_LogWarnings(logging.WARNING))
    os.read(go, 1)  # The start barrier.
    (_producer if role == "producer" else _consumer)(qdir, log, stop)


def _fork(role: str, qdir: str, logdir: Path, go: int) -> int:
    # SIGTERM stays blocked from before the fork until the child's handler is in place:
    # a test that sends it at once (on a loaded machine, before the child ran a line)
    # must not meet the default action, which kills.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if pid == 0:
        code = 0
        try:
            _child(role, qdir, logdir, go)
        except BaseException as err:
            with contextlib.suppress(Exception):
                _Log(logdir / f"crash-{os.getpid()}.log")(f"CRASH {role} {err!r}")
            code = 1
        finally:
            os._exit(code)
    return pid


def _read_logs(logdir: Path) -> list[list[str]]:
    lines: list[list[str]] = []
    for path in sorted(logdir.glob("*.log")):
        text = path.read_text()
        # A line cut by SIGKILL has no newline: it was never written in full.
        lines.extend(line.split(" ", 2) for line in text.split("\n")[:-1])
    return lines


def test_sigkilled_producers_and_consumers_lose_and_corrupt_nothing(  # noqa: PLR0912
    tmp_path: Path,
) -> None:
    qdir = str(tmp_path / "q")
    DirQueue(qdir).create()  # Consumers may start first, and make no queue themselves.
    logdir = tmp_path / "logs"
    logdir.mkdir()
    killed: set[int] = set()
    live: list[int] = []
    repaired: dict[str, int] = defaultdict(int)
    rng = random.Random(20261128)
    deadline = time.monotonic() + 110
    try:
        for _ in range(ROUNDS):
            assert time.monotonic() < deadline, "kill rounds took too long"
            go_read, go_write = os.pipe()
            roles = ["producer", "producer", "consumer", "consumer"]
            pids = {_fork(role, qdir, logdir, go_read): role for role in roles}
            live.extend(pids)
            os.close(go_read)
            os.write(go_write, b"x" * len(pids))
            os.close(go_write)
            # Each child ends at its own random moment; 70% by SIGKILL.
            ends = sorted((rng.uniform(0.02, 0.35), pid, rng.random() < 0.7) for pid in pids)
            start = time.monotonic()
            repair_at = rng.uniform(0.02, 0.35)
            for at, pid, kill in ends:
                if repair_at < at:
                    # An operator's repair, while the queue is busy: it may remove only
                    # what dead processes left, and must never take a live job.
                    time.sleep(max(0.0, start + repair_at - time.monotonic()))
                    repair_at = 1.0
                    for finding in DirQueue(qdir).repair().findings:
                        assert finding.kind in ("tmp-leftover", "dead-lock"), finding
                        repaired[f"{finding.kind} (busy)"] += 1
                time.sleep(max(0.0, start + at - time.monotonic()))
                os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
                if kill:
                    killed.add(pid)
            for pid, role in pids.items():
                _, status = os.waitpid(pid, 0)
                live.remove(pid)
                if pid not in killed:
                    assert os.waitstatus_to_exitcode(status) == 0, f"{role} {pid} crashed"
            # Between rounds nobody runs: every leftover is debris of a killed process.
            assert_no_half_jobs(DirQueue(qdir))
            for finding in DirQueue(qdir).repair(min_age=0).findings:
                assert finding.kind not in ("corrupt-control", "missing-data"), finding
                repaired[finding.kind] += 1
    finally:
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    # Drain what is left, as a consumer that is never killed.
    q = DirQueue(qdir)
    drained = []
    while (job := q.pickup_queued_job()) is not None or deferred_jobs(q):
        if job is None:
            time.sleep(0.05)  # Retries and delayed jobs still to come due.
            continue
        data = job.get_data()
        assert _sha(data) == job.metadata["sha"]
        drained.append(job.jobid)
        job.finish()
    assert q.repair(min_age=0).clean
    assert_no_orphans(q)
    assert not os.path.exists(q.layout.corrupt_dir)

    lines = _read_logs(logdir)
    problems = [line for line in lines if line[0] in ("BAD", "CRASH")]
    problems += [
        line for line in lines if line[0] == "WARN" and "broke stale lock" not in " ".join(line)
    ]
    assert problems == []
    acked = {line[1]: line[2] for line in lines if line[0] == "ACK"}
    processors: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        if line[0] == "DONE":
            processors[line[1]].append(int(line[2]))
    for jobid in drained:
        processors[jobid].append(os.getpid())
    lost = set(acked) - set(processors)
    assert not lost, f"{len(lost)} acknowledged jobs were never processed"
    for jobid, by in processors.items():
        # Per-consumer logs are not in time order across files, but only the last
        # processor may be one that was not killed: at most one unkilled processor.
        assert sum(1 for pid in by if pid not in killed) <= 1, f"{jobid} processed by {by}"
    dupes = sum(len(by) - 1 for by in processors.values())
    print(
        f"{ROUNDS} rounds, {len(killed)} SIGKILLs, {len(acked)} acknowledged jobs,"
        f" {len(processors)} processed, {dupes} re-processed after a kill,"
        f" {len(drained)} drained; repaired between rounds: {dict(repaired)}"
    )
    assert len(acked) > ROUNDS  # The rounds did real work.
