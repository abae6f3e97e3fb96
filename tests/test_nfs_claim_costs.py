"""What a claim on a job costs over NFS, where each look that a client's cache cannot
answer is a call to the server: the lock written for a claim is not looked at again
between its write and its link, and it stays ours (or is taken back) all the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import dirqueue._fs
from _helpers import files_under
from dirqueue import DirQueue, _lock


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
