"""Filesystem primitives with the NFS hazards handled: exclusive creation, verified
links, directory fsync.

Nothing here knows the queue's layout; :mod:`dirqueue._format` does.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from typing import Final

__all__ = [
    "LinkResult",
    "NotRegularFileError",
    "close_dir",
    "create_exclusive",
    "ensure_dir_nofollow",
    "free_bytes",
    "fsync_dir",
    "link_verified",
    "makedirs",
    "open_dir_nofollow",
    "open_regular",
    "read_limited",
    "same_file",
    "unlink_quietly",
]

# O_NOFOLLOW: a symlink planted at a tmp or lock name must not redirect our write.
_CREATE_FLAGS: Final = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_DIR_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
#: Opening a directory by a name relative to a directory fd, never through a symlink.
DIR_NOFOLLOW_FLAGS: Final = _DIR_FLAGS | _NOFOLLOW
# Reading a file inside the queue: never through a symlink at its own name, and never
# blocking on a FIFO planted there (O_NONBLOCK does nothing to regular files).
_READ_FLAGS: Final = (
    os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


class NotRegularFileError(OSError):
    """A name in the queue that should be a plain file is a symlink, FIFO, directory..."""


def open_regular(path: str, dir_fd: int | None = None) -> int:
    """Open ``path`` for reading if it is a regular file, not a symlink; return the fd.

    Raises :class:`NotRegularFileError` for anything else found at the name.
    """
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegularFileError(errno.ELOOP, "is a symlink", path) from None
        if err.errno in (errno.ENXIO, errno.EOPNOTSUPP, errno.ENODEV):
            # A UNIX socket (ENXIO), or a device node, planted at the name.
            raise NotRegularFileError(err.errno, "is not a regular file", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, "is not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(fd: int, limit: int) -> bytes:
    """Read up to ``limit`` bytes from ``fd`` (then closed): a huge file cannot fill memory."""
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def create_exclusive(path: str, mode: int, *, dir_fd: int | None = None) -> int:
    """Create ``path`` with ``O_EXCL`` (never following a symlink) and return its fd."""
    return os.open(path, _CREATE_FLAGS, mode, dir_fd=dir_fd)


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
        close_dir(fd)


def open_dir_nofollow(root: str, parts: tuple[str, ...] | list[str]) -> int:
    """Open directory ``root/parts[0]/parts[1]/...`` and return its fd.

    ``root`` (the queue directory, as the caller chose it) may be reached through
    symlinks; no component in ``parts`` may be one. Another user of a shared queue could
    otherwise plant ``data/C1 -> /somewhere`` and have a finishing worker unlink, or a
    reader read, a file outside the queue. A symlink raises ``OSError`` (``ELOOP`` or
    ``ENOTDIR``). Each step opens relative to the last, so swapping a directory for a
    symlink between steps does not help either.
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if not part or part in (".", "..") or "/" in part:
                raise OSError(errno.EINVAL, "not a plain directory name", part)
            next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            close_dir(fd)
            fd = next_fd
    except BaseException:
        close_dir(fd)
        raise
    return fd


def ensure_dir_nofollow(root: str, parts: tuple[str, ...] | list[str]) -> tuple[int, list[str]]:
    """Like :func:`open_dir_nofollow`, creating missing directories on the way.

    Returns the fd of the last directory and the paths of those created, outermost
    first (each is durable only once its parent is fsynced). Racing creators are fine.
    """
    fd = os.open(root, _DIR_FLAGS)
    created: list[str] = []
    path = root
    try:
        for part in parts:
            if not part or part in (".", "..") or "/" in part:
                raise OSError(errno.EINVAL, "not a plain directory name", part)
            path = os.path.join(path, part)
            try:
                next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass  # Another process made it; the open below checks what it is.
                else:
                    created.append(path)
                next_fd = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            close_dir(fd)
            fd = next_fd
    except BaseException:
        close_dir(fd)
        raise
    return fd, created


def close_dir(fd: int) -> None:
    """Close a directory fd opened for reading. Its close can report nothing worth
    failing for (there is no data to flush), and Linux frees the fd even on error, so
    an error here must not undo an operation that succeeded."""
    # A plain try, not contextlib.suppress(): this runs several times per job.
    try:  # noqa: SIM105
        os.close(fd)
    except OSError:
        pass


def free_bytes(path: str) -> int:
    """Bytes available to unprivileged users on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


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


class LinkResult(enum.Enum):
    """What :func:`link_verified` found."""

    LINKED = "linked"
    EXISTS = "exists"


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """True if two stats are of one file (device and inode): the only identity that
    holds over NFS, where a name can be replaced between two looks."""
    return a.st_ino == b.st_ino and a.st_dev == b.st_dev


def _is_at(src_stat: os.stat_result, target: str, dir_fd: int | None = None) -> bool:
    try:
        st = os.lstat(target, dir_fd=dir_fd)
    except OSError:
        return False
    return same_file(st, src_stat)


def link_verified(
    src: str,
    target: str,
    src_stat: os.stat_result | None = None,
    *,
    dst_dir_fd: int | None = None,
) -> LinkResult:
    """``link(src, target)``, confirming the outcome as NFS requires.

    Over NFS a retried ``link`` request can report ``EEXIST`` (or another error)
    although the first attempt succeeded and its reply was lost; the truth is in the
    inode. Returns :attr:`LinkResult.LINKED` when ``target`` is now ``src``,
    :attr:`LinkResult.EXISTS` when another file holds the name, and re-raises any other
    failure. With ``dst_dir_fd``, ``target`` is a name in that directory.
    """
    try:
        os.link(src, target, dst_dir_fd=dst_dir_fd)
    except OSError as err:
        if src_stat is None:
            src_stat = os.lstat(src)
        if _is_at(src_stat, target, dst_dir_fd):
            return LinkResult.LINKED
        if err.errno == errno.EEXIST:
            return LinkResult.EXISTS
        raise
    return LinkResult.LINKED


#: The errnos that mean "that file is no longer there": ENOENT, and over NFS ESTALE (a
#: file or directory that another host removed while we looked it up or held it open).
#: Either way someone else got there first.
GONE_ERRNOS: Final = (errno.ENOENT, errno.ESTALE)


def is_gone(err: OSError) -> bool:
    """True if ``err`` says the file is gone (:data:`GONE_ERRNOS`)."""
    return err.errno in GONE_ERRNOS


def unlink_quietly(path: str) -> bool:
    """Unlink ``path``; True if it was removed, False if it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
