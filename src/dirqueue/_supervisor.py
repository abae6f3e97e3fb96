"""The supervisor: N forked processes, each running one function, and stop signals.

:func:`supervise` forks the children, forwards SIGTERM and SIGINT to each of them
(SIGHUP as SIGTERM), waits for all, and (when asked) replaces a child that dies
while no stop was asked for, backing off when one keeps dying quickly, and kills a
child that runs past the deadline it reports. It knows nothing of jobs:
:func:`dirqueue.workers.run_workers` gives it the function each child runs (a
:class:`~dirqueue.worker.Worker`) and reads what the children did from
:class:`SharedCounters`. :class:`SharedBudget` is an ``njobs`` allowance the children
draw from together.

Given a :class:`~dirqueue._elastic.Scaler`, the number of children follows it: each
tick it may start one more (up to its most) or let some go, and SIGTTIN and SIGTTOU
ask it for one more or one fewer. A child let go is sent SIGTERM, once, and ends as
any worker ends on SIGTERM: its job in hand first. The first stop signal the
supervisor forwards afterwards is not sent to it again (a second SIGTERM would
interrupt that job); the second is.

Three promises, and what keeps them:

- No stop signal is lost while a child starts. The stop signals are blocked across each
  fork; the child puts up its own handlers before it unblocks them (a signal forwarded
  meanwhile waits for it), and the supervisor, once it unblocks them, forwards what
  came meanwhile to every child started so far and starts no more.
- No child outlives the supervisor, even one killed by SIGKILL (a child started to
  grow the pool as much as the first ones). On Linux each child
  asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``); elsewhere, and as a
  second line, the child's function is told the supervisor's pid to watch for
  (a :class:`~dirqueue.worker.Worker` stops when its parent is no longer that process).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

from . import _fs
from ._elastic import Live, Scaler
from ._procs import kill_members, reap_orphans

__all__ = [
    "Backoff",
    "ChildContext",
    "ChildDeath",
    "ChildResult",
    "SharedBudget",
    "SharedCounters",
    "SharedText",
    "supervise",
]

_FORK: Final = multiprocessing.get_context("fork")
#: The signals a supervisor forwards to its children, and as what. A hang-up stops the
#: workers like SIGTERM (a worker's default action on SIGHUP would leave its job locked).
_FORWARDED: Final[dict[int, int]] = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGINT,
    signal.SIGHUP: signal.SIGTERM,
}
#: Signals that ask an elastic supervisor for one worker more, or one fewer (as gunicorn).
_BY_HAND: Final[dict[int, int]] = {signal.SIGTTIN: 1, signal.SIGTTOU: -1}
#: prctl(2): the signal the calling process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG: Final = 1

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class SharedCounters:
    """Rows of 64-bit counters in shared memory: one row per child, written only by it.

    Create it before the fork; a child writes its own row, the supervisor reads them.
    """

    def __init__(self, rows: int, width: int) -> None:
        self._width = width
        self._array: Any = _FORK.RawArray("q", rows * width)

    def add(self, row: int, column: int, amount: int = 1) -> None:
        """Add to one counter (only the row's own child may)."""
        self._array[row * self._width + column] += amount

    def set(self, row: int, column: int, value: int) -> None:
        """Set one counter (only the row's own child may)."""
        self._array[row * self._width + column] = value

    def row(self, row: int) -> list[int]:
        """A copy of one child's counters."""
        start = row * self._width
        return list(self._array[start : start + self._width])


class SharedText:
    """One short text per child in shared memory (a job id), written only by it."""

    def __init__(self, rows: int, size: int) -> None:
        self._size = size
        self._array: Any = _FORK.RawArray("c", rows * size)

    def set(self, row: int, text: str) -> None:
        """Set one child's text (only the row's own child may, or the supervisor once
        the child is dead); longer than the size, it is cut."""
        data = text.encode("utf-8")[: self._size]
        start = row * self._size
        self._array[start : start + self._size] = data.ljust(self._size, b"\0")

    def get(self, row: int) -> str:
        """One child's text ("" if none)."""
        start = row * self._size
        raw = bytes(self._array[start : start + self._size])
        return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class SharedBudget:
    """An ``njobs`` allowance in shared memory, for forked workers (a ``JobBudget``)."""

    def __init__(self, njobs: int) -> None:
        self._value: Any = _FORK.Value("q", njobs)

    def reserve(self) -> bool:
        """Take one job's allowance; False when none is left."""
        with self._value.get_lock():
            if self._value.value <= 0:
                return False
            self._value.value -= 1
            return True

    def release(self) -> None:
        """Give back an allowance that was not used."""
        with self._value.get_lock():
            self._value.value += 1


@dataclass(frozen=True)
class ChildContext:
    """What a child's function is told: which child it is, and who its supervisor is.

    The child starts with the stop signals blocked; its function must put up its own
    handlers for them and then call :meth:`signals_ready`, or it never sees one.
    """

    index: int
    supervisor_pid: int
    _mask: frozenset[int]

    def signals_ready(self) -> None:
        """Unblock the stop signals (those forwarded meanwhile arrive now)."""
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)


