"""When a lock in active/ may be broken: only when it is old *and* its owner is dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import files_under, logs_warning
from dirqueue import DirQueue


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process of ours that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process on this host that is alive for the test's duration."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def plant_lock(qdir: Path, jobid: str, content: str, age: float) -> Path:
    """Write active/JOBID as another worker would have, ``age`` seconds ago."""
    lock = qdir / "active" / jobid
    lock.write_text(content)
    then = time.time() - age
    os.utime(lock, (then, then))
    return lock


def enqueue_one(qdir: Path, lifetime: float = 600) -> tuple[DirQueue, str]:
    queue = DirQueue(qdir, active_file_lifetime=lifetime)
    return queue, queue.enqueue_string("the job", {"k": "v"})


def test_old_lock_of_a_dead_local_pid_is_broken_with_a_warning(qdir: Path, dead_pid: int) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=600)
    lock = plant_lock(qdir, jobid, f"{socket.gethostname()}\n{dead_pid}\n", age=900)
    with logs_warning(rf"broke stale lock on {jobid}.*{dead_pid}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b"the job"
    assert job.metadata == {"k": "v"}
    # The lock is ours now (its first two lines are what IPC::DirQueue reads).
    assert lock.read_text().startswith(f"{socket.gethostname()}\n{os.getpid()}\n")
    job.finish()
    assert not lock.exists()
    assert files_under(qdir / "tmp") == []  # The broken lock was not left aside.


def test_old_lock_of_a_live_local_pid_is_kept(qdir: Path, live_pid: int) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=1)
    content = f"{socket.gethostname()}\n{live_pid}\n"
    lock = plant_lock(qdir, jobid, content, age=3600)
    assert queue.pickup_queued_job() is None
    assert queue.pickup_queued_job(jobid) is None
    assert lock.read_text() == content


def test_old_lock_from_another_host_is_kept(qdir: Path, dead_pid: int) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=1)
    # The pid is dead here, but it names a process on another host: we cannot tell.
    content = f"otherhost.example\n{dead_pid}\n"
    lock = plant_lock(qdir, jobid, content, age=86400)
    assert queue.pickup_queued_job() is None
    assert lock.read_text() == content


def test_fresh_lock_of_a_dead_pid_is_kept(qdir: Path, dead_pid: int) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=600)
    content = f"{socket.gethostname()}\n{dead_pid}\n"
    lock = plant_lock(qdir, jobid, content, age=300)
    assert queue.pickup_queued_job() is None
    assert lock.read_text() == content


@pytest.mark.parametrize(
    "content", ["", "\n", f"{socket.gethostname()}\n", f"{socket.gethostname()}\nnot-a-pid\n"]
)
def test_an_old_lock_naming_no_owner_on_this_host_is_broken(qdir: Path, content: str) -> None:
    """An empty lock (a worker that died before writing it) or one without a pid."""
    queue, jobid = enqueue_one(qdir, lifetime=1)
    plant_lock(qdir, jobid, content, age=60)
    with logs_warning("broke stale lock"):
        job = queue.pickup_queued_job()
    assert job is not None
    job.finish()


def test_a_refreshed_lock_is_not_stale(qdir: Path, dead_pid: int) -> None:
    """touch_active_lock keeps a long job's lock from looking abandoned."""
    queue, jobid = enqueue_one(qdir, lifetime=600)
    job = queue.pickup_queued_job()
    assert job is not None
    lock = qdir / "active" / jobid
    # Pretend the worker died long ago, then came back and touched its lock.
    lock.write_text(f"{socket.gethostname()}\n{dead_pid}\n")
    os.utime(lock, (0, 0))
    job.touch_active_lock()
    assert DirQueue(qdir, active_file_lifetime=600).pickup_queued_job() is None


