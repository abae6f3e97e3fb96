"""Durability: the fsync order of an enqueue, and the batch API's cheaper fsyncs.

Power loss cannot be simulated in a test, so these tests check the order of the
calls that make an enqueue durable (each step is on disk before the next makes it
reachable; see the comment above ``DirQueue._enqueue_all``), and count them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dirqueue import DirQueue, DirQueueError, InvalidMetadataError, _fs
from durability_checks import assert_no_half_jobs, assert_no_orphans

pytestmark = pytest.mark.timeout(30)


@contextmanager
def recording(q: DirQueue) -> Iterator[list[tuple[str, str]]]:
    """Record fsync/link/unlink calls as ``(call, path relative to the queue)``."""
    events: list[tuple[str, str]] = []
    real = {name: getattr(os, name) for name in ("fsync", "link", "unlink", "open")}
    real_syncfs = _fs.syncfs
    real_rename = _fs.rename_noreplace
    fd_paths: dict[int, str] = {}
    root = os.path.realpath(q.dir)

    def rel(path: str) -> str:
        path = os.path.realpath(path)
        return "." if path == root else os.path.relpath(path, root)

    def fd_path(fd: int) -> str:
        # The kernel's name for it first: directories opened in one openat2() call do
        # not go through os.open, and their numbers are reused.
        try:
            return rel(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return fd_paths.get(fd, "?")

    def where(name: Any, dir_fd: int | None) -> str:
        base = fd_path(dir_fd) if dir_fd is not None else ""
        return os.path.join(base, name) if base else str(name)

    def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd: int = real["open"](path, flags, mode, dir_fd=dir_fd)
        fd_paths[fd] = rel(where(path, dir_fd)) if dir_fd is None else os.path.normpath(
            where(path, dir_fd))
        if flags & os.O_CREAT:
            events.append(("create", fd_paths[fd]))
        return fd

    def fsync(fd: int) -> None:
        events.append(("fsync", fd_path(fd)))
        real["fsync"](fd)

    def syncfs(fd: int) -> None:
        events.append(("syncfs", fd_path(fd)))
        real_syncfs(fd)

    def link(src: str, dst: str, **kw: Any) -> None:
        real["link"](src, dst, **kw)
        target = os.path.normpath(where(dst, kw.get("dst_dir_fd")))
        events.append(("link", target if kw.get("dst_dir_fd") is not None else rel(target)))

    def rename_noreplace(src: str, dst: str, **kw: Any) -> bool | None:
        done = real_rename(src, dst, **kw)
        if done:
            target = os.path.normpath(where(dst, kw.get("dst_dir_fd")))
            events.append(("rename", target))
        return done

    def unlink(path: str, **kw: Any) -> None:
        real["unlink"](path, **kw)
        dir_fd = kw.get("dir_fd")
        events.append(("unlink", rel(path) if dir_fd is None else where(path, dir_fd)))

    patched: dict[str, Callable[..., Any]] = {
        "fsync": fsync, "link": link, "unlink": unlink, "open": open_,
    }
    try:
        for name, fn in patched.items():
            setattr(os, name, fn)
        _fs.syncfs = syncfs  # type: ignore[assignment]
        _fs.rename_noreplace = rename_noreplace  # type: ignore[assignment]
        yield events
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)
        _fs.syncfs = real_syncfs  # type: ignore[assignment]
        _fs.rename_noreplace = real_rename  # type: ignore[assignment]


@pytest.fixture(params=["rename", "link"])
def way_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a control file goes into queue/: a rename that never replaces (a local
    filesystem), a link (NFS, or a kernel without RENAME_NOREPLACE)."""
    if request.param == "link":
        monkeypatch.setattr(_fs, "rename_noreplace", lambda src, dst, **kw: None)
    return str(request.param)


def _data_rel(q: DirQueue, jobid: str) -> str:
    return os.path.relpath(q.layout.data_path(jobid), q.dir)


