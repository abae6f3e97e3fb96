"""Unique jobs' keys in ``keys/``: enqueue a job only if no job with its key is there.

A key is a file ``keys/HASH`` (:meth:`Layout.key_name` of the caller's key), written
whole in ``tmp/`` and ``link()``ed into place, which is atomic on every filesystem a
queue lives on, NFS included; only the inode at the name says whose link won (a lost
reply to a retried link reports EEXIST although it worked). No ``O_EXCL``, and no
rename over a name that exists.

The file is shaped as a job's lock (``HOST\\nPID\\nheartbeat\\nowner ...``, see
:func:`dirqueue._format.format_lock`), written by the enqueuer, with one more line,
``job NAME``: the job that holds the key. Whether a key is still held is decided in
two steps, and the second is the stale-lock rule itself (:func:`dirqueue._judge.judge`):

1. The job it names is still in ``queue/``, ``deferred/`` or ``waiting/``: held.
2. The job is nowhere. Either it has ended and whoever ended it died before releasing
   the key, or the enqueuer is between linking the key and linking the job (the key
   is always claimed first). The enqueuer tells the two apart for the judge: once its
   job is in the queue it *seals* the key, setting its mtime to the epoch
   (:func:`seal_through`), a heartbeat quiet for decades: stale. A key not yet sealed is an
   enqueue at work, held while the enqueuer lives, for ``active_file_lifetime`` at
   most, and broken at once when its owner line proves the enqueuer dead (killed
   between the two links). Its job is not looked up (step 1 is skipped) while it is
   so held: a miss that an NFS client's lookup cache kept from before the job's link
   would hide the job once the key is sealed.

A stale key is removed under the breaker token (``tmp/k.HASH.breaking``), only if it is
still the file judged (inode and mtime), exactly as a stale lock is broken; releasing
a key after its job ends takes the same token, so a release never removes a key that
a new enqueue linked after a break.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time
from typing import Final, Literal

from . import _dirfds, _fs, _lock
from ._config import QueueConfig
from ._format import format_lock
from ._identity import current_pid, this_process
from ._jobfiles import in_queue_dir
from ._judge import filesystem_now, judge
from ._layout import Layout
from ._lock import BREAK_TOKEN_STALE
from ._lockfile import unlink_in
from ._numbers import SECONDS, check_number
from ._place import listed_jobs, place_of
from .errors import DirQueueError

__all__ = [
    "KEY_META",
    "InvalidKeyError",
    "JobId",
    "KeyBusyError",
    "KeyGate",
    "KeyHolder",
    "UniqueWhile",
    "claim",
    "holder_of",
    "is_held",
    "list_keys",
    "release",
    "remove_if_stale",
]

#: The metadata item that names a unique job's key file (its hash), so whoever ends
#: the job can release the key. Ordinary metadata to the Perl module.
KEY_META: Final = "dq.unique"

_JOB_PREFIX: Final = "job "
_UNTIL_PREFIX: Final = "until "
#: ``while queued``: the key of an enqueue with ``unique_while="queued"``.
_WHILE_PREFIX: Final = "while "

#: How long a unique job holds its key: until it has ended (``"active"``, the
#: default), or only until a worker starts it (``"queued"``).
UniqueWhile = Literal["active", "queued"]
_UNIQUE_WHILE: Final = ("active", "queued")
_READ_MAX: Final = 4096
#: How many times a claim looks again at a key that vanished, was broken under it, or
#: could not be broken (another process holds its breaker token)...
_CLAIM_TRIES: Final = 40
#: ... pausing from 1 ms, doubled each time up to this (about 2.5 s in all): a breaker
#: or releaser at work holds the token for milliseconds.
_CLAIM_PAUSE_MAX: Final = 0.1
#: The mtime of a sealed key (:func:`seal_through`): a second after the epoch.
_SEALED: Final = 1.0
_SEALED_BEFORE: Final = 1e6


class KeyBusyError(DirQueueError, BlockingIOError):
    """A unique key could not be claimed or read: another process keeps changing it."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class InvalidKeyError(DirQueueError, ValueError):
    """A unique key that is not a non-empty string."""

    def __init__(self, message: str, key: object) -> None:
        super().__init__(message)
        self.key = key


