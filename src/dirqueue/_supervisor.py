"""The supervisor: N forked processes, each running one function, and stop signals.

:func:`supervise` forks the children, forwards SIGTERM and SIGINT to each of them
(SIGHUP as SIGTERM), restarts none, and waits for all. It knows nothing of jobs:
:func:`dirqueue.worker.run_workers` gives it the function each child runs (a
:class:`~dirqueue.worker.Worker`) and reads what the children did from
:class:`SharedCounters`. :class:`SharedBudget` is an ``njobs`` allowance the children
draw from together.

Two promises, and what keeps them:

- No stop signal is lost while a child starts. The stop signals are blocked across each
  fork; the child puts up its own handlers before it unblocks them (a signal forwarded
  meanwhile waits for it), and the supervisor, once it unblocks them, forwards what
  came meanwhile to every child started so far and starts no more.
- No child outlives the supervisor, even one killed by SIGKILL. On Linux each child
  asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``); elsewhere, and as a
  second line, the child's function is told the supervisor's pid to watch for
  (a :class:`~dirqueue.worker.Worker` stops when its parent is no longer that process).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

__all__ = ["ChildContext", "ChildResult", "SharedBudget", "SharedCounters", "supervise"]

_FORK: Final = multiprocessing.get_context("fork")
#: The signals a supervisor forwards to its children, and as what. A hang-up stops the
#: workers like SIGTERM (a worker's default action on SIGHUP would leave its job locked).
_FORWARDED: Final[dict[int, int]] = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGINT,
    signal.SIGHUP: signal.SIGTERM,
}
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
    """How a child ended."""

    pid: int
    exit_code: int


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

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)


def supervise(
    count: int,
    main: Callable[[ChildContext], None],
    *,
    name: str = "dq-worker",
    on_tick: Callable[[list[int]], None] | None = None,
    interval: float = 0.2,
) -> list[ChildResult]:
    """Run ``main`` in ``count`` forked processes until each returns; how each ended.

    Each child is in its own process group, so that a Ctrl-C at the terminal reaches
    only the supervisor, which forwards it once. ``on_tick(pids)`` is called every
    ``interval`` seconds with the pids of the children started, in order. A stop signal
    that comes while the children start stops those started and starts no more.
    """
    if count < 1:
        raise ValueError(f"count must be 1 or more, not {count}")
    children: list[_Child] = []
    pending: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)  # The supervising loop forwards it.

    previous: dict[int, _SignalHandler] = {}
    for sig in _FORWARDED:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue  # Started under nohup: hang-ups stay ignored.
        previous[sig] = signal.signal(sig, on_signal)
    supervisor_pid = os.getpid()
    try:
        for index in range(count):
            if pending:
                break  # Asked to stop while the others started.
            with _blocked(_FORWARDED) as mask:
                spec = _ChildSpec(index, main, supervisor_pid, previous, mask)
                process = _FORK.Process(
                    target=_child_main, args=(spec,), name=f"{name}-{index + 1}"
                )
                process.start()
            # Unblocked: a signal that came meanwhile is in ``pending`` now.
            child = _Child(index, process)
            with contextlib.suppress(OSError):
                os.setpgid(child.pid, child.pid)
            children.append(child)
        _supervise(children, pending, on_tick, interval)
    finally:
        for child in children:
            if child.process.is_alive():
                # Only on an error of our own: make sure no child outlives us.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
            child.process.join()
        _restore_handlers(previous)
    return [ChildResult(c.pid, c.process.exitcode or 0) for c in children]


def _supervise(
    children: list[_Child],
    pending: list[int],
    on_tick: Callable[[list[int]], None] | None,
    interval: float,
) -> None:
    while True:
        while pending:
            signum = _FORWARDED.get(pending.pop(0), signal.SIGTERM)
            for child in children:
                if child.process.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signum)
        if on_tick is not None:
            on_tick([c.pid for c in children])
        alive = [c for c in children if c.process.is_alive()]
        if not alive:
            return
        alive[0].process.join(interval)


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
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor_pid:
        # The supervisor died before the request was made: send what it would have.
        os.kill(os.getpid(), signal.SIGTERM)


def _child_main(spec: _ChildSpec) -> None:
    # The stop signals are blocked (inherited from the fork) until main is ready.
    _die_with_parent(spec.supervisor_pid)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # The supervisor's handlers would only queue a signal in this process's copy of
    # its list, where nobody forwards it: put back the ones from before.
    _restore_handlers(spec.handlers)
    spec.main(ChildContext(spec.index, spec.supervisor_pid, spec.mask))
