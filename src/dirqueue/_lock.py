"""A job's lock in ``active/``: taking it, checking it is still ours, touching it,
releasing it, and breaking a stale one.

Taking (the pickup protocol, steps 2-4 of ``docs/format.md``): write a lock in
``tmp/``, check the job is still queued, ``link()`` the lock to ``active/NAME``. Over
NFS ``link()`` may report failure although it worked, or success for a retried call
that did not, so only the inode at ``active/NAME`` says who won. On a local
filesystem every job a queue object takes is a link to its one lock file
(:class:`LockFileKeeper`), so no lock file is written per job.

Breaking: whether a lock is stale is :func:`dirqueue._judge.judge`'s call. Dequeuers
breaking one lock take turns with a token (``tmp/NAME.breaking``, linked like a lock);
each unlinks the lock only if it is still the very file it judged, so nothing can put
a fresh lock in its place between the check and the unlink. (Moving the lock aside to
check it, instead, leaves the job unlocked for a moment, and a third dequeuer can take
it then.) A lock is only ever removed by its owner or by the token's holder; the one
gap left is a breaker that stalls for longer than :data:`BREAK_TOKEN_STALE` between
its two steps.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import errno
import functools
import logging
import os
import random
import sys
import threading
import time
import weakref
from typing import Final

from . import _dirfds, _fs
from ._config import QueueConfig
from ._format import format_lock
from ._identity import current_pid, this_process
from ._jobfiles import set_aside
from ._judge import Judgement, Verdict, filesystem_now, judge, read_lock_file
from ._layout import TmpLockName

__all__ = [
    "BREAK_TOKEN_STALE",
    "HeldLock",
    "LockFileKeeper",
    "Refused",
    "Standing",
    "break_if_stale",
    "release",
    "remove_judged",
    "standing",
    "take",
    "touch",
]

_log = logging.getLogger("dirqueue")

#: A stale-lock breaker's token older than this belongs to a breaker that died:
#: breaking takes milliseconds.
BREAK_TOKEN_STALE: Final = 30.0

#: Writing a lock's few bytes can fail on a full disk although an empty file (an inode,
#: no data block) still fits: then the lock is left empty rather than the job untaken.
_DISK_FULL: Final = (errno.ENOSPC, errno.EDQUOT)


class Refused(enum.Enum):
    """Why :func:`take` did not take a job."""

    #: Another worker holds the job.
    HELD = "held"
    #: The job left the queue (finished by another worker) before we locked it.
    GONE = "gone"
    #: Another worker linked its lock first, between our look and our link: a claim
    #: lost (the bench counts these; callers treat it as HELD).
    LOST = "lost"


class _Stamp:
    """The mtime we last gave a lock file, shared by every job linked to that file,
    and the lock (threading) under which it is given and recorded."""

    __slots__ = ("guard", "mtime_ns")

    def __init__(self, mtime_ns: int) -> None:
        self.mtime_ns = mtime_ns
        self.guard = threading.Lock()


class HeldLock:
    """A lock this process linked at ``active/NAME``.

    Known by its inode *and* the mtime we last gave it: once a breaker unlinks our lock,
    the filesystem may hand its inode number to the very next file created, a new lock
    included, so an inode alone could make a stalled worker take another's lock for its
    own. The mtime tells them apart: a lock made after ours was broken is newer than
    anything we set (ours was a whole lifetime old when it was broken). An mtime moved
    back (by hand, or a restore) still counts as ours.

    Jobs locked with one queue object's :class:`_LockFile` share one inode and one
    mtime (``_stamp``); each keeps the lock file (and so its inode number) alive.
    """

    __slots__ = ("_source", "_stamp", "broke", "jobid", "stat")

    def __init__(
        self,
        jobid: str,
        st: os.stat_result,
        stamp: _Stamp | None = None,
        source: _LockFile | None = None,
    ) -> None:
        self.jobid = jobid
        self.stat = st
        self._stamp = stamp if stamp is not None else _Stamp(st.st_mtime_ns)
        self._source = source
        #: Set when we took the job by breaking the lock of a worker that died holding
        #: it: that worker's attempt ended without a word, and counts as failed.
        self.broke: Judgement | None = None

    @property
    def mtime_ns(self) -> int:
        """The mtime we last gave the lock."""
        return self._stamp.mtime_ns

    @mtime_ns.setter
    def mtime_ns(self, value: int) -> None:
        self._stamp.mtime_ns = value

    @property
    def _guard(self) -> threading.Lock:
        # Held while the lock is touched and its new mtime recorded.
        return self._stamp.guard

    def matches(self, st: os.stat_result) -> bool:
        """True if ``st`` (an lstat of ``active/NAME``) is our lock as we left it."""
        with self._stamp.guard:
            return (
                _fs.same_file(st, self.stat)
                and st.st_uid == self.stat.st_uid
                and st.st_mtime_ns <= self._stamp.mtime_ns
            )


def take(
    config: QueueConfig,
    jobid: str,
    queue_path: str,
    *,
    seen_free: bool = False,
    keeper: LockFileKeeper | None = None,
) -> HeldLock | Refused:
    """Lock job ``jobid`` (control file at ``queue_path``) for this process.

    Breaks the job's lock first if it is stale. ``seen_free``: an index that sees every
    change (inotify on a local filesystem) has just seen the job queued and unlocked:
    see :func:`_link_lock_file`.
    """
    if seen_free and keeper is not None:
        landed = _link_lock_file(config, jobid, keeper)
        if landed is not None:
            return landed
    layout = config.layout
    active_path = layout.active_path(jobid)
    refused, broke = _look_first(config, jobid, queue_path)
    if refused is not None:
        return refused
    pid = current_pid()
    tmp_lock = layout.tmp_path(layout.tmp_lock_name(jobid, config.hostname, pid))
    try:
        fd = _fs.create_exclusive(tmp_lock, config.queue_file_mode)
    except FileExistsError:
        return Refused.HELD
    linked = False
    held: HeldLock | None = None
    try:
        try:
            held = HeldLock(jobid, _write_lock(config, fd, pid))
        finally:
            os.close(fd)
        if not os.path.lexists(queue_path):
            return Refused.GONE
        linked = True
        if not _link_lock(tmp_lock, active_path, held):
            return Refused.LOST  # Another worker's lock.
        held.broke = broke
    except BaseException:
        # A lock we may have linked but could not confirm would keep the job from
        # every worker until we die: take it back if it is ours.
        if linked and held is not None:
            with contextlib.suppress(OSError):
                release(config, held)
        raise
    finally:
        with contextlib.suppress(OSError):
            _fs.unlink_quietly(tmp_lock)
    return held


def _look_first(
    config: QueueConfig, jobid: str, queue_path: str
) -> tuple[Refused | None, Judgement | None]:
    """Before a lock is written: is the job still queued, and its lock free or stale
    (then broken)? Returns why not, or None; and the judgement of a lock broken."""
    if not os.path.lexists(queue_path):
        # Done by another worker since we listed it: a cheap check before the lock
        # file is written.
        return Refused.GONE, None
    try:
        lock = os.lstat(config.layout.active_path(jobid))
    except FileNotFoundError:
        return None, None
    may_take, broke = break_if_stale(config, jobid, lock)
    return (None if may_take else Refused.HELD), broke


class _LockFile:
    """A queue object's lock, as a file in ``tmp/`` that every job it takes is linked
    to (on a local filesystem): ``tmp/lock.TIME.HOST.PID.active``.

    Every lock of one process says the same (``HOST\nPID\n``), so one file serves
    them all. Taking a job is then an ``utime`` (the lock must look fresh) and a
    ``link()``, instead of a new file to create, write, link and close: three system
    calls fewer, and no inode to allocate, which on a disk is most of a pickup's cost.
    The file is kept open, so its inode number cannot go to another file while a job of
    ours is linked to it. If its name is removed (by ``repair()``, say) it still serves
    while a job is linked to it; with no name left, a new one is made.
    """

    __slots__ = ("fd", "guard", "holding", "named", "path", "pid", "stamp", "stat")

    def __init__(self, fd: int, path: str, pid: int, st: os.stat_result) -> None:
        self.fd = fd
        #: Until we remove its name (a name removed by another process still counts).
        self.named = True
        #: The jobs linked (or being linked) to this file and not yet released.
        self.holding: set[str] = set()
        self.guard = threading.Lock()
        self.path = path
        self.pid = pid
        self.stat = st
        self.stamp = _Stamp(st.st_mtime_ns)

    def freshen(self) -> None:
        """Give the file (every lock of ours linked to it) the time now as its mtime."""
        with self.stamp.guard:
            now = time.time_ns()
            os.utime(self.fd, ns=(now, now))
            # The filesystem may keep it coarser, never later: matches() allows that.
            self.stamp.mtime_ns = now

    def unlink(self) -> None:
        """Remove the file's name (jobs still linked to it keep their locks)."""
        if self.named and self.pid == current_pid():
            self.named = False
            with contextlib.suppress(OSError):
                _fs.unlink_quietly(self.path)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class LockFileKeeper:
    """The lock file of one :class:`dirqueue.DirQueue` object (made on its first pickup
    on a local filesystem). Its name goes when a pickup finds no job (an idle worker,
    or one about to exit, leaves nothing in tmp/), when the queue object is closed or
    collected, and when the process exits (at ``atexit``, and at the end of a
    ``multiprocessing`` child, which leaves past ``atexit``)."""

    __slots__ = ("__weakref__", "config", "current", "guard")

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.current: _LockFile | None = None
        #: Threads sharing the queue object make and drop its file one at a time: two
        #: threads making one each at once would leave one name in tmp/ for good.
        self.guard = threading.Lock()
        _every_keeper.add(self)

    def get(self, *, replacing: _LockFile | None = None) -> _LockFile | None:
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

    def _make(self) -> _LockFile | None:
        """A new lock file, as the current one (under ``guard``)."""
        pid = current_pid()
        if not _fs.CAN_LINK_OPEN_FILES:
            return None
        config = self.config
        layout = config.layout
        path = layout.tmp_path(layout.tmp_lock_name(TmpLockName.LOCK_FILE, config.hostname, pid))
        fd = _fs.create_exclusive(path, config.queue_file_mode)
        try:
            st = _write_lock(config, fd, pid)
        except BaseException:
            os.close(fd)
            _fs.unlink_quietly(path)
            raise
        made = _LockFile(fd, path, pid, st)
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
    # _LockFile.unlink leaves a parent's files to the parent.
    for keeper in list(_keepers):
        keeper.let_go()


