"""Who owns a lock, and whether that owner is provably gone.

A lock names its owner's host and pid (the Perl module's two lines). On their own they
prove little: two containers can share a host name, a pid namespace hides processes
that are alive, and pids are reused. dirqueue's own locks therefore add an ``owner``
line (see :func:`dirqueue._format.format_lock`) with the boot id, the pid namespace and
the owner's start time, which the Perl module ignores. A process is judged dead only on
proof: same host name, same boot, same pid namespace, and no process with that pid and
start time. Without that line (a Perl lock) the Perl module's own rule applies: same
host name and ``kill(pid, 0)`` fails. A zombie is dead; a dead owner whose session or
process group still has live members (its command, what that started) is not.

Clones of one machine resumed from one memory snapshot share host name, boot id and
pid namespace; only a start time later than this kernel's clock tells one of their
locks from ours (docs/deploying.md, "Clones of one machine", says what else to do).

This module answers the question; :mod:`dirqueue._judge` decides what a lock's age and
heartbeat make of the answer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from dataclasses import dataclass

from ._procs import is_zombie, live_members

__all__ = [
    "ProcessIdentity",
    "current_pid",
    "owner_is_dead",
    "process_start_time",
    "this_process",
]


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells one process from another across hosts, containers and pid reuse.

    Any field may be None where the system does not tell (not Linux, no ``/proc``).
    """

    host: str
    pid: int
    #: ``/proc/sys/kernel/random/boot_id``: differs between machines and between boots.
    boot: str | None
    #: The pid namespace's inode (``/proc/self/ns/pid``): pids mean nothing outside it.
    pidns: str | None
    #: The process's start time in clock ticks since boot (``/proc/PID/stat`` field
    #: 22): a reused pid has another.
    start: int | None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _boot_id() -> str | None:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str | None:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if unknown."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last.
    fields = text[text.rfind(")") + 2 :].split()
    with contextlib.suppress(IndexError, ValueError):
        return int(fields[19])
    return None


#: This process's pid: asked of the kernel once, and again in each forked child.
_pid: list[int] = [os.getpid()]


def _forked() -> None:
    _pid[0] = os.getpid()
    _cache.clear()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """``os.getpid()`` without a system call per job (kept right across ``fork``)."""
    return _pid[0]


_cache: dict[int, ProcessIdentity] = {}


def this_process() -> ProcessIdentity:
    """This process's identity (cached per pid, so a forked child gets its own)."""
    pid = _pid[0]
    me = _cache.get(pid)
    if me is None:
        _cache.clear()
        me = ProcessIdentity(
            host=socket.gethostname(),
            pid=pid,
            boot=_boot_id(),
            pidns=_pid_namespace(),
            start=process_start_time(pid),
        )
        _cache[pid] = me
    return me


def _pid_exists(pid: int) -> bool:
    """True if process ``pid`` runs. A zombie does not: it has exited and holds nothing,
    and waits only for its parent to reap it (which may take as long as the parent
    likes), though ``kill(pid, 0)`` still finds it."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False  # Gone, or a pid (from a corrupt lock) that no process can have.
    except PermissionError:
        pass  # It exists, under another user.
    return not is_zombie(pid)


def _later_than_now(start: int) -> bool:
    """True if a process start time (clock ticks since boot) lies more than a second
    ahead of this kernel's clock since boot: no process here can have it.

    The clock is ``CLOCK_BOOTTIME``, which ``/proc/PID/stat`` counts from (in a time
    namespace both are shifted alike); not ``/proc/uptime``, which lxcfs replaces with
    a container's own uptime."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return False
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        now = time.clock_gettime(boottime) * ticks
    except (ValueError, OSError):
        return False
    return start > now + ticks


def _run_lives_on(pid: int) -> bool:
    """True if the dead process ``pid`` left live processes in the session or process
    group it led: a worker's command and what the command started (see
    :class:`dirqueue.CommandHandler`). The job they work on is not free until they are
    gone. The ids are sound: the kernel hands ``pid`` to no new process while any
    member of a group or session of that id lives."""
    return bool(live_members(pgrp=pid, session=pid))


def owner_is_dead(
    host: str | None,
    pid: int | None,
    boot: str | None,
    pidns: str | None,
    start: int | None,
    *,
    my_host: str,
) -> bool:
    """True only if the owner described is provably not running.

    ``host``/``pid`` are the lock's first two lines; ``boot``/``pidns``/``start`` its
    owner line (None for a Perl lock). ``my_host`` is the host name the queue uses for
    itself (normally ``gethostname()``).
    """
    if host is None or host != my_host or pid is None or pid <= 0:
        # Another host's processes cannot be seen; a lock naming no owner proves nothing
        # (the caller judges it by its age).
        return False
    me = this_process()
    if boot is not None or pidns is not None:
        # A dirqueue lock: the pid means something here only in this very boot and pid
        # namespace. Elsewhere (another container or machine with our host name) we
        # cannot see the owner, however dead its pid looks from here.
        if boot != me.boot or pidns != me.pidns or me.boot is None or me.pidns is None:
            return False
        if start is not None and _later_than_now(start):
            # Started after this kernel's "now": written by another kernel that has our
            # boot id, pid namespace and host name: a clone of this machine, resumed
            # from the same memory snapshot. Its processes are not ours to see.
            return False
        if not _pid_exists(pid):
            return not _run_lives_on(pid)
        now_start = process_start_time(pid)
        return start is not None and now_start is not None and now_start != start
    # A Perl lock: the Perl module's own rule.
    return not _pid_exists(pid)
