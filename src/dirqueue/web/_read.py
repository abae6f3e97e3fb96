"""What the dashboard reads from a queue, by names first and files only when shown.

A queue of 100,000 jobs must open in well under a second, and twenty browsers must not
slow its workers. So the overview is counted from directory listings alone (``queue/``,
``active/``, ``deferred/``, ``failed/``, ``results/``): a job's id carries its priority
and submission time, so the oldest waiting job needs no control file. Only the few
locks in ``active/`` are read and judged (by :func:`dirqueue._judge.judge`, the rule
pickup uses, so a lock marked stale here is one the next worker breaks). A jobs page
reads the control files of the rows it shows and no more; filtering on metadata reads
on until a page is full, and says where it stopped.

Nothing here writes to a queue.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Final

from .._deferred import scan_deferred
from .._format import ControlFile, attempts_of, is_job_name, last_error_of
from .._jobfiles import read_control
from .._judge import Judgement, filesystem_now, judge, read_lock_file
from .._results import ResultRecord, count_results, read_result
from .._scanner import locate, scan
from ..errors import CorruptJobError, QueueNotFoundError
from ..failed import FailedJob, FailedStore, NoSuchFailedJobError
from ..queue import DirQueue

__all__ = [
    "STATES",
    "Filters",
    "JobDetail",
    "JobRow",
    "Overview",
    "Page",
    "WorkerLock",
    "failed_groups",
    "job_detail",
    "jobs_page",
    "overview",
    "submitted_at",
    "task_name",
]

#: The states a jobs page filters on.
STATES: Final = ("queued", "active", "stale", "deferred", "failed", "done")
#: The metadata keys that name a task (the tasks layer's, old and new spelling).
TASK_KEYS: Final = ("dq.task", "task")
#: How much of a job's data its page shows.
PREVIEW_BYTES: Final = 4096
#: A metadata-filtered page stops reading control files after this many, and says so.
SCAN_LIMIT: Final = 20_000


def submitted_at(jobid: str) -> float:
    """When job ``jobid`` was submitted, from its id (``PP.YYYYMMDDhhmmssuuuuuu.TAG``, UTC)."""
    stamp = jobid.split(".")[1]
    return calendar.timegm(time.strptime(stamp[:14], "%Y%m%d%H%M%S")) + int(stamp[14:20]) / 1e6


def task_name(metadata: dict[str, str]) -> str | None:
    """The task a job calls, if it is a task call."""
    for key in TASK_KEYS:
        if key in metadata:
            return metadata[key]
    return None


def _require(queue: DirQueue) -> None:
    # A missing queue would read as an empty one, and a typo would go unnoticed.
    if not queue.exists:
        raise QueueNotFoundError(queue.dir, "check the path given to dq web --dir")


@dataclass(frozen=True)
class WorkerLock:
    """One lock in ``active/``: who holds which job, and since when."""

    jobid: str
    host: str
    pid: int | None
    #: Seconds since the lock was taken or last touched by its heartbeat.
    age: float
    heartbeat: bool
    #: The next pickup breaks it (the owner died or stopped its heartbeat).
    stale: bool
    reason: str


@dataclass(frozen=True)
class Overview:
    """A queue's counts, its oldest waiting job and its workers' locks, at ``taken_at``."""

    queued: int
    active: int
    stale: int
    deferred: int
    failed: int
    results: int
    #: The oldest job waiting unlocked, and its age.
    oldest: tuple[str, float] | None
    locks: list[WorkerLock]
    #: Every id in ``queue/`` and ``deferred/`` (for the throughput samples).
    ids: frozenset[str]
    taken_at: float

    @property
    def backlog(self) -> int:
        """Jobs not yet done: queued, running and deferred."""
        return self.queued + self.active + self.stale + self.deferred

    def by_host(self) -> dict[str, list[WorkerLock]]:
        """The locks grouped by the host of their worker, hosts in name order."""
        hosts: dict[str, list[WorkerLock]] = {}
        for lock in sorted(self.locks, key=lambda lk: (lk.host, lk.pid or 0, lk.jobid)):
            hosts.setdefault(lock.host, []).append(lock)
        return hosts


def _judged(queue: DirQueue, jobid: str, now: float) -> Judgement | None:
    try:
        st = os.lstat(queue.layout.active_path(jobid))
    except OSError:
        return None  # Released while we looked.
    return judge(queue.config, st, read_lock_file(queue.config, jobid), now)


def _lock(jobid: str, judged: Judgement) -> WorkerLock:
    owner = judged.owner
    return WorkerLock(
        jobid, owner.host or "?", owner.pid, max(0.0, judged.age), owner.heartbeat,
        judged.breakable, judged.reason,
    )


def overview(queue: DirQueue) -> Overview:
    """Count ``queue``'s jobs by state from its directory listings (see the module's note)."""
    _require(queue)
    now = time.time()
    fs_now = filesystem_now(queue.config)
    waiting = {entry.name for entry in scan(queue.layout, ordered=False)}
    try:
        locked = [name for name in os.listdir(queue.layout.active_dir) if name in waiting]
    except FileNotFoundError:
        locked = []
    locks = []
    for name in locked:
        judged = _judged(queue, name, fs_now)
        if judged is not None:
            locks.append(_lock(name, judged))
    stale = sum(1 for lock in locks if lock.stale)
    unlocked = waiting.difference(locked)
    oldest = None
    if unlocked:
        # The id's second field is its submission time, fixed width: the smallest is
        # the oldest, compared as strings (no parse for 100,000 names).
        first = min(unlocked, key=lambda name: name.split(".")[1])
        oldest = (first, max(0.0, now - submitted_at(first)))
    deferred = [entry.name for entry in scan_deferred(queue.config)]
    return Overview(
        queued=len(unlocked),
        active=len(locks) - stale,
        stale=stale,
        deferred=len(deferred),
        failed=FailedStore(queue).count(),
        results=count_results(queue.config, now=now),
        oldest=oldest,
        locks=locks,
        ids=frozenset(waiting).union(deferred),
        taken_at=now,
    )


# -- the jobs page ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """One row of a jobs page."""

    jobid: str
    state: str
    priority: int
    submitted: float
    size: int | None
    attempts: int
    metadata: dict[str, str]
    worker: str = ""
    error: str = ""


@dataclass(frozen=True)
class Filters:
    """What a jobs page shows: a state, a priority, a metadata ``key=value`` (or a key
    alone), a task name. Empty means any."""

    state: str = ""
    priority: int | None = None
    meta_key: str = ""
    meta_value: str | None = None
    task: str = ""

    @property
    def reads_files(self) -> bool:
        """True if the filter needs each job's control file, not only its name."""
        return bool(self.meta_key or self.task)

    def keeps(self, metadata: dict[str, str]) -> bool:
        """True if a job with ``metadata`` passes the metadata and task filters."""
        if self.task and task_name(metadata) != self.task:
            return False
        if self.meta_key:
            if self.meta_key not in metadata:
                return False
            if self.meta_value is not None and metadata[self.meta_key] != self.meta_value:
                return False
        return True


