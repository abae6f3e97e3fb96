"""The numbers a caller gives dirqueue (durations, delays, times): one check for all.

A float can be ``nan`` or ``inf``, which every comparison in the engine would take
wrongly without a word: ``active_file_lifetime=nan`` made every lock look past its
lifetime (a live worker's lock broken at once), ``delay=nan`` queued a job at once and
``idle_timeout=nan`` never came; ``inf`` or ``1e300`` overflowed the C time types
(``utime``, ``sleep``) with a traceback. So every such number passes
:func:`check_number` once, where it enters (the API and the ``dq`` options alike), and
the engine can trust it.
"""

from __future__ import annotations

import math
import re
from typing import Final, NamedTuple

from .errors import InvalidNumberError

__all__ = [
    "EPOCH_TIME",
    "MAX_SECONDS",
    "SECONDS",
    "SECONDS_OR_ZERO",
    "Range",
    "check_number",
    "parse_seconds",
]

#: The longest duration or delay taken, in seconds (ten years): past it a due time
#: nears the limits of what filesystems stamp, and no worker waits that long anyway.
MAX_SECONDS: Final = 315_360_000.0
#: The latest time (seconds since the epoch) a job may be due: 2100-01-01 UTC, which
#: every filesystem with 64-bit timestamps keeps as a file's mtime.
LATEST_TIME: Final = 4_102_444_800.0


class Range(NamedTuple):
    """The values a number may take: from ``low`` (included or not) to ``high``."""

    low: float
    high: float
    low_included: bool
    #: What is allowed, for the error message ("... must be TEXT").
    text: str


#: A length of time that must pass: more than 0 seconds, at most ten years.
SECONDS: Final = Range(
    0.0, MAX_SECONDS, False, "a number of seconds more than 0 and at most 315360000 (ten years)"
)
#: A length of time where 0 means "none" or "at once".
SECONDS_OR_ZERO: Final = Range(
    0.0, MAX_SECONDS, True, "a number of seconds from 0 to 315360000 (ten years)"
)
#: A moment, as seconds since the epoch.
EPOCH_TIME: Final = Range(
    0.0, LATEST_TIME, True,
    "a time in seconds since the epoch from 0 to 4102444800 (2100-01-01 UTC)",
)


def check_number(name: str, value: object, allowed: Range) -> float:
    """``value`` as a float if it is a real number within ``allowed``; else
    :class:`InvalidNumberError` naming the parameter ``name`` and the range.

    ``nan`` and the infinities are never allowed; nor is a bool (``True`` is not a
    duration, though Python counts it as 1).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidNumberError(name, value, allowed.text)
    number = float(value)
    if not math.isfinite(number) or number > allowed.high or (
        number < allowed.low or (number == allowed.low and not allowed.low_included)
    ):
        raise InvalidNumberError(name, value, allowed.text)
    return number


_DURATION_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*")
_DURATION_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_seconds(name: str, value: object, allowed: Range = SECONDS) -> float:
    """A duration given as a number of seconds or as text (``"90"``, ``"30s"``,
    ``"5m"``, ``"2h"``, ``"1d"``, ``"1w"``), checked by :func:`check_number`."""
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is None:
            raise InvalidNumberError(name, value, allowed.text + ", or text like 30s, 5m or 2h")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return check_number(name, value, allowed)
