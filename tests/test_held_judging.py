"""How often a dequeuer judges the locks of jobs that others hold.

Another host's lock can only go stale by age (its owner's death cannot be seen from
here), so once judged alive it is not judged again before its mtime plus
``active_file_lifetime``: over NFS each judgement is an lstat, an open and a read.
A lock of this host keeps being judged every pickup or so (a dead worker's job is
taken back at once), and so does one that replaces a lock judged before.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import dirqueue._fs
import dirqueue._index
from dirqueue import DirQueue, Job, _lock
from dirqueue._format import format_lock
from dirqueue._identity import this_process
from dirqueue._judge import Judgement, filesystem_now

OTHER_HOST = format_lock("otherhost.example", 4242, True, boot="b", pidns="1", start=7)


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job names whose locks are judged (their file read), one entry a judgement;
    every pickup may judge again (the rate limits set to nothing)."""
    monkeypatch.setattr(dirqueue._index, "HELD_RECHECK", 0.0)
    monkeypatch.setattr(_lock, "_ALIVE_RECHECK", 0.0)
    seen: list[str] = []
    real = _lock.read_lock_file

    def counting(config: object, jobid: str) -> bytes:
        seen.append(jobid)
        return real(config, jobid)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "read_lock_file", counting)
    return seen


def _held_job(queue: DirQueue, content: bytes) -> tuple[str, Path]:
    """A job, with a lock ``content`` in active/: its name and the lock's path."""
    queue.enqueue_string("work", {})
    (jobid,) = os.listdir(Path(queue.dir) / "queue")
    lock = Path(queue.dir) / "active" / jobid
    lock.write_bytes(content)
    return jobid, lock


