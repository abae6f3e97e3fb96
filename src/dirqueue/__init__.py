"""dirqueue: a many-to-many job queue that lives in a directory.

A Python implementation of Perl's IPC::DirQueue, sharing its on-disk format.
"""

from __future__ import annotations

from .errors import (
    CorruptJobError,
    DirQueueError,
    InvalidMetadataError,
    InvalidPriorityError,
    JobStateError,
    QueueIOError,
)
from .job import Job
from .queue import DirQueue

__all__ = [
    "CorruptJobError",
    "DirQueue",
    "DirQueueError",
    "InvalidMetadataError",
    "InvalidPriorityError",
    "Job",
    "JobStateError",
    "QueueIOError",
    "__version__",
]

__version__ = "0.1.0"