class KeyHolder:
    """A key file as found: its stat, the job it names (None if unreadable), its raw
    contents (for the judge)."""

    __slots__ = ("jobid", "raw", "stat", "until", "while_queued")

    def __init__(self, stat: os.stat_result, raw: bytes) -> None:
        self.stat = stat
        self.raw = raw
        self.jobid: str | None = None
        #: A kept key (``unique_ttl``): held until then (filesystem clock), job or not.
        self.until: float | None = None
        #: Held only until its job starts (``unique_while="queued"``).
        self.while_queued = False
        for line in raw.decode("utf-8", errors="replace").split("\n"):
            if line.startswith(_JOB_PREFIX):
                self.jobid = line[len(_JOB_PREFIX) :].strip() or None
            elif line == f"{_WHILE_PREFIX}queued":
                self.while_queued = True
            elif line.startswith(_UNTIL_PREFIX):
                with contextlib.suppress(ValueError):
                    self.until = float(line[len(_UNTIL_PREFIX) :])

    @property
    def sealed(self) -> bool:
        """Whether its enqueuer saw the job into the queue (:func:`seal_through`)."""
        # Below a bound, not equal to it: a clock-faking preload (libfaketime) may move
        # even the times a utime() sets.
        return self.stat.st_mtime < _SEALED_BEFORE


#: What our keys say of their owner, made once: (host, pid) -> the lock lines.
_owner_lines: dict[tuple[str, int], bytes] = {}


def _contents(
    config: QueueConfig, jobid: str, until: float | None, *, while_queued: bool = False
) -> bytes:
    who = (config.hostname, current_pid())
    owner = _owner_lines.get(who)
    if owner is None:
        me = this_process()
        owner = format_lock(*who, True, boot=me.boot, pidns=me.pidns, start=me.start)
        _owner_lines.clear()  # One process, one identity (a forked child makes its own).
        _owner_lines[who] = owner
    kept = f"{_UNTIL_PREFIX}{until!r}\n" if until is not None else ""
    if while_queued:
        kept += f"{_WHILE_PREFIX}queued\n"
    return owner + f"{_JOB_PREFIX}{jobid}\n{kept}".encode()


def holder_of(config: QueueConfig, name: str) -> KeyHolder | None:
    """Key ``name``'s file, or None if there is none."""
    try:
        return _dirfds.at(config.dir, (Layout.KEYS,), functools.partial(_read_key, name))
    except OSError as err:
        if _fs.is_gone(err) or err.errno in (errno.ENOTDIR, errno.ELOOP):
            return None  # No keys/ (or not a directory): no key.
        raise


def _read_key(name: str, dfd: int) -> KeyHolder | None:
    try:
        fd, st = _fs.open_regular_stat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR) or isinstance(
            err, _fs.NotRegularFileError
        ):
            # Not a key at all: its lstat, judged as "not a lock", lets it be broken
            # once it has sat there a lifetime.
            return KeyHolder(os.lstat(name, dir_fd=dfd), b"")
        raise  # ESTALE through a kept descriptor: _dirfds looks again, afresh.
    try:
        raw = _fs.read_whole(fd, st.st_size, _READ_MAX)
    finally:
        os.close(fd)
    return KeyHolder(st, raw)


def is_held(config: QueueConfig, holder: KeyHolder) -> bool:
    """Whether the key file ``holder`` is still held (see the module's two steps)."""
    if not holder.sealed and not judge(config, holder.stat, holder.raw).breakable:
        # An enqueue at work, held job or no job; its job is not looked up. It may not
        # be linked yet, and an NFS client keeps a miss (a negative lookup cache, for
        # the attribute-cache time): once the job is in and the key sealed, this host
        # would miss the job still, judge the sealed key stale, and enqueue a second
        # job with the key. A job name is looked up only once its key is sealed (so the
        # job was in before), or its enqueuer is dead or out of time.
        return True
    place = place_of(config, holder.jobid) if holder.jobid is not None else None
    if place is not None and not (holder.while_queued and place == "active"):
        # (A key held while queued is free once a worker holds its job: the lock in
        # active/ says so, a Perl worker's too. The worker's release at the end
        # then finds the key naming another job, or none, and leaves it.)
        return True
    if holder.until is not None and filesystem_now(config) < holder.until and holder.sealed:
        return True  # Kept: its job went in (and may have run); one job until then.
    if not judge(config, holder.stat, holder.raw).breakable:
        return True
    # Stale, if its job is truly gone: a look by name may be a miss an NFS client
    # kept from before the job was moved there (a promotion from waiting/ or
    # deferred/ that another host won), so a listing, which asks the server, has the
    # last word.
    return place is None and holder.jobid is not None and holder.jobid in listed_jobs(config)