def test_another_hosts_lock_is_not_judged_again_before_it_could_be_stale(
    qdir: Path, judged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = DirQueue(qdir)
    jobid, lock = _held_job(queue, OTHER_HOST)
    for _ in range(5):
        assert queue.pickup_queued_job() is None
    assert judged == [jobid]
    # Once its lifetime could have passed (by the filesystem's clock), judged again.
    real_now = filesystem_now
    monkeypatch.setattr(
        dirqueue._index, "filesystem_now", lambda config: real_now(config) + 601.0
    )
    assert queue.pickup_queued_job() is None
    assert judged == [jobid, jobid]
    assert lock.exists()


def test_a_lock_of_this_host_is_judged_at_every_pickup(
    qdir: Path, judged: list[str]
) -> None:
    queue = DirQueue(qdir)
    me = this_process()
    content = format_lock(
        socket.gethostname(), os.getpid(), True, boot=me.boot, pidns=me.pidns, start=me.start
    )
    jobid, _ = _held_job(queue, content)
    for _ in range(5):
        assert queue.pickup_queued_job() is None
    assert judged == [jobid] * 5


def test_a_dead_local_worker_replacing_another_hosts_lock_loses_the_job_at_once(
    qdir: Path, judged: list[str], dead_pid: int
) -> None:
    # Another host's lock, judged alive; then (the job given back and taken again on
    # this host, in one step) a lock of a worker of this host that is dead.
    queue = DirQueue(qdir)
    jobid, lock = _held_job(queue, OTHER_HOST)
    assert queue.pickup_queued_job() is None
    assert judged == [jobid]
    me = this_process()
    fresh = Path(queue.dir) / "tmp" / "replacing"
    fresh.write_bytes(
        format_lock(socket.gethostname(), dead_pid, True, boot=me.boot, pidns=me.pidns)
    )
    os.rename(fresh, lock)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()


def test_a_lock_judged_stale_is_not_put_off(
    qdir: Path, judged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a lock judged alive is put off: a quiet one past its lifetime, left alone
    # within the random grace, is judged again at every pickup, as before.
    monkeypatch.setattr(_lock.random, "uniform", lambda low, high: high)
    queue = DirQueue(qdir, active_file_lifetime=600)
    jobid, lock = _held_job(queue, OTHER_HOST)
    old = filesystem_now(queue.config) - 601
    os.utime(lock, (old, old))
    for _ in range(3):
        assert queue.pickup_queued_job() is None
    assert judged == [jobid] * 3


def test_stale_not_before_is_the_lock_mtime_plus_the_lifetime_for_another_host_only(
    qdir: Path,
) -> None:
    queue = DirQueue(qdir)
    _, lock = _held_job(queue, OTHER_HOST)
    st = os.lstat(lock)
    config = queue.config
    alive = dirqueue._judge.judge(config, st, OTHER_HOST)
    assert _lock.stale_not_before(config, st, alive) == st.st_mtime + 600
    mine = format_lock(socket.gethostname(), os.getpid(), True)
    here = dirqueue._judge.judge(config, st, mine)
    assert isinstance(here, Judgement)
    assert _lock.stale_not_before(config, st, here) == 0.0


# -- on a network filesystem: locks another host made, met on jobs seen waiting -------


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> None:
    """As over NFS: the index knows inotify misses other hosts' changes (it sees this
    host's), and re-reads queue/ only when the test says so."""
    notifier = dirqueue._index.open_notifier()
    if notifier is None:
        pytest.skip("no inotify here: the index cannot see this host's locks arrive")
    notifier.close()
    monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)
    monkeypatch.setattr(dirqueue._index, "SCAN_INTERVAL", 3600.0)


def _lock_from_elsewhere(queue: DirQueue, jobid: str, content: bytes) -> None:
    """Put ``content`` at active/JOBID as another host would: this host's inotify never
    tells of it (the events the test's own writes made are dropped unread)."""
    fresh = Path(queue.dir) / "tmp" / "from-elsewhere"
    fresh.write_bytes(content)
    os.rename(fresh, Path(queue.dir) / "active" / jobid)
    notifier = queue._picker.index.notifier()
    assert notifier is not None
    notifier.events()


def _two_jobs_one_taken(queue: DirQueue) -> tuple[Job, str]:
    first = queue.enqueue_string("first")
    second = queue.enqueue_string("second")
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == first
    return job, second


def test_another_hosts_young_lock_on_a_job_seen_waiting_is_not_read(
    qdir: Path, judged: list[str], network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Young, and not made here: nothing in it could make it breakable before its mtime
    # plus the lifetime, so it is not read (an open and a read over NFS) until then.
    queue = DirQueue(qdir)
    job, second = _two_jobs_one_taken(queue)
    _lock_from_elsewhere(queue, second, OTHER_HOST)
    for _ in range(3):
        assert queue.pickup_queued_job() is None
    assert judged == []
    real_now = filesystem_now
    monkeypatch.setattr(
        dirqueue._index, "filesystem_now", lambda config: real_now(config) + 601.0
    )
    assert queue.pickup_queued_job() is None
    assert judged == [second]
    job.finish()


def test_a_lock_that_won_the_link_against_ours_is_not_read_when_made_elsewhere(
    qdir: Path, judged: list[str], network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another host links its lock between our look in active/ and our link.
    queue = DirQueue(qdir)
    job, second = _two_jobs_one_taken(queue)
    real_link = _lock._link_lock

    def beaten(config: object, tmp_lock: str, held: _lock.HeldLock) -> bool:
        _lock_from_elsewhere(queue, held.jobid, OTHER_HOST)
        return real_link(config, tmp_lock, held)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "_link_lock", beaten)
    assert queue.pickup_queued_job() is None
    monkeypatch.setattr(_lock, "_link_lock", real_link)
    for _ in range(3):
        assert queue.pickup_queued_job() is None
    assert judged == []
    assert sorted(os.listdir(Path(qdir) / "active")) == sorted([job.jobid, second])
    job.finish()


def test_a_dead_local_workers_lock_made_just_before_our_look_is_broken_at_once(
    qdir: Path, judged: list[str], network: None, dead_pid: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Made on this host after the pickup read the events, before it looked in active/:
    # the event is read before deciding the lock came from elsewhere, so it is judged,
    # and its owner found dead.
    queue = DirQueue(qdir)
    job, second = _two_jobs_one_taken(queue)
    me = this_process()
    dead = format_lock(socket.gethostname(), dead_pid, True, boot=me.boot, pidns=me.pidns)
    real_look = _lock._look_first

    def locked_just_before(config: object, jobid: str, *args: object) -> object:
        if jobid == second and not judged:
            fresh = Path(queue.dir) / "tmp" / "dying"
            fresh.write_bytes(dead)
            os.rename(fresh, Path(queue.dir) / "active" / jobid)
        return real_look(config, jobid, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "_look_first", locked_just_before)
    taken = queue.pickup_queued_job()
    assert taken is not None
    assert taken.jobid == second
    assert judged == [second]
    taken.finish()
    job.finish()
