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

import contextlib
import enum
import functools
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

from . import _claims, _fs
from ._config import QueueConfig
from ._format import parse_lock_file
from ._identity import current_pid
from ._jobfiles import in_queue_dir, on_name_in, set_aside
from ._judge import Judgement, Verdict, filesystem_now, judge, read_lock_file
from ._layout import Layout, TmpLockName
from ._lockfile import LockFile, LockFileKeeper, Stamp, write_lock, write_lock_contents
from ._lockfile import create_file as _create
from ._lockfile import in_tmp as _in_tmp
from ._lockfile import unlink_in as _unlink_in

__all__ = [
    "BREAK_TOKEN_STALE",
    "HeldLock",
    "Refused",
    "Standing",
    "adopt",
    "break_if_stale",
    "release",
    "remove_judged",
    "stale_not_before",
    "standing",
    "take",
    "touch",
]

_log = logging.getLogger("dirqueue")
_T = TypeVar("_T")

#: A stale-lock breaker's token older than this belongs to a breaker that died:
#: breaking takes milliseconds.
BREAK_TOKEN_STALE: Final = 30.0


class Refused(enum.Enum):
    """Why :func:`take` did not take a job."""

    #: Another worker holds the job.
    HELD = "held"
    #: The job left the queue (finished by another worker) before we locked it.
    GONE = "gone"
    #: Another worker linked its lock first, between our look and our link: a claim
    #: lost (the bench counts these; callers treat it as HELD).
    LOST = "lost"


class HeldLock:
    """A lock this process linked at ``active/NAME``.

    Known by its inode *and* the mtime we last gave it: once a breaker unlinks our lock,
    the filesystem may hand its inode number to the very next file created, a new lock
    included, so an inode alone could make a stalled worker take another's lock for its
    own. The mtime tells them apart: a lock made after ours was broken is newer than
    anything we set (ours was a whole lifetime old when it was broken). An mtime moved
    back (by hand, or a restore) still counts as ours.

    Jobs locked with one queue object's :class:`LockFile` share one inode and one
    mtime (``_stamp``); each keeps the lock file (and so its inode number) alive.
    """

    __slots__ = ("_source", "_stamp", "broke", "jobid", "stat")

    def __init__(
        self,
        jobid: str,
        st: os.stat_result,
        stamp: Stamp | None = None,
        source: LockFile | None = None,
    ) -> None:
        self.jobid = jobid
        self.stat = st
        self._stamp = stamp if stamp is not None else Stamp(st.st_mtime_ns)
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
        mine = self.stat
        stamp = self._stamp
        with stamp.guard:
            return (
                st.st_ino == mine.st_ino  # _fs.same_file, without a call per look
                and st.st_dev == mine.st_dev
                and st.st_uid == mine.st_uid
                and st.st_mtime_ns <= stamp.mtime_ns
            )


def take(
    config: QueueConfig,
    jobid: str,
    queue_path: str,
    *,
    seen_free: bool = False,
    keeper: LockFileKeeper | None = None,
    alive_until: Callable[[float], None] | None = None,
    unseen_here: Callable[[str], bool] | None = None,
    keep_spare: bool = False,
) -> HeldLock | Refused:
    """Lock job ``jobid`` (control file at ``queue_path``) for this process.

    Breaks the job's lock first if it is stale. ``seen_free``: an index that sees every
    change (inotify on a local filesystem) has just seen the job queued and unlocked:
    see :func:`_link_lock_file`. ``alive_until``: told, when the lock there was judged
    alive and is another host's, the time (filesystem's clock) before which that lock
    cannot become stale (see :func:`break_if_stale`); also of a lock that won the link
    against ours. ``unseen_here(jobid)``: True if a lock there now cannot have been
    made on this host (see :func:`dirqueue._claims.young_from_elsewhere`).
    ``keep_spare``: a lock file whose claim failed once written is kept for this
    thread's next claim (see :mod:`dirqueue._claims`; the caller removes it with
    ``drop_spare`` when it stops).
    """
    if seen_free and keeper is not None:
        landed = _link_lock_file(config, jobid, keeper)
        if landed is not None:
            _claims.drop_spare(config)
            return landed
    refused, broke = _look_first(config, jobid, queue_path, alive_until, unseen_here)
    if refused is not None:
        return refused
    pid = current_pid()
    made = _lock_to_link(config, jobid, pid)
    if made is None:
        return Refused.HELD
    tmp_lock, held, written = made
    linked = kept = False
    try:
        if not os.path.lexists(queue_path):
            kept = keep_spare and _claims.keep_spare(
                config, pid, tmp_lock, held.stat, written
            )
            return Refused.GONE
        linked = True
        if not _link_lock(config, tmp_lock, held):
            if unseen_here is not None and alive_until is not None:
                _note_winner(config, jobid, alive_until, unseen_here)
            kept = keep_spare and _claims.keep_spare(
                config, pid, tmp_lock, held.stat, written
            )
            return Refused.LOST  # Another worker's lock.
        held.broke = broke
    except BaseException:
        # A lock we may have linked but could not confirm would keep the job from
        # every worker until we die: take it back if it is ours.
        if linked:
            with contextlib.suppress(OSError):
                release(config, held)
        raise
    finally:
        if not kept:
            with contextlib.suppress(OSError):
                _unlink_in(config, (Layout.TMP,), tmp_lock)
    return held


