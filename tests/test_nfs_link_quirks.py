"""Over NFS a link() can report failure although it succeeded (a lost reply to a retried
request). Enqueue and pickup must trust the inode, not the error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from _helpers import files_under, lock_without_owner_line
from dirqueue import DirQueue

REAL_LINK = os.link


def link_then_fail(err: int) -> Any:
    def link(src: str, dst: str, **kwargs: Any) -> None:
        REAL_LINK(src, dst, **kwargs)
        raise OSError(err, os.strerror(err), src, None, dst)

    return link


@pytest.mark.parametrize("err", [errno.EEXIST, errno.EIO])
def test_enqueue_keeps_a_link_that_reported_failure_but_happened(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr("dirqueue._fs.os.link", link_then_fail(err))
    jobid = queue.enqueue_string("linked after all", {"k": "v"})
    monkeypatch.undo()
    # No rename after a phantom collision: the first name was kept, once.
    assert f".{os.getpid()}." not in jobid
    assert [job.jobid for job in queue.jobs()] == [jobid]
    assert os.listdir(qdir / "tmp") == []
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
    assert os.listdir(qdir / "tmp") == []
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