@dataclass(frozen=True)
class ChildResult:
    """How a child's slot ended: its last process, and how often it was restarted."""

    pid: int
    exit_code: int
    restarts: int = 0
    #: Its last child was let go by the scaler (it stopped as on SIGTERM).
    let_go: bool = False


@dataclass(frozen=True)
class ChildDeath:
    """A child that ended other than by returning from its function, or was killed
    by the supervisor for running past its deadline (what ``on_death`` is told)."""

    index: int
    pid: int
    #: Its exit status: negative for the signal that killed it.
    exit_code: int
    #: Seconds it ran.
    uptime: float
    #: True if the supervisor killed it: it ran past its deadline.
    overdue: bool
    #: Seconds until its replacement starts; None when it is not replaced (a stop was
    #: asked for, or the supervisor restarts no children).
    restart_in: float | None

    @property
    def cause(self) -> str:
        """What ended it, in words: ``signal 9 (SIGKILL)``, ``exit code 1``."""
        if self.exit_code < 0:
            number = -self.exit_code
            try:
                return f"signal {number} ({signal.Signals(number).name})"
            except ValueError:
                return f"signal {number}"
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a child that keeps dying quickly.

    A child that ran at least ``quick`` seconds is replaced at once; each quick death in
    a row doubles the wait, from ``first`` up to ``cap`` seconds.
    """

    first: float = 0.5
    cap: float = 30.0
    quick: float = 10.0

    def delay(self, quick_deaths: int) -> float:
        """The wait after the ``quick_deaths``-th quick death in a row (0: none)."""
        if quick_deaths <= 0:
            return 0.0
        return float(min(self.cap, self.first * 2 ** min(quick_deaths - 1, 62)))


@dataclass
class _ChildSpec:
    """What a forked child runs, and what it must undo of its supervisor's setup."""

    index: int
    main: Callable[[ChildContext], None]
    supervisor_pid: int
    #: The signal handlers and mask the supervisor had before it put up its own.
    handlers: dict[int, _SignalHandler]
    mask: frozenset[int]


@dataclass
class _Child:
    index: int
    process: Any
    started: float = field(default_factory=time.monotonic)
    #: Killed by the supervisor for running past its deadline.
    overdue: bool = False

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


@dataclass
class _Slot:
    """One of the N places a child runs in, through its restarts."""

    index: int
    child: _Child
    restarts: int = 0
    quick_deaths: int = 0
    #: When (monotonic) to start the replacement of a child that died.
    restart_at: float | None = None
    done: bool = False
    #: Let go by the scaler: sent SIGTERM once; never restarted.
    let_go: bool = False
    #: Stop signals not to forward to it, as it had one already (when let go).
    spare: int = 0


