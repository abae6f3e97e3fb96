"""A queue object's lock file: one file in ``tmp/`` (``lock.TIME.HOST.PID.active``)
that every job the object takes on a local filesystem is linked to, so taking a job
writes no lock of its own (see :mod:`dirqueue._lock`, which links it). Here: making
the file and keeping it (:class:`LockFileKeeper`), removing its name when it is idle and
when the process exits (a ``multiprocessing`` child too), making its guards anew in a
forked child, and writing a lock's contents (:func:`write_lock`), which every lock of
this process shares.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final, TypeVar

from . import _fs
from ._config import QueueConfig
from ._format import format_lock
from ._identity import current_pid, this_process
from ._jobfiles import in_queue_dir, on_name_in
from ._layout import Layout, TmpLockName

__all__ = [
    "FRESH_ENOUGH",
    "LockFile",
    "LockFileKeeper",
    "Stamp",
    "create_file",
    "fresh_enough_ns",
    "in_tmp",
    "unlink_in",
    "write_lock",
]

_T = TypeVar("_T")

#: Writing a lock's few bytes can fail on a full disk although an empty file (an inode,
#: no data block) still fits: then the lock is left empty rather than the job untaken.
_DISK_FULL: Final = (errno.ENOSPC, errno.EDQUOT)


class Stamp:
    """The mtime we last gave a lock file, shared by every job linked to that file,
    and the lock (threading) under which it is given and recorded."""

    __slots__ = ("guard", "mtime_ns")

    def __init__(self, mtime_ns: int) -> None:
        self.mtime_ns = mtime_ns
        self.guard = threading.Lock()


class LockFile:
    """A queue object's lock, as a file in ``tmp/`` that every job it takes is linked
    to (on a local filesystem): ``tmp/lock.TIME.HOST.PID.active``.

    Every lock of one process says the same (``HOST\nPID\n``), so one file serves
    them all. Taking a job is then a ``link()`` (after an ``utime``: the lock must look
    fresh, see :meth:`freshen`), instead of a new file to create, write, link and
    close: three system calls fewer, and no inode to allocate, which on a disk is most
    of a pickup's cost.
    The file is kept open, so its inode number cannot go to another file while a job of
    ours is linked to it. If its name is removed (by ``repair()``, say) it still serves
    while a job is linked to it; with no name left, a new one is made.
    """

    __slots__ = (
        "config", "fd", "fresh_ns", "guard", "holding", "name", "named", "pid", "stamp", "stat"
    )

    def __init__(
        self, fd: int, config: QueueConfig, name: str, pid: int, st: os.stat_result
    ) -> None:
        self.fd = fd
        #: Until we remove its name (a name removed by another process still counts).
        self.named = True
        #: The jobs linked (or being linked) to this file and not yet released.
        self.holding: set[str] = set()
        self.guard = threading.Lock()
        self.config = config
        #: Its name in tmp/.
        self.name = name
        self.pid = pid
        self.stat = st
        self.stamp = Stamp(st.st_mtime_ns)
        self.fresh_ns = fresh_enough_ns(config.active_file_lifetime)

    def freshen(self) -> None:
        """Give the file (every lock of ours linked to it) the time now as its mtime,
        unless we gave it one a moment ago (see :func:`fresh_enough_ns`)."""
        stamp = self.stamp
        with stamp.guard:
            now = time.time_ns()
            if 0 <= now - stamp.mtime_ns < self.fresh_ns:
                return
            os.utime(self.fd, ns=(now, now))
            # The filesystem may keep it coarser, never later: matches() allows that.
            stamp.mtime_ns = now

    def unlink(self) -> None:
        """Remove the file's name (jobs still linked to it keep their locks)."""
        if self.named and self.pid == current_pid():
            self.named = False
            with contextlib.suppress(OSError):
                unlink_in(self.config, (Layout.TMP,), self.name)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


#: The longest a lock linked from our lock file may look older than it is (seconds):
#: see :func:`fresh_enough_ns`.
FRESH_ENOUGH: Final = 0.1


def fresh_enough_ns(lifetime: float) -> int:
    """How recent (ns) the mtime we last gave our lock file may be for a job linked to
    it to keep it as it is: :data:`FRESH_ENOUGH`, and no more than a thousandth of the
    lock's lifetime.

    A lock must look fresh when it is linked, but one given its mtime a moment ago
    does: a job linked a tenth of a second after the last ``utime`` looks a tenth of a
    second older than it is, out of a lifetime of minutes. A drain links a job every
    few dozen microseconds, and so spares an ``utimensat`` per job. The window is
    measured against the mtime we gave (our clock, as the file's): a clock stepped
    back, or forward past it, makes a new ``utime``, never a lock that looks older.
    Nor does it weaken a breaker's check (it unlinks a lock only if the mtime there is
    still the one it judged stale): a lock judged stale had an mtime a lifetime old,
    and the next job we link to that file gives it a new one, as before.
    """
    return int(min(FRESH_ENOUGH, lifetime / 1000) * 1e9)