def test_enqueue_fsyncs_data_control_and_directories_before_unlinking_tmp(
    tmp_path: Path, way_in: str
) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("warm up: the directories exist")
    with recording(q) as events:
        jobid = q.enqueue_string("payload")
    data, data_dir = _data_rel(q, jobid), os.path.dirname(_data_rel(q, jobid))
    expected = [
        ("create", data),                    # 1. the data, made in data/ (unread yet)
        ("create", f"tmp/{jobid}.ctrl"),    # 2. the control file
        ("fsync", data),                     # 3. the data's bytes,
        ("fsync", f"tmp/{jobid}.ctrl"),     #    the control file's bytes,
        ("fsync", data_dir),                 #    and the data file's name, on disk
        (way_in, f"queue/{jobid}"),          # 4. visible (renamed: the tmp name gone)
        ("fsync", "queue"),                  # 5. durable; only now...
    ]
    if way_in == "link":
        expected.append(("unlink", f"tmp/{jobid}.ctrl"))  # 6. ...is the tmp name removed
    assert [(call, path.replace(os.sep, "/")) for call, path in events] == expected


def test_a_new_queue_fsyncs_the_parents_of_the_directories_it_made(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with recording(q) as events:
        jobid = q.enqueue_string("payload")
    fsynced = [path for call, path in events if call == "fsync"]
    data_dir = os.path.dirname(_data_rel(q, jobid))
    # queue/, data/ ... are named in the queue directory; data/C1 in data/, C2 in C1.
    for needed in (".", "data", os.path.dirname(data_dir), data_dir, "queue"):
        assert needed in fsynced, f"{needed} not fsynced: {fsynced}"
    assert fsynced.index(data_dir) < fsynced.index("queue")


def test_not_durable_enqueue_makes_no_fsync(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", durable=False)
    with recording(q) as events:
        q.enqueue_string("payload")
        q.enqueue_many(["a", "b"])
    assert [e for e in events if e[0] == "fsync"] == []


@pytest.fixture(params=["syncfs", "fsyncs"])
def whole_fs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways a big batch is made durable: one syncfs where it covers the queue's
    filesystem, an fsync per file elsewhere."""
    if request.param == "fsyncs":
        monkeypatch.setattr(_fs, "syncfs_covers", lambda path: False)
        return False
    if not _fs.syncfs_covers(str(request.getfixturevalue("tmp_path"))):
        pytest.skip("syncfs does not cover this filesystem (or the kernel is before 5.8)")
    return True


def test_batch_fsyncs_directories_once_for_all_jobs(
    tmp_path: Path, whole_fs: bool, way_in: str
) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("warm up")
    n = 20
    with recording(q) as single:
        for i in range(n):
            q.enqueue_string(f"job {i}")
    with recording(q) as batch:
        ids = q.enqueue_many([f"job {i}" for i in range(n)])
    def dir_fsyncs(events: list[tuple[str, str]]) -> int:
        return sum(1 for call, path in events if call == "fsync" and (Path(q.dir) / path).is_dir())
    def file_fsyncs(events: list[tuple[str, str]]) -> int:
        return sum(1 for call, path in events
                   if call == "fsync" and not (Path(q.dir) / path).is_dir())
    assert dir_fsyncs(single) == 2 * n
    assert file_fsyncs(single) == 2 * n
    ctrl_links = [i for i, (call, path) in enumerate(batch)
                  if call == way_in and path.startswith("queue")]
    assert len(ctrl_links) == n
    queue_sync = batch.index(("fsync", "queue"))
    first_ctrl_link, last_ctrl_link = ctrl_links[0], ctrl_links[-1]
    if whole_fs:
        # One syncfs of the filesystem for every file and data file name, then queue/.
        syncs = [i for i, (call, _) in enumerate(batch) if call == "syncfs"]
        assert len(syncs) == 1
        assert dir_fsyncs(batch) == 1
        assert file_fsyncs(batch) == 0
        last_data_link = max(i for i, (call, path) in enumerate(batch)
                             if call == "create" and path.startswith("data"))
        assert last_data_link < syncs[0] < first_ctrl_link <= last_ctrl_link < queue_sync
    else:
        assert dir_fsyncs(batch) == 2  # One data directory (one producer's tag), one queue/.
        assert file_fsyncs(batch) == 2 * n
        # And the order holds for the batch: every file and data file name is durable
        # before any control file is linked, and every one is linked before queue/'s
        # fsync.
        data_dir_sync = next(i for i, (call, path) in enumerate(batch)
                             if call == "fsync" and path.startswith("data")
                             and (Path(q.dir) / path).is_dir())
        last_file_sync = max(i for i, (call, path) in enumerate(batch)
                             if call == "fsync" and not (Path(q.dir) / path).is_dir())
        assert last_file_sync < data_dir_sync < first_ctrl_link <= last_ctrl_link < queue_sync
    assert len(ids) == len(set(ids)) == n


def test_enqueue_many_keeps_order_data_and_metadata(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = q.enqueue_many(
        ["text", b"\x00bytes", ("own meta", {"k": "own"}), ("no meta", None)],
        metadata={"k": "shared"},
        priority=20,
    )
    assert ids == sorted(ids)  # Submission order is pickup order.
    got = []
    while (job := q.pickup_queued_job()) is not None:
        got.append((job.jobid, job.get_data(), job.metadata, job.priority))
        job.finish()
    assert got == [
        (ids[0], b"text", {"k": "shared"}, 20),
        (ids[1], b"\x00bytes", {"k": "shared"}, 20),
        (ids[2], b"own meta", {"k": "own"}, 20),
        (ids[3], b"no meta", {}, 20),
    ]
    assert q.enqueue_many([]) == []
    assert_no_orphans(q)


def test_enqueue_many_refuses_the_whole_batch_before_writing(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("there before")
    with pytest.raises(InvalidMetadataError):
        q.enqueue_many(["a", ("b", {"bad:name": "x"}), "c"])
    with pytest.raises(TypeError):
        q.enqueue_many(["a", 42])  # type: ignore[list-item]
    assert list(assert_no_half_jobs(q).values()) == [b"there before"]
    assert_no_orphans(q)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_big_batch_keeps_few_files_open_and_leaks_none(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fs, "syncfs_covers", lambda path: False)  # an fsync per file
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("warm up")
    before = _open_fds()
    most = [0]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        most[0] = max(most[0], _open_fds() - before)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ids = q.enqueue_many([f"job {i}" for i in range(150)])
    assert len(ids) == 150
    assert most[0] <= 2 * 64 + 2  # Two files per job, 64 jobs at a time, plus a dir.
    assert _open_fds() == before
    # A failing fsync half-way through the second chunk: nothing enqueued, nothing open.
    calls = [0]

    def failing_fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 140:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(DirQueueError, match="fsync"):
        q.enqueue_many([f"doomed {i}" for i in range(150)])
    monkeypatch.undo()
    assert _open_fds() == before
    assert len(assert_no_half_jobs(q)) == 151
    assert_no_orphans(q)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_big_batch_by_syncfs_keeps_few_files_open_and_fails_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("warm up")
    before = _open_fds()
    most = [0]
    monkeypatch.setattr(_fs, "syncfs_covers", lambda path: True)

    def syncfs(fd: int) -> None:
        most[0] = _open_fds() - before
        os.sync()  # what it stands for, where it is not real

    monkeypatch.setattr(_fs, "syncfs", syncfs)
    ids = q.enqueue_many([f"job {i}" for i in range(150)])
    assert len(ids) == 150
    assert most[0] == 1  # Every job's files closed; only the descriptor it syncs through.
    assert _open_fds() == before

    def failing_syncfs(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_fs, "syncfs", failing_syncfs)
    with pytest.raises(DirQueueError, match="fsync"):
        q.enqueue_many([f"doomed {i}" for i in range(150)])
    monkeypatch.undo()
    assert _open_fds() == before
    assert len(assert_no_half_jobs(q)) == 151
    assert_no_orphans(q)