@pytest.mark.usefixtures("judge_held_at_once")
@pytest.mark.parametrize(
    ("lifetime", "max_grace"), [(1, 0.5), (10, 5.0), (600, 255.0), (100_000, 255.0)]
)
def test_grace_delay_scales_with_the_lifetime(
    qdir: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch, lifetime: float, max_grace: float
) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=lifetime)
    content = f"{socket.gethostname()}\n{dead_pid}\n"
    age = lifetime + max_grace * 0.9  # Past the lifetime, inside the largest grace.
    ranges: list[tuple[float, float]] = []

    def grace(lo: float, hi: float) -> float:
        ranges.append((lo, hi))
        return hi  # The longest grace the queue allows.

    monkeypatch.setattr("dirqueue._lock.random.uniform", grace)
    lock = plant_lock(qdir, jobid, content, age=age)
    assert queue.pickup_queued_job() is None  # Still inside its grace.
    assert lock.exists()
    assert ranges == [(0, max_grace)]

    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)
    with logs_warning("broke stale lock"):
        job = queue.pickup_queued_job()  # No grace: broken as soon as it is stale.
    assert job is not None
    job.finish()


@pytest.mark.usefixtures("judge_held_at_once")
def test_with_lifetime_1_a_dead_lock_is_always_broken_within_1_5_seconds(
    qdir: Path, dead_pid: int
) -> None:
    queue = DirQueue(qdir, active_file_lifetime=1)
    content = f"{socket.gethostname()}\n{dead_pid}\n"
    for i in range(20):
        jobid = queue.enqueue_string(f"job {i}")
        plant_lock(qdir, jobid, content, age=1.5 + 0.05)
        with logs_warning("broke stale lock"):
            job = queue.pickup_queued_job()
        assert job is not None
        assert job.jobid == jobid
        job.finish()


def test_a_lock_younger_than_the_lifetime_is_never_broken_whatever_the_grace(
    qdir: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=10)
    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)
    plant_lock(qdir, jobid, f"{socket.gethostname()}\n{dead_pid}\n", age=8)
    assert queue.pickup_queued_job() is None


@pytest.mark.parametrize("lifetime", [0, -1])
def test_the_lifetime_must_be_positive(qdir: Path, lifetime: float) -> None:
    with pytest.raises(ValueError, match="active_file_lifetime"):
        DirQueue(qdir, active_file_lifetime=lifetime)


def test_quiet_heartbeat_lock_from_another_host_is_broken(qdir: Path) -> None:
    # Its owner promised to touch it every lifetime/4; a lifetime of silence means
    # the owner (or its host) is dead, though we cannot see its processes.
    queue, jobid = enqueue_one(qdir, lifetime=1)
    plant_lock(qdir, jobid, "otherhost.example\n4242\nheartbeat\n", age=5)
    with logs_warning(rf"broke stale lock on {jobid}.*otherhost.example:4242"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()


def test_fresh_heartbeat_lock_from_another_host_is_kept(qdir: Path) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=600)
    content = "otherhost.example\n4242\nheartbeat\n"
    lock = plant_lock(qdir, jobid, content, age=60)
    assert queue.pickup_queued_job() is None
    assert lock.read_text() == content


def test_a_held_job_keeps_its_lock_fresh_while_its_process_lives(qdir: Path) -> None:
    queue, jobid = enqueue_one(qdir, lifetime=0.4)
    job = queue.pickup_queued_job()
    assert job is not None
    lock = qdir / "active" / jobid
    old = time.time() - 100
    os.utime(lock, (old, old))
    deadline = time.monotonic() + 5
    while lock.stat().st_mtime < time.time() - 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.stat().st_mtime > time.time() - 1  # The heartbeat touched it.
    other = DirQueue(qdir, active_file_lifetime=0.4)
    assert other.pickup_queued_job() is None
    job.finish()


@pytest.mark.usefixtures("judge_held_at_once")
@pytest.mark.parametrize("pid", [2**31, 2**63, 10**30])
def test_a_lock_naming_an_impossible_pid_does_not_break_pickup(qdir: Path, pid: int) -> None:
    """A corrupt lock (a pid no process can have) must not make every pickup crash."""
    queue, jobid = enqueue_one(qdir, lifetime=1)
    other = queue.enqueue_string("another job", priority=90)
    content = f"{socket.gethostname()}\n{pid}\n"
    plant_lock(qdir, jobid, content, age=0)
    job = queue.pickup_queued_job()  # Fresh lock: skipped, the next job is taken.
    assert job is not None
    assert job.jobid == other
    job.finish()
    plant_lock(qdir, jobid, content, age=60)
    with logs_warning("broke stale lock"):
        job = queue.pickup_queued_job()  # Stale, and its owner cannot exist.
    assert job is not None
    assert job.jobid == jobid
    job.finish()
