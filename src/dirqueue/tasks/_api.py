"""Tasks: Python functions run through the queue. :class:`TaskQueue` and :class:`Task`.

``@q.task(...)`` wraps a function in a :class:`Task` and registers it, by name, in this
process's registry, where a worker's :class:`~dirqueue.tasks.TaskHandler` looks it up.
``task.submit(*args, **kwargs)`` enqueues an ordinary IPC::DirQueue job (its data the
call, its metadata the task's name and options) and returns a
:class:`~dirqueue.tasks.TaskResult`. Options given to the decorator are the task's
defaults; ``task.options(...)`` returns a copy with some changed, for one submission
or many (``resize.options(priority=10, delay=60).submit("a.jpg")``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import inspect
import json
import os
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .._deps import HasJobId
from .._format import DEFAULT_PRIORITY
from .._jobsettings import MAX_ATTEMPTS, RETRY_DELAY, TIMEOUT, check_group
from .._keys import UniqueWhile
from .._numbers import parse_seconds
from .._results import DEFAULT_RESULT_TTL, RESULT_TTL_KEY
from ..queue import DirQueue
from ._call import ENCODING_KEY, JSON, PICKLE, TASK_KEY, encode_call
from ._cron import CronSchedule
from ._result import TaskResult

__all__ = [
    "Task",
    "TaskOptions",
    "TaskQueue",
    "lookup_task",
    "periodic_tasks",
    "registered_tasks",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Every task this process has defined, by name: what a worker can run.
_REGISTRY: dict[str, Task[Any, Any]] = {}


def lookup_task(name: str) -> Task[Any, Any] | None:
    """The task registered as ``name`` in this process, or None."""
    return _REGISTRY.get(name)


#: The tasks this process has made periodic (``@q.periodic``), by name, with their
#: period in seconds or their cron schedule: what ``dq server --periodic`` offers
#: (``dirqueue.coord``).
_PERIODIC: dict[str, tuple[Task[Any, Any], float | CronSchedule]] = {}


def periodic_tasks() -> list[tuple[Task[Any, Any], float | CronSchedule]]:
    """The periodic tasks this process has defined, and their periods (seconds) or
    cron schedules, by name."""
    return [_PERIODIC[name] for name in sorted(_PERIODIC)]


def registered_tasks() -> list[str]:
    """The names of the tasks this process has defined, sorted."""
    return sorted(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How a task's jobs are submitted and run.

    :param retries: attempts after the first before the job fails for good (None: the
        worker's ``max_attempts`` decides).
    :param retry_delay: seconds before the first retry, doubled for each one after
        (None: the worker's).
    :param timeout: seconds one attempt may run, kept by the worker's task handler
        (a ``SIGALRM`` in the worker's main thread; a call stuck in C code is stopped
        only by ``dq server --timeout``, which kills the worker).
    :param priority: 0 (first) to 99; 50 by default.
    :param result_ttl: seconds the answer is kept (0: none).
    :param delay: seconds to wait before the job may run.
    :param not_before: when it may run (a datetime, or seconds since the epoch).
    :param unique: enqueue a call only if no job of the same call (the task's name and
        its arguments) is queued, deferred, waiting or running; else ``submit`` returns
        the handle of that job (see ``docs/coordination.md``).
    :param depends_on: jobs (ids, or the handles ``submit`` returned) whose end the job
        waits for, in ``waiting/``.
    :param allow_failure: run even if one of ``depends_on`` ends in ``failed/``.
    :param unique_key: the key itself, instead of one made from the call; with
        ``unique_ttl``, kept that many seconds even after its job has ended (see
        :meth:`dirqueue.DirQueue.enqueue_string`).
    :param unique_while: ``"active"`` (the default): the key is held until the job
        has ended; ``"queued"``: only until it starts, so a call made while the job
        runs is queued again (once).
    :param group: the group whose limits hold for the task's jobs (``dq limit``; see
        ``docs/limits.md``).
    :param dirqueue_only: keep the jobs out of Perl workers' sight (``queue/dq/``).
    """

    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    priority: int = DEFAULT_PRIORITY
    result_ttl: float = DEFAULT_RESULT_TTL
    delay: float | None = None
    not_before: float | datetime.datetime | None = None
    unique: bool = False
    depends_on: tuple[str | HasJobId, ...] = ()
    allow_failure: bool = False
    unique_key: str | None = None
    unique_ttl: float | None = None
    unique_while: UniqueWhile = "active"
    group: str | None = None
    dirqueue_only: bool = False

    def __post_init__(self) -> None:
        if self.group is not None:
            check_group(self.group)  # Now, not when the first job is submitted.
        if self.retries is not None and (
            isinstance(self.retries, bool) or not isinstance(self.retries, int)
            or self.retries < 0
        ):
            raise ValueError(f"retries must be a whole number, 0 or more, not {self.retries!r}")
        for name in ("retry_delay", "timeout", "result_ttl"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 <= value < float("inf")
            ):
                raise ValueError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be more than 0 seconds, not {self.timeout!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) or not (
            0 <= self.priority <= 99
        ):
            raise ValueError(f"priority must be a whole number from 0 to 99, not {self.priority!r}")

    def metadata(self, name: str, encoding: str) -> dict[str, str]:
        """The job metadata that carries these options to the worker."""
        meta = {TASK_KEY: name, ENCODING_KEY: encoding, RESULT_TTL_KEY: f"{self.result_ttl:g}"}
        if self.retries is not None:
            meta[MAX_ATTEMPTS] = str(self.retries + 1)
        if self.retry_delay is not None:
            meta[RETRY_DELAY] = f"{self.retry_delay:g}"
        if self.timeout is not None:
            meta[TIMEOUT] = f"{self.timeout:g}"
        return meta