def _lock_to_link(
    config: QueueConfig, jobid: str, pid: int
) -> tuple[str, HeldLock, float] | None:
    """Our lock for a claim on job ``jobid``, in tmp/: this thread's spare, or a file
    made and written now. Its name, what it is known by and when it was written
    (``time.monotonic()``); None if that name was taken."""
    spare = _claims.take_spare(config, pid)
    if spare is not None:
        return spare[0], HeldLock(jobid, spare[1], Stamp(_NOT_READ_YET)), spare[2]
    written = time.monotonic()
    name = config.layout.tmp_lock_name(jobid, config.hostname, pid)
    try:
        fd = _in_tmp(config, functools.partial(_create, name, config.queue_file_mode))
    except FileExistsError:
        return None
    try:
        try:
            return name, _written_lock(config, jobid, fd, pid), written
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            _unlink_in(config, (Layout.TMP,), name)
        raise


#: The mtime of a lock whose file we made but whose mtime we have not yet read: any.
_NOT_READ_YET: Final = (1 << 63) - 1


def _written_lock(config: QueueConfig, jobid: str, fd: int, pid: int) -> HeldLock:
    """Our lock for job ``jobid``, written to ``fd`` (a file made just now in tmp/).

    Its ``fstat`` is taken before the write: over NFS the attributes the create brought
    back answer it, where after the write it is a GETATTR, one for every claim. What
    it is known by until the link lands is its inode and owner (nobody can have broken
    a lock linked a moment ago and put another file in its place); :func:`_is_ours`
    then reads its mtime as the server gave it (the write's).
    """
    held = HeldLock(jobid, os.fstat(fd), Stamp(_NOT_READ_YET))
    write_lock_contents(config, fd, pid)
    return held


def _look_first(
    config: QueueConfig,
    jobid: str,
    queue_path: str,
    alive_until: Callable[[float], None] | None = None,
    unseen_here: Callable[[str], bool] | None = None,
) -> tuple[Refused | None, Judgement | None]:
    """Before a lock is written: is the job still queued, and its lock free or stale
    (then broken)? Returns why not, or None; and the judgement of a lock broken."""
    if not os.path.lexists(queue_path):
        # Done by another worker since we listed it: a cheap check before the lock
        # file is written.
        return Refused.GONE, None
    try:
        lock = _look_in_active(config, jobid)
    except FileNotFoundError:
        return None, None
    if unseen_here is not None:
        until = _claims.young_from_elsewhere(config, jobid, lock, unseen_here)
        if until:
            if alive_until is not None:
                alive_until(until)
            return Refused.HELD, None
    may_take, broke = break_if_stale(config, jobid, lock, alive_until)
    return (None if may_take else Refused.HELD), broke


def _note_winner(
    config: QueueConfig,
    jobid: str,
    alive_until: Callable[[float], None],
    unseen_here: Callable[[str], bool],
) -> None:
    """Our link lost to another lock: tell ``alive_until`` when it could be stale, if
    that is plain without reading it (:func:`dirqueue._claims.young_from_elsewhere`).
    The ``lstat`` follows the one that found it not ours: a client's cache answers it."""
    try:
        lock = _look_in_active(config, jobid)
    except FileNotFoundError:
        return
    until = _claims.young_from_elsewhere(config, jobid, lock, unseen_here)
    if until:
        alive_until(until)


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
            on_name_in(
                config, (Layout.ACTIVE,), functools.partial(_fs.link_open_file, lock_file.fd),
                jobid,
            )
        except BaseException as err:
            # Whatever link() said (a retry through a fresh directory descriptor can
            # answer EEXIST for our own first try), our inode there means ours: no
            # other job of ours has that name.
            try:
                # Not adopting the mtime seen: another thread may have freshened the
                # shared file since, and an older stamp makes all our locks look taken.
                ours = _is_ours(config, held, adopt_mtime=False)
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


