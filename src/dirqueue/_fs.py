"""Filesystem primitives with the NFS hazards handled: exclusive creation, verified
links, directory fsync.

Nothing here knows the queue's layout; :mod:`dirqueue._format` does.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import itertools
import os
import platform
import stat
import sys
from collections.abc import Callable
from typing import Final, cast

__all__ = [
    "CAN_LINK_OPEN_FILES",
    "LinkResult",
    "NotRegularFileError",
    "close_dir",
    "create_exclusive",
    "ensure_dir_nofollow",
    "free_bytes",
    "fsync_dir",
    "is_local_filesystem",
    "libc",
    "link_open_file",
    "link_verified",
    "makedirs",
    "open_dir_nofollow",
    "open_for_reading",
    "open_regular",
    "open_regular_stat",
    "read_limited",
    "read_whole",
    "rename_noreplace",
    "same_file",
    "syncfs",
    "syncfs_covers",
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
    return open_regular_stat(path, dir_fd)[0]


def open_for_reading(path: str, dir_fd: int | None = None) -> int:
    """Open ``path`` for reading, never through a symlink at its own name and never
    blocking on a FIFO there; :class:`NotRegularFileError` for a symlink or a socket.
    Not proved a regular file (:func:`open_regular_stat` does that)."""
    try:
        return os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegularFileError(errno.ELOOP, "is a symlink", path) from None
        if err.errno in (errno.ENXIO, errno.EOPNOTSUPP, errno.ENODEV):
            # A UNIX socket (ENXIO), or a device node, planted at the name.
            raise NotRegularFileError(err.errno, "is not a regular file", path) from None
        raise


def open_regular_stat(path: str, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Like :func:`open_regular`, also returning the open file's ``fstat`` (the one
    call that proves it regular also gives its size)."""
    fd = open_for_reading(path, dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, "is not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_whole(fd: int, size: int, limit: int) -> bytes:
    """Read the file open at ``fd`` (left open), at most ``limit`` bytes; ``size`` is
    its size by ``fstat``, or the size the caller expects.

    One ``read`` of ``size + 1`` bytes usually says it all: a regular file that gives
    back exactly ``size`` of them has ended. (A file object would add a ``fstat``, an
    ``ioctl`` and an ``lseek``, and one more ``read`` to see the end.) Anything else (a
    file that grew or shrank meanwhile) is read on until the end or the limit.
    """
    # Asking for just size + 1 bytes: os.read allocates what it is asked for.
    ask = min(limit, size + 1)
    first = os.read(fd, ask)
    if (len(first) == size and size < ask) or len(first) >= limit or not first:
        return first  # A short read at the size expected: the end of the file.
    parts = [first]
    total = len(first)
    while total < limit:
        chunk = os.read(fd, min(limit - total, max(size + 1 - total, _READ_CHUNK)))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


#: Reads past the expected size (a file that grew) go on in pieces of this size.
_READ_CHUNK: Final = 1 << 16


def read_limited(fd: int, limit: int) -> bytes:
    """Read up to ``limit`` bytes from ``fd`` (then closed): a huge file cannot fill memory."""
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def create_exclusive(path: str, mode: int, *, dir_fd: int | None = None) -> int:
    """Create ``path`` with ``O_EXCL`` (never following a symlink) and return its fd."""
    return os.open(path, _CREATE_FLAGS, mode, dir_fd=dir_fd)


#: An open file can be linked under a new name through ``/proc/self/fd`` (Linux).
CAN_LINK_OPEN_FILES: Final = os.path.isdir("/proc/self/fd")


def link_open_file(fd: int, name: str, dir_fd: int) -> None:
    """Link the file open at ``fd`` as ``name`` in directory ``dir_fd``: the very file
    open, whatever its own name holds now. ``FileExistsError`` if ``name`` is taken;
    ``FileNotFoundError`` if the file has no name left to link from."""
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    written = os.write(fd, data)
    if written == len(data):  # The usual case: all of it at once.
        return
    view = memoryview(data)[written:]
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


def _check_parts(parts: tuple[str, ...] | list[str]) -> None:
    for part in parts:
        if not part or part in (".", "..") or "/" in part:
            raise OSError(errno.EINVAL, "not a plain directory name", part)


# -- syncfs(2): one flush for a whole batch of new files ---------------------------------

#: Filesystems whose syncfs commits everything written so far, directory entries
#: included, in one journal (or log, or transaction) commit. Elsewhere (NFS, FUSE...)
#: each file is fsynced.
_SYNCFS_FILESYSTEMS: Final = frozenset({"ext4", "xfs", "btrfs", "tmpfs"})
#: Before Linux 5.8 syncfs returned 0 even when writing back failed: an error would be
#: lost, and a job reported durable that is not.
_SYNCFS_SINCE: Final = (5, 8)


def _kernel_at_least(version: tuple[int, int]) -> bool:
    numbers: list[int] = []
    for part in platform.release().split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        numbers.append(int(digits or 0))
    return tuple(numbers) >= version


def _filesystem_type(path: str) -> str | None:
    """The type of the filesystem ``path`` is on, from ``/proc/self/mountinfo``."""
    st = os.stat(path)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 2 and fields[2] == device and " - " in line:
                found = line.split(" - ", 1)[1].split()[0]  # the last mount wins
    return found


_syncfs_known: dict[str, bool] = {}


def syncfs_covers(path: str) -> bool:
    """True if one :func:`syncfs` makes durable whatever was written under directory
    ``path`` (Linux 5.8 or later, on ext4, xfs, btrfs or tmpfs). Asked once per path."""
    known = _syncfs_known.get(path)
    if known is None:
        known = False
        if sys.platform == "linux" and _kernel_at_least(_SYNCFS_SINCE):
            try:
                known = _filesystem_type(path) in _SYNCFS_FILESYSTEMS
            except OSError:
                known = False
        _syncfs_known[path] = known
    return known


#: Filesystems that only this kernel writes, so that inotify reports every change made
#: to them; on network and FUSE filesystems it reports only this host's.
_LOCAL_FILESYSTEMS: Final = _SYNCFS_FILESYSTEMS | {
    "ext2", "ext3", "ramfs", "f2fs", "zfs", "jfs", "reiserfs", "bcachefs", "overlay"
}


def is_local_filesystem(path: str) -> bool:
    """True if ``path`` is on a filesystem only this kernel writes (ext4, XFS, tmpfs,
    ...); False for network and FUSE filesystems, and wherever it cannot be told."""
    if sys.platform != "linux":
        return False
    try:
        return _filesystem_type(path) in _LOCAL_FILESYSTEMS
    except OSError:
        return False


def syncfs(fd: int) -> None:
    """``syncfs(fd)``: write back and commit the whole filesystem ``fd`` is on.

    Open ``fd`` before writing what must be made durable: a writeback error is
    reported to descriptors opened before it happened.
    """
    c = libc()
    while c.syncfs(fd) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def libc() -> ctypes.CDLL:
    """This process's C library, loaded once, for the few calls Python has no
    function for (syncfs, openat2, inotify, prctl)."""
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


_LIBC: list[ctypes.CDLL] = []


def open_dir_nofollow(root: str, parts: tuple[str, ...] | list[str]) -> int:
    """Open directory ``root/parts[0]/parts[1]/...`` and return its fd.

    ``root`` (the queue directory, as the caller chose it) may be reached through
    symlinks; no component in ``parts`` may be one. Another user of a shared queue could
    otherwise plant ``data/C1 -> /somewhere`` and have a finishing worker unlink, or a
    reader read, a file outside the queue. A symlink raises ``OSError`` (``ELOOP`` or
    ``ENOTDIR``). Each step opens relative to the last, so swapping a directory for a
    symlink between steps does not help either.

    On Linux one ``openat2(RESOLVE_NO_SYMLINKS)`` does the whole walk (two system calls
    with the close, where a step at a time takes eight for ``data/C1/C2``).
    """
    _check_parts(parts)
    if parts and _openat2 is not None:
        fd = _open_beneath(root, parts)
        if fd is not None:
            return fd
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
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
    _check_parts(parts)
    if parts and _openat2 is not None:
        # Nearly always the directories are there already: one walk finds them.
        try:
            found = _open_beneath(root, parts)
        except FileNotFoundError:
            found = None  # Some are missing: make them a step at a time.
        if found is not None:
            return found, []
    fd = os.open(root, _DIR_FLAGS)
    created: list[str] = []
    path = root
    try:
        for part in parts:
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


# -- openat2(2): a whole walk without following symlinks, in one call (Linux 5.6+) ------

_AT_FDCWD: Final = -100
_RESOLVE_NO_SYMLINKS: Final = 0x04
#: openat2 has the same number on every architecture that numbers its calls together
#: (all of Linux's since 5.1); others keep the step-at-a-time walk.
_OPENAT2_MACHINES: Final = frozenset(
    {"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64", "s390x",
     "i386", "i686", "armv7l", "armv8l", "loongarch64"}
)
_SYS_OPENAT2: Final = 437


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _load_openat2() -> Callable[..., int] | None:
    if sys.platform != "linux" or platform.machine() not in _OPENAT2_MACHINES:
        return None
    try:
        syscall = libc().syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = (
        ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
    )
    return cast("Callable[..., int]", syscall)


_openat2 = _load_openat2()
_HOW_DIR: Final = _OpenHow(_DIR_FLAGS, 0, _RESOLVE_NO_SYMLINKS)
_HOW_SIZE: Final = ctypes.sizeof(_OpenHow)
#: Queue directories reached through a symlink of the caller's choosing: for these the
#: walk starts from the directory itself, opened first (one call more).
_symlinked_roots: set[str] = set()


def _openat2_call(dir_fd: int, path: str, how: _OpenHow) -> int | None:
    """``openat2(dir_fd, path, how)`` (``RESOLVE_NO_SYMLINKS``); None if the kernel (or
    a seccomp filter) has no openat2, which then is not tried again."""
    global _openat2  # noqa: PLW0603 - switched off once for the process
    call = _openat2
    if call is None:
        return None
    raw = os.fsencode(path)
    while True:
        fd: int = call(_SYS_OPENAT2, dir_fd, raw, ctypes.byref(how), _HOW_SIZE)
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL):
            _openat2 = None
            return None
        raise OSError(err, os.strerror(err), path)


