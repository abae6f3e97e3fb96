"""Elastic workers: how many a supervisor runs, between a least and a most number.

:class:`Scaling` is what the caller asks for (``dq server --workers 1:8``);
:class:`Scaler` decides, once per supervisor tick, whether to start a worker or let
some go. It knows nothing of processes or queues: the supervisor tells it which
workers are alive and when each started, and it asks two questions given at its
making: when each worker's current or last job started and ended, and when its last
pickup that found nothing began (the workers write that in shared memory, so asking
costs no system call), and whether a job waits that
no worker has taken (asked only when every worker is busy and a new one may start,
so at most once per ``grow_interval``).

The rules, each in one method:

- **Grow** (:meth:`Scaler._grow`): one new worker when every worker is busy, a job
  waits, fewer than ``most`` run, and the last one started at least ``grow_interval``
  seconds ago. One at a time, because a new worker takes a moment to import its
  handler and warm its caches: starting many at once for a burst that the first few
  would clear costs more than it brings.
- **Shrink** (:meth:`Scaler._shrink`): a worker idle (no job) for ``shrink_after``
  seconds is let go, while more than the floor run. A worker let go is asked to stop
  as SIGTERM asks: it takes no new job, ends the one in hand, and exits.
- **By hand** (:meth:`Scaler._by_hand`): SIGTTIN starts one more worker and raises the
  floor by one; SIGTTOU lets one go (an idle one if there is one, else the newest,
  which ends its job first) and lowers the floor by one. Never past ``most`` nor below
  one: a signal that would is ignored, and said so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .errors import InvalidNumberError

__all__ = [
    "DEFAULT_GROW_INTERVAL",
    "DEFAULT_SHRINK_AFTER",
    "Decision",
    "JobTimes",
    "Live",
    "Scaler",
    "Scaling",
    "parse_workers",
]

#: Seconds a worker may wait idle before it is let go (above the floor).
DEFAULT_SHRINK_AFTER: Final = 30.0
#: Seconds between two workers started because jobs wait.
DEFAULT_GROW_INTERVAL: Final = 1.0
#: The most workers one supervisor runs (each is a process, with its own memory).
MOST_WORKERS: Final = 1024

_WORKERS_TEXT: Final = f"a whole number from 1 to {MOST_WORKERS}, or LEAST:MOST such as 1:8"


@dataclass(frozen=True)
class Scaling:
    """How many workers: from ``least`` to ``most`` (a plain number: both the same),
    how long an idle one lives above the floor, and how fast more start (both checked
    where they enter, by :func:`dirqueue._numbers.check_number`)."""

    least: int
    most: int
    shrink_after: float = DEFAULT_SHRINK_AFTER
    grow_interval: float = DEFAULT_GROW_INTERVAL

    def __post_init__(self) -> None:
        for name in ("least", "most"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MOST_WORKERS
            ):
                raise InvalidNumberError(f"workers ({name})", value, _WORKERS_TEXT)
        if self.least > self.most:
            raise InvalidNumberError(
                "workers", f"{self.least}:{self.most}",
                "LEAST:MOST with LEAST at most MOST (such as 1:8)",
            )

    @property
    def elastic(self) -> bool:
        """True when the count follows the backlog (``least`` below ``most``)."""
        return self.least < self.most

    def __str__(self) -> str:
        return str(self.most) if not self.elastic else f"{self.least}:{self.most}"


def parse_workers(text: str) -> tuple[int, int]:
    """``"4"`` as (4, 4), ``"1:8"`` as (1, 8); else :class:`InvalidNumberError`."""
    least, sep, most = text.strip().partition(":")
    try:
        pair = (int(least), int(most) if sep else int(least))
    except ValueError:
        raise InvalidNumberError("--workers", text, _WORKERS_TEXT) from None
    Scaling(*pair)  # The one check of the numbers.
    return pair


@dataclass(frozen=True)
class Live:
    """A worker running now (not being let go): its slot, and when it started
    (``time.monotonic()``)."""

    index: int
    started: float


@dataclass(frozen=True)
class Decision:
    """What the supervisor is to do this tick, and why (lines for its log)."""

    start: int = 0
    let_go: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobTimes:
    """When (``time.monotonic()``; 0: never) a worker's current or last job started
    and ended, and when its last pickup that found nothing began."""

    began: float = 0.0
    ended: float = 0.0
    empty: float = 0.0


@dataclass
class Scaler:
    """Decides each tick how many workers run (see the module's rules).

    ``job_times(index)`` says when a worker's job started and ended; ``jobs_waiting()``
    whether a job waits that no worker holds. Both are asked, never told: the scaler
    keeps no copy that could go stale.
    """

    scaling: Scaling
    job_times: Callable[[int], JobTimes]
    jobs_waiting: Callable[[], bool]
    #: The count the workers shrink back to: ``least``, moved by SIGTTIN and SIGTTOU.
    floor: int = 0
    _last_grow: float = field(default=-math.inf)

    def __post_init__(self) -> None:
        self.floor = self.floor or self.scaling.least

    def decide(
        self, now: float, live: list[Live], by_hand: list[int], owed: int = 0
    ) -> Decision:
        """What to do now: ``live`` are the workers running (oldest first), ``by_hand``
        the +1 (SIGTTIN) and -1 (SIGTTOU) asked for since the last tick, ``owed`` the
        workers decided on but not started yet (no slot was free: the ones let go
        were still ending their jobs). ``Decision.start`` is negative to take back
        some of those."""
        notes: list[str] = []
        start, let_go = self._by_hand(now, live, by_hand, owed, notes)
        remaining = [w for w in live if w.index not in let_go]
        if not by_hand and not owed:
            start += self._grow(now, remaining, notes)
        let_go += self._shrink(now, remaining, owed + start, notes)
        return Decision(start, tuple(let_go), tuple(notes))

    def busy(self, worker: Live, now: float) -> bool:
        """True if ``worker`` is in a job, or has ended one and is taking its next: no
        pickup of its has found nothing since. Not "in a job" alone: between two jobs a
        worker spends time finishing one and taking the next (much of it, on a slow
        network filesystem), and a pool in a backlog would never look all busy.
        A worker that never had a job is not busy."""
        times = self.job_times(worker.index)
        if times.began >= worker.started and times.began > times.ended:
            return True
        return times.ended >= worker.started and times.empty < times.ended

    def idle_for(self, worker: Live, now: float) -> float:
        """Seconds since ``worker`` last ended a job, or started (0 while in a job)."""
        times = self.job_times(worker.index)
        if times.began >= worker.started and times.began > times.ended:
            return 0.0
        return now - max(times.ended, worker.started)

    def _by_hand(
        self, now: float, live: list[Live], by_hand: list[int], owed: int, notes: list[str]
    ) -> tuple[int, list[int]]:
        start, let_go = 0, list[int]()
        for change in by_hand:
            count = len(live) + owed + start - len(let_go)
            if change > 0:
                if count >= self.scaling.most:
                    notes.append(f"SIGTTIN ignored: already at the most, {self.scaling.most}")
                    continue
                start += 1
                self.floor = min(self.scaling.most, self.floor + 1)
                self._last_grow = now
                notes.append(f"+1 (SIGTTIN): {_workers(count + 1)}")
                continue
            if count <= 1:
                notes.append("SIGTTOU ignored: already at the least, 1")
                continue
            self.floor = max(1, self.floor - 1)
            if owed + start > 0:
                start -= 1  # Asked for and taken back before it started.
            else:
                let_go.append(self._whom_to_let_go(now, live, let_go))
            notes.append(f"-1 (SIGTTOU): {_workers(count - 1)}")
        return start, let_go

    def _whom_to_let_go(self, now: float, live: list[Live], chosen: list[int]) -> int:
        """An idle worker if there is one, else the newest: it ends its job first."""
        candidates = [w for w in reversed(live) if w.index not in chosen]
        idle = [w for w in candidates if not self.busy(w, now)]
        return (idle or candidates)[0].index

    def _grow(self, now: float, live: list[Live], notes: list[str]) -> int:
        if not self.scaling.elastic or len(live) >= self.scaling.most:
            return 0
        if now - self._last_grow < self.scaling.grow_interval:
            return 0
        if not live or not all(self.busy(w, now) for w in live):
            return 0
        # Last, and only now: the one question that may cost a system call.
        if not self.jobs_waiting():
            return 0
        self._last_grow = now
        notes.append(f"+1: jobs wait and all {len(live)} busy: {_workers(len(live) + 1)}")
        return 1

    def _shrink(self, now: float, live: list[Live], start: int, notes: list[str]) -> list[int]:
        count = len(live) + start
        let_go: list[int] = []
        for worker in reversed(live):  # The newest first: the oldest keep their caches.
            if count <= self.floor:
                break
            idle = self.idle_for(worker, now)
            if idle >= self.scaling.shrink_after and not self.busy(worker, now):
                let_go.append(worker.index)
                count -= 1
                notes.append(f"-1: a worker idle for {idle:.0f} s: {_workers(count)}")
        return let_go


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count != 1 else ''}"
