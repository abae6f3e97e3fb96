"""What a claim on a job costs over NFS, where each look that a client's cache cannot
answer is a call to the server: the lock written for a claim is not looked at again
between its write and its link, and it stays ours (or is taken back) all the same.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

import dirqueue._fs
from _helpers import files_under
from dirqueue import DirQueue, _claims, _lock


@pytest.fixture(autouse=True)
def _as_over_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Over NFS every claim writes a lock file of its own in tmp/ and links it.
    monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)


@pytest.mark.timeout(30)
def test_a_claims_lock_is_not_stated_after_it_is_written(
    queue: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An fstat after the write is a GETATTR over NFS (the write made the cached
    # attributes stale); before it, the attributes the create brought back answer it.
    queue.enqueue_string("x")
    calls: list[tuple[str, int]] = []
    real_write, real_fstat, real_close = dirqueue._fs.write_all, os.fstat, os.close

    def write_all(fd: int, data: Any) -> None:
        calls.append(("write", fd))
        real_write(fd, data)

    def fstat(fd: int) -> os.stat_result:
        calls.append(("fstat", fd))
        return real_fstat(fd)

    def close(fd: int) -> None:
        calls.append(("close", fd))
        real_close(fd)

    monkeypatch.setattr(dirqueue._fs, "write_all", write_all)
    monkeypatch.setattr(os, "fstat", fstat)
    monkeypatch.setattr(os, "close", close)
    job = queue.pickup_queued_job()
    monkeypatch.undo()
    assert job is not None
    (written,) = [fd for what, fd in calls if what == "write"]
    # Between the write and the close (after which the number may name another file).
    after = calls[calls.index(("write", written)) :]
    assert ("fstat", written) not in after[: after.index(("close", written))]
    job.finish()


@pytest.mark.timeout(30)
def test_a_claim_interrupted_after_its_link_takes_its_lock_back(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock has landed, but its mtime is not read yet when the claim is
    # interrupted: it is still known as ours, and removed.
    jobid = queue.enqueue_string("x")
    real_link = _lock._link_lock

    def interrupted(config: Any, tmp_lock: str, held: _lock.HeldLock) -> bool:
        def link(tmp_fd: int) -> None:
            _lock._in_active(config, lambda active_fd: os.link(
                tmp_lock, held.jobid, src_dir_fd=tmp_fd, dst_dir_fd=active_fd))

        _lock._in_tmp(config, link)
        assert (qdir / "active" / held.jobid).exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(_lock, "_link_lock", interrupted)
    with pytest.raises(KeyboardInterrupt):
        queue.pickup_queued_job()
    monkeypatch.setattr(_lock, "_link_lock", real_link)
    assert files_under(qdir / "active") == []
    assert files_under(qdir / "tmp") == []
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()


def _lose_the_link_to(
    qdir: Path, losing: set[str], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Have another worker's lock land first on each job in ``losing`` (between our
    look in active/ and our link); returns the lock files this process writes."""
    written: list[str] = []
    real_link, real_written = _lock._link_lock, _lock._written_lock

    def link(config: Any, tmp_lock: str, held: _lock.HeldLock) -> bool:
        if held.jobid in losing:
            (qdir / "active" / held.jobid).write_bytes(b"otherhost\n4242\n")
        return real_link(config, tmp_lock, held)

    def write(config: Any, jobid: str, fd: int, pid: int) -> _lock.HeldLock:
        written.append(jobid)
        return real_written(config, jobid, fd, pid)

    monkeypatch.setattr(_lock, "_link_lock", link)
    monkeypatch.setattr(_lock, "_written_lock", write)
    return written


@pytest.mark.timeout(30)
def test_a_lock_file_that_lost_its_link_serves_the_next_claim(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two claims lost, the third won: one lock file written, not three.
    first, second, third = (queue.enqueue_string(f"job {n}") for n in range(3))
    written = _lose_the_link_to(qdir, {first, second}, monkeypatch)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == third
    assert written == [first]
    assert files_under(qdir / "tmp") == []
    mine = queue.config.hostname.encode() + b"\n"
    assert (qdir / "active" / third).read_bytes().startswith(mine)
    job.finish()


@pytest.mark.timeout(30)
def test_a_spare_lock_file_is_not_left_behind(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every claim lost: the pickup finds nothing, and leaves no lock file in tmp/.
    jobs = {queue.enqueue_string(f"job {n}") for n in range(2)}
    written = _lose_the_link_to(qdir, jobs, monkeypatch)
    assert queue.pickup_queued_job() is None
    assert len(written) == 1
    assert files_under(qdir / "tmp") == []


@pytest.mark.timeout(30)
def test_a_spare_lock_file_kept_too_long_is_not_used(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its mtime would make the lock linked look that much older: a new one is written.
    first, second = (queue.enqueue_string(f"job {n}") for n in range(2))
    written = _lose_the_link_to(qdir, {first}, monkeypatch)
    real_monotonic = time.monotonic
    later = [0.0]
    monkeypatch.setattr(_claims.time, "monotonic", lambda: real_monotonic() + later[0])
    real_look = _lock._look_first

    def look(config: Any, jobid: str, *args: Any) -> Any:
        if jobid == second:
            later[0] = _claims.SPARE_FOR
        return real_look(config, jobid, *args)

    monkeypatch.setattr(_lock, "_look_first", look)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == second
    assert written == [first, second]
    assert files_under(qdir / "tmp") == []
    job.finish()


@pytest.mark.timeout(30)
def test_a_spare_serves_for_a_while_from_its_write_however_often_it_is_kept(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kept again after each claim it lost, it still ages from when it was written.
    first, second, third = (queue.enqueue_string(f"job {n}") for n in range(3))
    written = _lose_the_link_to(qdir, {first, second}, monkeypatch)
    real_monotonic = time.monotonic
    later = [0.0]
    monkeypatch.setattr(_claims.time, "monotonic", lambda: real_monotonic() + later[0])
    real_look = _lock._look_first
    step = _claims.SPARE_FOR * 0.6

    def look(config: Any, jobid: str, *args: Any) -> Any:
        later[0] = {first: 0.0, second: step, third: 2 * step}[jobid]
        return real_look(config, jobid, *args)

    monkeypatch.setattr(_lock, "_look_first", look)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == third
    assert written == [first, third]
    assert files_under(qdir / "tmp") == []
    job.finish()