def claim(
    config: QueueConfig,
    name: str,
    jobid: str,
    until: float | None = None,
    *,
    kept: list[str] | None = None,
    while_queued: bool = False,
) -> str | None:
    """Link key ``name`` for job ``jobid``; None if it is ours now, else the id of the
    job that holds it. A stale key is broken on the way (and claimed). ``until``
    (filesystem clock): keep it until then even after the job has ended;
    ``while_queued``: hold it only until the job starts. With
    ``kept``, a claim that succeeds leaves its tmp name (another link to the key's
    inode, ours alone) and appends it there, for :func:`seal_through`."""
    layout = config.layout
    # Made, linked and removed through tmp/'s descriptor, never by path: another user
    # of a shared queue could swap tmp/ for a symlink and have our key made elsewhere.
    mine = layout.tmp_key_name(name, config.hostname, current_pid())
    mode = config.queue_file_mode
    fd = in_queue_dir(
        config, (Layout.TMP,), lambda tfd: _fs.create_exclusive(mine, mode, dir_fd=tfd)
    )
    done = False
    try:
        try:
            _fs.write_all(fd, _contents(config, jobid, until, while_queued=while_queued))
            if config.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        pause = 0.001
        for _ in range(_CLAIM_TRIES):
            linked = in_queue_dir(
                config, (Layout.TMP,), functools.partial(_link_key, config, mine, name)
            )
            if linked is _fs.LinkResult.LINKED:
                if config.durable:
                    # The key's name is on disk before the job's can be.
                    _dirfds.at(config.dir, (Layout.KEYS,), os.fsync)
                if kept is not None:
                    kept.append(mine)
                    done = True
                return None
            holder = holder_of(config, name)
            if holder is None:
                continue  # Released between our link and our look: try again.
            if is_held(config, holder):
                if holder.jobid is not None:
                    return holder.jobid
            elif _break(config, name, holder):
                continue
            # A key with no job line (let its age speak), or one another process is
            # breaking or releasing right now: look again in a moment.
            time.sleep(pause)
            pause = min(pause * 2, _CLAIM_PAUSE_MAX)
        raise KeyBusyError(
            f"could not claim unique key file {layout.key_path(name)}: it kept changing,"
            f" or its breaker token {layout.breaker_token_path(Layout.key_token_name(name))}"
            f" is held (one left by a process that died is cleared after"
            f" {BREAK_TOKEN_STALE:g} s): try the enqueue again",
            name,
        )
    finally:
        if not done:
            with contextlib.suppress(OSError):
                unlink_in(config, (Layout.TMP,), mine)


def _link_key(config: QueueConfig, mine: str, name: str, tmp_fd: int) -> _fs.LinkResult:
    """Link ``tmp/`` (``tmp_fd``) ``mine`` as ``keys/name``."""
    return _dirfds.at(
        config.dir,
        (Layout.KEYS,),
        # (Its inode is looked up only if the link reports an error.)
        lambda kfd: _fs.link_verified(mine, name, src_dir_fd=tmp_fd, dst_dir_fd=kfd),
        create=True,
    )


def _break(config: QueueConfig, name: str, judged: KeyHolder) -> bool:
    """Remove key ``name`` if it is still the file judged; False if it was not (or
    another process is breaking or releasing it)."""
    return bool(_remove_if(config, name, judged))


def _same(now: KeyHolder, judged: KeyHolder) -> bool:
    """Whether ``now`` is the very key file ``judged``.

    Inode and mtime alone are not enough: every sealed key has the same mtime, and a
    removed key's inode is reused at once by the next file made (the next enqueue's
    key, say). The change time (set by the kernel, never by a caller) and the contents
    (which name the job) tell such a newcomer apart.
    """
    a, b = now.stat, judged.stat
    return (
        _fs.same_file(a, b)
        and a.st_mtime_ns == b.st_mtime_ns
        and a.st_ctime_ns == b.st_ctime_ns
        and now.raw == judged.raw
    )


def release(config: QueueConfig, name: str, jobid: str) -> bool:
    """Remove key ``name`` if it names job ``jobid`` (which has ended): True if removed.

    A key that names another job (ours was broken and claimed again) is left alone.
    """
    for _ in range(50):
        holder = holder_of(config, name)
        if holder is None or holder.jobid != jobid:
            return False
        done = _remove_if(config, name, holder)
        if done is not None:
            return done
        time.sleep(0.002)  # Another process holds the token: it is breaking the key.
    return False


def _remove_if(config: QueueConfig, name: str, judged: KeyHolder) -> bool | None:
    """Under key ``name``'s breaker token, unlink it if it is still ``judged`` (read
    again under the token: while we hold it, no one else removes the key, and no one
    can link another over it); None if the token is held by another."""
    token = _lock.take_token(config, Layout.key_token_name(name))
    if token is None:
        return None
    try:
        now = holder_of(config, name)
        if now is None or not _same(now, judged):
            return False
        try:
            _dirfds.at(config.dir, (Layout.KEYS,), functools.partial(_unlink_key, name))
        except FileNotFoundError:
            return False
        return True
    finally:
        _lock.drop_token(config, token)


