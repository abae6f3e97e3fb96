"""Cron schedules of periodic tasks (``@q.periodic(cron="*/5 * * * *")``): their time
slots, read with croniter, an optional dependency (``pip install 'dirqueue[cron]'``).

A cron schedule's slots are its fire times: the slot that ``now`` falls in starts at
the last fire time at or before ``now`` and ends at the next one. Times are seconds
since the epoch, read as UTC (the filesystem's clock, which
:class:`dirqueue.coord.PeriodicOfferer` measures, knows no time zone). The offerer
treats these slots exactly as those of ``every=``: one unique key per slot.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from ..errors import DirQueueError

__all__ = ["CronSchedule", "CronUnavailableError", "InvalidCronError"]

#: The extra that installs the cron parser.
EXTRA = "dirqueue[cron]"


class CronUnavailableError(DirQueueError, ImportError):
    """A cron schedule was asked for, and croniter (the optional cron parser) is not
    installed."""


class InvalidCronError(DirQueueError, ValueError):
    """A cron expression that croniter does not accept."""

    def __init__(self, message: str, expression: object) -> None:
        super().__init__(message)
        self.expression = expression


def _croniter() -> Any:
    """The croniter class, or a clear error naming the extra that installs it."""
    try:
        from croniter import croniter  # noqa: PLC0415  # optional: imported when first needed
    except ImportError as err:
        raise CronUnavailableError(
            f"cron schedules need the croniter package: pip install '{EXTRA}'"
            " (or give the period as every=, e.g. every='5m')"
        ) from err
    return croniter


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


class CronSchedule:
    """The time slots of cron expression ``expression`` (5 fields, or 6 with seconds
    last, as croniter reads them), in UTC."""

    def __init__(self, expression: str) -> None:
        croniter = _croniter()
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise InvalidCronError(
                f"cron={expression!r} is not a cron expression: give five fields,"
                " minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'",
                expression,
            )
        self.expression = expression
        self._croniter = croniter

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def slot_of(self, now: float) -> float:
        """The start of the slot ``now`` falls in: the last fire time at or before it."""
        # croniter steps back from a time to the fire time strictly before it; cron
        # fires on whole seconds, so one second past now's floor finds one at now.
        start = _utc(math.floor(now) + 1)
        return float(self._croniter(self.expression, start).get_prev(float))

    def after(self, slot: float) -> float:
        """The start of the slot after the one starting at ``slot``."""
        return float(self._croniter(self.expression, _utc(slot)).get_next(float))

    def before(self, slot: float) -> float:
        """The start of the slot before the one starting at ``slot``."""
        return float(self._croniter(self.expression, _utc(slot)).get_prev(float))
