"""The structural costs the speed rests on, held so that a change cannot lose them
unseen (docs/performance.md): system calls per job on a local filesystem (tmpfs in
the docs' table, the same calls on any), and the index's memory per name.

Timings are not tested (the machine's speed swings); what makes the time is: a job
enqueued in 7 system calls and taken, read and finished in 17 on a local filesystem,
and a queue of a million names indexed in tens of megabytes, read as a stream.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import dirqueue._scanner
from dirqueue import DirQueue
from dirqueue._format import match_job_name
from dirqueue._index import QueueIndex
from dirqueue._scanner import pack

_MARK = "/nonexistent-dq-test-mark/"
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")
_JOBS = 200

#: Enqueues and then takes _JOBS jobs between marks (stat()s of a path that cannot
#: exist), after a warm-up (imports, directories, the index, the heartbeat thread).
_CHILD = """
import os, sys
from dirqueue import DirQueue
q = DirQueue(sys.argv[1], durable=False)
n = int(sys.argv[2])
def mark(what):
    try:
        os.stat(MARK + what)
    except OSError:
        pass
def take_all(count):
    for _ in range(count):
        job = q.pickup_queued_job()
        job.get_data()
        job.finish()
for _ in range(20):
    q.enqueue_string(b"w" * 100)
take_all(20)
mark("enqueue-begin")
for _ in range(n):
    q.enqueue_string(b"x" * 100)
mark("enqueue-end")
mark("pickup-begin")
take_all(n)
mark("pickup-end")
""".replace("MARK", repr(_MARK))


def _calls_per_job(root: Path) -> dict[str, collections.Counter[str]]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    out = root / "strace.out"
    src = Path(dirqueue._scanner.__file__).resolve().parents[1]
    subprocess.run(
        [strace, "-f", "-qq", "-o", str(out), sys.executable, "-c", _CHILD,
         str(root / "q"), str(_JOBS)],
        check=True, timeout=60, env={**os.environ, "PYTHONPATH": str(src)},
    )
    phases: dict[str, collections.Counter[str]] = {}
    current: collections.Counter[str] | None = None
    for line in out.read_text().splitlines():
        if _MARK in line:
            what = line.split(_MARK, 1)[1].split('"', 1)[0]
            phase, _, edge = what.rpartition("-")
            current = phases.setdefault(phase, collections.Counter()) if edge == "begin" else None
            continue
        match = _CALL.match(line)
        if current is not None and match:
            current[match.group(1)] += 1
    return phases


@pytest.mark.timeout(120)
def test_system_calls_per_job_on_a_local_filesystem(tmp_path: Path) -> None:
    # docs/performance.md, "System calls per job": 7 to enqueue (data written in place,
    # control file written in tmp/ and renamed into queue/, never over another), 17 to
    # take, read and finish (the inotify read, the lock linked from the queue object's
    # one lock file, the control file read, the data checked and read, and finish's
    # looks before it removes).
    # A whole call more per job on average is a lost property, not noise: the few
    # calls of the periodic work (deferred jobs looked for twice a second) are spread
    # over the jobs.
    phases = _calls_per_job(tmp_path)
    enqueue = sum(phases["enqueue"].values()) / _JOBS
    pickup = sum(phases["pickup"].values()) / _JOBS
    assert enqueue < 7 + 0.5, phases["enqueue"]
    assert pickup < 16 + 0.5, phases["pickup"]
    # Nothing listed per job: the index reads queue/ once, then follows inotify.
    assert phases["pickup"]["getdents64"] < _JOBS / 20, phases["pickup"]


def _names(count: int) -> list[str]:
    """``count`` job names as an enqueue makes them (one host tag), in no order."""
    names = [f"50.20261208{i:012d}.hostAB" for i in range(count)]
    names.reverse()
    return names


@pytest.mark.timeout(120)
def test_the_index_holds_a_million_names_in_a_few_dozen_bytes_each() -> None:
    # A str per name, a list and a set of them (and a named tuple each while the queue
    # was read) made a million-job drain's consumer 316 MB at its peak; packed, a
    # name costs its length (30 bytes here) and a newline, and one in 128 is a string.
    count = 1_000_000
    names = _names(count)
    tracemalloc.start()
    try:
        listing = pack(names, ordered=True)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept / count <= 42, kept / count
    # While packing: runs of 65,536 strings sorted at a time, the runs packed, merged.
    assert peak / count <= 80, peak / count
    # All there, in order, and found.
    ordered = sorted(names)
    assert listing.current() == ordered[0]
    for name in (ordered[0], ordered[127], ordered[128], ordered[500_000], ordered[-1]):
        assert listing.has(name)
    assert not listing.has("50.20261208999999999999.hostAB")
    assert all(match_job_name(name) for name in ordered[:3])
    listing.drop(ordered[0])
    assert listing.current() == ordered[1]
    assert not listing.has(ordered[0])


@pytest.mark.timeout(60)
def test_the_index_of_a_queue_keeps_its_names_packed(tmp_path: Path) -> None:
    # The index a pickup reads holds the names of queue/ packed, not a str per name:
    # a few thousand jobs cost well under the 200 bytes each that strings, a list and
    # a set cost.
    count = 5000
    q = DirQueue(tmp_path / "q", durable=False)
    q.create()
    queue_dir = tmp_path / "q" / "queue"
    for name in _names(count):
        (queue_dir / name).touch()
    index = QueueIndex(q.config)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        index.refresh()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown / count <= 60, grown / count
    head = index.head()
    assert head is not None
    assert head.name == min(_names(count))
    index.close()


def test_an_unordered_listing_starts_anywhere_and_gives_every_name_once() -> None:
    names = _names(1000)
    starts = set()
    for _ in range(20):
        listing = pack(names, ordered=False)
        seen = []
        while (name := listing.current()) is not None:
            seen.append(name)
            listing.drop(name)
        assert sorted(seen) == sorted(names)
        starts.add(seen[0])
    assert len(starts) > 1
