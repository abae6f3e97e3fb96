"""A job's own settings (time limit, attempts, retry back-off), carried in its metadata.

A worker's ``timeout``, ``max_attempts`` and ``retry_delay`` hold for every job it
takes; a job that needs others carries them under three reserved metadata names, which
every dirqueue worker honours, on any host, whoever submitted the job:

========================  =====================================================
``dq.timeout``            seconds an attempt may run (the worker's ``timeout``)
``dq.max_attempts``       failed attempts before ``failed/`` (``max_attempts``)
``dq.retry_delay``        the back-off's base in seconds (``retry_delay``)
========================  =====================================================

They are ordinary metadata in the on-disk format, so a Perl worker sees them as such
and ignores them, and ``dq submit --meta dq.timeout=30`` sets one from the shell.
:func:`job_settings` builds them, checked, for ``enqueue_*(metadata=...)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .errors import DirQueueError

__all__ = [
    "DIRQUEUE_ONLY",
    "GROUP",
    "MAX_ATTEMPTS",
    "RETRY_DELAY",
    "TIMEOUT",
    "InvalidGroupError",
    "InvalidJobSettingError",
    "JobSettings",
    "check_group",
    "is_dirqueue_only",
    "job_settings",
    "settings_of",
]

TIMEOUT: Final = "dq.timeout"
MAX_ATTEMPTS: Final = "dq.max_attempts"
RETRY_DELAY: Final = "dq.retry_delay"
#: The group a job belongs to, whose limits (``limits/GROUP``) hold for it: see
#: :mod:`dirqueue.limits`. Ordinary metadata to the Perl module, which ignores limits.
GROUP: Final = "dq.group"

#: A job kept out of Perl workers' sight (``enqueue_*(dirqueue_only=True)``): it waits in
#: ``queue/dq/``, which the Perl module never reads, and goes back there from
#: ``deferred/``, ``waiting/`` and ``failed/``. Its value is ``1``.
DIRQUEUE_ONLY: Final = "dq.dirqueue_only"
_DIRQUEUE_ONLY_LINE: Final = f"\n{DIRQUEUE_ONLY}: 1\n".encode()


def is_dirqueue_only(control: bytes | Mapping[str, str]) -> bool:
    """Whether a job (its metadata, or its control file's bytes) is for dirqueue only."""
    if isinstance(control, bytes):
        return _DIRQUEUE_ONLY_LINE in b"\n" + control
    return control.get(DIRQUEUE_ONLY) == "1"


#: A group's name: it becomes part of file names (``limits/GROUP``, ``slots/GROUP.K``),
#: so no dots, slashes or spaces.
_GROUP_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidGroupError(DirQueueError, ValueError):
    """A group name that is not 1 to 64 letters, digits, ``_`` or ``-``."""

    def __init__(self, message: str, group: object) -> None:
        super().__init__(message)
        self.group = group


def check_group(group: object) -> str:
    """``group`` if it is a valid group name, else :class:`InvalidGroupError`."""
    if not isinstance(group, str) or not _GROUP_RE.fullmatch(group):
        raise InvalidGroupError(
            f"group {group!r} is not a group name: use 1 to 64 letters, digits, '_' or"
            " '-', like 'gpu' or 'mail-out'",
            group,
        )
    return group


class InvalidJobSettingError(DirQueueError, ValueError):
    """A job setting (``dq.timeout`` and the like) that is not a valid value.

    ``key`` names it. A worker fails such a job at once, as with :class:`FailJob`:
    no attempt would read it better.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class JobSettings:
    """A job's own settings; None where the worker's hold."""

    timeout: float | None = None
    max_attempts: int | None = None
    retry_delay: float | None = None


def _seconds(key: str, text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise InvalidJobSettingError(
            f"job setting {key}={text!r} is not a number of seconds {least}:"
            f" write it like {key}=30",
            key,
        )
    return value


def _count(key: str, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise InvalidJobSettingError(
            f"job setting {key}={text!r} is not a whole number 1 or more: write it like"
            f" {key}=5",
            key,
        )
    return int(text)


def settings_of(metadata: Mapping[str, str]) -> JobSettings:
    """The settings in ``metadata`` (a job's); :class:`InvalidJobSettingError` for a bad one."""
    timeout = metadata.get(TIMEOUT)
    attempts = metadata.get(MAX_ATTEMPTS)
    delay = metadata.get(RETRY_DELAY)
    return JobSettings(
        timeout=None if timeout is None else _seconds(TIMEOUT, timeout, zero=False),
        max_attempts=None if attempts is None else _count(MAX_ATTEMPTS, attempts),
        retry_delay=None if delay is None else _seconds(RETRY_DELAY, delay, zero=True),
    )


def job_settings(
    *,
    timeout: float | None = None,
    max_attempts: int | None = None,
    retry_delay: float | None = None,
) -> dict[str, str]:
    """The metadata that gives a job its own settings, checked now (not when a worker
    meets the job): merge it into the metadata of ``enqueue_*``, like
    ``q.enqueue_string(data, {"owner": "ann", **job_settings(timeout=30)})``.
    """
    found: dict[str, str] = {}
    if timeout is not None:
        found[TIMEOUT] = repr(float(timeout))
    if max_attempts is not None:
        found[MAX_ATTEMPTS] = str(max_attempts)
    if retry_delay is not None:
        found[RETRY_DELAY] = repr(float(retry_delay))
    settings_of(found)
    return found
