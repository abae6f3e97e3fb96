"""The tasks of bench/tasks_roundtrip.py: its workers import this module
(``dq server --tasks _tasks_bench``), and so does the script that submits."""

from __future__ import annotations

import os

from dirqueue import Job
from dirqueue.tasks import TaskQueue

q = TaskQueue(os.environ.get("TASKS_BENCH_QUEUE", "spool/tasks-bench"), durable=False)


@q.task(name="bench.echo")
def echo(x: int) -> int:
    """Return ``x``: what is measured is the round trip, not the work."""
    return x


def noop(job: Job) -> None:
    """The plain-job handler the task rate is compared with: returns at once."""


def read(job: Job) -> bytes:
    """A plain-job handler that reads its job's data, as a task's handler must."""
    return job.get_data()
