"""The supervisor: N forked processes, each running one function, and stop signals.

:func:`supervise` forks the children, forwards SIGTERM and SIGINT to each of them,
restarts none, and waits for all. It knows nothing of jobs: :func:`dirqueue.worker.
run_workers` gives it the function each child runs (a :class:`~dirqueue.worker.Worker`)
and reads what the children did from :class:`SharedCounters`. :class:`SharedBudget` is
an ``njobs`` allowance the children draw from together.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

__all__ = ["ChildContext", "ChildResult", "SharedBudget", "SharedCounters", "supervise"]

_FORK: Final = multiprocessing.get_context("fork")
#: The signals a supervisor forwards to its children.
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


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
    """What a child's function is told: which child it is."""

    index: int


@dataclass(frozen=True)
class ChildResult:
    """How a child ended."""

    pid: int
    exit_code: int


@dataclass
class _ChildSpec:
    """What a forked child runs."""

    index: int
    main: Callable[[ChildContext], None]


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
    ``interval`` seconds with the pids of the children, in order.
    """
    if count < 1:
        raise ValueError(f"count must be 1 or more, not {count}")
    children: list[_Child] = []
    pending: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)  # The supervising loop forwards it.

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        for index in range(count):
            spec = _ChildSpec(index, main)
            process = _FORK.Process(target=_child_main, args=(spec,), name=f"{name}-{index + 1}")
            process.start()
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
        for sig, old in previous.items():
            signal.signal(sig, old)
    return [ChildResult(c.pid, c.process.exitcode or 0) for c in children]


def _supervise(
    children: list[_Child],
    pending: list[int],
    on_tick: Callable[[list[int]], None] | None,
    interval: float,
) -> None:
    while True:
        while pending:
            signum = pending.pop(0)
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


def _child_main(spec: _ChildSpec) -> None:
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    spec.main(ChildContext(spec.index))
