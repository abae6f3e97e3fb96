"""Checking and repairing a queue directory (``DirQueue.fsck()`` / ``DirQueue.repair()``).

Processes that die mid-operation leave debris: tmp files, a data file whose control file
was never linked, a lock whose worker is gone. None of it is ever visible as a job (see
the enqueue order in :mod:`dirqueue.queue`), but it takes space and, for locks, keeps a
job from the workers until ``active_file_lifetime`` passes. This module finds it, and
with ``dry_run=False`` removes it. Corrupt jobs are never deleted: they are moved to
``corrupt/`` with a ``.reason`` file, as a worker that meets one does.

Everything removed is first judged old enough (``min_age``) that no live process can
still be using it, so a repair may run while producers and workers are busy.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from . import _fs
from ._format import Layout, data_location, is_job_name, lock_promises_heartbeat, parse_lock
from .errors import DirQueueError, QueueIOError

if TYPE_CHECKING:
    from .queue import DirQueue

__all__ = ["DEFAULT_MIN_AGE", "Finding", "FindingKind", "RepairReport", "repair_queue"]

#: Debris younger than this (seconds) is left alone by default: an enqueue or pickup
#: in progress may still own it. Real operations take milliseconds; a huge upload
#: through ``enqueue_fh`` keeps its tmp file's mtime fresh while it writes.
DEFAULT_MIN_AGE: Final = 3600.0


class FindingKind:
    """What a :class:`Finding` is about."""

    #: A file in ``tmp/`` left by a killed enqueue or pickup.
    TMP_LEFTOVER: Final = "tmp-leftover"
    #: A data file that no control file names (an enqueue killed before it finished,
    #: or a finish that could not remove it).
    ORPHAN_DATA: Final = "orphan-data"
    #: A control file whose data file is missing.
    MISSING_DATA: Final = "missing-data"
    #: A control file that cannot be parsed, or is not a regular file.
    CORRUPT_CONTROL: Final = "corrupt-control"
    #: A control file this process may not read.
    UNREADABLE_CONTROL: Final = "unreadable-control"
    #: A lock in ``active/`` whose worker (on this host) is dead.
    DEAD_LOCK: Final = "dead-lock"
    #: A lock in ``active/`` for a job that is no longer in the queue.
    ORPHAN_LOCK: Final = "orphan-lock"
    #: A symlink where the queue holds only files and directories.
    SYMLINK: Final = "symlink"
    #: A name a reader ignores (not a job id), left alone.
    STRAY: Final = "stray"


@dataclass(frozen=True)
class Finding:
    """One problem found in the queue directory, and what was done about it."""

    kind: str
    """One of the :class:`FindingKind` values."""
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
            "kind": self.kind,
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
        """The findings other than strays (names a reader ignores anyway)."""
        return [f for f in self.findings if f.kind != FindingKind.STRAY]

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


class _Repairer:
    def __init__(self, queue: DirQueue, *, dry_run: bool, min_age: float) -> None:
        self.q = queue
        self.layout: Layout = queue.layout
        self.dry_run = dry_run
        self.min_age = min_age
        self.now = time.time()
        self.report = RepairReport(queue.dir, dry_run)

    # -- helpers ----------------------------------------------------------------------

    def note(self, kind: str, path: str, detail: str, action: str, fixed: bool) -> None:
        self.report.findings.append(Finding(kind, path, detail, action, fixed))

    def age(self, st: os.stat_result, *, linked: bool = False) -> float:
        # A data file's ctime moves when it is linked into data/, so one linked a
        # moment ago counts as new however old its contents are. A tmp file or a lock
        # is judged by its mtime: writes (and touch_active_lock) move it.
        return self.now - (max(st.st_mtime, st.st_ctime) if linked else st.st_mtime)

    def old_enough(self, st: os.stat_result, *, linked: bool = False) -> bool:
        return self.age(st, linked=linked) >= self.min_age

    def remove(self, kind: str, path: str, detail: str) -> None:
        """Unlink ``path`` (a file or a symlink itself, never its target)."""
        if self.dry_run:
            self.note(kind, path, detail, "would remove", fixed=False)
            return
        try:
            _fs.unlink_quietly(path)
        except OSError as err:
            self.note(kind, path, detail, f"left: removing failed: {err}", fixed=False)
            return
        self.note(kind, path, detail, "removed", fixed=True)

    def entries(self, directory: str) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                yield from list(it)
        except FileNotFoundError:
            return

    # -- the passes -------------------------------------------------------------------

    def run(self) -> RepairReport:
        self.check_tmp()
        self.check_active()
        live = self.check_queue()
        self.check_data(live)
        return self.report

    def check_tmp(self) -> None:
        for entry in self.entries(self.layout.tmp_dir):
            st = _lstat(entry)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.remove(FindingKind.SYMLINK, entry.path, "symlink in tmp/")
            elif self.old_enough(st) or self._tmp_owner_dead(entry.name):
                self.remove(
                    FindingKind.TMP_LEFTOVER,
                    entry.path,
                    f"left by a process that died ({self.age(st):.0f}s old)",
                )

    def _tmp_owner_dead(self, name: str) -> bool:
        # A pickup's tmp lock is NAME.TIME.HOST.PID.active: its owner is known.
        if not name.endswith(".active"):
            return False
        rest, _, pid_text = name[: -len(".active")].rpartition(".")
        # The host name may itself hold dots: match ours as a whole.
        if not pid_text.isdigit() or not rest.endswith("." + self.q.hostname):
            return False
        pid = int(pid_text)
        return pid != os.getpid() and self.q._owner_is_dead(self.q.hostname, pid)

    def check_active(self) -> None:
        for entry in self.entries(self.layout.active_dir):
            path = entry.path
            st = _lstat(entry)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.remove(FindingKind.SYMLINK, path, "symlink in active/")
                continue
            if not is_job_name(entry.name):
                self.note(FindingKind.STRAY, path, "not a job id; readers ignore it", "left", False)
                continue
            raw = self.q._read_lock_file(path)
            host, pid = parse_lock(raw)
            in_queue = bool(self.q._locate(entry.name))
            why = f"worker {host}:{pid} is dead"
            if host in (None, self.q.hostname) and pid is not None and pid != os.getpid():
                dead = self.q._owner_is_dead(host, pid)
            elif lock_promises_heartbeat(raw):
                # Its owner, on any host, promised to touch it well inside a lifetime.
                dead = self.now - st.st_mtime > self.q.active_file_lifetime
                why = f"worker {host}:{pid} stopped its heartbeat"
            else:
                # Unreadable, another host's (whose processes we cannot see), or ours.
                dead = pid is None and self.old_enough(st)
            if dead:
                self.remove_lock(FindingKind.DEAD_LOCK, entry.name, st, why)
            elif not in_queue and self.old_enough(st):
                self.remove_lock(
                    FindingKind.ORPHAN_LOCK,
                    entry.name,
                    st,
                    f"lock of {host}:{pid} for a job no longer in the queue",
                )

    def remove_lock(self, kind: str, name: str, st: os.stat_result, detail: str) -> None:
        path = self.layout.active_path(name)
        if self.dry_run:
            self.note(kind, path, detail, "would remove", fixed=False)
            return
        try:
            removed = self.q._remove_lock(name, path, st)
        except OSError as err:
            self.note(kind, path, detail, f"left: removing failed: {err}", fixed=False)
            return
        if removed is False:
            self.note(
                kind, path, detail, "left: another worker took the job or is breaking the lock",
                False,
            )
        else:
            self.note(kind, path, detail, "removed", fixed=True)

    def check_queue(self) -> set[str]:
        """Check every control file; return the names of the jobs in the queue."""
        live: set[str] = set()
        queue_dir = self.layout.queue_dir
        for entry in self.entries(queue_dir):
            if is_job_name(entry.name):
                self.check_job(entry.name, None, live)
            elif (
                len(entry.name) == 1
                and entry.name in Layout.FANOUT_DIGITS
                and entry.is_dir(follow_symlinks=False)
            ):
                for sub in self.entries(entry.path):
                    if is_job_name(sub.name):
                        self.check_job(sub.name, entry.name, live)
                    else:
                        self.note(FindingKind.STRAY, sub.path, "not a job id", "left", False)
            elif entry.is_symlink():
                self.remove(FindingKind.SYMLINK, entry.path, "symlink in queue/")
            else:
                self.note(
                    FindingKind.STRAY, entry.path, "not a job id; readers ignore it", "left", False
                )
        return live

    def check_job(self, name: str, fanout: str | None, live: set[str]) -> None:
        queue_path = self.layout.queue_path(name, fanout)
        self.report.jobs_checked += 1
        problem = self.q._job_problem(name, queue_path)
        if problem is None:
            live.add(name)
            return
        kind, reason = problem
        if self.dry_run:
            self.note(kind, queue_path, reason, "would move to corrupt/", fixed=False)
            live.add(name)
            return
        # Move it aside under the job's lock, as a worker would, so that a worker that
        # holds the job (and is about to finish it) is never disturbed.
        try:
            lock = self.q._lock_job(name, queue_path)
        except OSError as err:
            self.note(kind, queue_path, reason, f"left: locking failed: {err}", fixed=False)
            live.add(name)
            return
        if not isinstance(lock, os.stat_result):
            if lock is None:
                self.note(kind, queue_path, reason, "left: a worker holds it", fixed=False)
                live.add(name)
            return
        active_path = self.layout.active_path(name)
        try:
            problem = self.q._job_problem(name, queue_path)  # Again, now that we hold it.
            if problem is None:
                live.add(name)
                return
            kind, reason = problem
            aside = self.q._move_aside(name, queue_path, reason)
        except OSError as err:
            self.note(kind, queue_path, reason, f"left: moving failed: {err}", fixed=False)
            live.add(name)
            return
        finally:
            with contextlib.suppress(OSError):
                self.q._unlock_if_ours(active_path, lock)
        self.note(kind, queue_path, reason, f"moved to {aside}", fixed=True)

    def check_data(self, live: set[str]) -> None:
        data_dir = self.layout.data_dir
        for c1 in self.entries(data_dir):
            if c1.is_symlink():
                self.remove(FindingKind.SYMLINK, c1.path, "symlink in data/")
                continue
            if not c1.is_dir(follow_symlinks=False):
                self.note(FindingKind.STRAY, c1.path, "not a data directory", "left", False)
                continue
            for c2 in self.entries(c1.path):
                if c2.is_symlink():
                    self.remove(FindingKind.SYMLINK, c2.path, "symlink in data/")
                    continue
                if not c2.is_dir(follow_symlinks=False):
                    self.note(FindingKind.STRAY, c2.path, "not a data directory", "left", False)
                    continue
                for entry in self.entries(c2.path):
                    self.check_data_file(entry, c1.name, c2.name, live)

    def check_data_file(
        self, entry: os.DirEntry[str], c1: str, c2: str, live: set[str]
    ) -> None:
        st = _lstat(entry)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            self.remove(FindingKind.SYMLINK, entry.path, "symlink in data/")
            return
        owners = [
            jobid
            for jobid in (entry.name + c1 + c2, entry.name)
            if is_job_name(jobid) and data_location(jobid) == (c1, c2, entry.name)
        ]
        if any(jobid in live for jobid in owners):
            return
        # Enqueues link the data before the control file: look again, and only take
        # what is old enough that no enqueue can still be on its way.
        if any(self.q._locate(jobid) for jobid in owners) or not self.old_enough(
            st, linked=True
        ):
            return
        if not stat.S_ISREG(st.st_mode):
            self.note(FindingKind.STRAY, entry.path, "not a regular file", "left", False)
            return
        detail = "no control file names this data file"
        for jobid in owners:
            stem = self._corrupt_stem_without_data(jobid)
            if stem is not None:
                # A corrupt job was moved aside but its data was left behind: reunite.
                self.move(FindingKind.ORPHAN_DATA, entry.path, stem + ".data",
                          detail + f"; its control file is in {stem}")
                return
        self.remove(FindingKind.ORPHAN_DATA, entry.path, detail)

    def _corrupt_stem_without_data(self, jobid: str) -> str | None:
        stem = self.layout.corrupt_path(jobid)
        for n in range(1, 1000):
            if not os.path.lexists(stem):
                return None
            if not os.path.lexists(stem + ".data"):
                return stem
            stem = self.layout.corrupt_path(f"{jobid}.{n}")
        return None

    def move(self, kind: str, path: str, target: str, detail: str) -> None:
        """Rename ``path`` to ``target`` (in corrupt/), unless a file is there already."""
        if self.dry_run:
            self.note(kind, path, detail, f"would move to {target}", fixed=False)
            return
        try:
            if os.path.lexists(target):
                raise FileExistsError(target)
            os.rename(path, target)
        except OSError as err:
            self.note(kind, path, detail, f"left: moving failed: {err}", fixed=False)
            return
        self.note(kind, path, detail, f"moved to {target}", fixed=True)


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    # The queue is in use while we look: whatever we listed may be gone by now.
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


def repair_queue(queue: DirQueue, *, dry_run: bool, min_age: float) -> RepairReport:
    """Check (and unless ``dry_run``, repair) ``queue``'s directory; see the module doc."""
    if min_age < 0:
        raise ValueError(f"min_age must be 0 or more seconds, not {min_age}")
    try:
        return _Repairer(queue, dry_run=dry_run, min_age=min_age).run()
    except DirQueueError:
        raise
    except OSError as err:
        raise QueueIOError(f"checking queue {queue.dir!r}", err) from err

