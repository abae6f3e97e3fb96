"""A group's concurrency limit: N slots, ``slots/GROUP.0`` ... ``slots/GROUP.N-1``.

A worker that takes a job of a limited group ``link()``s the job's own lock
(``active/NAME``) as a free slot name: one system call, atomic on every filesystem a
queue lives on (over NFS its inode says whether a reported failure worked, as for any
link). The slot *is* the lock, a second name of the same file: same owner lines, same
mtime, kept fresh by the same heartbeat. So whether a slot is still held is decided by
the one stale-lock rule (:func:`dirqueue._judge.judge`) on the very file it judges the
lock by: a dead or silent holder's slot frees itself exactly when its lock would, on
every host. A stale slot is removed under the breaker token (``tmp/s.GROUP.K.breaking``),
only if it is still the file judged (inode and mtime), as a stale lock is broken.

The job's end unlinks the slot name, after the job's lock is gone (so at no instant are
more than N of the group's jobs active).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from dataclasses import dataclass

from .. import _dirfds, _fs, _lock
from .._config import QueueConfig
from .._jobfiles import in_queue_dir
from .._judge import Judgement, judge
from .._layout import Layout

__all__ = ["SlotHolder", "free_stale", "holders", "is_free", "owner_of", "release", "take"]

_READ_MAX = 4096


def _link_slot(
    config: QueueConfig, jobid: str, name: str, local: bool, active_fd: int
) -> _fs.LinkResult:
    def link(sfd: int) -> _fs.LinkResult:
        if not local:
            return _fs.link_verified(jobid, name, src_dir_fd=active_fd, dst_dir_fd=sfd)
        # On a local filesystem link() tells the truth, and there the jobs a queue
        # object holds share one lock file (one inode): a slot held by another of our
        # jobs has our inode, so the inode cannot say which link is this one's.
        try:
            os.link(jobid, name, src_dir_fd=active_fd, dst_dir_fd=sfd)
        except FileExistsError:
            return _fs.LinkResult.EXISTS
        return _fs.LinkResult.LINKED

    return _dirfds.at(config.dir, (Layout.SLOTS,), link, create=True)


def take(
    config: QueueConfig, group: str, limit: int, jobid: str, first: int, *, local: bool
) -> int | None:
    """Link job ``jobid``'s lock as a free slot of ``group`` (trying ``first`` first);
    the slot's number, or None if all ``limit`` are held. ``local``: the queue is on a
    local filesystem (:func:`dirqueue._fs.is_local_filesystem`)."""
    for i in range(limit):
        slot = (first + i) % limit
        name = Layout.slot_name(group, slot)
        linked = in_queue_dir(
            config, (Layout.ACTIVE,), functools.partial(_link_slot, config, jobid, name, local)
        )
        if linked is _fs.LinkResult.LINKED:
            return slot
    return None


def is_free(config: QueueConfig, group: str, limit: int) -> bool:
    """Whether some slot of ``group`` has no file (a look, not a claim)."""

    def look(sfd: int) -> bool:
        for slot in range(limit):
            try:
                os.lstat(Layout.slot_name(group, slot), dir_fd=sfd)
            except FileNotFoundError:
                return True
        return False

    try:
        return _dirfds.at(config.dir, (Layout.SLOTS,), look, retry=False)
    except OSError as err:
        if _fs.is_gone(err) or err.errno in (errno.ENOTDIR, errno.ELOOP):
            return True
        raise


def release(config: QueueConfig, group: str, slot: int, lock: os.stat_result | None) -> None:
    """Give back slot ``slot`` of ``group``, taken with the lock whose stat is ``lock``.

    With ``lock``, only if the slot is still that file: a holder that was stopped past
    the lock's lifetime may have had its slot broken and taken by another job."""
    name = Layout.slot_name(group, slot)

    def unlink(sfd: int) -> None:
        if lock is not None:
            try:
                if not _fs.same_file(os.lstat(name, dir_fd=sfd), lock):
                    return
            except FileNotFoundError:
                return
        os.unlink(name, dir_fd=sfd)

    with contextlib.suppress(FileNotFoundError):
        _dirfds.at(config.dir, (Layout.SLOTS,), unlink, retry=False)


@dataclass(frozen=True)
class SlotHolder:
    """A slot as found: its number, its stat and the judge's verdict on it."""

    group: str
    slot: int
    stat: os.stat_result
    judgement: Judgement


def _read(name: str, sfd: int) -> tuple[os.stat_result, bytes] | None:
    try:
        st = os.lstat(name, dir_fd=sfd)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return st, b""
    try:
        fd = _fs.open_regular(name, dir_fd=sfd)
    except OSError:
        return st, b""
    return st, _fs.read_limited(fd, _READ_MAX)  # (Closes it.)


def holders(config: QueueConfig, group: str, limit: int | None = None) -> list[SlotHolder]:
    """The slots of ``group`` that have a file (the first ``limit``; all with None),
    each judged."""
    try:
        sfd = _fs.open_dir_nofollow(config.dir, (Layout.SLOTS,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return []
        raise
    found: list[SlotHolder] = []
    try:
        if limit is None:
            prefix = group + "."
            slots = sorted(
                int(n[len(prefix):]) for n in os.listdir(sfd)
                if n.startswith(prefix) and n[len(prefix):].isdigit()
            )
        else:
            slots = list(range(limit))
        for slot in slots:
            seen = _read(Layout.slot_name(group, slot), sfd)
            if seen is not None:
                found.append(SlotHolder(group, slot, seen[0], judge(config, seen[0], seen[1])))
    finally:
        _fs.close_dir(sfd)
    return found


def free_stale(config: QueueConfig, group: str, limit: int) -> int:
    """Break every slot of ``group`` the stale-lock rule calls breakable; how many."""
    broken = 0
    for holder in holders(config, group, limit):
        if holder.judgement.breakable and _break(config, holder):
            broken += 1
    return broken


def _break(config: QueueConfig, judged: SlotHolder) -> bool:
    """Remove slot ``judged`` if it is still the file judged, under its breaker token."""
    token = _lock.take_token(config, Layout.slot_token_name(judged.group, judged.slot))
    if token is None:
        return False  # Another process is breaking it.
    name = Layout.slot_name(judged.group, judged.slot)

    def unlink(sfd: int) -> bool:
        now = os.lstat(name, dir_fd=sfd)
        if not _fs.same_file(now, judged.stat) or now.st_mtime_ns != judged.stat.st_mtime_ns:
            return False
        os.unlink(name, dir_fd=sfd)
        return True

    try:
        return _dirfds.at(config.dir, (Layout.SLOTS,), unlink, retry=False)
    except FileNotFoundError:
        return False
    finally:
        _lock.drop_token(config, token)


def owner_of(holder: SlotHolder) -> str:
    """``HOST:PID`` of a slot's holder, for listings."""
    owner = holder.judgement.owner
    return f"{owner.host}:{owner.pid}"
