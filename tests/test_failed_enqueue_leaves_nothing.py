"""An enqueue that fails, at any step, leaves no file behind and no job in the queue."""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import files_under
from dirqueue import DirQueue, DirQueueError, QueueIOError
from dirqueue import _fs as fs


@pytest.fixture
def busy_queue(qdir: Path) -> DirQueue:
    """A queue that already holds one job, so its directories exist."""
    queue = DirQueue(qdir)
    queue.enqueue_string("already here")
    return queue


def assert_unchanged(queue: DirQueue, before: list[str]) -> None:
    assert files_under(queue.dir) == before
    assert [job.get_data() for job in queue.jobs()] == [b"already here"]


def test_missing_source_file(busy_queue: DirQueue, tmp_path: Path) -> None:
    before = files_under(busy_queue.dir)
    missing = tmp_path / "no-such-file"
    with pytest.raises(QueueIOError) as info:
        busy_queue.enqueue_file(missing)
    err = info.value
    assert isinstance(err, DirQueueError)
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOENT
    assert err.filename == str(missing)
    assert str(missing) in str(err)
    assert_unchanged(busy_queue, before)


def test_missing_source_file_in_a_queue_never_used(qdir: Path, tmp_path: Path) -> None:
    with pytest.raises(QueueIOError):
        DirQueue(qdir).enqueue_file(tmp_path / "no-such-file")
    assert not qdir.exists() or files_under(qdir) == []


class Boom(Exception):
    pass


def test_callable_that_raises_midway(busy_queue: DirQueue) -> None:
    before = files_under(busy_queue.dir)
    calls = 0

    def source() -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 50:
            raise Boom("source broke")
        return b"x" * 100_000  # 4.9 MB written before the failure.

    with pytest.raises(Boom, match="source broke"):
        busy_queue.enqueue_sub(source)
    assert_unchanged(busy_queue, before)


def test_generator_that_yields_a_non_bytes_object(busy_queue: DirQueue) -> None:
    before = files_under(busy_queue.dir)

    def chunks() -> Iterator[object]:
        yield b"fine"
        yield "also fine"
        yield 42

    with pytest.raises(TypeError, match="int"):
        busy_queue.enqueue_iter(chunks())  # type: ignore[arg-type]
    assert_unchanged(busy_queue, before)


def test_callable_that_returns_a_non_bytes_object(busy_queue: DirQueue) -> None:
    before = files_under(busy_queue.dir)
    results: Iterator[object] = iter([b"ok", ["not", "bytes"], None])
    with pytest.raises(TypeError, match="list"):
        busy_queue.enqueue_sub(lambda: next(results))  # type: ignore[arg-type,return-value]
    assert_unchanged(busy_queue, before)


def test_file_object_whose_read_fails(busy_queue: DirQueue) -> None:
    before = files_under(busy_queue.dir)

    class FailingReader(io.RawIOBase):
        def __init__(self) -> None:
            self.reads = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 3:
                raise OSError(errno.EIO, "disk on fire")
            return b"y" * max(size, 1)

    with pytest.raises(QueueIOError) as info:
        busy_queue.enqueue_fh(FailingReader())  # type: ignore[arg-type]
    assert info.value.errno == errno.EIO
    assert_unchanged(busy_queue, before)


def test_interrupt_while_writing(busy_queue: DirQueue) -> None:
    before = files_under(busy_queue.dir)

    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        busy_queue.enqueue_iter(chunks())
    assert_unchanged(busy_queue, before)


def test_failure_writing_the_control_file(
    busy_queue: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data file is already linked into data/ when this fails: it must go too."""
    before = files_under(busy_queue.dir)
    real_write_all = fs.write_all
    writes = 0

    def write_all_then_fail(fd: int, data: bytes) -> None:
        nonlocal writes
        writes += 1
        if data.startswith(b"QDFN: "):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(fs, "write_all", write_all_then_fail)
    with pytest.raises(QueueIOError) as info:
        busy_queue.enqueue_string("data")
    assert info.value.errno == errno.ENOSPC
    assert writes == 2
    assert_unchanged(busy_queue, before)


@pytest.mark.parametrize("way", ["rename", "link"])
def test_failure_linking_into_queue(
    busy_queue: DirQueue, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    # The control file (tmp/NAME.ctrl) goes into queue/ by a rename that never replaces
    # on a local filesystem, by a verified link where there is none (NFS): each failing.
    before = files_under(busy_queue.dir)
    real_link = fs.link_verified

    def link_verified(src: str, target: str, src_stat: object = None, **kw: Any) -> str:
        if src.endswith(".ctrl"):
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real_link(src, target, src_stat, **kw)  # type: ignore[arg-type]

    def rename_noreplace(src: str, dst: str, **kw: Any) -> bool | None:
        if way == "link":
            return None  # As where renameat2 has no RENAME_NOREPLACE.
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    monkeypatch.setattr(fs, "link_verified", link_verified)
    monkeypatch.setattr(fs, "rename_noreplace", rename_noreplace)
    with pytest.raises(QueueIOError) as info:
        busy_queue.enqueue_string("data")
    assert info.value.errno == errno.EACCES
    assert "linking" in str(info.value)
    assert_unchanged(busy_queue, before)


def test_the_queue_works_normally_after_failures(busy_queue: DirQueue) -> None:
    with pytest.raises(TypeError):
        busy_queue.enqueue_iter([b"a", 1.5])  # type: ignore[list-item]
    jobid = busy_queue.enqueue_string("after")
    assert sorted(job.get_data() for job in busy_queue.jobs()) == [b"after", b"already here"]
    job = busy_queue.pickup_queued_job(jobid)
    assert job is not None
    assert job.get_data() == b"after"
    job.finish()
