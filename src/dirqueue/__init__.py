"""dirqueue: a many-to-many job queue that lives in a directory.

A Python implementation of Perl's IPC::DirQueue, sharing its on-disk format.
"""

from __future__ import annotations

from . import limits
from ._jobsettings import InvalidGroupError, InvalidJobSettingError, job_settings
from ._version import __version__
from .errors import (
    CorruptJobError,
    DirQueueError,
    HostAliveError,
    InvalidMetadataError,
    InvalidNumberError,
    InvalidPriorityError,
    JobLostError,
    JobStateError,
    NoSuchJobError,
    QueueIOError,
)
from .failed import FailedJob, FailedStore, NoSuchFailedJobError
from .job import Job
from .queue import DirQueue
from .repair import Finding, FindingKind, RepairReport
from .stats import QueueNotFoundError, QueueStats, list_jobs, queue_stats
from .worker import (
    CommandFailedError,
    CommandHandler,
    FailJob,
    InvalidHandlerError,
    JobInterrupted,
    JobTimeoutError,
    Outcome,
    StepResult,
    StopReason,
    UnenforceableTimeoutError,
    Worker,
    WorkerReport,
)
from .workers import run_workers

__all__ = [
    "CommandFailedError",
    "CommandHandler",
    "CorruptJobError",
    "DirQueue",
    "DirQueueError",
    "FailJob",
    "FailedJob",
    "FailedStore",
    "Finding",
    "FindingKind",
    "HostAliveError",
    "InvalidGroupError",
    "InvalidHandlerError",
    "InvalidJobSettingError",
    "InvalidMetadataError",
    "InvalidNumberError",
    "InvalidPriorityError",
    "Job",
    "JobInterrupted",
    "JobLostError",
    "JobStateError",
    "JobTimeoutError",
    "NoSuchFailedJobError",
    "NoSuchJobError",
    "Outcome",
    "QueueIOError",
    "QueueNotFoundError",
    "QueueStats",
    "RepairReport",
    "StepResult",
    "StopReason",
    "UnenforceableTimeoutError",
    "Worker",
    "WorkerReport",
    "__version__",
    "job_settings",
    "limits",
    "list_jobs",
    "queue_stats",
    "run_workers",
]