@dataclass
class Page:
    """A page of rows; ``total`` when known from the names alone; ``next_start`` where
    the next page begins (None on the last)."""

    rows: list[JobRow] = field(default_factory=list)
    total: int | None = None
    start: int = 0
    next_start: int | None = None
    #: Set when a metadata filter stopped reading at :data:`SCAN_LIMIT` files.
    scanned: int = 0


#: A jobs page's candidate: ``(jobid, state, fanout digit)``; its path is built only
#: for the rows a page reads (100,000 path joins cost more than the listing).
Candidate = tuple[str, str, "str | None"]


def _candidates(queue: DirQueue, filters: Filters, now: float) -> list[Candidate]:
    """Every job the name-level filters keep, in pickup order (queued and running by
    id, then deferred by due time, then failed)."""
    wanted = filters.state
    found: list[Candidate] = []
    if wanted in ("", "queued", "active", "stale"):
        entries = scan(queue.layout, ordered=True)
        try:
            locked = set(os.listdir(queue.layout.active_dir)) if entries else set()
        except FileNotFoundError:
            locked = set()
        if not locked and wanted in ("", "queued"):
            found = [(name, "queued", fanout) for name, fanout in entries]
        else:
            for name, fanout in entries:
                state = "queued"
                if name in locked:
                    judged = _judged(queue, name, now)
                    state = "stale" if judged is not None and judged.breakable else "active"
                if wanted in ("", state) or (wanted == "active" and state == "stale"):
                    found.append((name, state, fanout))
    if wanted in ("", "deferred"):
        found.extend((entry.name, "deferred", None) for entry in scan_deferred(queue.config))
    if wanted in ("", "failed"):
        with contextlib.suppress(FileNotFoundError):
            found.extend(
                (name, "failed", None)
                for name in sorted(os.listdir(queue.layout.failed_dir))
                if is_job_name(name)
            )
    if wanted == "done":  # Only asked for: answers are not jobs in the queue.
        with contextlib.suppress(FileNotFoundError):
            found.extend(
                (name, "done", None)
                for name in sorted(os.listdir(queue.layout.results_dir))
                if is_job_name(name)
            )
    if filters.priority is not None:
        prefix = f"{filters.priority:02d}."
        found = [c for c in found if c[0].startswith(prefix)]
    return found


def _row(queue: DirQueue, jobid: str, state: str, fanout: str | None) -> JobRow | None:
    """The row of one job, reading its control file (or failed entry); None if it has
    gone meanwhile or cannot be read."""
    worker = ""
    error = ""
    try:
        if state == "done":
            return _done_row(queue, jobid)
        if state == "failed":
            failed = FailedStore(queue).get(jobid)
            control = failed.control
            size: int | None = failed.size_bytes
            error = failed.error
        else:
            layout = queue.layout
            path = (
                layout.deferred_path(jobid) if state == "deferred"
                else layout.queue_path(jobid, fanout)
            )
            control = read_control(path)
            size = control.size_bytes
            error = last_error_of(control)
            if state in ("active", "stale"):
                raw = read_lock_file(queue.config, jobid).split(b"\n")
                worker = b":".join(raw[:2]).decode("utf-8", "replace")
    except (OSError, CorruptJobError, NoSuchFailedJobError):
        return None
    return JobRow(
        jobid, state, int(jobid[:2]), submitted_at(jobid), size, attempts_of(control),
        dict(control.metadata), worker, error,
    )