@dataclass
class _Supervisor:
    main: Callable[[ChildContext], None]
    name: str
    supervisor_pid: int
    previous: dict[int, _SignalHandler]
    restart: bool
    backoff: Backoff
    deadline_of: Callable[[int], float | None] | None
    on_death: Callable[[ChildDeath], None] | None
    pending: list[int] = field(default_factory=list)
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False
    scaler: Scaler | None = None
    on_scale: Callable[[int, str], None] | None = None
    #: +1 (SIGTTIN) and -1 (SIGTTOU) asked for since the last tick.
    by_hand: list[int] = field(default_factory=list)
    #: Children the scaler asked for that wait for a free slot (see :meth:`grow`).
    owed: int = 0
    #: A child stopped on its own (a limit reached, the queue empty): the pool winds
    #: down, and no child is started to grow it.
    winding_down: bool = False

    def start(self, index: int) -> _Child:
        # Taken before the fork: the child's first job starts after it, always.
        started = time.monotonic()
        with _blocked(_FORWARDED) as mask:
            spec = _ChildSpec(index, self.main, self.supervisor_pid, self.previous, mask)
            process = _FORK.Process(
                target=_child_main, args=(spec,), name=f"{self.name}-{index + 1}"
            )
            process.start()
        # Unblocked: a signal that came meanwhile is in ``pending`` now. (The child
        # leaves our process group itself, for a session of its own: were we to move
        # it into a group first, it could lead no session.)
        return _Child(index, process, started)

    def forward_signals(self) -> None:
        while self.pending:
            self.stopping = True  # No restarts from now on.
            signum = _FORWARDED.get(self.pending.pop(0), signal.SIGTERM)
            for slot in self.slots:
                if slot.spare:
                    slot.spare -= 1  # Let go: it has had its SIGTERM.
                    continue
                if not slot.done and slot.child.process.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.child.pid, signum)

    def kill_overdue(self, now: float) -> None:
        if self.deadline_of is None or self.stopping:
            return
        for slot in self.slots:
            child = slot.child
            if slot.done or slot.restart_at is not None or child.overdue:
                continue
            deadline = self.deadline_of(slot.index)
            if deadline is not None and now > deadline and child.process.is_alive():
                # Python code cannot be stopped safely from inside: the whole worker
                # goes, with whatever it started in its session.
                child.overdue = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child.pid, signal.SIGKILL)
                _end_session(child.pid)

    def reap(self, now: float) -> None:
        for slot in self.slots:
            child = slot.child
            if slot.done or slot.restart_at is not None or child.process.is_alive():
                continue
            code = child.process.exitcode or 0
            uptime = now - child.started
            if code == 0 and not child.overdue:
                slot.done = True  # It stopped on its own: a limit, or a stop signal.
                self.winding_down = self.winding_down or not slot.let_go
                continue
            # Died holding what it held: its job's command may live on, and must be
            # gone before anyone (its replacement, the timeout's count, another
            # worker) takes the job again.
            _end_session(child.pid)
            restart_in: float | None = None
            if self.restart and not self.stopping and not slot.let_go:
                if child.overdue:
                    slot.quick_deaths = 0  # Its job's fault, not the worker's.
                elif uptime < self.backoff.quick:
                    slot.quick_deaths += 1
                else:
                    slot.quick_deaths = 0
                restart_in = self.backoff.delay(slot.quick_deaths)
            if self.on_death is not None:
                self.on_death(
                    ChildDeath(slot.index, child.pid, code, uptime, child.overdue, restart_in)
                )
            if restart_in is None:
                slot.done = True
            else:
                slot.restart_at = now + restart_in

    def restart_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.restart_at is None:
                continue
            if self.stopping:
                slot.restart_at, slot.done = None, True
            elif now >= slot.restart_at:
                slot.child = self.start(slot.index)
                slot.restart_at = None
                slot.restarts += 1
                self.forward_signals()  # One that came as it started.

    def scale(self, now: float) -> None:
        """Start or let go what the scaler says (nothing once stopping or winding down)."""
        by_hand, self.by_hand = self.by_hand, []
        if self.scaler is None:
            return
        if self.stopping or self.winding_down:
            if by_hand and self.on_scale is not None:
                count = sum(1 for s in self.slots if not s.done and not s.let_go)
                self.on_scale(count, "SIGTTIN/SIGTTOU ignored: the workers are stopping")
            return
        live = [s for s in self.slots if not s.done and not s.let_go]
        decision = self.scaler.decide(
            now, [Live(s.index, s.child.started) for s in live], by_hand, self.owed
        )
        for index in decision.let_go:
            slot = self.slots[index]
            slot.let_go = True
            if slot.restart_at is not None:
                # Dead, waiting for its replacement (whose pid may be anyone's now):
                # not replaced, and nothing to signal.
                slot.restart_at, slot.done = None, True
                continue
            # SIGTERM, as any stop: it takes no new job and ends the one in hand.
            slot.spare = 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.child.pid, signal.SIGTERM)
        self.owed = max(0, self.owed + decision.start)
        while self.owed and self.grow(self.scaler.scaling.most):
            self.owed -= 1
        if self.on_scale is not None:
            count = sum(1 for s in self.slots if not s.done and not s.let_go)
            for note in decision.notes:
                self.on_scale(count, note)

    def grow(self, most: int) -> bool:
        """Start one more child: in the slot of one let go and gone, or a new slot (so
        that the slots, and the rows of shared memory, never pass the scaler's most).
        False if none is free: the ones let go still end their jobs."""
        free = [s for s in self.slots if s.done and s.let_go]
        if not free and len(self.slots) >= most:
            return False
        if free:
            slot = free[0]
            slot.child = self.start(slot.index)
            slot.done = slot.let_go = False
            slot.spare = slot.quick_deaths = 0
        else:
            self.slots.append(_Slot(len(self.slots), self.start(len(self.slots))))
        self.forward_signals()  # One that came as it started.
        return True

    def wait(self, interval: float, now: float) -> None:
        timeout = interval
        for slot in self.slots:
            if slot.restart_at is not None:
                timeout = min(timeout, max(0.0, slot.restart_at - now))
        sentinels = [
            s.child.process.sentinel
            for s in self.slots
            if not s.done and s.restart_at is None
        ]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout)
        else:
            time.sleep(timeout)


