"""Groups' limits: "only N of these at a time" and "at most M of these a minute",
kept across every host that works on a queue.

A job names its group (``enqueue_*(..., group="gpu")``, the ``dq.group`` metadata,
``dq submit --group``); the queue directory holds each group's limits
(``limits/GROUP``, :func:`set_limit`, ``dq limit set``). Every dirqueue worker keeps
them through the pickup's gate (:mod:`dirqueue.limits._gate`); Perl workers know
nothing of groups and ignore them (``docs/limits.md``). This layer stands above the
engine and reaches the queue only through the engine's pickup gate, a job's lock, the
stale-lock judge and the breaker token.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _pickup
from ..errors import QueueNotFoundError
from ..queue import DirQueue
from . import _rate, _slots
from ._gate import LimitGate
from ._rules import InvalidLimitError, Limit, parse_rate, read_limit
from ._rules import clear_limit as _clear_limit
from ._rules import list_limits as _list_limits
from ._rules import write_limit as _write_limit

__all__ = [
    "GroupStatus",
    "InvalidLimitError",
    "Limit",
    "LimitGate",
    "SlotHolding",
    "clear_limit",
    "get_limit",
    "group_status",
    "list_limits",
    "parse_rate",
    "set_limit",
]

_pickup.add_gate(LimitGate)


def set_limit(
    queue: DirQueue,
    group: str,
    concurrency: int | None = None,
    *,
    rate: str | tuple[int, float] | None = None,
) -> Limit:
    """Set ``group``'s limits in ``queue``: at most ``concurrency`` of its jobs active at
    once, and at most ``rate`` starts (``"100/min"``, or ``(count, seconds)``).
    Replaces what the group had; neither clears it.

    Raises :class:`~dirqueue.errors.QueueNotFoundError` if the queue directory does
    not exist: a limit set on a mistyped path would hold nothing back."""
    if not queue.exists:
        raise QueueNotFoundError(queue.dir)
    parsed = parse_rate(rate) if isinstance(rate, str) else rate
    return _write_limit(queue.config, group, concurrency=concurrency, rate=parsed)


def clear_limit(queue: DirQueue, group: str) -> bool:
    """Remove ``group``'s limits from ``queue``; True if it had any. Its running jobs
    keep their slots until they end."""
    return _clear_limit(queue.config, group)


def list_limits(queue: DirQueue) -> list[Limit]:
    """Every group with limits in ``queue``, by name."""
    return _list_limits(queue.config)


def get_limit(queue: DirQueue, group: str) -> Limit:
    """``group``'s limits as ``queue`` holds them now."""
    return read_limit(queue.config, group)


@dataclass(frozen=True)
class SlotHolding:
    """One held slot of a group: who holds it and what the stale-lock rule says."""

    slot: int
    owner: str
    age: float
    verdict: str
    reason: str


@dataclass(frozen=True)
class GroupStatus:
    """A group's limits and what holds them now."""

    limit: Limit
    holders: list[SlotHolding]
    #: Starts within the rate's period (None without a rate limit).
    recent_starts: int | None


def group_status(queue: DirQueue, group: str) -> GroupStatus:
    """``group``'s limits, its slots' holders and its recent starts (``dq stats``)."""
    config = queue.config
    limit = read_limit(config, group)
    holders = [
        SlotHolding(
            h.slot, _slots.owner_of(h), h.judgement.age, h.judgement.verdict.value,
            h.judgement.reason,
        )
        for h in _slots.holders(config, group)
    ]
    recent = None if limit.rate is None else _rate.recent_starts(config, group, limit.rate[1])
    return GroupStatus(limit, holders, recent)

