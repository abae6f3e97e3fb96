"""The pickup's gate for groups' limits (:class:`dirqueue._pickup.Gate`).

For each job a worker is about to take, in queue order:

- no ``dq.group``, or a group without limits: take it (no system call: the metadata
  was read with the job, and the group's limits are read at most every
  :data:`~dirqueue.limits._rules.REREAD` seconds);
- a concurrency limit: link the job's lock as a free slot (one ``link``; one
  ``unlink`` when the job ends). No slot free: the job is given back untouched,
  and every later job of that group is passed over *without being locked* for the
  rest of this pickup, so a full group costs other groups' jobs nothing and never
  blocks them;
- a rate limit: take a start token; none free: the job is put off (``deferred/``,
  due when the oldest start of the window leaves it), its attempts untouched.

Order within a group holds, and no job starves: every pickup offers a group's free
slot to the group's first waiting job (the queue's order), so a job waits only for
jobs of its own group that come before it or are running, and a running job's slot
frees when it ends, or when its holder is dead by the stale-lock rule.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Final

from .. import _fs
from .._config import QueueConfig
from .._identity import current_pid
from .._jobfiles import read_control
from .._jobsettings import GROUP, InvalidGroupError, check_group
from .._judge import filesystem_now
from .._pickup import PROMOTE_INTERVAL, Admission
from ..errors import DirQueueError
from ..job import Job
from . import _rate, _slots
from ._rules import LimitReader

__all__ = ["JUDGE_INTERVAL", "LOOK_INTERVAL", "LimitGate"]

_log = logging.getLogger("dirqueue")

#: A full group's slots are judged (a dead holder's broken) at most this often per
#: worker (seconds): judging reads every slot.
JUDGE_INTERVAL: Final = 0.2
#: A full group's slots are looked at (an lstat each) at most this often per worker.
LOOK_INTERVAL: Final = 0.05
#: Job names whose group a worker remembers (so a full group's jobs are passed over
#: without a lock); forgotten all at once beyond this.
_REMEMBER: Final = 100_000


class LimitGate:
    """One picker's gate: what it has learned of jobs' groups and which are full.

    The threads of one queue object share it, without a lock: each of its fields is a
    hint (a group thought full, a job's group remembered), changed by single dict and
    set operations, and a hint out of date costs a lock tried in vain, never a limit
    broken: only a slot's ``link()`` and a token's decide."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.limits = LimitReader(config)
        #: Job name -> its group, learned when the job was read.
        self.group_of: dict[str, str] = {}
        #: Groups found full in this pickup.
        self.full: set[str] = set()
        #: Groups found full lately -> when (monotonic) their slots may be looked at
        #: again (an lstat each) before a job of theirs is locked; until a slot is seen
        #: free, and no more often than :data:`LOOK_INTERVAL`.
        self.crowded: dict[str, float] = {}
        #: Group -> until when (monotonic) its rate passes over its jobs.
        self.over_rate: dict[str, float] = {}
        self._first_slot: dict[str, int] = {}
        #: Whether the queue is on a local filesystem: asked at the first slot taken
        #: (a queue object may be made before its directory).
        self._local: bool | None = None
        self._judged: dict[str, float] = {}

    def new_pass(self) -> None:
        """See :meth:`dirqueue._pickup.Gate.new_pass`."""
        self.full.clear()

    def may_try(self, name: str, queue_path: str) -> bool:
        """See :meth:`dirqueue._pickup.Gate.may_try`."""
        group = self.group_of.get(name)
        if group is None:
            if not self.full and not self.over_rate:
                return True  # Nothing to pass over: no look before the lock.
            # A group is full (or over its rate) in this pickup: a job this worker has
            # not met yet may be one of its, and locking each of those in turn (and
            # giving it back) would keep every other group waiting behind them. Its
            # control file says, read without a lock (it is written once, and replaced
            # whole).
            group = self._peek(name, queue_path)
            if group is None:
                return True
        if group in self.full:
            return False
        until = self.over_rate.get(group)
        if until is not None:
            if time.monotonic() < until:
                return False
            self.over_rate.pop(group, None)
        if group in self.crowded:
            limit = self.limits.get(group).concurrency
            if limit is not None and not self._room(group, limit):
                self.full.add(group)
                return False
            self.crowded.pop(group, None)
        return True

    def _peek(self, name: str, queue_path: str) -> str | None:
        try:
            group = read_control(queue_path).metadata.get(GROUP)
        except (OSError, DirQueueError):
            return None  # Gone, or unreadable: the pickup finds out.
        if group is not None:
            self._remember(name, group)
        return group

    def _remember(self, name: str, group: str) -> None:
        if len(self.group_of) >= _REMEMBER:
            self.group_of.clear()
        self.group_of[name] = group

    def _room(self, group: str, limit: int) -> bool:
        """Whether a slot looks free (breaking stale ones, at most every
        :data:`JUDGE_INTERVAL`); a crowded group is looked at no more often than
        :data:`LOOK_INTERVAL`: each time a slot looks free the worker locks a job to
        try for it, and loses the slot, more often than not, to a worker whose job of
        the group just ended and who takes the next at once."""
        now = time.monotonic()
        if now < self.crowded.get(group, 0.0):
            return False
        self.crowded[group] = now + LOOK_INTERVAL
        if _slots.is_free(self.config, group, limit):
            return True
        if now - self._judged.get(group, 0.0) < JUDGE_INTERVAL:
            return False
        self._judged[group] = now
        return _slots.free_stale(self.config, group, limit) > 0

    def admit(self, job: Job) -> Admission | float:
        """See :meth:`dirqueue._pickup.Gate.admit`."""
        group = job.metadata.get(GROUP)
        if group is None:
            return Admission.TAKE
        try:
            check_group(group)
        except InvalidGroupError as err:
            _log.warning("job %s: %s; run without limits", job.jobid, err)
            return Admission.TAKE
        self._remember(job.jobid, group)
        limit = self.limits.get(group)
        if limit.concurrency is not None and group in self.full:
            return Admission.PARK  # Found full in this pickup already.
        if limit.concurrency is not None:
            slot = self._take_slot(job, group, limit.concurrency)
            if slot is None:
                self.full.add(group)
                self.crowded.setdefault(group, 0.0)
                return Admission.PARK
            job.on_release.append(
                functools.partial(self._release, group, slot, job.lock_stat, time.monotonic())
            )
        if limit.rate is not None:
            due = _rate.claim(self.config, group, *limit.rate)
            if due is not None:
                # Its other jobs wait here until the one put off is back (promoted
                # within PROMOTE_INTERVAL of its due time), so it keeps its place.
                wait = due - filesystem_now(self.config) + PROMOTE_INTERVAL
                self.over_rate[group] = time.monotonic() + max(wait, 0.0)
                return due
        return Admission.TAKE

    def _take_slot(self, job: Job, group: str, limit: int) -> int | None:
        if self._local is None:
            self._local = _fs.is_local_filesystem(self.config.dir)
        local = self._local
        first = self._first_slot.get(group, current_pid() % limit) % limit
        slot = _slots.take(self.config, group, limit, job.jobid, first, local=local)
        if slot is None and self._room(group, limit):
            slot = _slots.take(self.config, group, limit, job.jobid, first, local=local)
        if slot is not None:
            self._first_slot[group] = slot
        return slot

    def _release(
        self, group: str, slot: int, lock: os.stat_result | None, taken: float
    ) -> None:
        # Held for less than half a lock's lifetime, the slot cannot have been judged
        # stale (its mtime is the lock's, set when the job was taken): one unlink. Held
        # longer (or stopped that long), it may have been broken and taken by another
        # job: remove it only if it is still our lock's file.
        quick = time.monotonic() - taken < self.config.active_file_lifetime / 2
        _slots.release(self.config, group, slot, None if quick else lock)