atexit.register(_unlink_lock_files)


def _link_lock_file(
    config: QueueConfig, jobid: str, keeper: LockFileKeeper
) -> HeldLock | Refused | None:
    """Lock job ``jobid`` by linking our lock file (a :class:`LockFileKeeper`'s) as
    ``active/NAME``.

    Only on a local filesystem whose index sees every change (the index has just seen
    the job queued and unlocked): there link() tells the truth, so ``EEXIST`` means
    another lock was there first (over NFS a lost reply makes a lock we linked look like
    another's, so there a lock is written in tmp/ and linked, and its inode decides). A
    job finished meanwhile is found gone when its control file is read, and the lock
    taken back. None where no lock file can be kept: the caller links as over NFS.
    """
    active = (config.layout.ACTIVE,)
    lock_file = keeper.get()
    for _ in range(2):
        if lock_file is None:
            return None
        with lock_file.guard:
            if jobid in lock_file.holding:
                return Refused.LOST  # Another thread of ours is taking it, or holds it.
            lock_file.holding.add(jobid)
        held = HeldLock(jobid, lock_file.stat, lock_file.stamp, lock_file)
        try:
            lock_file.freshen()
            _dirfds.at(config.dir, active, functools.partial(_fs.link_open_file, lock_file.fd,
                                                             jobid), create=True)
        except BaseException as err:
            # Whatever link() said (a retry through a fresh directory descriptor can
            # answer EEXIST for our own first try), our inode there means ours: no
            # other job of ours has that name.
            try:
                # Not adopting the mtime seen: another thread may have freshened the
                # shared file since, and an older stamp makes all our locks look taken.
                ours = _is_ours(config.layout.active_path(jobid), held, adopt_mtime=False)
            except OSError:
                ours = False
            if ours and isinstance(err, OSError):
                return held
            if ours:
                with contextlib.suppress(OSError):
                    release(config, held)  # Interrupted: not ours to keep.
            lock_file.holding.discard(jobid)
            if isinstance(err, FileExistsError):
                return Refused.LOST  # Another worker's lock.
            if isinstance(err, FileNotFoundError) and os.fstat(lock_file.fd).st_nlink == 0:
                # The file's name was removed while no job was linked to it: a new one.
                lock_file = keeper.get(replacing=lock_file)
                continue
            raise
        return held
    return None


