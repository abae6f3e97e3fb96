"""Waiting for the queue to change: inotify where it helps, polling always.

Enqueuers bump ``queue/``'s mtime. A waiter on the same host learns of that at once
through inotify (Linux); changes made on other hosts of a network filesystem raise no
inotify event, so the waiter also wakes every ``poll_interval`` to look for itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import select
import sys
import time
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["DirWatcher"]

_IN_ATTRIB: Final = 0x00000004
_IN_MOVED_TO: Final = 0x00000080
_IN_CREATE: Final = 0x00000100
_IN_CLOEXEC: Final = 0o2000000
_IN_NONBLOCK: Final = 0o4000
# Creation of a name, and the utime() every enqueuer does on queue/ (IN_ATTRIB); also
# a name coming back (a returned job's lock removal is caught by the same utime).
_WATCH_MASK: Final = _IN_ATTRIB | _IN_MOVED_TO | _IN_CREATE


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _load_libc()


class DirWatcher:
    """Sleeps until one of some directories changes, or a poll interval passes.

    Use as a context manager; it holds an inotify descriptor while open.
    """

    def __init__(
        self,
        directories: Iterable[str],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sleep = sleep
        self._fd = -1
        if _LIBC is None or sleep is not time.sleep:
            # An injected sleep means a test drives time; real fds would bypass it.
            return
        fd = _LIBC.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0:
            return
        watched = 0
        for directory in directories:
            if _LIBC.inotify_add_watch(fd, os.fsencode(directory), _WATCH_MASK) >= 0:
                watched += 1
        if watched == 0:
            os.close(fd)
            return
        self._fd = fd

    @property
    def uses_inotify(self) -> bool:
        """True when local changes wake the waiter at once."""
        return self._fd >= 0

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a change was seen before then."""
        if timeout <= 0:
            return False
        if self._fd < 0:
            self._sleep(timeout)
            return False
        # poll(), not select(): select() refuses descriptors past FD_SETSIZE (1024),
        # which a long-running worker with many open files easily hands us.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(math.ceil(timeout * 1000)):
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Release the inotify descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DirWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