def _unlink_key(name: str, keys_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=keys_fd)
    except IsADirectoryError:
        os.rmdir(name, dir_fd=keys_fd)


def list_keys(config: QueueConfig) -> list[str]:
    """The names in ``keys/`` (for repair and listings)."""
    try:
        dfd = _fs.open_dir_nofollow(config.dir, (Layout.KEYS,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return []
        raise
    try:
        return [n for n in os.listdir(dfd) if not Layout.is_nfs_silly_rename(n)]
    finally:
        _fs.close_dir(dfd)


def remove_if_stale(config: QueueConfig, name: str) -> bool:
    """Repair's look at key ``name``: remove it if its job is gone and the judge calls
    it breakable. True if removed."""
    holder = holder_of(config, name)
    if holder is None or is_held(config, holder):
        return False
    return _break(config, name, holder)


class JobId(str):
    """The id a unique enqueue returns: ``existing`` is True when a job with the key was
    there already and nothing was enqueued (the id is that job's)."""

    __slots__ = ("existing",)
    existing: bool

    def __new__(cls, jobid: str, *, existing: bool = False) -> JobId:
        self = super().__new__(cls, jobid)
        self.existing = existing
        return self


class KeyGate:
    """Unique key ``key`` as the enqueue's gate (:class:`dirqueue._enqueue.Gate`)."""

    def __init__(
        self,
        config: QueueConfig,
        key: str,
        *,
        ttl: float | None = None,
        while_: UniqueWhile = "active",
    ) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidKeyError(
                f"unique_key must be a non-empty str, not {key!r}: e.g. 'thumb:a.jpg'", key
            )
        if while_ not in _UNIQUE_WHILE:
            raise InvalidKeyError(
                f"unique_while must be 'active' (the key is held until the job has ended)"
                f" or 'queued' (until it starts), not {while_!r}",
                key,
            )
        self.while_queued = while_ == "queued"
        self.config = config
        self.name = Layout.key_name(key)
        self.ttl = None if ttl is None else check_number("unique_ttl", ttl, SECONDS)
        #: The tmp name of the key this gate claimed, until it is sealed or released.
        self._kept: list[str] = []

    def claim(self, jobid: str) -> str | None:
        """See :func:`claim`."""
        until = None if self.ttl is None else filesystem_now(self.config) + self.ttl
        return claim(
            self.config, self.name, jobid, until, kept=self._kept, while_queued=self.while_queued
        )

    def release(self, jobid: str) -> None:
        """See :func:`release`."""
        release(self.config, self.name, jobid)
        while self._kept:
            with contextlib.suppress(OSError):
                unlink_in(self.config, (Layout.TMP,), self._kept.pop())

    def seal(self, jobid: str) -> None:
        """See :func:`seal_through`."""
        while self._kept:
            seal_through(self.config, self._kept.pop())

    def held_by(self) -> str | None:
        """The job that holds the key now, if one does (a look before anything is
        written: the common duplicate costs a read, not a job written and rolled back)."""
        if not os.path.lexists(self.config.layout.key_path(self.name)):
            return None  # The common case of a new key: one lstat. (The claim decides.)
        holder = holder_of(self.config, self.name)
        if holder is None or holder.jobid is None or not is_held(self.config, holder):
            return None
        return holder.jobid


def seal_through(config: QueueConfig, kept: str) -> None:
    """Mark a key as published, through ``kept``, the tmp name it was claimed from
    (:func:`claim` with ``kept``), and remove that name: its job is in the queue now,
    so the enqueuer's part is over. Its mtime is set far in the past, which to the
    judge is a heartbeat long gone quiet: from now on the key is held exactly as long
    as its job is there, and the moment the job is gone (ended by a worker that died
    before releasing the key, or by a Perl worker, which knows nothing of keys) it is
    stale, whoever enqueued it and whether or not that process still lives.

    Through our own name, never the key's: a fast worker may have ended the job and
    released the key already, and ``keys/HASH`` may be another enqueue's fresh key;
    our inode is ours whatever became of that name.
    """
    try:
        in_queue_dir(
            config,
            (Layout.TMP,),
            lambda tfd: os.utime(kept, (_SEALED, _SEALED), dir_fd=tfd, follow_symlinks=False),
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            unlink_in(config, (Layout.TMP,), kept)
