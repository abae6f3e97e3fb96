"""Claims on a stale view: on a network filesystem a dequeuer looks at a job's control
file in a way that asks the server (an open) before it writes a lock on it.

Over NFS an lstat is answered from the client's attribute cache, seconds old: a job
another host finished meanwhile still looks queued, and a lock was written, linked and
taken back on it before its control file was found gone. Here the stale cache is
played by an ``os.path.lexists`` that still sees the control file, on a queue the
picker takes for a network one (no inotify: as on NFS, nothing says the job left).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import dirqueue._fs
import dirqueue._index
from dirqueue import DirQueue, _lock


def _queue_seen_from_another_host(qdir: Path, monkeypatch: pytest.MonkeyPatch) -> DirQueue:
    monkeypatch.setattr(dirqueue._index, "open_notifier", lambda: None)
    monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)
    return DirQueue(qdir)


def _locks_written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    written: list[int] = []
    real = _lock.write_lock

    def counting(config: object, fd: int, pid: int) -> os.stat_result:
        written.append(fd)
        return real(config, fd, pid)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "write_lock", counting)
    return written


def _stale_lexists(gone: str) -> Callable[[str], bool]:
    real = os.path.lexists
    return lambda path: True if str(path) == gone else real(path)


def test_a_job_finished_elsewhere_is_not_claimed_through_a_stale_cache(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _queue_seen_from_another_host(qdir, monkeypatch)
    queue.enqueue_string("work", {})
    (jobid,) = os.listdir(qdir / "queue")
    queue._picker.index.refresh()  # Listed: waiting, in this dequeuer's view.
    # Finished by a worker on another host; this host's cache still sees it queued.
    control = qdir / "queue" / jobid
    control.unlink()
    (qdir / "data" / jobid).unlink(missing_ok=True)
    monkeypatch.setattr(_lock.os.path, "lexists", _stale_lexists(str(control)))
    written = _locks_written(monkeypatch)
    assert queue.pickup_queued_job() is None
    assert written == []
    assert os.listdir(qdir / "active") == []


def test_a_queued_job_is_still_taken_on_a_network_filesystem(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _queue_seen_from_another_host(qdir, monkeypatch)
    queue.enqueue_string("work", {})
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"work"
    job.finish()


def test_a_local_queue_is_looked_at_by_lstat_alone(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No open of the control file before the lock where no other host can write: a
    # local pickup's system calls stay as they were.
    queue = DirQueue(qdir)
    queue.enqueue_string("work", {})
    opened: list[str] = []
    real = _lock._gone_on_the_server

    def counting(path: str) -> bool:
        opened.append(path)
        return real(path)

    monkeypatch.setattr(_lock, "_gone_on_the_server", counting)
    monkeypatch.setattr(dirqueue._index, "open_notifier", lambda: None)
    job = queue.pickup_queued_job()
    assert job is not None
    job.finish()
    assert opened == []