def _open_beneath(root: str, parts: tuple[str, ...] | list[str]) -> int | None:
    """The fd of directory ``root/parts...``, with no symlink in ``parts``; None if
    openat2 is not available (the caller walks a step at a time)."""
    if root not in _symlinked_roots:
        try:
            return _openat2_call(_AT_FDCWD, os.path.join(root, *parts), _HOW_DIR)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
        # A symlink on the way, in root (the caller's to choose) or in parts (refused
        # below): walk from root itself.
    top = os.open(root, _DIR_FLAGS)
    try:
        fd = _openat2_call(top, "/".join(parts), _HOW_DIR)
    finally:
        close_dir(top)
    if fd is not None and root not in _symlinked_roots:
        _symlinked_roots.add(root)  # Found whole from root: root holds the symlink.
    return fd


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
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> LinkResult:
    """``link(src, target)``, confirming the outcome as NFS requires.

    Over NFS a retried ``link`` request can report ``EEXIST`` (or another error)
    although the first attempt succeeded and its reply was lost; the truth is in the
    inode. Returns :attr:`LinkResult.LINKED` when ``target`` is now ``src``,
    :attr:`LinkResult.EXISTS` when another file holds the name, and re-raises any other
    failure. With ``src_dir_fd`` (``dst_dir_fd``), ``src`` (``target``) is a name in
    that directory.
    """
    try:
        os.link(src, target, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
    except OSError as err:
        if src_stat is None:
            src_stat = os.lstat(src, dir_fd=src_dir_fd)
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


#: renameat2(2)'s flags: fail if the new name is taken; swap two names atomically
#: (Linux 3.15; local filesystems).
_RENAME_NOREPLACE: Final = 1
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()
_RENAME_EXCHANGE: Final = 2
#: libc's renameat2, or None where it has none (looked up once).
_RENAMEAT2: list[Callable[..., int] | None] = []


def _renameat2() -> Callable[..., int] | None:
    if not _RENAMEAT2:
        found = getattr(libc(), "renameat2", None)  # glibc 2.28 and later
        if found is not None:
            found.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_uint)
            found.restype = ctypes.c_int
        _RENAMEAT2.append(found)
    return _RENAMEAT2[0]