def supervise(
    count: int,
    main: Callable[[ChildContext], None],
    *,
    name: str = "dq-worker",
    on_tick: Callable[[list[int]], None] | None = None,
    interval: float = 0.2,
    restart: bool = False,
    backoff: Backoff | None = None,
    deadline_of: Callable[[int], float | None] | None = None,
    on_death: Callable[[ChildDeath], None] | None = None,
    scaler: Scaler | None = None,
    on_scale: Callable[[int, str], None] | None = None,
) -> list[ChildResult]:
    """Run ``main`` in ``count`` forked processes until each returns; how each ended.

    Each child is in a session of its own, so that a Ctrl-C at the terminal reaches
    only the supervisor, which forwards it once. ``on_tick(pids)`` is called every
    ``interval`` seconds with the pids of the children started, in order. A stop signal
    that comes while the children start stops those started and starts no more.

    With ``restart``, a child that dies (a non-zero exit, or a signal) while no stop
    was asked for is replaced by a new one in its slot, after the ``backoff`` wait if
    it keeps dying quickly. ``deadline_of(index)`` (a ``time.monotonic()`` time, or
    None) is asked every tick: a child past its deadline is killed with its session
    (SIGKILL) and replaced at once. Whatever a dead child leaves in its session (a
    command it ran, and what that started) is killed, and gone, before ``on_death``
    hears of the death and before the replacement starts.

    With a ``scaler``, ``count`` children start, and then as many as it decides each
    tick (see the module's docstring); SIGTTIN and SIGTTOU go to it. ``on_scale(count,
    note)`` hears each change, and each signal ignored, in words. A child's index (its
    row in shared memory) is below the scaler's most: one let go frees its slot for the
    next started. The list returned has a result for each slot ever used.
    """
    if count < 1:
        raise ValueError(f"count must be 1 or more, not {count}")
    sup = _Supervisor(
        main, name, os.getpid(), {}, restart, backoff or Backoff(), deadline_of, on_death,
        scaler=scaler, on_scale=on_scale,
    )

    _put_up_handlers(sup)
    try:
        for index in range(count):
            if sup.pending:
                break  # Asked to stop while the others started.
            sup.slots.append(_Slot(index, sup.start(index)))
        while True:
            sup.forward_signals()
            now = time.monotonic()
            sup.kill_overdue(now)
            sup.reap(now)
            sup.restart_due(now)
            sup.scale(now)
            # As PID 1 every orphan of our workers' commands is ours to reap.
            reap_orphans(keep={slot.child.pid for slot in sup.slots})
            if on_tick is not None:
                on_tick([slot.child.pid for slot in sup.slots])
            if all(slot.done for slot in sup.slots):
                break
            sup.wait(interval, now)
    finally:
        for slot in sup.slots:
            process = slot.child.process
            if process.is_alive():
                # Only on an error of our own: make sure no child outlives us.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.child.pid, signal.SIGTERM)
            process.join()
        _restore_handlers(sup.previous)
    return [
        ChildResult(
            slot.child.pid, slot.child.process.exitcode or 0, slot.restarts, slot.let_go
        )
        for slot in sup.slots
    ]


