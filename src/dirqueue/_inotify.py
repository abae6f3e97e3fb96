"""Linux inotify through ctypes: which names appeared in, or left, a directory.

The standard library has no inotify binding; the four calls needed (``inotify_init1``,
``inotify_add_watch``, ``read`` and ``close``) are few enough to make through ctypes
rather than depend on a package. Elsewhere (or when the kernel refuses, say because the
per-user limit of inotify instances is reached) :func:`open_notifier` returns None and
callers fall back on looking for themselves.

Whether inotify sees every change to a directory (a local filesystem) or only this
host's (NFS, FUSE) is :func:`dirqueue._fs.is_local_filesystem`'s to tell.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import struct
import sys
from typing import Final

from ._fs import libc

__all__ = [
    "IN_CREATE",
    "IN_DELETE",
    "IN_ISDIR",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_Q_OVERFLOW",
    "LOST_WATCH",
    "Event",
    "Notifier",
    "open_notifier",
]

IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_UNMOUNT: Final = 0x00002000
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_ISDIR: Final = 0x40000000
#: The watched directory itself went away (or its filesystem did): its watch is gone.
LOST_WATCH: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
#: Names arriving and leaving; the directory's own attributes (a bumped mtime, a
#: touched lock) are left out, so a heartbeat wakes nobody.
_NAMES: Final = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM
_CLOEXEC: Final = 0o2000000
_NONBLOCK: Final = 0o4000
_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len
_close: Final = os.close
_READ_SIZE: Final = 65536
_MAX_EVENT: Final = _HEADER.size + 256  # NAME_MAX + 1, padded
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()

def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        c = libc()
        c.inotify_init1.argtypes = [ctypes.c_int]
        c.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return c


_LIBC: Final = _load_libc()


#: One inotify event: ``(wd, mask, name)``, the watch it came from, what happened, and
#: to which name. A plain tuple: a pickup reads a few of them, and a named tuple's
#: construction showed in the profile.
Event = tuple[int, int, str]


class Notifier:
    """An inotify instance watching directories for names arriving and leaving.

    Non-blocking: :meth:`events` returns what is queued now. :meth:`wait` sleeps until
    something is queued. One per process: a descriptor inherited across fork() shares
    its event queue with the parent, so the child must open its own.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def watch(self, directory: str) -> int:
        """Watch ``directory`` (not through a symlink); its watch descriptor, or -1."""
        if _LIBC is None:  # Never: a Notifier is only made where libc was loaded.
            return -1
        return int(
            _LIBC.inotify_add_watch(
                self._fd, os.fsencode(directory), _NAMES | IN_ONLYDIR | IN_DONT_FOLLOW
            )
        )

    def events(self) -> list[Event]:
        """The events queued so far, oldest first (none if nothing happened)."""
        fd = self._fd
        found: list[Event] = []
        while True:
            try:
                chunk = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return found
            except InterruptedError:
                continue
            _parse(chunk, found)
            if len(chunk) <= _READ_SIZE - _MAX_EVENT:
                # The kernel fills a read with every whole event queued: room left
                # over means the queue was empty, and one more read would only say so.
                return found

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if events are queued.

        Leaves the events queued for :meth:`events` to read.
        """
        if timeout <= 0:
            return False
        # poll(), not select(): select() refuses descriptors past FD_SETSIZE (1024),
        # which a long-running worker with many open files easily hands us.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(math.ceil(timeout * 1000)))

    def close(self) -> None:
        """Release the inotify descriptor (and every watch with it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            # Often from a finalizer, at whatever moment the queue object is collected:
            # through the close() bound at import, which nothing can fail on purpose.
            with contextlib.suppress(OSError):
                _close(fd)


def _parse(chunk: bytes, found: list[Event]) -> None:
    """Append the events in ``chunk`` (what one read gave) to ``found``."""
    offset, end = 0, len(chunk)
    unpack, size = _HEADER.unpack_from, _HEADER.size
    append, encoding, errors = found.append, _FS_ENCODING, _FS_ERRORS
    while offset + size <= end:
        wd, mask, _cookie, length = unpack(chunk, offset)
        offset += size
        raw = chunk[offset : offset + length].rstrip(b"\0")
        offset += length
        append((wd, mask, raw.decode(encoding, errors)))  # what os.fsdecode does


def open_notifier() -> Notifier | None:
    """A new inotify instance, or None where inotify is not to be had."""
    if _LIBC is None:
        return None
    fd = _LIBC.inotify_init1(_CLOEXEC | _NONBLOCK)
    if fd < 0:
        return None
    return Notifier(fd)