def _link_lock(tmp_lock: str, active_path: str, held: HeldLock) -> bool:
    """Link our lock at ``active_path``; True if the lock there is ours.

    Whatever link() answers, only the inode says whose lock landed: over NFS a lost
    reply to a retried link reports EEXIST (or another error) for a link made.
    """
    with contextlib.suppress(OSError):
        os.link(tmp_lock, active_path)
    return _is_ours(active_path, held)


def _is_ours(active_path: str, held: HeldLock, *, adopt_mtime: bool = True) -> bool:
    """True if the lock at ``active_path`` is the file we wrote for ``held``; then (with
    ``adopt_mtime``) its mtime is taken as the filesystem keeps it (over NFS the
    server's, after close)."""
    landed = _lstat_twice(active_path)
    if (
        landed is None
        or not _fs.same_file(landed, held.stat)
        or landed.st_uid != held.stat.st_uid
    ):
        return False
    if adopt_mtime:
        held.mtime_ns = landed.st_mtime_ns
    return True


#: What our locks say, made once: (host, pid, heartbeat) -> the lock file's bytes.
_lock_contents: dict[tuple[str, int, bool], bytes] = {}


def _write_lock(config: QueueConfig, fd: int, pid: int) -> os.stat_result:
    """Write our lock's contents to ``fd``; return its stat."""
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
    return os.fstat(fd)


