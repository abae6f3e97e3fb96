"""What is in a queue: each job's state, and the counts ``dq stats`` prints.

A job is *queued* (waiting, no lock), *active* (locked) or *stale* (locked, and the
lock is one the next worker breaks: the same rule, :func:`dirqueue._judge.judge`,
decides both). An active job whose lock will not be broken although it looks old (a
Perl worker's on another host), or whose owner is dead but not yet past the lifetime,
says so in :attr:`JobInfo.note`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ._deferred import scan_deferred
from ._deps import parents_of, scan_waiting
from ._judge import Verdict, filesystem_now, judge_lock
from ._place import Place, place_of
from ._results import count_results
from ._scanner import scan
from .errors import QueueNotFoundError
from .failed import FailedStore, attempts_of

if TYPE_CHECKING:
    from .job import Job
    from .queue import DirQueue

__all__ = [
    "JobInfo",
    "QueueNotFoundError",
    "QueueStats",
    "job_place",
    "jobs_left",
    "list_jobs",
    "queue_stats",
    "require_queue",
    "tally",
    "waiting_job_ids",
]

JobState = Literal["queued", "active", "stale", "deferred", "waiting"]
STATES: Final = ("queued", "active", "stale", "deferred", "waiting")


def require_queue(queue: DirQueue) -> None:
    """Raise :class:`QueueNotFoundError` unless ``queue``'s directory exists.

    Reading a missing queue would otherwise look like reading an empty one, and a typo
    in a path would go unnoticed.
    """
    if not queue.exists:
        raise QueueNotFoundError(
            queue.dir,
            "check the path given with --dir (a queue is created by its first submission)",
        )


def waiting_job_ids(queue: DirQueue) -> list[str]:
    """Ids of the jobs in ``queue/`` that no worker has locked (names only; cheap).

    Unlike a pickup, this reads the directories afresh every time, so a worker can
    tell "nothing is waiting" from "nothing I could take just now".
    """
    layout = queue.layout
    names = {entry.name for entry in scan(layout, ordered=False)}
    if names:
        with contextlib.suppress(FileNotFoundError):
            names.difference_update(os.listdir(layout.active_dir))
    return sorted(names)


def jobs_left(queue: DirQueue) -> int:
    """Jobs not yet done: in ``queue/`` (waiting or held), ``deferred/`` or
    ``waiting/``. Names only, so cheap enough to ask again and again during a drain."""
    if not queue.exists:
        return 0
    config = queue.config
    queued = sum(1 for _ in scan(queue.layout, ordered=False))
    return queued + len(scan_deferred(config)) + len(scan_waiting(config))


@dataclass(frozen=True)
class JobInfo:
    """One job as ``dq list`` shows it."""

    job: Job
    state: JobState
    attempts: int
    #: Seconds since submission.
    age: float
    #: Why an old lock is not stale, or when a dead worker's job is taken again;
    #: empty when there is nothing to say.
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``dq list --json``."""
        job = self.job
        worker = None
        if job.active_pid is not None or job.active_host is not None:
            worker = {"host": job.active_host, "pid": job.active_pid}
        return {
            "id": job.jobid,
            "state": self.state,
            "priority": job.priority,
            "size": job.get_data_size_bytes(),
            "submitted": job.get_time_submitted_secs() + job.get_time_submitted_usecs() / 1e6,
            "submitted_host": job.get_hostname_submitted(),
            "worker": worker,
            "attempts": self.attempts,
            "metadata": dict(job.metadata),
            "note": self.note,
            "due": job.deferred_until,
        }


