"""The worker's side of tasks: :class:`TaskHandler`, a handler that runs task jobs.

Given to a :class:`~dirqueue.Worker` (``dq server --tasks MODULE`` builds one), it
imports the modules that define the tasks, which registers them, and for each job
looks its task up by the name in its metadata, reads the call from its data, and
calls the function. What the function returns is the job's answer, which the worker
keeps in ``results/`` (the job asks for it with its ``dq.result_ttl`` metadata); what it
raises is the job's failure, retried as the task's options say.

Nothing about a job can stop the worker: a module that fails to import, a task name
no module defined, a call that cannot be read each fail only their job, with a reason
naming the fix. A call that cannot be read fails at once (a :class:`~dirqueue.FailJob`:
another attempt would read it the same); an unknown task is retried like any failure, since
another worker may know it. Jobs without a task name go to ``fallback`` (a plain
handler), so task jobs and plain ones share a queue.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import logging
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._format import attempts_of
from .._handler import FailJob
from .._results import ALREADY_KEPT, DONE, Encoded, UnstorableResultError, encode_value, read_result
from ..errors import DirQueueError
from ._api import lookup_task, registered_tasks
from ._call import ENCODING_KEY, JSON, TASK_KEY, BadCallError, decode_call

if TYPE_CHECKING:
    from ..job import Job
    from ..queue import DirQueue

__all__ = ["NotATaskJobError", "TaskHandler", "UnknownTaskError"]

_log = logging.getLogger("dirqueue")


class UnknownTaskError(DirQueueError, LookupError):
    """A task job names a task this worker has not imported. ``task`` names it."""

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message)
        self.task = task


class NotATaskJobError(FailJob, ValueError):
    """A job without task metadata reached a worker that runs only tasks."""


class TaskHandler:
    """Runs task jobs: ``Worker(q, TaskHandler(q, ["myapp.tasks"]))``.

    :param queue: the queue the worker takes jobs from.
    :param modules: modules to import, whose ``@q.task`` functions this worker runs.
        One that fails to import is logged, and every job of a task it would have
        defined fails with the import error as its reason.
    :param fallback: the handler for jobs that name no task (None: they fail at once).
    """

    def __init__(
        self,
        queue: DirQueue,
        modules: Sequence[str] = (),
        *,
        fallback: Callable[[Job], object] | None = None,
    ) -> None:
        self.queue = queue
        self.fallback = fallback
        self.import_errors: dict[str, str] = {}
        if modules and "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # As load_handler does: modules beside the queue.
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as err:
                self.import_errors[module] = f"{type(err).__name__}: {err}"
                _log.warning("tasks module %s failed to import: %s", module, err)

    def __call__(self, job: Job) -> object:
        name = job.metadata.get(TASK_KEY)
        if name is None:
            if self.fallback is not None:
                return self.fallback(job)
            raise NotATaskJobError(
                f"job {job.jobid} names no task (no '{TASK_KEY}' metadata) and this worker"
                " runs only tasks: give it a handler for plain jobs as well"
            )
        # An earlier attempt that answered, then died before finishing the job, was
        # counted by the pickup that broke its lock: only then can an answer be there.
        # The caller may have it already, so the task is not run again.
        earlier = read_result(self.queue.config, job.jobid) if attempts_of(job.control) else None
        if earlier is not None and earlier.status == DONE:
            return ALREADY_KEPT
        task = lookup_task(name)
        if task is None:
            raise UnknownTaskError(self._unknown(name), name)
        try:
            call = decode_call(
                job.get_data(), job.metadata.get(ENCODING_KEY, JSON),
                allow_pickle=task.queue.allow_pickle,
            )
        except BadCallError as err:
            raise BadCallError(f"task {name}: {err}") from None
        try:
            # The task's time limit (its dq.timeout) is the worker's to keep.
            value = task.func(*call.args, **call.kwargs)
        except TypeError as err:
            # The arguments may not fit the function (checked only now: binding every
            # call to its signature first cost a tenth of a task), which no retry mends.
            if task.signature is not None:
                try:
                    task.signature.bind(*call.args, **call.kwargs)
                except TypeError as mismatch:
                    raise BadCallError(
                        f"task {name} cannot be called with {_shown(call)}: {mismatch}"
                    ) from None
            _keep_task_traceback(err)
            raise
        except Exception as err:
            _keep_task_traceback(err)
            raise
        try:
            return encode_value(value)
        except UnstorableResultError:
            if not task.queue.allow_pickle:
                raise
            return Encoded("pickle", base64.b64encode(pickle.dumps(value)).decode("ascii"))

    def _unknown(self, name: str) -> str:
        known = ", ".join(registered_tasks()) or "none"
        text = f"unknown task {name!r}: this worker knows {known}"
        if self.import_errors:
            failed = "; ".join(f"{m}: {e}" for m, e in self.import_errors.items())
            text += f" (modules that failed to import: {failed})"
        return text + ". Start the worker with the module that defines it (--tasks MODULE)"


def _keep_task_traceback(err: Exception) -> None:
    """Give ``err`` the traceback from the task's own frame down as its ``detail``
    (what the worker keeps), so the caller reads the task's frames, not the worker's."""
    tb = err.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # This handler's own frame.
    text = "".join(traceback.format_exception(type(err), err, tb))
    with contextlib.suppress(AttributeError, TypeError):  # A class without __dict__.
        err.detail = text  # type: ignore[attr-defined]


def _shown(call: Any) -> str:
    text = f"args {call.args!r}, kwargs {call.kwargs!r}"
    return text if len(text) <= 200 else text[:197] + "..."
