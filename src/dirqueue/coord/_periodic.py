"""Periodic jobs: each time slot's job enqueued by exactly one of the processes that
offer it, on any number of hosts, with no scheduler process.

A periodic task (``@q.periodic(every=...)``, :meth:`dirqueue.tasks.TaskQueue.periodic`)
has time slots of ``every`` seconds, counted from the epoch in the **filesystem's
clock** (:func:`dirqueue._judge.filesystem_now`: the clock that stamps the queue's
files, the file server's over NFS), so hosts whose own clocks are minutes apart agree
on which slot it is. Every offerer (each ``dq server --periodic`` worker, at each of its
steps) offers the current slot's job once, as a unique enqueue whose key names the task
and the slot and is kept (``unique_ttl``) until the end of the next slot: the first
offer enqueues the job, every other one finds the key and enqueues nothing, even after
the job has run. The key is the engine's (:mod:`dirqueue._keys`): a ``link()``,
judged by the one stale-lock rule.

Missed slots are skipped: only the current slot is ever offered. A slot in which no
offerer ran has no job; an offerer that starts in the middle of a slot offers that slot
(late, once). See ``docs/coordination.md``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from collections.abc import Iterable
from typing import Any, Protocol

from .. import _keys
from .._judge import filesystem_now
from .._layout import Layout
from ..errors import DirQueueError
from ..queue import DirQueue

__all__ = ["PeriodicOfferer", "PeriodicTask", "Schedule", "slot_key", "slot_of"]

_log = logging.getLogger("dirqueue")

#: How many slots back an offerer removes the (expired) keys of, each time it offers.
_TIDY_SLOTS = (2, 3)


class Schedule(Protocol):
    """A cron schedule's slots (:class:`dirqueue.tasks.CronSchedule`); a period in
    seconds is the other kind of schedule."""

    def slot_of(self, now: float) -> float: ...
    def after(self, slot: float) -> float: ...
    def before(self, slot: float) -> float: ...


def slot_of(now: float, every: float | Schedule) -> float:
    """The start of the slot of ``every`` (seconds, or a cron schedule) that ``now``
    falls in."""
    if isinstance(every, int | float):
        return math.floor(now / every) * every
    return every.slot_of(now)


def _after(slot: float, every: float | Schedule) -> float:
    return slot + every if isinstance(every, int | float) else every.after(slot)


def _before(slot: float, every: float | Schedule, back: int) -> float:
    if isinstance(every, int | float):
        return slot - back * every
    for _ in range(back):
        slot = every.before(slot)
    return slot


def slot_key(name: str, slot: float) -> str:
    """The unique key of task ``name``'s slot starting at ``slot``."""
    return f"dq.periodic {name} {slot:.6f}"


class _Handle(Protocol):
    @property
    def jobid(self) -> str: ...


class _Submitter(Protocol):
    def submit(self, *args: Any, **kwargs: Any) -> _Handle: ...


class PeriodicTask(Protocol):
    """What the offerer needs of a periodic task (a :class:`dirqueue.tasks.Task`,
    listed by :func:`dirqueue.tasks.periodic_tasks`): this layer stands on the
    engine alone, and whoever starts it hands it the tasks."""

    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> DirQueue: ...
    @property
    def signature(self) -> inspect.Signature | None: ...

    def options(self, **changes: Any) -> _Submitter: ...


def _takes_slot(task: PeriodicTask) -> bool:
    return task.signature is not None and "slot" in task.signature.parameters


class PeriodicOfferer:
    """Offers the current slot's job of each periodic task of one queue; call
    :meth:`tick` often (a worker's ``on_step``: before each job, and at least every
    ``poll_interval`` while idle)."""

    def __init__(
        self, queue: DirQueue, tasks: Iterable[tuple[PeriodicTask, float | Schedule]]
    ) -> None:
        """``tasks``: ``(task, every)`` pairs, ``every`` in seconds or a cron schedule
        (:func:`dirqueue.tasks.periodic_tasks`); those of another queue directory are
        left out."""
        self.queue = queue
        here = os.path.realpath(queue.dir)
        self.tasks = [
            (task, every) for task, every in tasks
            if os.path.realpath(task.queue.dir) == here
        ]
        #: Task name -> the last slot this process offered.
        self._offered: dict[str, float] = {}

    def tick(self) -> list[str]:
        """Offer each task's current slot, if this process has not yet; return the ids
        of the jobs this call enqueued. Never raises for the queue's sake: a worker
        must not die of an offer (logged, and offered again at the next tick)."""
        enqueued: list[str] = []
        if not self.tasks:
            return enqueued
        try:
            now = filesystem_now(self.queue.config)
            for task, every in self.tasks:
                slot = slot_of(now, every)
                if self._offered.get(task.name) == slot:
                    continue
                jobid = self.offer(task, every, slot, now)
                self._offered[task.name] = slot
                if jobid is not None:
                    enqueued.append(jobid)
        except (OSError, DirQueueError) as err:
            _log.warning("offering periodic jobs: %s (tried again at the next step)", err)
        return enqueued

    def offer(
        self, task: PeriodicTask, every: float | Schedule, slot: float, now: float
    ) -> str | None:
        """Enqueue ``task``'s job for ``slot`` unless another offer did; its id, or None."""
        after = _after(slot, every)
        keep = max(_after(after, every) - now, after - slot)  # Till the next slot ends too.
        kwargs: dict[str, Any] = {"slot": slot} if _takes_slot(task) else {}
        result = task.options(unique_key=slot_key(task.name, slot), unique_ttl=keep).submit(
            **kwargs
        )
        for back in _TIDY_SLOTS:
            name = Layout.key_name(slot_key(task.name, _before(slot, every, back)))
            with contextlib.suppress(OSError, DirQueueError):
                _keys.remove_if_stale(self.queue.config, name)
        if getattr(result.jobid, "existing", False):
            return None
        _log.info("enqueued %s for its slot at %.0f: job %s", task.name, slot, result.jobid)
        return result.jobid
