"""The one rule for whether a job's lock is stale: :func:`judge`.

Pickup (which breaks stale locks), repair (which removes dead ones) and ``dq list`` /
``dq stats`` (which show them) all ask this module, so what the listing calls stale is
exactly what the next worker will break.

The rule, heartbeat freshness first:

- Something other than a regular file at ``active/NAME`` is not a lock at all
  (:attr:`Verdict.NOT_A_LOCK`): pickup leaves the job alone, repair moves it aside.
- A lock touched within ``active_file_lifetime`` whose owner promised a heartbeat is
  held, whatever else is said of its owner: a live worker in another pid namespace or
  container with our host name must never lose its job.
- Otherwise, within the lifetime, a lock is held, unless its owner is provably dead
  (:mod:`dirqueue._identity`) (:attr:`Verdict.DEAD`): repair removes such a lock at
  once, and so does a pickup when the proof is dirqueue's owner line (same boot and pid
  namespace; a Perl lock's bare host and pid wait for the lifetime, as in Perl).
- Past the lifetime a lock is stale (:attr:`Verdict.STALE`, broken by the next pickup
  after a random grace) if its heartbeat went quiet, its owner is provably dead, or it
  names no owner. A Perl worker's lock on another host makes no heartbeat promise and
  its owner cannot be seen from here: the Perl module's rule keeps it
  (:attr:`Verdict.FOREIGN`), and only an operator can free it.

A lock's age is measured in the filesystem's clock, not this host's
(:func:`filesystem_now`): its mtime was set by the file server (or by the owner's host),
and hosts whose clocks are minutes apart must still agree on how long a lock has been
quiet.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Final

from . import _fs
from ._config import QueueConfig
from ._format import LockInfo, parse_lock_file
from ._identity import owner_is_dead

__all__ = [
    "CLOCK_RECHECK",
    "CLOCK_STEP",
    "Judgement",
    "Verdict",
    "filesystem_now",
    "judge",
    "judge_lock",
    "read_lock_file",
]

_LOCK_READ_MAX = 4096

#: How long (seconds) a measured offset between this host's clock and the
#: filesystem's is trusted before it is measured again. Clocks drift apart by
#: milliseconds a day; a step (an NTP correction, a VM resumed) is seen this late.
CLOCK_RECHECK: Final = 5.0

#: A jump of this host's clock (seconds) against the monotonic clock since the offset
#: was measured: a step (an NTP correction, a VM resumed, an operator's ``date -s``),
#: after which the offset is measured again at once.
CLOCK_STEP: Final = 1.0

#: queue directory -> (filesystem clock minus ours, time.monotonic() and time.time()
#: when measured)
_offsets: dict[str, tuple[float, float, float]] = {}


def filesystem_now(config: QueueConfig) -> float:
    """The time now by the clock that stamps the queue's files (over NFS or GlusterFS,
    the server's), as seconds since the epoch.

    The lock's mtime comes from that clock, so an age computed against this host's own
    clock is off by the hosts' skew: five minutes fast would break every live lock, five
    minutes slow would keep a dead one five minutes past its lifetime. The offset is
    measured by writing a file in ``tmp/`` and reading back its mtime, at most once per
    :data:`CLOCK_RECHECK` seconds per queue; in between this costs no system call
    beyond the clocks'. Where nothing can be written (a read-only view of the queue)
    this host's clock is used.

    A step of this host's clock within those seconds would make every lock look hours
    old (or young) until the next measure: so each call also compares how far this
    host's clock and the monotonic clock have moved since the measure, and measures
    again when they differ by more than :data:`CLOCK_STEP`.
    """
    mono = time.monotonic()
    wall = time.time()
    seen = _offsets.get(config.dir)
    if (
        seen is None
        or mono - seen[1] > CLOCK_RECHECK
        or abs((wall - seen[2]) - (mono - seen[1])) > CLOCK_STEP
    ):
        seen = (_measure_offset(config), mono, wall)
        if len(_offsets) > 64:
            _offsets.clear()
        _offsets[config.dir] = seen
    return wall + seen[0]


def _measure_offset(config: QueueConfig) -> float:
    """The filesystem's clock minus ours, from the mtime of a file written just now."""
    name = config.layout.tmp_clock_name(config.hostname, os.getpid(), threading.get_native_id())
    try:
        dir_fd = _fs.open_dir_nofollow(config.dir, (config.layout.TMP,))
    except OSError:
        return 0.0
    try:
        before = time.time()
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            try:
                # A write, not utime(): the file server stamps a write with its own clock.
                os.write(fd, b"clock\n")
            finally:
                os.close(fd)
            # After close: over NFS the attributes the server gave (close-to-open).
            st = os.lstat(name, dir_fd=dir_fd)
            after = time.time()
        finally:
            # Never left behind, not even by a write that failed on a full disk.
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
    except OSError:
        return 0.0
    finally:
        _fs.close_dir(dir_fd)
    offset = st.st_mtime - (before + after) / 2
    # Timestamps on a local filesystem come from a coarse clock, a few milliseconds
    # behind time.time(): no skew worth correcting.
    return offset if abs(offset) > 1.0 else 0.0


