"""The process table as ``/proc`` shows it: a process's state, who is left in a process
group or session, and reaping the orphans a PID 1 inherits.

Three rules rest on it. A zombie is dead: it runs nothing and holds no job, though
``kill(pid, 0)`` still finds it (:func:`is_zombie`). A job's run is over only when no
live process is left in the session or group its worker made for it, even after the
worker itself died (:func:`live_members`: a session or group id cannot be handed to a
new process while any member lives, so its members are that run's processes). And a
``dq`` that is PID 1 (a container without an init) inherits every orphan, and must
reap those that die or they pile up as zombies (:func:`reap_orphans`).

Without ``/proc`` (not Linux) nothing is known: no process is a zombie, no group or
session has members, nothing is reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ProcStat",
    "can_see",
    "is_zombie",
    "kill_members",
    "live_members",
    "processes",
    "reap_orphans",
    "stat_of",
]

_PROC: Final = "/proc"


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` we use."""

    pid: int
    #: ``R``, ``S``, ``D``, ``T``, ``Z`` (zombie), ``X`` (dead)...
    state: str
    ppid: int
    pgrp: int
    session: int
    #: Start time in clock ticks since boot: a reused pid has another.
    start: int

    @property
    def dead(self) -> bool:
        """True for a zombie or a process being torn down: it runs nothing any more."""
        return self.state in ("Z", "X", "x")


def stat_of(pid: int) -> ProcStat | None:
    """Process ``pid``'s stat line, or None if it is gone (or unknowable here)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(
            pid,
            fields[0].decode("ascii", "replace"),
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
            int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def can_see() -> bool:
    """True if ``/proc`` shows the process table (Linux): else what this module says
    of processes means nothing."""
    return os.path.isdir(f"{_PROC}/self")


def processes() -> Iterator[ProcStat]:
    """Every process this pid namespace's ``/proc`` shows (those that vanish as we
    read are left out)."""
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            found = stat_of(int(name))
            if found is not None:
                yield found


def is_zombie(pid: int) -> bool:
    """True if ``pid`` has exited and only waits to be reaped by its parent."""
    found = stat_of(pid)
    return found is not None and found.dead


def live_members(*, pgrp: int | None = None, session: int | None = None) -> list[int]:
    """The pids of live (not zombie) processes in process group ``pgrp`` or in session
    ``session``."""
    return [
        p.pid
        for p in processes()
        if not p.dead and ((pgrp is not None and p.pgrp == pgrp)
                           or (session is not None and p.session == session))
    ]


def kill_members(leader: int) -> int:
    """SIGKILL every live process in the process group or session ``leader`` (a dead
    worker's: its command, and what that started); how many were sent it.

    Never an unrelated process that got a member's pid between our look and the
    signal: on Linux each is signalled through a pidfd, opened first and checked
    against a fresh look at the process it names.
    """
    sent = 0
    for pid in live_members(pgrp=leader, session=leader):
        with contextlib.suppress(OSError):
            sent += _kill_if_member(pid, leader)
    return sent


def _kill_if_member(pid: int, leader: int) -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        os.kill(pid, signal.SIGKILL)
        return True
    fd = pidfd_open(pid)
    try:
        # The pidfd names one process for good; a look after opening it sees that one
        # (or a member that has its pid since, which is as much the run's).
        found = stat_of(pid)
        if found is None or leader not in (found.pgrp, found.session):
            return False
        send(fd, signal.SIGKILL)
        return True
    finally:
        os.close(fd)


def reap_orphans(keep: Collection[int] = ()) -> int:
    """As PID 1, reap this process's zombie children except ``keep``; how many.

    PID 1 is the parent every orphan in its pid namespace is given, and the kernel
    leaves a dead orphan's entry until PID 1 waits for it. Only zombies are waited for,
    each by its pid, and never one in ``keep``: the children someone else waits for
    (a worker's :class:`multiprocessing.Process`, a command's ``Popen``) keep their
    exit status. Anywhere but PID 1 this does nothing: the init reaps our orphans.
    """
    me = os.getpid()
    if me != 1:
        return 0
    reaped = 0
    for proc in processes():
        if proc.ppid == me and proc.dead and proc.pid not in keep:
            with contextlib.suppress(ChildProcessError, OSError):
                done, _ = os.waitpid(proc.pid, os.WNOHANG)
                reaped += done == proc.pid
    return reaped
