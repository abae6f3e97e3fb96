"""Over NFS a link() can report failure although it succeeded (a lost reply to a retried
request). Enqueue and pickup must trust the inode, not the error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import dirqueue._fs
from _helpers import files_under, lock_without_owner_line
from dirqueue import DirQueue
from dirqueue.failed import FailedStore

REAL_LINK = os.link


@pytest.fixture(autouse=True)
def _as_over_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    # These link() answers only come from an NFS client: the queue must believe it is
    # on one (where no inotify vouches for what the index lists, and no link() answer
    # is trusted over the inode).
    monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)


def link_then_fail(err: int) -> Any:
    def link(src: str, dst: str, **kwargs: Any) -> None:
        REAL_LINK(src, dst, **kwargs)
        raise OSError(err, os.strerror(err), src, None, dst)

    return link


@pytest.mark.parametrize("err", [errno.EEXIST, errno.EIO])
def test_enqueue_keeps_a_link_that_reported_failure_but_happened(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    calls: list[str] = []
    failing = link_then_fail(err)

    def link(src: str, dst: str, **kwargs: Any) -> None:
        calls.append(src)
        failing(src, dst, **kwargs)

    monkeypatch.setattr("dirqueue._fs.os.link", link)
    jobid = queue.enqueue_string("linked after all", {"k": "v"})
    monkeypatch.undo()
    # Over NFS the control file is linked (no rename: a lost reply could hide one).
    assert calls == [f"{jobid}.ctrl"]
    # No rename after a phantom collision: the first name was kept, once.
    assert f".{os.getpid()}." not in jobid
    assert [job.jobid for job in queue.jobs()] == [jobid]
    assert files_under(qdir / "tmp") == []
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"linked after all"
    job.finish()
    assert files_under(qdir) == []


@pytest.mark.parametrize("err", [errno.EEXIST, errno.EIO])
def test_pickup_keeps_a_lock_link_that_reported_failure_but_happened(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    jobid = queue.enqueue_string("x")
    monkeypatch.setattr("dirqueue._lock.os.link", link_then_fail(err))
    job = queue.pickup_queued_job()
    monkeypatch.undo()
    assert job is not None
    assert job.jobid == jobid
    assert lock_without_owner_line((qdir / "active" / jobid).read_text()) == (
        f"{queue.hostname}\n{os.getpid()}\nheartbeat\n"
    )
    assert files_under(qdir / "tmp") == []
    job.finish()
    assert files_under(qdir) == []


def test_a_real_link_failure_during_enqueue_is_reported_and_cleaned_up(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def link(src: str, dst: str, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error", src, None, dst)

    queue.enqueue_string("before")
    before = files_under(qdir)
    monkeypatch.setattr("dirqueue._fs.os.link", link)
    with pytest.raises(OSError, match="Input/output error") as info:
        queue.enqueue_string("lost")
    monkeypatch.undo()
    assert info.value.errno == errno.EIO
    assert files_under(qdir) == before


@pytest.mark.parametrize("err", [errno.EEXIST, errno.EIO])
def test_a_stale_lock_breaker_keeps_a_token_link_that_reported_failure(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    queue = DirQueue(qdir, active_file_lifetime=1)
    jobid = queue.enqueue_string("abandoned")
    lock = qdir / "active" / jobid
    lock.write_text("far-away-host\n4242\nheartbeat\n")  # Its owner went quiet...
    os.utime(lock, (1.0, 1.0))  # ...long ago.
    # Every link (the breaker's token, then the new lock) reports failure, but happens.
    monkeypatch.setattr("dirqueue._lock.os.link", link_then_fail(err))
    job = queue.pickup_queued_job()
    monkeypatch.undo()
    assert job is not None
    assert job.jobid == jobid
    assert files_under(qdir / "tmp") == []  # The token was ours, and was dropped.
    job.finish()
    assert files_under(qdir) == []


@pytest.mark.parametrize("err", [errno.EEXIST, errno.EIO])
def test_requeue_keeps_a_link_that_reported_failure_but_happened(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    queue.enqueue_string("failed once", {"k": "v"})
    job = queue.pickup_queued_job()
    assert job is not None
    store = FailedStore(queue)
    store.add(job, "boom", attempts=1)
    monkeypatch.setattr("dirqueue._fs.os.link", link_then_fail(err))
    requeued = store.requeue(job.jobid)
    monkeypatch.undo()
    assert f".{os.getpid()}." not in requeued  # No rename after a phantom collision.
    assert [j.jobid for j in queue.jobs()] == [requeued]
    assert store.count() == 0
    again = queue.pickup_queued_job()
    assert again is not None
    assert again.get_data() == b"failed once"
    again.finish()
    assert files_under(qdir) == []