def rename_noreplace(
    src: str, dst: str, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
) -> bool | None:
    """Rename ``src`` to ``dst`` (each relative to its directory descriptor, if given)
    unless ``dst`` exists: True if renamed, False if ``dst`` is taken (nothing done),
    None where the system or filesystem cannot (nothing done: NFS, FUSE, not Linux).

    One step where a ``link`` then an ``unlink`` of the old name take two: the name
    moves, and no moment shows both. Like ``link``, and unlike ``rename``, it never
    replaces a file already at ``dst``. Not for network filesystems, where a lost reply
    to a retried request can report EEXIST although the rename was done (a verified
    link, :func:`link_verified`, is the answer there).
    """
    fn = _RENAMEAT2[0] if _RENAMEAT2 else _renameat2()
    if fn is None:
        return None
    src_fd = _AT_FDCWD if src_dir_fd is None else src_dir_fd
    dst_fd = _AT_FDCWD if dst_dir_fd is None else dst_dir_fd
    # os.fsencode's own steps, without its call (this is once per enqueue).
    encoded_src = src.encode(_FS_ENCODING, _FS_ERRORS)
    encoded_dst = dst.encode(_FS_ENCODING, _FS_ERRORS)
    if fn(src_fd, encoded_src, dst_fd, encoded_dst, _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return None
    raise OSError(err, os.strerror(err), src)


def exchange(a: str, b: str, *, a_dir_fd: int | None = None, b_dir_fd: int | None = None) -> bool:
    """Swap the files at ``a`` and ``b`` (each relative to its directory descriptor, if
    given) in one step; False where the system or filesystem cannot (then nothing was
    done: NFS, FUSE, not Linux).

    Unlike a rename over ``b``, it never creates ``b``: FileNotFoundError if either is
    missing. A holder replacing a job's control file by a rename, after checking that
    the job is still its own, would bring back a job finished by another in between.
    """
    fn = _renameat2()
    if fn is None:
        return False
    a_fd = _AT_FDCWD if a_dir_fd is None else a_dir_fd
    b_fd = _AT_FDCWD if b_dir_fd is None else b_dir_fd
    if fn(a_fd, os.fsencode(a), b_fd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)