def _link_lock(config: QueueConfig, tmp_lock: str, held: HeldLock) -> bool:
    """Link our lock ``tmp/tmp_lock`` at ``active/NAME``; True if the lock there is ours.

    Whatever link() answers, only the inode says whose lock landed: over NFS a lost
    reply to a retried link reports EEXIST (or another error) for a link made.
    """

    def link(tmp_fd: int) -> None:
        _in_active(config, lambda active_fd: os.link(
            tmp_lock, held.jobid, src_dir_fd=tmp_fd, dst_dir_fd=active_fd))

    with contextlib.suppress(OSError):
        _in_tmp(config, link)
    return _is_ours(config, held)


def _is_ours(config: QueueConfig, held: HeldLock, *, adopt_mtime: bool = True) -> bool:
    """True if the lock at ``active/NAME`` is the file we wrote for ``held``; then (with
    ``adopt_mtime``) its mtime is taken as the filesystem keeps it (over NFS the
    server's, after close)."""
    landed = _lstat_twice(config, held.jobid)
    if (
        landed is None
        or not _fs.same_file(landed, held.stat)
        or landed.st_uid != held.stat.st_uid
    ):
        return False
    if adopt_mtime:
        held.mtime_ns = landed.st_mtime_ns
    return True


def _lstat_twice(config: QueueConfig, jobid: str) -> os.stat_result | None:
    """lstat ``active/jobid``; None if nothing is there.

    Looks twice before concluding that nothing is: a lock of ours left behind would keep
    the job from every worker. (An NFS client can report ENOENT for a name that is
    there, e.g. in ESTALE recovery.)
    """
    for _ in range(2):
        try:
            return _look_in_active(config, jobid)
        except FileNotFoundError:
            pass
    return None


def _in_active(config: QueueConfig, operation: Callable[[int], _T]) -> _T:
    """``operation(fd)`` in ``active/``, through its descriptor (never by path)."""
    return in_queue_dir(config, (Layout.ACTIVE,), operation)


def _look_in_active(config: QueueConfig, jobid: str) -> os.stat_result:
    """lstat ``active/jobid`` (``FileNotFoundError`` if nothing is there)."""
    return on_name_in(config, (Layout.ACTIVE,), os.lstat, jobid, missing_is_an_answer=True)



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
    current = _lstat_twice(config, held.jobid)
    if current is None:
        return Standing.GONE
    return Standing.OURS if held.matches(current) else Standing.TAKEN


def release(config: QueueConfig, held: HeldLock) -> bool:
    """Unlink our lock if it is still ours; True if we removed it.

    A lock broken as stale and re-taken by another worker is theirs now: left alone.
    """
    current = _lstat_twice(config, held.jobid)
    if current is None or not held.matches(current):
        _let_go_of_lock_file(held)
        return False
    try:
        _unlink_in(config, (Layout.ACTIVE,), held.jobid)
    except FileNotFoundError:
        if _lstat_twice(config, held.jobid) is not None:
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
    config: QueueConfig,
    jobid: str,
    lock: os.stat_result,
    alive_until: Callable[[float], None] | None = None,
) -> tuple[bool, Judgement | None]:
    """Break job ``jobid``'s lock (as ``lock``) if it is stale.

    Returns whether the job may be taken now (the lock is gone), and the judgement of
    the lock if this call broke it. ``alive_until`` is told :func:`stale_not_before`
    of a lock judged alive, when that is a time to come.
    """
    young = filesystem_now(config) - lock.st_mtime <= config.active_file_lifetime
    if young:
        until = _alive_recently(jobid, lock)
        if until is not None:
            # The common case: judged alive a moment ago.
            if until and alive_until is not None:
                alive_until(until)
            return False, None
    judged = judge(config, lock, read_lock_file(config, jobid))
    if not judged.breakable:
        if young:
            until = stale_not_before(config, lock, judged)
            _remember_alive(jobid, lock, until)
            if until and alive_until is not None:
                alive_until(until)
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

    def remove(tmp_fd: int) -> None:
        for name in os.listdir(tmp_fd):
            if (
                TmpLockName.is_lock_file(name)
                and TmpLockName.owner(name, config.hostname) == pid
                and _fs.same_file(os.lstat(name, dir_fd=tmp_fd), lock)
            ):
                os.unlink(name, dir_fd=tmp_fd)

    with contextlib.suppress(OSError):
        _in_tmp(config, remove)