class Task(Generic[P, R]):
    """A function that runs through the queue. Calling the task calls the function
    here; :meth:`submit` has a worker call it."""

    def __init__(
        self, queue: TaskQueue, func: Callable[P, R], name: str, options: TaskOptions
    ) -> None:
        self.queue = queue
        self.func = func
        self.name = name
        self.default_options = options
        #: The function's signature, which calls are checked against (None: it has
        #: none to check, as some builtins).
        self.signature: inspect.Signature | None
        try:
            self.signature = inspect.signature(func)
        except ValueError:
            self.signature = None
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Task {self.name} on {self.queue.dir!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def options(self, **changes: Any) -> Task[P, R]:
        """This task with some options changed (see :class:`TaskOptions`), for
        submitting; the registered task keeps its own."""
        copy: Task[P, R] = Task(
            self.queue, self.func, self.name, dataclasses.replace(self.default_options, **changes)
        )
        return copy

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """Enqueue a call of the task and return its handle at once.

        The arguments are checked against the function's signature and, unless the
        queue allows pickle, that JSON carries each unchanged
        (:class:`~dirqueue.tasks.TaskArgumentError` names the one it cannot).
        """
        queue = self.queue
        encoding = PICKLE if queue.allow_pickle else JSON
        data = encode_call(
            self.signature, self.name, args, kwargs, use_pickle=queue.allow_pickle
        )
        opts = self.default_options
        key = opts.unique_key
        if opts.unique and key is None:
            # One call, one key: keyword arguments in any order are the same call.
            raw = data
            if encoding == JSON:
                raw = json.dumps(json.loads(data), sort_keys=True).encode("utf-8")
            key = f"task {self.name} {hashlib.sha256(raw).hexdigest()}"
        jobid = queue.enqueue_string(
            data, opts.metadata(self.name, encoding), opts.priority,
            delay=opts.delay, not_before=opts.not_before, unique_key=key,
            unique_ttl=opts.unique_ttl, unique_while=opts.unique_while,
            depends_on=opts.depends_on, allow_failure=opts.allow_failure,
            group=opts.group, dirqueue_only=opts.dirqueue_only,
        )
        result: TaskResult[R] = TaskResult(queue, jobid)
        return result


class TaskQueue(DirQueue):
    """A :class:`~dirqueue.DirQueue` whose functions can be tasks (``@q.task``).

    :param pickle: carry arguments and answers that JSON cannot as pickle. Loading
        pickle runs whatever code its writer chose, so turn this on only when everyone
        who can write to the queue directory is trusted; workers and readers use the
        setting of the queue object the task was defined on. Other options are
        :class:`~dirqueue.DirQueue`'s.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],  # noqa: A002 - DirQueue's name for it
        *,
        pickle: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(dir, **options)
        self.allow_pickle = pickle

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, func: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Make a function a task of this queue: ``@q.task`` or ``@q.task(retries=3,
        retry_delay=10, timeout=60, priority=20, result_ttl=3600, name="resize")``.

        ``name`` defaults to ``module.function``; a worker finds the task by it, so a
        function defined in a script run as ``__main__`` needs one that the worker's
        import of the same module also gives.
        """
        opts = TaskOptions(**options)

        def wrap(function: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{function.__module__}.{function.__qualname__}"
            made: Task[P, R] = Task(self, function, task_name, opts)
            _REGISTRY[task_name] = made
            return made

        if func is not None:
            return wrap(func)
        return wrap

    def periodic(
        self,
        *,
        every: float | str | None = None,
        cron: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Make a function a task run once every ``every`` (seconds, or ``"30s"``,
        ``"5m"``, ``"1h"``): ``@q.periodic(every="5m")``; or at the times of a cron
        expression, in UTC: ``@q.periodic(cron="*/5 * * * *")`` (needs croniter:
        ``pip install 'dirqueue[cron]'``).

        Nothing runs by itself: every ``dq server --periodic MODULE`` (on any host)
        offers each time slot's job, and the slot's unique key lets exactly one of
        them enqueue it (``dirqueue.coord``, ``docs/coordination.md``). A function
        with a ``slot`` parameter is given the slot's start (seconds since the epoch,
        in the filesystem's clock). Other options are :meth:`task`'s; answers are
        kept for ten periods (at least a minute) unless ``result_ttl`` says otherwise.
        """
        if (every is None) == (cron is None):
            raise TypeError(
                "@q.periodic takes one of every= (e.g. every='5m') and cron="
                " (e.g. cron='*/5 * * * *')"
            )
        schedule: float | CronSchedule
        if cron is not None:
            schedule = CronSchedule(cron)
            # The period, for the answers' keep: the length of one slot (a year in).
            start = schedule.slot_of(365 * 86400.0)
            options.setdefault("result_ttl", max(60.0, 10 * (schedule.after(start) - start)))
        else:
            schedule = parse_seconds("every", every)
            options.setdefault("result_ttl", max(60.0, 10 * schedule))

        def wrap(function: Callable[P, R]) -> Task[P, R]:
            made: Task[P, R] = self.task(name=name, **options)(function)
            _PERIODIC[made.name] = (made, schedule)
            return made

        return wrap

    def result(self, jobid: str) -> TaskResult[Any]:
        """The handle of task job ``jobid`` (from any process or host)."""
        return TaskResult(self, jobid)