def _lock_state(queue: DirQueue, job: Job, now: float, skew: float) -> tuple[JobState, str]:
    if job.waiting:
        parents, _ = parents_of(job.metadata)
        left = [p for p in parents if place_of(queue.config, p) is not None]
        return "waiting", f"after {len(left)} of {len(parents)} parents: {' '.join(left)}"
    if job.deferred_until is not None:
        due = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.deferred_until))
        return "deferred", f"due at {due} ({max(0.0, job.deferred_until - now):.0f}s)"
    # A lock's age in the filesystem's clock, as pickup judges it.
    judged = judge_lock(queue.config, job.jobid, now + skew)
    if judged is None:
        return "queued", ""
    if judged.breakable:
        return "stale", f"{judged.reason}: the next worker takes it"
    notes = {
        Verdict.FOREIGN: judged.reason,
        Verdict.DEAD: (
            f"{judged.reason} (a Perl lock: only its host and pid say so): taken again"
            " after the lock's lifetime, or by dq fsck --repair"
        ),
        Verdict.NOT_A_LOCK: "active/ holds something that is not a lock: run dq fsck --repair",
    }
    return "active", notes.get(judged.verdict, "")


def list_jobs(queue: DirQueue, *, now: float | None = None) -> Iterator[JobInfo]:
    """Every job in the queue with its state, in pickup order."""
    if now is None:
        now = time.time()
    skew = filesystem_now(queue.config) - time.time()
    for job in queue.jobs():
        submitted = job.get_time_submitted_secs() + job.get_time_submitted_usecs() / 1e6
        state, note = _lock_state(queue, job, now, skew)
        yield JobInfo(
            job=job,
            state=state,
            attempts=attempts_of(job.control),
            age=max(0.0, now - submitted),
            note=note,
        )


@dataclass(frozen=True)
class QueueStats:
    """Counts of a queue's jobs by state, and how long the oldest has waited."""

    queued: int
    active: int
    stale: int
    failed: int
    #: Seconds the oldest queued (not active) job has waited; None when none waits.
    oldest_waiting_age: float | None
    #: Jobs waiting in ``deferred/`` for a retry's back-off or a delayed start.
    deferred: int = 0
    #: Answers kept in ``results/`` (done or failed, not yet expired).
    results: int = 0
    #: Dependants waiting in ``waiting/`` for their parents to end.
    waiting: int = 0

    @property
    def total(self) -> int:
        """Jobs in the queue (queued, active, stale, deferred and waiting; not failed)."""
        return self.queued + self.active + self.stale + self.deferred + self.waiting

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``dq stats --json``."""
        return {
            "queued": self.queued,
            "active": self.active,
            "stale": self.stale,
            "failed": self.failed,
            "deferred": self.deferred,
            "results": self.results,
            "waiting": self.waiting,
            "oldest_waiting_age": self.oldest_waiting_age,
        }


def queue_stats(queue: DirQueue, *, now: float | None = None) -> QueueStats:
    """Count ``queue``'s jobs by state (one pass over ``queue/`` and ``active/``)."""
    return tally(queue, list_jobs(queue, now=now), now=now)


def tally(
    queue: DirQueue, infos: Iterable[JobInfo], *, now: float | None = None
) -> QueueStats:
    """``infos`` (from :func:`list_jobs`) counted by state, with ``queue``'s failed jobs.

    The one place that counts: ``dq stats`` in every form counts with it, so that no
    state (``deferred``, say) is listed by ``dq list`` and left out of a count.
    """
    counts = dict.fromkeys(STATES, 0)
    oldest: float | None = None
    for info in infos:
        counts[info.state] += 1
        if info.state == "queued" and (oldest is None or info.age > oldest):
            oldest = info.age
    return QueueStats(
        queued=counts["queued"],
        active=counts["active"],
        stale=counts["stale"],
        failed=FailedStore(queue).count(),
        results=count_results(queue.config, now=now),
        oldest_waiting_age=oldest,
        deferred=counts["deferred"],
        waiting=counts["waiting"],
    )


def job_place(queue: DirQueue, jobid: str) -> Place | None:
    """Where job ``jobid`` is now, by its names alone (a few ``lstat`` calls, no
    listing): ``active`` (locked), ``queued``, ``deferred``, ``waiting`` (for its
    parents), or None if it is in none of them (finished, failed, or never was). For
    one job's status (``TaskResult``)."""
    return place_of(queue.config, jobid)