class Verdict(enum.Enum):
    """What :func:`judge` makes of a lock."""

    #: The owner works on the job, or may: leave it.
    HELD = "held"
    #: The owner is provably dead but the lifetime has not passed: repair removes it
    #: now; a pickup waits for the lifetime, as the Perl module does.
    DEAD = "dead"
    #: Past the lifetime and abandoned: the next pickup breaks it.
    STALE = "stale"
    #: Past the lifetime, held by a worker on another host that makes no heartbeat
    #: promise (a Perl worker): never broken from here.
    FOREIGN = "foreign"
    #: A symlink, directory, socket... where a lock file should be.
    NOT_A_LOCK = "not-a-lock"


@dataclass(frozen=True)
class Judgement:
    """A lock's verdict, with what it rests on."""

    verdict: Verdict
    #: Seconds since the lock was last touched.
    age: float
    owner: LockInfo
    #: The verdict in words, for listings and warnings.
    reason: str

    #: The lifetime the verdict was judged against.
    lifetime: float = 0.0
    #: The owner is dead on the strongest proof: a dirqueue lock whose owner line names
    #: this boot and pid namespace, and no process with that pid and start time.
    proven_dead: bool = False

    @property
    def breakable(self) -> bool:
        """True if a pickup breaks this lock: a stale lock (after a random grace); a
        lock whose owner is proven dead (at once: a crashed worker's job is recovered
        in a moment, not after the lifetime); or something that is not a lock at all
        but has sat there for a whole lifetime."""
        return (
            self.verdict is Verdict.STALE
            or (self.verdict is Verdict.DEAD and self.proven_dead)
            or (self.verdict is Verdict.NOT_A_LOCK and self.age > self.lifetime)
        )

    @property
    def owner_died(self) -> bool:
        """True if the lock's owner died (or went quiet) holding the job: breaking it
        ends an attempt at the job that never reported back."""
        return self.verdict in (Verdict.STALE, Verdict.DEAD)

    @property
    def removable(self) -> bool:
        """True if repair removes this lock."""
        return self.verdict in (Verdict.STALE, Verdict.DEAD)


def read_lock_file(config: QueueConfig, jobid: str) -> bytes:
    """The contents of ``active/NAME`` (at most 4 KiB), or ``b""`` if unreadable.

    Never through a symlink, and never blocking on a FIFO planted there. A lock removed
    while we read it (ENOENT; ESTALE over NFS, where another host unlinked it) reads as
    empty: whoever judges it then finds it gone or re-taken.
    """
    try:
        fd = _fs.open_dir_nofollow(config.dir, (config.layout.ACTIVE,))
        try:
            lock_fd = _fs.open_regular(jobid, dir_fd=fd)
        finally:
            _fs.close_dir(fd)
        return _fs.read_limited(lock_fd, _LOCK_READ_MAX)
    except OSError:
        return b""


def judge(
    config: QueueConfig, lock: os.stat_result, raw: bytes, now: float | None = None
) -> Judgement:
    """Judge a lock from its ``lstat`` and contents (see the module's rule).

    ``now`` defaults to :func:`filesystem_now`, the clock the lock's mtime was set by.
    """
    if now is None:
        now = filesystem_now(config)
    age = now - lock.st_mtime
    owner = parse_lock_file(raw)
    who = f"worker {owner.host}:{owner.pid}"
    lifetime = config.active_file_lifetime
    if not stat.S_ISREG(lock.st_mode):
        return Judgement(
            Verdict.NOT_A_LOCK, age, owner, "not a regular file: not a lock", lifetime
        )
    dead = owner_is_dead(
        owner.host, owner.pid, owner.boot, owner.pidns, owner.start, my_host=config.hostname
    )
    # Only an owner line proves a heartbeating owner dead: a bare host and pid may be
    # another container's, whose processes we cannot see.
    proven = dead and (owner.boot is not None or owner.pidns is not None)
    verdict, reason = Verdict.STALE, ""
    if owner.heartbeat and age <= lifetime and not proven:
        verdict, reason = Verdict.HELD, f"{who}, heartbeat {age:.0f}s ago"
    elif age <= lifetime:
        verdict, reason = (
            (Verdict.DEAD, f"{who} is dead")
            if dead
            else (Verdict.HELD, f"{who}, lock {age:.0f}s old")
        )
    elif owner.heartbeat:
        reason = f"{who} stopped its heartbeat ({age:.0f}s ago)"
    elif dead:
        reason = f"{who} is dead ({age:.0f}s old)"
    elif owner.pid is None:
        reason = f"lock names no worker ({age:.0f}s old)"
    elif owner.host != config.hostname:
        verdict = Verdict.FOREIGN
        reason = (
            f"held by a worker on host {owner.host} that keeps no heartbeat (a Perl"
            f" worker): never broken from here ({age:.0f}s old; if that host is down,"
            f" 'dq fsck --repair --host {owner.host}' frees it)"
        )
    else:
        verdict, reason = Verdict.HELD, f"{who} is alive ({age:.0f}s old)"
    return Judgement(verdict, age, owner, reason, lifetime, proven)


def judge_lock(config: QueueConfig, jobid: str, now: float | None = None) -> Judgement | None:
    """Judge job ``jobid``'s lock; None if the job has none."""
    try:
        lock = os.lstat(config.layout.active_path(jobid))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    raw = read_lock_file(config, jobid) if stat.S_ISREG(lock.st_mode) else b""
    return judge(config, lock, raw, now)
