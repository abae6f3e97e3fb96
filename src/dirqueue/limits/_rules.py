"""Groups' limits as the queue directory holds them: ``limits/GROUP``, one small text
file per group, so every host (and every worker) reads the same numbers.

The file is a few ``KEY VALUE`` lines::

    concurrency 2
    rate 100 60

``concurrency N``: at most N jobs of the group active at once; ``rate M P``: at most M
starts in any P seconds. Either may be missing. A line this version does not know is
kept out of the answer, not an error: a newer writer's file still reads. A file is
written whole in ``tmp/`` and renamed into place, so a reader on any host sees the old
limits or the new, never half of one. The Perl module never opens ``limits/``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass
from typing import Final

from .. import _dirfds, _fs
from .._config import QueueConfig
from .._identity import current_pid
from .._jobfiles import in_queue_dir
from .._jobsettings import check_group
from .._layout import Layout
from ..errors import DirQueueError

__all__ = [
    "REREAD",
    "InvalidLimitError",
    "Limit",
    "LimitReader",
    "clear_limit",
    "list_limits",
    "parse_rate",
    "read_limit",
    "write_limit",
]

#: How long (seconds) a worker trusts the limits it read before reading them again: a
#: ``dq limit set`` reaches every worker on every host this late (plus NFS's attribute
#: cache), and a job of a group costs no read of its limits in between.
REREAD: Final = 1.0
_READ_MAX: Final = 4096
#: The most a limit may say: a concurrency of more is no limit, and every slot or rate
#: token is a file.
MAX_COUNT: Final = 10_000
_UNITS: Final = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}
_RATE_RE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")


class InvalidLimitError(DirQueueError, ValueError):
    """A limit that is not a whole number, or a rate not written like ``100/min``."""

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


@dataclass(frozen=True)
class Limit:
    """One group's limits; None where it has none."""

    group: str
    #: At most this many jobs of the group active at once, across hosts.
    concurrency: int | None = None
    #: At most ``rate[0]`` starts in any ``rate[1]`` seconds, across hosts.
    rate: tuple[int, float] | None = None

    def describe(self) -> str:
        """The limits in words, as ``dq limit list`` shows them."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at a time")
        if self.rate is not None:
            parts.append(f"{self.rate[0]} per {self.rate[1]:g}s")
        return ", ".join(parts) or "no limit"


def _check_count(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidLimitError(
            f"{what} {value!r} is not a whole number from 1 to {MAX_COUNT}: e.g. 2", value
        )
    return value


def parse_rate(text: str) -> tuple[int, float]:
    """``(M, P)`` from ``"M/UNIT"`` or ``"M/NUNIT"``: ``100/min``, ``20/2s``, ``5/h``."""
    match = _RATE_RE.fullmatch(text.lower())
    unit = _UNITS.get(match.group(3)) if match else None
    if match is None or unit is None:
        raise InvalidLimitError(
            f"rate {text!r} is not a count per time: write it like 100/min, 20/2s or 5/h",
            text,
        )
    count = _check_count("the rate's count", int(match.group(1)))
    period = float(match.group(2) or 1) * unit
    if not 0 < period <= 7 * 86400:
        raise InvalidLimitError(f"rate {text!r}: the period must be from 1 s to a week", text)
    return count, period


def _format(limit: Limit) -> bytes:
    lines = []
    if limit.concurrency is not None:
        lines.append(f"concurrency {limit.concurrency}\n")
    if limit.rate is not None:
        lines.append(f"rate {limit.rate[0]} {limit.rate[1]!r}\n")
    return "".join(lines).encode()


def _parse(group: str, raw: bytes) -> Limit:
    concurrency: int | None = None
    rate: tuple[int, float] | None = None
    for line in raw.decode("utf-8", errors="replace").splitlines():
        key, _, value = line.strip().partition(" ")
        with contextlib.suppress(ValueError, InvalidLimitError):
            if key == "concurrency":
                concurrency = _check_count("concurrency", int(value))
            elif key == "rate":
                count, period = value.split()
                rate = (_check_count("rate", int(count)), float(period))
                if not 0 < rate[1] < float("inf"):
                    rate = None
    return Limit(group, concurrency, rate)


def read_limit(config: QueueConfig, group: str) -> Limit:
    """Group ``group``'s limits as the queue holds them now (none if it has no file)."""

    def read(dfd: int) -> bytes:
        fd, st = _fs.open_regular_stat(group, dir_fd=dfd)
        try:
            return _fs.read_whole(fd, st.st_size, _READ_MAX)
        finally:
            os.close(fd)

    try:
        raw = _dirfds.at(config.dir, (Layout.LIMITS,), read, retry=False)
    except OSError as err:
        if _fs.is_gone(err) or err.errno in (errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            return Limit(group)
        if isinstance(err, _fs.NotRegularFileError):
            return Limit(group)
        raise
    return _parse(group, raw)


def write_limit(
    config: QueueConfig,
    group: str,
    *,
    concurrency: int | None = None,
    rate: tuple[int, float] | None = None,
) -> Limit:
    """Set group ``group``'s limits (replacing what it had), atomically for every reader."""
    check_group(group)
    if concurrency is not None:
        _check_count("concurrency", concurrency)
    if rate is not None:
        _check_count("the rate's count", rate[0])
    limit = Limit(group, concurrency, rate)
    if concurrency is None and rate is None:
        clear_limit(config, group)
        return limit
    name = Layout.tmp_limit_name(group, config.hostname, current_pid())
    created: list[str] = []

    def write(tmp_fd: int) -> None:
        fd = _fs.create_exclusive(name, config.queue_file_mode, dir_fd=tmp_fd)
        try:
            _fs.write_all(fd, _format(limit))
            if config.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            _dirfds.at(
                config.dir,
                (Layout.LIMITS,),
                lambda lfd: os.rename(name, group, src_dir_fd=tmp_fd, dst_dir_fd=lfd),
                create=True,
                created=created,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp_fd)
            raise

    in_queue_dir(config, (Layout.TMP,), write)
    if config.durable:
        _dirfds.at(config.dir, (Layout.LIMITS,), os.fsync)
        if created:
            # limits/ made just now is durable only once the queue directory names
            # it: without this a power loss could lose a set that had returned.
            _fs.fsync_dir(config.dir)
    return limit


def clear_limit(config: QueueConfig, group: str) -> bool:
    """Remove group ``group``'s limits; True if it had any."""
    check_group(group)

    def unlink(lfd: int) -> None:
        os.unlink(group, dir_fd=lfd)
        if config.durable:
            # Else a power loss after the clear returned could bring the limits back.
            os.fsync(lfd)

    try:
        _dirfds.at(config.dir, (Layout.LIMITS,), unlink, retry=False)
    except OSError as err:
        if _fs.is_gone(err) or err.errno in (errno.ENOTDIR, errno.ELOOP):
            return False
        raise
    return True


def list_limits(config: QueueConfig) -> list[Limit]:
    """Every group that has limits, by name."""
    try:
        dfd = _fs.open_dir_nofollow(config.dir, (Layout.LIMITS,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return []
        raise
    try:
        names = sorted(os.listdir(dfd))
    finally:
        _fs.close_dir(dfd)
    found = []
    for name in names:
        with contextlib.suppress(DirQueueError):
            check_group(name)
            found.append(read_limit(config, name))
    return [limit for limit in found if limit.concurrency or limit.rate]


class LimitReader:
    """Groups' limits for one worker, each read again at most every :data:`REREAD` s."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._seen: dict[str, tuple[float, Limit]] = {}

    def get(self, group: str) -> Limit:
        """Group ``group``'s limits, as read at most :data:`REREAD` seconds ago."""
        now = time.monotonic()
        seen = self._seen.get(group)
        if seen is None or now - seen[0] > REREAD:
            if len(self._seen) > 1024:
                self._seen.clear()
            seen = (now, read_limit(self.config, group))
            self._seen[group] = seen
        return seen[1]