def stale_not_before(config: QueueConfig, lock: os.stat_result, judged: Judgement) -> float:
    """The earliest time (filesystem's clock) at which a lock judged alive as ``judged``
    could be judged breakable; 0.0 when it could be at any moment.

    A lock naming a worker on another host can only go stale by age: from here that
    worker's death cannot be seen (:func:`dirqueue._identity.owner_is_dead` says no for
    any other host), so the rule of :func:`dirqueue._judge.judge` breaks it only once
    its mtime is ``active_file_lifetime`` old, and a heartbeat only makes the mtime
    later. A lock of this host (or naming none) may be proven dead at any moment (a
    crashed worker's job is taken back within a pickup or two): 0.0.
    """
    owner = judged.owner
    if (
        judged.verdict is not Verdict.HELD
        or not stat.S_ISREG(lock.st_mode)
        or owner.host is None
        or owner.host == config.hostname
    ):
        return 0.0
    return lock.st_mtime + config.active_file_lifetime


#: Locks judged alive lately: jobid -> (inode, mtime_ns, when, stale_not_before). A
#: young lock is judged (its file read, its owner looked up) at most once per
#: _ALIVE_RECHECK per process, so a pickup that passes a few held jobs costs one lstat
#: each.
_alive: dict[str, tuple[int, int, float, float]] = {}
_ALIVE_RECHECK: Final = 0.2
_ALIVE_MAX: Final = 4096


def _alive_recently(jobid: str, lock: os.stat_result) -> float | None:
    """None unless ``lock`` was judged alive lately; then its :func:`stale_not_before`."""
    seen = _alive.get(jobid)
    if (
        seen is not None
        and seen[:2] == (lock.st_ino, lock.st_mtime_ns)
        and time.monotonic() - seen[2] < _ALIVE_RECHECK
    ):
        return seen[3]
    return None


def _remember_alive(jobid: str, lock: os.stat_result, until: float) -> None:
    if len(_alive) >= _ALIVE_MAX:
        _alive.clear()
    _alive[jobid] = (lock.st_ino, lock.st_mtime_ns, time.monotonic(), until)


def remove_judged(config: QueueConfig, jobid: str, lock: os.stat_result) -> bool | None:
    """Remove job ``jobid``'s lock if it is still ``lock`` (the one judged).

    True if removed; False if the lock there now is another, or another dequeuer is
    breaking it (left in place either way); None if no lock was there any more.
    """
    token = _take_break_token(config, jobid)
    if token is None:
        return False
    try:
        try:
            current = _look_in_active(config, jobid)
        except FileNotFoundError:
            return None
        if not _fs.same_file(current, lock) or current.st_mtime_ns != lock.st_mtime_ns:
            return False  # Broken and re-taken (or touched) since we judged it.
        try:
            _unlink_in(config, (Layout.ACTIVE,), jobid)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            # Not a lock but a directory, which unlink cannot remove: set it aside.
            set_aside(config, (config.layout.ACTIVE,), jobid, ".lock")
        return True
    finally:
        _drop_break_token(config, token)


def _take_break_token(config: QueueConfig, jobid: str) -> tuple[str, os.stat_result] | None:
    """Hold job ``jobid``'s breaker token: its name in tmp/ and our inode, or None if
    taken."""
    layout = config.layout
    token = layout.breaker_token_name(jobid)
    mine = layout.tmp_breaker_name(jobid, config.hostname, current_pid())
    fd = _in_tmp(config, functools.partial(_create, mine, config.queue_file_mode))
    try:
        ours = os.fstat(fd)
    finally:
        os.close(fd)

    def take_token(tmp_fd: int) -> tuple[str, os.stat_result] | None:
        for _ in range(2):
            # As with locks, link() is atomic on NFS too, and only the inode says
            # whether it worked.
            with contextlib.suppress(OSError):
                os.link(mine, token, src_dir_fd=tmp_fd, dst_dir_fd=tmp_fd)
            try:
                there = os.lstat(token, dir_fd=tmp_fd)
            except FileNotFoundError:
                continue
            if _fs.same_file(there, ours):
                return token, ours
            if filesystem_now(config) - there.st_mtime <= BREAK_TOKEN_STALE:
                return None  # Another dequeuer is breaking this lock right now.
            # Left by a breaker that died: clear it, and try once more.
            with contextlib.suppress(OSError):
                os.unlink(token, dir_fd=tmp_fd)
        return None

    try:
        return _in_tmp(config, take_token)
    finally:
        with contextlib.suppress(OSError):
            _unlink_in(config, (Layout.TMP,), mine)