def _put_up_handlers(sup: _Supervisor) -> None:
    """The supervisor's signal handlers, which only note the signal for its loop; the
    handlers from before go in ``sup.previous``."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.pending.append(signum)  # The supervising loop forwards it.

    def on_by_hand(signum: int, frame: FrameType | None) -> None:
        sup.by_hand.append(_BY_HAND[signum])  # The scaler acts on it next tick.

    for sig in _FORWARDED:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue  # Started under nohup: hang-ups stay ignored.
        sup.previous[sig] = signal.signal(sig, on_signal)
    if sup.scaler is not None:
        # Without one, they keep their default (which stops the process).
        for sig in _BY_HAND:
            sup.previous[sig] = signal.signal(sig, on_by_hand)


@contextlib.contextmanager
def _blocked(signals: Iterable[int]) -> Iterator[frozenset[int]]:
    """Within the block, ``signals`` wait; yields the mask from before."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield frozenset(before)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _restore_handlers(handlers: dict[int, _SignalHandler]) -> None:
    for sig, handler in handlers.items():
        # None: a handler put up outside Python, which cannot be put back.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _die_with_parent(supervisor_pid: int) -> None:
    """Have the kernel send this child SIGTERM when its supervisor dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _fs.libc().prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor_pid:
        # The supervisor died before the request was made: send what it would have.
        os.kill(os.getpid(), signal.SIGTERM)


def _end_session(leader: int) -> None:
    """Kill what is left of a dead worker's session (its command, and what that
    started), and wait until none of it runs (at most :data:`_END_SESSION_WAIT`)."""
    deadline = time.monotonic() + _END_SESSION_WAIT
    while kill_members(leader) and time.monotonic() < deadline:
        time.sleep(0.005)


#: How long the supervisor waits for a dead worker's leftovers to die of SIGKILL (a
#: process in uninterruptible sleep, on a hung NFS server, dies only when it wakes).
_END_SESSION_WAIT: Final = 5.0


def _child_main(spec: _ChildSpec) -> None:
    # The stop signals are blocked (inherited from the fork) until main is ready.
    _die_with_parent(spec.supervisor_pid)
    try:
        # A session of its own: what its commands start carries its session id, by
        # which the supervisor and the stale-lock judge know them after it died.
        os.setsid()
    except OSError:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    # The supervisor's handlers would only queue a signal in this process's copy of
    # its list, where nobody forwards it: put back the ones from before.
    _restore_handlers(spec.handlers)
    spec.main(ChildContext(spec.index, spec.supervisor_pid, spec.mask))