class LockFileKeeper:
    """The lock file of one :class:`dirqueue.DirQueue` object (made on its first pickup
    on a local filesystem). Its name goes when a pickup finds no job (an idle worker,
    or one about to exit, leaves nothing in tmp/), when the queue object is closed or
    collected, and when the process exits (at ``atexit``, and at the end of a
    ``multiprocessing`` child, which leaves past ``atexit``)."""

    __slots__ = ("__weakref__", "config", "current", "guard")

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.current: LockFile | None = None
        #: Threads sharing the queue object make and drop its file one at a time: two
        #: threads making one each at once would leave one name in tmp/ for good.
        self.guard = threading.Lock()
        _every_keeper.add(self)

    def get(self, *, replacing: LockFile | None = None) -> LockFile | None:
        """Our lock file (made if need be, or made again when it is ``replacing``, which
        has no name left to link from); None where none can be kept (no ``/proc``, or a
        full disk: then each job gets a lock file of its own)."""
        with self.guard:
            found = self.current
            if found is not None and found.pid == current_pid() and found is not replacing:
                # Another thread replaced it already, or it still serves: a file whose
                # name went while a job of ours is linked to it can be linked again.
                return found
            return self._make()

    def _make(self) -> LockFile | None:
        """A new lock file, as the current one (under ``guard``)."""
        pid = current_pid()
        if not _fs.CAN_LINK_OPEN_FILES:
            return None
        config = self.config
        name = config.layout.tmp_lock_name(TmpLockName.LOCK_FILE, config.hostname, pid)
        fd = in_tmp(config, functools.partial(create_file, name, config.queue_file_mode))
        try:
            st = write_lock(config, fd, pid)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                unlink_in(config, (Layout.TMP,), name)
            raise
        made = LockFile(fd, config, name, pid, st)
        if st.st_size == 0:
            # The disk is full: an empty lock would stay the lock of every job we take.
            made.unlink()
            return None
        old, self.current = self.current, made
        if old is not None:
            old.unlink()
        _keepers.add(self)
        _clean_up_at_exit()
        return made

    def let_go(self) -> None:
        """Remove our lock file's name; jobs still linked to it keep their locks. The
        file itself is kept while one is (it can still be linked, so the next pickup
        makes no new file); with none, the next pickup makes a new one."""
        with self.guard:
            made = self.current
            if made is None:
                return
            with made.guard:
                if not made.holding:
                    self.current = None
            made.unlink()


#: Every keeper with a lock file, for the cleanup at exit.
_keepers: weakref.WeakSet[LockFileKeeper] = weakref.WeakSet()
#: Every keeper, whose guard a forked child makes anew: a thread of the parent may have
#: held it at the fork, and nothing in the child would ever release it.
_every_keeper: weakref.WeakSet[LockFileKeeper] = weakref.WeakSet()


def _new_guards_after_fork() -> None:
    for keeper in list(_every_keeper):
        keeper.guard = threading.Lock()


os.register_at_fork(after_in_child=_new_guards_after_fork)


def _clean_up_at_exit() -> None:
    """Have our lock files' names removed when this process ends: at exit, and at the
    end of a ``multiprocessing`` child (which leaves by ``os._exit``, past ``atexit``)."""
    pid = current_pid()
    if _cleanup_registered and _cleanup_registered[0] == pid:
        return
    _cleanup_registered[:] = [pid]
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _unlink_lock_files, exitpriority=0)


#: The pid whose cleanup at exit is registered (a forked child registers its own).
_cleanup_registered: list[int] = []


def _unlink_lock_files() -> None:
    # The names go; locks still linked to the files stay (and say who we were).
    # LockFile.unlink leaves a parent's files to the parent.
    for keeper in list(_keepers):
        keeper.let_go()


atexit.register(_unlink_lock_files)


#: What our locks say, made once: (host, pid, heartbeat) -> the lock file's bytes.
_lock_contents: dict[tuple[str, int, bool], bytes] = {}


def write_lock(config: QueueConfig, fd: int, pid: int) -> os.stat_result:
    """Write our lock's contents to ``fd``; return its stat."""
    write_lock_contents(config, fd, pid)
    return os.fstat(fd)


def write_lock_contents(config: QueueConfig, fd: int, pid: int) -> None:
    """Write our lock's contents to ``fd`` (empty on a full disk)."""
    key = (config.hostname, pid, config.lock_heartbeat)
    content = _lock_contents.get(key)
    if content is None:
        me = this_process()
        content = format_lock(*key, boot=me.boot, pidns=me.pidns, start=me.start)
        _lock_contents.clear()  # One process, one identity (a forked child makes its own).
        _lock_contents[key] = content
    try:
        _fs.write_all(fd, content)
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        # A full disk: an empty lock needs no data block, so workers can still drain
        # the queue and free space. It names no owner, so it is judged by its age
        # alone, which our heartbeat keeps young.
        os.ftruncate(fd, 0)


def in_tmp(config: QueueConfig, operation: Callable[[int], _T]) -> _T:
    """``operation(fd)`` in ``tmp/``, through its descriptor (never by path)."""
    return in_queue_dir(config, (Layout.TMP,), operation)


def create_file(name: str, mode: int, dir_fd: int) -> int:
    return _fs.create_exclusive(name, mode, dir_fd=dir_fd)


def unlink_in(config: QueueConfig, parts: tuple[str, ...], name: str) -> None:
    on_name_in(config, parts, os.unlink, name, missing_is_an_answer=True)