def _lstat_twice(active_path: str) -> os.stat_result | None:
    """lstat ``active_path``; None if nothing is there.

    Looks twice before concluding that nothing is: a lock of ours left behind would keep
    the job from every worker. (An NFS client can report ENOENT for a name that is
    there, e.g. in ESTALE recovery.) A lock that was there at the second look and gone
    at the third is a job taken and given back meanwhile (a tight loop of another
    thread or process does that): looked at again, not an error.
    """
    for _ in range(_LOOKS):
        try:
            return os.lstat(active_path)
        except FileNotFoundError:
            if not os.path.lexists(active_path):
                return None
    return os.lstat(active_path)


#: How many times :func:`_lstat_twice` looks again at a lock seen coming and going.
_LOOKS: Final = 3


class Standing(enum.Enum):
    """Where our lock stands (:func:`standing`)."""

    #: ``active/NAME`` is the lock we linked.
    OURS = "ours"
    #: No lock is there: ours was removed (by us, in an operation that then failed;
    #: or broken as stale and not re-taken). Nobody else holds the job.
    GONE = "gone"
    #: Another lock is there: ours was broken and the job taken by another worker.
    TAKEN = "taken"


def standing(config: QueueConfig, held: HeldLock) -> Standing:
    """Whether ``active/NAME`` is still the lock we linked."""
    current = _lstat_twice(config.layout.active_path(held.jobid))
    if current is None:
        return Standing.GONE
    return Standing.OURS if held.matches(current) else Standing.TAKEN


