"""What a check or repair of a queue directory reports: :class:`RepairReport`, made of
:class:`Finding` s of a :class:`FindingKind` (re-exported by :mod:`dirqueue.repair`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "FindingKind", "RepairReport"]


class FindingKind(str, enum.Enum):
    """What a :class:`Finding` is about (a ``str``: it compares equal to its value)."""

    #: A file in ``tmp/`` left by a killed enqueue or pickup.
    TMP_LEFTOVER = "tmp-leftover"
    #: A data file that no control file names (an enqueue killed before it finished,
    #: or a finish that could not remove it).
    ORPHAN_DATA = "orphan-data"
    #: A control file whose data file is missing.
    MISSING_DATA = "missing-data"
    #: A control file that cannot be parsed, or is not a regular file.
    CORRUPT_CONTROL = "corrupt-control"
    #: A control file this process may not read.
    UNREADABLE_CONTROL = "unreadable-control"
    #: A lock in ``active/`` whose worker is provably dead or whose heartbeat went quiet.
    DEAD_LOCK = "dead-lock"
    #: A lock in ``active/`` for a job that is no longer in the queue.
    ORPHAN_LOCK = "orphan-lock"
    #: A lock held by a worker of a host the operator declared dead
    #: (``repair(host=...)``): the only way to free a Perl worker's lock from another
    #: host, which no worker ever breaks.
    DEAD_HOST_LOCK = "dead-host-lock"
    #: A symlink where the queue holds only files and directories.
    SYMLINK = "symlink"
    #: Something other than a file where a lock or job file should be (a directory,
    #: socket, FIFO...): moved aside to ``corrupt/``.
    NOT_A_FILE = "not-a-file"
    #: A name a reader ignores (not a job id), left alone.
    STRAY = "stray"
    #: A job's answer in ``results/`` whose time to live ran out (housekeeping, not a
    #: problem: readers already treat it as gone, and workers sweep such answers too).
    EXPIRED_RESULT = "expired-result"
    #: A unique job's key in ``keys/`` whose job is gone (its finisher died before
    #: releasing it): the next enqueue with that key would break it anyway.
    STALE_KEY = "stale-key"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One problem found in the queue directory, and what was done about it."""

    kind: FindingKind
    """What the finding is about."""
    path: str
    """The file concerned."""
    detail: str
    """What is wrong, in words."""
    action: str
    """What the repair did (``"removed"``, ``"moved to corrupt/..."``), or would do in
    a dry run (``"would remove"``), or ``"left"`` with the reason."""
    fixed: bool
    """True once the problem is gone."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind.value,
            "path": self.path,
            "detail": self.detail,
            "action": self.action,
            "fixed": self.fixed,
        }

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail} [{self.action}]"


@dataclass
class RepairReport:
    """What :meth:`DirQueue.fsck` or :meth:`DirQueue.repair` found and did."""

    directory: str
    """The queue directory checked."""
    dry_run: bool
    """True for a check only (``fsck``): nothing was changed."""
    jobs_checked: int = 0
    """How many control files were read."""
    findings: list[Finding] = field(default_factory=list)
    """Every problem found, in the order found."""

    @property
    def clean(self) -> bool:
        """True when nothing at all was found (strays aside)."""
        return not self.problems

    @property
    def problems(self) -> list[Finding]:
        """The findings other than strays (names a reader ignores anyway) and expired
        answers (which readers treat as gone)."""
        return [
            f for f in self.findings
            if f.kind not in (FindingKind.STRAY, FindingKind.EXPIRED_RESULT)
        ]

    @property
    def unfixed(self) -> list[Finding]:
        """Problems still there after this run (all of them, in a dry run)."""
        return [f for f in self.problems if not f.fixed]

    @property
    def ok(self) -> bool:
        """True when the queue is healthy now: nothing found, or everything fixed."""
        return not self.unfixed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``json.dumps(report.to_dict())``."""
        return {
            "directory": self.directory,
            "dry_run": self.dry_run,
            "jobs_checked": self.jobs_checked,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
        }

    def __str__(self) -> str:
        lines = [str(f) for f in self.findings]
        summary = (
            f"{self.directory}: {self.jobs_checked} jobs checked,"
            f" {len(self.problems)} problems found"
        )
        if not self.dry_run:
            fixed = len(self.problems) - len(self.unfixed)
            summary += f", {fixed} fixed, {len(self.unfixed)} left"
        lines.append(summary)
        return "\n".join(lines)
