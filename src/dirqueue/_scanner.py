"""The one scanner of ``queue/``: which jobs are waiting, in pickup order.

Pickup, ``jobs()``, ``dq stats`` and repair all list the queue through :func:`scan`,
so they agree on what a job is. The rules:

- A job is a name shaped like a job id, directly in ``queue/`` or in a fan-out
  subdirectory ``queue/0`` ... ``queue/f``, or in ``queue/dq/`` (jobs for dirqueue
  only). Fan-out subdirectories are read whatever the reader's own setting, so queues
  written with and without fan-out read alike.
- ``queue/`` and its fan-out subdirectories are opened without following symlinks: a
  symlink there would lead readers (and ``finish()``, which unlinks) out of the queue.
  A control file that is itself a symlink is listed like any job; pickup then finds it
  is not a regular file and moves it aside.
- Every other name is ignored, as the Perl module ignores it; a caller that cares
  (repair) is told of each through ``on_other``, except an NFS client's ``.nfsXXXX``
  silly renames, which come and go on their own.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from typing import NamedTuple

from . import _fs
from ._format import match_job_name
from ._layout import Layout

__all__ = ["QueueEntry", "locate", "scan"]


class QueueEntry(NamedTuple):
    """A waiting (or active) job's control file: its name and fan-out digit."""

    name: str
    fanout: str | None


#: ``on_other(name, fanout_digit)``: a name in ``queue/`` (or ``queue/X/``) that is not
#: a job; ``fanout_digit`` is None for names directly in ``queue/``.
OtherCallback = Callable[[str, "str | None"], None]

_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


def scan(
    layout: Layout, *, ordered: bool = True, on_other: OtherCallback | None = None
) -> list[QueueEntry]:
    """Every job in ``queue/``, sorted by name when ``ordered`` (else shuffled)."""
    # Names are collected and sorted as plain strings (much faster than tuples at
    # 100,000 jobs); jobs in fan-out subdirectories, rare, are merged in after.
    job_re = match_job_name
    try:
        fd = _fs.open_dir_nofollow(layout.dir, (Layout.QUEUE,))
    except FileNotFoundError:
        return []
    fanned: list[QueueEntry] = []
    try:
        listed = os.listdir(fd)
        names = [name for name in listed if job_re(name)]
        if len(names) < len(listed):
            for name in sorted(set(listed).difference(names)):
                if (
                    ((len(name) == 1 and name in Layout.FANOUT_DIGITS)
                     or name == Layout.DIRQUEUE_ONLY)
                    and _scan_fanout(fd, name, fanned, on_other)
                ):
                    continue
                if on_other is not None and not Layout.is_nfs_silly_rename(name):
                    on_other(name, None)
    finally:
        _fs.close_dir(fd)
    if ordered:
        names.sort()
    else:
        random.shuffle(names)
    entries = [QueueEntry(name, None) for name in names]
    if fanned:
        entries.extend(fanned)
        if ordered:
            entries.sort()
        else:
            random.shuffle(entries)
    return entries


def _scan_fanout(
    queue_fd: int, digit: str, into: list[QueueEntry], on_other: OtherCallback | None
) -> bool:
    """List fan-out directory ``queue/DIGIT`` into ``into``; False if it is not one."""
    try:
        fd = os.open(digit, _fs.DIR_NOFOLLOW_FLAGS, dir_fd=queue_fd)
    except OSError as err:
        if _fs.is_gone(err):
            return True  # Gone since listed: nothing to report.
        if err.errno in _NOT_A_DIR:
            return False  # A symlink or a file: not a fan-out directory.
        raise
    try:
        for name in os.listdir(fd):
            if match_job_name(name):
                into.append(QueueEntry(name, digit))
            elif on_other is not None and not Layout.is_nfs_silly_rename(name):
                on_other(name, digit)
    finally:
        _fs.close_dir(fd)
    return True


def locate(layout: Layout, jobid: str) -> list[QueueEntry]:
    """Where job ``jobid``'s control file is: ``queue/`` and each fan-out directory
    that is a real directory (usually one place, or none)."""
    try:
        queue_fd = _fs.open_dir_nofollow(layout.dir, (Layout.QUEUE,))
    except FileNotFoundError:
        return []
    found: list[QueueEntry] = []
    try:
        if _exists_at(jobid, queue_fd):
            found.append(QueueEntry(jobid, None))
        for digit in Layout.QUEUE_SUBDIRS:
            try:
                fd = os.open(digit, _fs.DIR_NOFOLLOW_FLAGS, dir_fd=queue_fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, *_NOT_A_DIR):
                    continue
                raise
            try:
                if _exists_at(jobid, fd):
                    found.append(QueueEntry(jobid, digit))
            finally:
                _fs.close_dir(fd)
    finally:
        _fs.close_dir(queue_fd)
    return found


def _exists_at(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True