def _drop_break_token(config: QueueConfig, token: tuple[str, os.stat_result]) -> None:
    name, ours = token

    def drop(tmp_fd: int) -> None:
        if _fs.same_file(os.lstat(name, dir_fd=tmp_fd), ours):
            os.unlink(name, dir_fd=tmp_fd)

    with contextlib.suppress(OSError):
        _in_tmp(config, drop)


def adopt(config: QueueConfig, held: HeldLock, taker: int) -> HeldLock | None:
    """Take over, in a process forked after the pickup, a lock that process ``taker``
    (its parent) linked: put a lock naming this process in its place. The new lock, or
    None if the lock there is no longer the one ``taker`` linked for ``held``.

    A lock taken by a parent names the parent, and its lock file's mtime moves with
    every pickup and heartbeat of the parent: a child could neither tell the lock as
    its own by the mtime it inherited, nor keep it from being judged dead once the
    parent exits. The lock written here names the child, is known by the child's own
    mtime, and lives and dies with the child. The job is never unlocked meanwhile: the
    new lock is renamed over the old, and the breaker token, held across the check and
    the rename, keeps any breaker from removing the old one in between.
    """
    jobid = held.jobid
    token = _take_break_token(config, jobid)
    if token is None:
        return None  # Being judged stale right now: see what becomes of it.
    try:
        current = _lstat_twice(config, jobid)
        if current is None or not _taken_by(config, held, current, taker):
            return None
        pid = current_pid()
        tmp_lock = config.layout.tmp_lock_name(jobid, config.hostname, pid)
        fd = _in_tmp(config, functools.partial(_create, tmp_lock, config.queue_file_mode))
        try:
            try:
                adopted = HeldLock(jobid, write_lock(config, fd, pid))
            finally:
                os.close(fd)

            def rename(tmp_fd: int) -> None:
                _in_active(config, lambda active_fd: os.rename(
                    tmp_lock, jobid, src_dir_fd=tmp_fd, dst_dir_fd=active_fd))

            # Over NFS a retried rename can report ENOENT for one that worked: the
            # inode at active/NAME says.
            with contextlib.suppress(FileNotFoundError):
                _in_tmp(config, rename)
            return adopted if _is_ours(config, adopted) else None
        finally:
            with contextlib.suppress(OSError):
                _unlink_in(config, (Layout.TMP,), tmp_lock)
    finally:
        _drop_break_token(config, token)


def _taken_by(config: QueueConfig, held: HeldLock, current: os.stat_result, taker: int) -> bool:
    """True if ``current`` (at ``active/NAME``) is still the lock process ``taker`` linked
    for ``held``. Its mtime may have moved on in ``taker``, so beyond the inode the lock
    must be linked to a lock file we hold open (then its inode number cannot have gone
    to another file), or say it is ``taker``'s."""
    if not _fs.same_file(current, held.stat) or current.st_uid != held.stat.st_uid:
        return False
    if held._source is not None or held.matches(current):
        return True
    owner = parse_lock_file(read_lock_file(config, held.jobid))
    return owner.host == config.hostname and owner.pid == taker


def take_token(config: QueueConfig, name: str) -> tuple[str, os.stat_result] | None:
    """Hold the breaker token of ``name`` (``tmp/NAME.breaking``) for a file other than a
    job's lock that is broken by the same rule: a unique job's key
    (:mod:`dirqueue._keys`). None if another process holds it now."""
    return _take_break_token(config, name)


def drop_token(config: QueueConfig, token: tuple[str, os.stat_result]) -> None:
    """Give back a token from :func:`take_token` (only if it is still ours)."""
    _drop_break_token(config, token)
