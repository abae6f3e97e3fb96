"""Filesystem primitives with the NFS hazards handled: exclusive creation, verified
links, directory fsync.

Nothing here knows the queue's layout; :mod:`dirqueue._format` does.
"""

from __future__ import annotations

import errno
import os
from typing import Final

__all__ = [
    "LinkResult",
    "create_exclusive",
    "fsync_dir",
    "link_verified",
    "makedirs",
    "unlink_quietly",
]

# O_NOFOLLOW: a symlink planted at a tmp or lock name must not redirect our write.
_CREATE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
_DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def create_exclusive(path: str, mode: int) -> int:
    """Create ``path`` with ``O_EXCL`` (never following a symlink) and return its fd."""
    return os.open(path, _CREATE_FLAGS, mode)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: str) -> None:
    """fsync a directory, so that the names linked into it survive power loss."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs(path: str) -> list[str]:
    """Create ``path`` and missing parents; return the directories created, outermost first.

    Racing creators are fine: an ``EEXIST`` from another process counts as success.
    """
    created: list[str] = []
    missing: list[str] = []
    probe = path
    while probe and not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
        else:
            created.append(directory)
    return created


class LinkResult:
    """What :func:`link_verified` found."""

    LINKED: Final = "linked"
    EXISTS: Final = "exists"


def _same_file(src_stat: os.stat_result, target: str) -> bool:
    try:
        st = os.lstat(target)
    except OSError:
        return False
    return st.st_ino == src_stat.st_ino and st.st_dev == src_stat.st_dev


def link_verified(src: str, target: str, src_stat: os.stat_result | None = None) -> str:
    """``link(src, target)``, confirming the outcome as NFS requires.

    Over NFS a retried ``link`` request can report ``EEXIST`` (or another error)
    although the first attempt succeeded and its reply was lost; the truth is in the
    inode. Returns :attr:`LinkResult.LINKED` when ``target`` is now ``src``,
    :attr:`LinkResult.EXISTS` when another file holds the name, and re-raises any other
    failure.
    """
    try:
        os.link(src, target)
    except OSError as err:
        if src_stat is None:
            src_stat = os.lstat(src)
        if _same_file(src_stat, target):
            return LinkResult.LINKED
        if err.errno == errno.EEXIST:
            return LinkResult.EXISTS
        raise
    return LinkResult.LINKED


def unlink_quietly(path: str) -> bool:
    """Unlink ``path``; True if it was removed, False if it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