def release(config: QueueConfig, held: HeldLock) -> bool:
    """Unlink our lock if it is still ours; True if we removed it.

    A lock broken as stale and re-taken by another worker is theirs now: left alone.
    """
    active_path = config.layout.active_path(held.jobid)
    current = _lstat_twice(active_path)
    if current is None or not held.matches(current):
        _let_go_of_lock_file(held)
        return False
    try:
        os.unlink(active_path)
    except FileNotFoundError:
        if os.path.lexists(active_path):
            raise  # Still there: the job is still ours, and still locked.
        _let_go_of_lock_file(held)
        return False
    _let_go_of_lock_file(held)
    return True


def _let_go_of_lock_file(held: HeldLock) -> None:
    """Our lock of ``held`` is gone: its job leaves the lock file's holders, and the
    lock its file (so that a finished Job kept by its caller keeps no descriptor open).

    Only now, not before the unlink: until then another thread of ours, linking the
    same file at the same name, would meet EEXIST, find its own inode there, and take
    the job for its own.
    """
    source, held._source = held._source, None
    if source is not None:
        with source.guard:
            source.holding.discard(held.jobid)


def touch(config: QueueConfig, held: HeldLock) -> bool:
    """Refresh our lock's mtime; False if it is no longer ours (nothing touched).

    Works in ``active/`` through a descriptor opened without following symlinks, and
    never follows a symlink planted at the lock's name.
    """
    fd = _fs.open_dir_nofollow(config.dir, (config.layout.ACTIVE,))
    try:
        try:
            current = os.lstat(held.jobid, dir_fd=fd)
        except FileNotFoundError:
            return False
        if not held.matches(current):
            return False
        with held._guard:
            os.utime(held.jobid, dir_fd=fd, follow_symlinks=False)
            held.mtime_ns = os.lstat(held.jobid, dir_fd=fd).st_mtime_ns
        return True
    finally:
        _fs.close_dir(fd)


def break_if_stale(
    config: QueueConfig, jobid: str, lock: os.stat_result
) -> tuple[bool, Judgement | None]:
    """Break job ``jobid``'s lock (as ``lock``) if it is stale.

    Returns whether the job may be taken now (the lock is gone), and the judgement of
    the lock if this call broke it.
    """
    young = filesystem_now(config) - lock.st_mtime <= config.active_file_lifetime
    if young and _alive_recently(jobid, lock):
        return False, None  # The common case: judged alive a moment ago.
    judged = judge(config, lock, read_lock_file(config, jobid))
    if not judged.breakable:
        if young:
            _remember_alive(jobid, lock)
        return False, None
    if judged.verdict is not Verdict.DEAD:
        # A random grace (scaled to the lifetime) makes two dequeuers rarely break the
        # same stale lock at once. A proven death needs no such patience.
        lifetime = config.active_file_lifetime
        if judged.age <= lifetime + random.uniform(0, min(255.0, lifetime / 2)):
            return False, None
    removed = remove_judged(config, jobid, lock)
    if removed is None:
        return True, None  # Someone else broke it; try to take the job ourselves.
    if not removed:
        return False, None
    _log.warning("broke stale lock on %s (%s)", jobid, judged.reason)
    if judged.verdict is Verdict.DEAD and lock.st_nlink > 1:
        _remove_dead_owners_lock_file(config, lock, judged)
    return True, judged


def _remove_dead_owners_lock_file(config: QueueConfig, lock: os.stat_result,
                                  judged: Judgement) -> None:
    """A dead worker's lock was linked to its process's lock file: remove that file's
    name from tmp/ too (the one with the lock's inode), so that the worker leaves
    nothing behind once its jobs are recovered."""
    pid = judged.owner.pid
    if pid is None:
        return
    with contextlib.suppress(OSError):
        for name in os.listdir(config.layout.tmp_dir):
            if TmpLockName.is_lock_file(name) and TmpLockName.owner(name, config.hostname) == pid:
                path = config.layout.tmp_path(name)
                if _fs.same_file(os.lstat(path), lock):
                    os.unlink(path)