def _done_row(queue: DirQueue, jobid: str) -> JobRow | None:
    """A row for a job whose answer is kept (its status as its "error" when it failed)."""
    result = read_result(queue.config, jobid)
    if result is None:
        return None  # Expired meanwhile.
    error = f"{result.error_type}: {result.error_message}" if result.status == "failed" else ""
    return JobRow(jobid, "done", int(jobid[:2]), submitted_at(jobid), None, result.attempt,
                  {}, result.host, error)


def jobs_page(queue: DirQueue, filters: Filters, start: int = 0, limit: int = 50) -> Page:
    """The rows from candidate ``start`` on that pass ``filters``, at most ``limit``."""
    _require(queue)
    candidates = _candidates(queue, filters, filesystem_now(queue.config))
    page = Page(start=start)
    if not filters.reads_files:
        page.total = len(candidates)
    index = start
    for index in range(start, len(candidates)):
        if len(page.rows) == limit:
            page.next_start = index
            break
        if filters.reads_files and page.scanned >= SCAN_LIMIT:
            page.next_start = index
            break
        row = _row(queue, *candidates[index])
        page.scanned += 1
        if row is not None and filters.keeps(row.metadata):
            page.rows.append(row)
    return page


# -- one job ---------------------------------------------------------------------------


@dataclass
class JobDetail:
    """Everything the dashboard shows of one job; ``state`` is None when only its
    answer remains (the job is done and its result kept)."""

    jobid: str
    state: str | None
    control: ControlFile | None = None
    size: int | None = None
    preview: bytes = b""
    attempts: int = 0
    error: str = ""
    detail: str = ""
    lock: WorkerLock | None = None
    due: float | None = None
    failed: FailedJob | None = None
    result: ResultRecord | None = None
    where: str = ""


def _preview(path: str) -> bytes:
    with contextlib.suppress(OSError), open(path, "rb", opener=_nofollow) as fh:
        return fh.read(PREVIEW_BYTES)
    return b""


def _nofollow(path: str, flags: int) -> int:
    # The data file is the submitter's; a symlink in its place must not be followed.
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


def _waiting(queue: DirQueue, jobid: str, now: float) -> JobDetail | None:
    layout = queue.layout
    for name, fanout in locate(layout, jobid):
        path = layout.queue_path(name, fanout)
        try:
            control = read_control(path)
        except (OSError, CorruptJobError):
            continue
        view = JobDetail(jobid, "queued", control, where=path)
        judged = _judged(queue, jobid, now)
        if judged is not None:
            view.lock = _lock(jobid, judged)
            view.state = "stale" if judged.breakable else "active"
        return view
    path = layout.deferred_path(jobid)
    try:
        control = read_control(path)
        due = os.lstat(path).st_mtime
    except (OSError, CorruptJobError):
        return None
    return JobDetail(jobid, "deferred", control, due=due, where=path)


def job_detail(queue: DirQueue, jobid: str) -> JobDetail | None:
    """Job ``jobid`` wherever it is (waiting, running, deferred, failed) with its kept
    answer; None if it is nowhere and left no answer."""
    _require(queue)
    if not is_job_name(jobid):
        return None
    view = _waiting(queue, jobid, filesystem_now(queue.config))
    if view is not None and view.control is not None:
        control = view.control
        view.size = control.size_bytes
        view.attempts = attempts_of(control)
        view.error = last_error_of(control)
        view.preview = _preview(queue.layout.data_path(jobid))
    else:
        try:
            failed = FailedStore(queue).get(jobid)
        except NoSuchFailedJobError:
            failed = None
        if failed is not None:
            view = JobDetail(
                jobid, "failed", failed.control, failed.size_bytes,
                _preview(failed.data_path), failed.attempts, failed.error, failed.detail,
                failed=failed, where=queue.layout.failed_job_dir(jobid),
            )
    with contextlib.suppress(OSError, CorruptJobError):
        result = read_result(queue.config, jobid)
        if result is not None:
            view = view or JobDetail(jobid, None)
            view.result = result
            if not view.error and result.status == "failed":
                view.error = f"{result.error_type}: {result.error_message}"
                view.detail = result.traceback
    return view


def failed_groups(queue: DirQueue) -> list[tuple[str, list[FailedJob]]]:
    """The failed jobs grouped by their last error, the largest group first."""
    _require(queue)
    groups: dict[str, list[FailedJob]] = {}
    for failed in FailedStore(queue).jobs():
        groups.setdefault(failed.error or "(no error recorded)", []).append(failed)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
