"""Jobs that wait for a time: a retry's back-off, or a delayed submission.

A deferred job's control file sits in ``deferred/`` instead of ``queue/``, with its due
time as its mtime (as Postfix keeps its deferred queue); its data stays in ``data/``.
The Perl module never reads ``deferred/``, so no dequeuer, Perl or Python, can take the
job early. There is no daemon: whichever dirqueue process looks (a pickup, at most
about once a second) moves the jobs that are due back into ``queue/`` with one
``rename``, so at every instant a job is in exactly one of the two directories. Two
processes promoting the same job race harmlessly: one rename wins, the other finds
nothing (ENOENT).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from typing import NamedTuple

from . import _dirfds, _fs
from ._config import QueueConfig
from ._format import match_job_name
from ._jobsettings import is_dirqueue_only
from ._layout import Layout

#: The most of a control file read to tell whether it is for dirqueue only.
_CONTROL_READ_MAX = 1 << 20

__all__ = ["DeferredEntry", "drop_crashed_twin", "promote_due", "scan_deferred"]


class DeferredEntry(NamedTuple):
    """A deferred job: its name and when it is due (seconds since the epoch)."""

    name: str
    due: float


def scan_deferred(config: QueueConfig) -> list[DeferredEntry]:
    """Every deferred job, soonest due first."""
    try:
        fd = _fs.open_dir_nofollow(config.dir, (Layout.DEFERRED,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return []
        raise
    found: list[DeferredEntry] = []
    try:
        for name in os.listdir(fd):
            if not match_job_name(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                found.append(DeferredEntry(name, os.lstat(name, dir_fd=fd).st_mtime))
    finally:
        _fs.close_dir(fd)
    found.sort(key=lambda entry: (entry.due, entry.name))
    return found


def _read_clock(now: float | Callable[[], float] | None) -> float:
    """``now`` as a time: called if a function, this host's clock if None."""
    if now is None:
        return time.time()
    return now() if callable(now) else now


def promote_due(
    config: QueueConfig, now: float | Callable[[], float] | None = None
) -> tuple[int, float | None]:
    """Move every deferred job that is due into ``queue/``.

    ``now`` should be the filesystem's clock (:func:`dirqueue._judge.filesystem_now`),
    which due times are written in; this host's clock by default. Given as a function,
    it is called only when a job is deferred: reading the filesystem's clock writes a
    file now and then, which over NFS is calls to the server that an idle worker on a
    queue with nothing deferred should not make.

    Returns how many this call moved, and when the next one is due (None if none is
    waiting).
    """
    entries = scan_deferred(config)
    if not entries:
        return 0, None
    at = _read_clock(now)
    due = [entry for entry in entries if entry.due <= at]
    later = [entry.due for entry in entries if entry.due > at]
    if not due:
        return 0, min(later, default=None)
    moved = 0
    dfd = _fs.open_dir_nofollow(config.dir, (Layout.DEFERRED,))
    # queue/'s directories used so far (queue/X with fan-out: where enqueue puts a job,
    # and the only place a Perl fan-out worker looks) -> (descriptor, jobs moved in).
    targets: dict[str | None, list[int]] = {}
    created: list[str] = []
    try:
        # A crashed deferral's second name is dropped, never promoted.
        due = [entry for entry in due if not _left_by_a_crashed_deferral(config, dfd, entry.name)]
        for entry in due:
            fanout = Layout.choose_fanout(config.queue_fanout, _dirqueue_only(dfd, entry.name))
            target = targets.get(fanout)
            if target is None:
                qfd, made = _fs.ensure_dir_nofollow(config.dir, Layout.queue_parts(fanout))
                target = targets[fanout] = [qfd, 0]
                created += made
            try:
                os.rename(entry.name, entry.name, src_dir_fd=dfd, dst_dir_fd=target[0])
            except FileNotFoundError:
                continue  # Another process promoted it first.
            target[1] += 1
            moved += 1
        if moved and config.durable:
            for qfd, count in targets.values():
                if count:
                    os.fsync(qfd)
            for directory in created:
                _fs.fsync_dir(os.path.dirname(directory))  # A new queue/X: named in queue/.
            os.fsync(dfd)
    finally:
        for qfd, _ in targets.values():
            _fs.close_dir(qfd)
        _fs.close_dir(dfd)
    if moved:
        # Waiting dequeuers watch queue/'s mtime; a rename into it moves it anyway, but
        # not on every network filesystem.
        # Through queue/'s descriptor: a symlink put in its place is not followed.
        with contextlib.suppress(OSError):
            _dirfds.at(config.dir, (Layout.QUEUE,), os.utime)
    return moved, min(later, default=None)


def _dirqueue_only(dfd: int, name: str) -> bool:
    """Whether deferred job ``name`` is for dirqueue only (back to ``queue/dq/``, out
    of Perl's sight). A read of its control file, only when it comes due."""
    try:
        fd = _fs.open_regular(name, dir_fd=dfd)
    except OSError:
        return False  # Gone, or not a file: the rename will tell.
    return is_dirqueue_only(_fs.read_limited(fd, _CONTROL_READ_MAX))


def drop_crashed_twin(config: QueueConfig, name: str, queue_path: str) -> None:
    """Remove ``deferred/NAME`` if it is a second name of the control file at
    ``queue_path``: called by the worker that has just taken job ``NAME`` by breaking a
    dead worker's lock, which may have died inside ``retry_later`` between linking the
    job into ``deferred/`` and unlinking it from ``queue/``. The job is ours now; its
    twin must not come due after we finish it."""
    try:
        queued = os.lstat(queue_path)
        if queued.st_nlink < 2:
            return
        dfd = _fs.open_dir_nofollow(config.dir, (Layout.DEFERRED,))
    except OSError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            if _fs.same_file(os.lstat(name, dir_fd=dfd), queued):
                os.unlink(name, dir_fd=dfd)
    finally:
        _fs.close_dir(dfd)


def _left_by_a_crashed_deferral(config: QueueConfig, dfd: int, name: str) -> bool:
    """True (and ``deferred/NAME`` removed) if ``deferred/NAME`` is a second name of the
    very file queued as ``NAME``: left by a retry_later that crashed between linking
    the job into ``deferred/`` and unlinking it from ``queue/`` (see
    :meth:`dirqueue.Job.retry_later`). The job is queued (perhaps running, or finished
    and gone: then its data is gone too): promoting it would run it twice (or, over a
    name in another fan-out directory, list it twice), so the name in ``deferred/``
    goes instead.

    Only a file with more than one link is looked for in ``queue/`` (every fan-out
    directory: the digit is not recorded), so a promotion costs one lstat more.
    """
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False  # Promoted by another process: the rename will say so.
    layout = config.layout
    if st.st_nlink < 2:
        # Its queued twin taken, run and finished since (the data goes with it, and
        # a job waiting here always has its data): promoted, it would come back as a
        # job without data and land in corrupt/.
        if os.path.lexists(layout.data_path(name)):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        return True
    for fanout in (None, *Layout.QUEUE_SUBDIRS):
        try:
            twin = os.lstat(layout.queue_path(name, fanout))
        except OSError:
            continue
        if _fs.same_file(twin, st):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dfd)
            return True
    return False
