"""Two NFS quirks every reader of a queue must take in its stride (issue 12).

- ESTALE: over NFS a file (or directory) another host removed while we looked at it
  answers ESTALE rather than ENOENT. Either means "someone else got there first":
  listings skip it, repair moves on, nothing crashes.
- ``.nfsXXXX``: an NFS client renames a file that is unlinked while still open to a
  hidden ``.nfs`` name until it is closed ("silly rename"). They come and go on their
  own: no listing shows them, and repair neither reports nor removes them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dirqueue._fs
from dirqueue import DirQueue
from dirqueue.failed import FailedStore
from dirqueue.stats import list_jobs, queue_stats

REAL = {name: getattr(os, name) for name in ("lstat", "stat", "open", "listdir", "scandir")}


def _stale_for(victim: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, any look at a path or name containing ``victim`` fails with ESTALE,
    as it does for a file another NFS client removed under us."""

    def wrap(name: str) -> Callable[..., Any]:
        real = REAL[name]

        def stale(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, str | os.PathLike) and victim in os.fspath(path):
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), os.fspath(path))
            return real(path, *args, **kwargs)

        return stale

    for name in REAL:
        monkeypatch.setattr(os, name, wrap(name))
    # As over NFS: no inotify event tells of another host's changes, so the index does
    # not vouch for what it lists.
    monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)


def _queue_with_a_victim(qdir: Path) -> tuple[DirQueue, str, str]:
    queue = DirQueue(qdir)
    keep = queue.enqueue_string("survivor")
    victim = queue.enqueue_string("removed by another host", priority=1)
    # And one failed job, whose files the failed store reads.
    failing = queue.enqueue_string("failed", priority=2)
    job = queue.pickup_queued_job(failing)
    assert job is not None
    FailedStore(queue).add(job, "boom", attempts=1)
    return queue, keep, victim


def test_every_listing_skips_a_job_gone_stale(qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue, keep, victim = _queue_with_a_victim(qdir)
    _stale_for(victim, monkeypatch)
    assert [job.jobid for job in queue.jobs()] == [keep]
    assert [info.job.jobid for info in list_jobs(queue)] == [keep]
    assert queue_stats(queue).queued == 1
    assert len(list(FailedStore(queue).jobs())) == 1
    report = queue.fsck()
    assert not any(victim in finding.path for finding in report.findings)
    queue.repair(min_age=0)


def test_a_pickup_skips_a_job_gone_stale(qdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue, keep, victim = _queue_with_a_victim(qdir)
    _stale_for(victim, monkeypatch)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == keep
    job.finish()


def test_the_failed_store_skips_a_failed_job_gone_stale(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, _, _ = _queue_with_a_victim(qdir)
    (failed,) = FailedStore(queue).jobs()
    _stale_for(failed.jobid, monkeypatch)
    assert list(FailedStore(queue).jobs()) == []
    queue.fsck()


SILLY = ".nfs000000000123abcd00000042"


@pytest.mark.parametrize(
    "where", ["queue", "tmp", "active", "data", "deferred", "failed", "queue/3", "data/AB/CD"]
)
def test_nfs_silly_renames_are_ignored_everywhere(qdir: Path, where: str) -> None:
    queue = DirQueue(qdir)
    jobid = queue.enqueue_string("x")
    directory = qdir / where
    directory.mkdir(parents=True, exist_ok=True)
    silly = directory / SILLY
    silly.write_text("a file still open on some host")
    old = 1_000_000_000.0  # Old enough for any min_age.
    os.utime(silly, (old, old))
    assert [job.jobid for job in queue.jobs()] == [jobid]
    assert [info.job.jobid for info in list_jobs(queue)] == [jobid]
    assert queue.fsck(min_age=0).findings == []
    assert queue.repair(min_age=0).findings == []
    assert silly.exists()
    job = queue.pickup_queued_job()
    assert job is not None
    job.finish()
    assert silly.exists()