#: Locks judged alive lately: jobid -> (inode, mtime_ns, when). A young lock is judged
#: (its file read, its owner looked up) at most once per _ALIVE_RECHECK per process, so
#: a pickup that passes a few held jobs costs one lstat each.
_alive: dict[str, tuple[int, int, float]] = {}
_ALIVE_RECHECK: Final = 0.2
_ALIVE_MAX: Final = 4096


def _alive_recently(jobid: str, lock: os.stat_result) -> bool:
    seen = _alive.get(jobid)
    return (
        seen is not None
        and seen[:2] == (lock.st_ino, lock.st_mtime_ns)
        and time.monotonic() - seen[2] < _ALIVE_RECHECK
    )


def _remember_alive(jobid: str, lock: os.stat_result) -> None:
    if len(_alive) >= _ALIVE_MAX:
        _alive.clear()
    _alive[jobid] = (lock.st_ino, lock.st_mtime_ns, time.monotonic())


def remove_judged(config: QueueConfig, jobid: str, lock: os.stat_result) -> bool | None:
    """Remove job ``jobid``'s lock if it is still ``lock`` (the one judged).

    True if removed; False if the lock there now is another, or another dequeuer is
    breaking it (left in place either way); None if no lock was there any more.
    """
    active_path = config.layout.active_path(jobid)
    token = _take_break_token(config, jobid)
    if token is None:
        return False
    try:
        try:
            current = os.lstat(active_path)
        except FileNotFoundError:
            return None
        if not _fs.same_file(current, lock) or current.st_mtime_ns != lock.st_mtime_ns:
            return False  # Broken and re-taken (or touched) since we judged it.
        try:
            os.unlink(active_path)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            # Not a lock but a directory, which unlink cannot remove: set it aside.
            set_aside(config, (config.layout.ACTIVE,), jobid, ".lock")
        return True
    finally:
        _drop_break_token(token)


def _take_break_token(config: QueueConfig, jobid: str) -> tuple[str, os.stat_result] | None:
    """Hold job ``jobid``'s breaker token: its path and our inode, or None if taken."""
    layout = config.layout
    path = layout.breaker_token_path(jobid)
    mine = layout.tmp_path(layout.tmp_breaker_name(jobid, config.hostname, current_pid()))
    fd = _fs.create_exclusive(mine, config.queue_file_mode)
    try:
        ours = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        for _ in range(2):
            # As with locks, link() is atomic on NFS too, and only the inode says
            # whether it worked.
            with contextlib.suppress(OSError):
                os.link(mine, path)
            try:
                there = os.lstat(path)
            except FileNotFoundError:
                continue
            if _fs.same_file(there, ours):
                return path, ours
            if filesystem_now(config) - there.st_mtime <= BREAK_TOKEN_STALE:
                return None  # Another dequeuer is breaking this lock right now.
            # Left by a breaker that died: clear it, and try once more.
            with contextlib.suppress(OSError):
                _fs.unlink_quietly(path)
        return None
    finally:
        with contextlib.suppress(OSError):
            _fs.unlink_quietly(mine)


def _drop_break_token(token: tuple[str, os.stat_result]) -> None:
    path, ours = token
    with contextlib.suppress(OSError):
        there = os.lstat(path)
        if _fs.same_file(there, ours):
            os.unlink(path)


def take_token(config: QueueConfig, name: str) -> tuple[str, os.stat_result] | None:
    """Hold the breaker token of ``name`` (``tmp/NAME.breaking``) for a file other than a
    job's lock that is broken by the same rule: a unique job's key
    (:mod:`dirqueue._keys`). None if another process holds it now."""
    return _take_break_token(config, name)


def drop_token(token: tuple[str, os.stat_result]) -> None:
    """Give back a token from :func:`take_token` (only if it is still ours)."""
    _drop_break_token(token)
