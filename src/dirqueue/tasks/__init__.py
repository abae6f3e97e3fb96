"""Tasks and results: call a Python function through the queue, get its answer back.

A layer above the engine (it reaches the queue only through ``DirQueue``, the worker
and the engine's results module, :mod:`dirqueue._results`). Every task job is an
ordinary IPC::DirQueue job: its data the JSON call, its metadata the task's name.

    q = TaskQueue("spool/q")

    @q.task(retries=3, retry_delay=10, timeout=60, priority=20)
    def resize(path: str, size: int = 128) -> dict: ...

    r = resize.submit("a.jpg", size=64)     # at once: a handle with the job id
    r.get(timeout=30)                       # the answer; TaskFailed if it failed
    TaskResult(q, r.jobid).status           # from any process: queued ... done

Workers: ``dq server --dir spool/q --tasks myapp.tasks``, or
``Worker(q, TaskHandler(q, ["myapp.tasks"])).run()``.
"""

from ._api import Task, TaskOptions, TaskQueue, lookup_task, periodic_tasks, registered_tasks
from ._call import BadCallError, TaskArgumentError
from ._cron import CronSchedule, CronUnavailableError, InvalidCronError
from ._handler import NotATaskJobError, TaskHandler, UnknownTaskError
from ._result import NoResultError, ResultTimeoutError, TaskFailed, TaskResult, TaskStatus

# The public names read as dirqueue.tasks.X in tracebacks and reprs, not as the
# private module each happens to live in.
for _public in (
    BadCallError, CronSchedule, CronUnavailableError, InvalidCronError, NoResultError,
    NotATaskJobError, ResultTimeoutError, Task,
    TaskArgumentError, TaskFailed, TaskHandler, TaskOptions, TaskQueue, TaskResult,
    UnknownTaskError,
):
    _public.__module__ = __name__

__all__ = [
    "BadCallError",
    "CronSchedule",
    "CronUnavailableError",
    "InvalidCronError",
    "NoResultError",
    "NotATaskJobError",
    "ResultTimeoutError",
    "Task",
    "TaskArgumentError",
    "TaskFailed",
    "TaskHandler",
    "TaskOptions",
    "TaskQueue",
    "TaskResult",
    "TaskStatus",
    "UnknownTaskError",
    "lookup_task",
    "periodic_tasks",
    "registered_tasks",
]
