"""A submitted task's handle: :class:`TaskResult`, its status and its answer.

A handle is the queue and the job id, nothing more, so ``TaskResult(q, jobid)`` made in
another process, or on another host sharing the directory, is as good as the one
``submit`` returned. The answer is read from ``results/`` through the engine
(:mod:`dirqueue._results`), which also does the waiting: inotify on a local
filesystem, a cheap look at the one file on a network one.
"""

from __future__ import annotations

import pickle
import time
from typing import Any, Generic, Literal, TypeVar

from .._format import is_job_name
from .._results import FAILED, ResultRecord, ResultWaiter, read_result
from ..errors import CorruptJobError, DirQueueError
from ..failed import FailedStore, NoSuchFailedJobError
from ..queue import DirQueue
from ..stats import job_place

__all__ = ["NoResultError", "ResultTimeoutError", "TaskFailed", "TaskResult", "TaskStatus"]

R = TypeVar("R")
TaskStatus = Literal["queued", "deferred", "waiting", "active", "done", "failed", "unknown"]


class TaskFailed(DirQueueError):
    """The task raised (on its last attempt), or its job failed without running.

    ``error_type``, ``message`` and ``traceback`` are the exception's type name, its
    message and the worker's traceback text, as the job's answer keeps them.
    """

    def __init__(self, jobid: str, error_type: str, message: str, traceback: str) -> None:
        text = f"task job {jobid} failed: {error_type}: {message}"
        if traceback:
            text += "\n\nThe worker's traceback:\n" + traceback.rstrip("\n")
        super().__init__(text)
        self.jobid = jobid
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class ResultTimeoutError(DirQueueError, TimeoutError):
    """:meth:`TaskResult.get` waited its ``timeout`` and no answer came."""


class NoResultError(DirQueueError, LookupError):
    """The job is nowhere and has no answer: it finished keeping none (``result_ttl``
    0), its answer expired or was purged, or there never was such a job."""


class TaskResult(Generic[R]):
    """The answer, to come or come, of task job ``jobid`` in ``queue``.

    :param allow_pickle: load a pickled answer (default: as ``queue`` says, when it
        is a :class:`~dirqueue.tasks.TaskQueue`; otherwise no).
    """

    def __init__(self, queue: DirQueue, jobid: str, *, allow_pickle: bool | None = None) -> None:
        if not is_job_name(jobid):
            raise CorruptJobError(
                f"{jobid!r} is not a job id: pass the jobid of a TaskResult submit returned",
                jobid,
            )
        self.queue = queue
        self.jobid = jobid
        if allow_pickle is None:
            allow_pickle = bool(getattr(queue, "allow_pickle", False))
        self.allow_pickle = allow_pickle

    def __repr__(self) -> str:
        return f"TaskResult({self.queue.dir!r}, {self.jobid!r})"

    def record(self) -> ResultRecord | None:
        """The job's answer as its result file holds it, or None if it has none yet."""
        return read_result(self.queue.config, self.jobid)

    @property
    def status(self) -> TaskStatus:
        """``done`` or ``failed`` once answered; ``queued``, ``waiting`` (for its
        parents), ``deferred`` (for a retry's back-off or a delay) or ``active``
        before; ``unknown`` when it is nowhere and has no answer (see
        :class:`NoResultError`)."""
        record = self.record()
        if record is not None and record.status != FAILED:
            return "done"
        place = job_place(self.queue, self.jobid)
        if place is not None:
            return place  # A failed job requeued by hand is waiting again.
        if record is not None or self._failed_job() is not None:
            return "failed"
        return "done" if self.record() is not None else "unknown"  # Finished meanwhile.

    def _failed_job(self) -> TaskFailed | None:
        """The failure of a job in ``failed/`` whose worker kept no answer."""
        try:
            failed = FailedStore(self.queue).get(self.jobid)
        except NoSuchFailedJobError:
            return None
        return TaskFailed(self.jobid, "JobFailed", failed.error, failed.detail)

    def get(self, timeout: float | None = None, poll_interval: float = 0.5) -> R:
        """The task's return value, waiting up to ``timeout`` seconds (None: forever).

        Raises :class:`TaskFailed` if the task failed for good, :class:`ResultTimeoutError`
        when ``timeout`` passes first, :class:`NoResultError` when the job is gone
        without an answer. On a local filesystem the answer wakes the wait at once;
        elsewhere the answer's file is looked for every ``poll_interval`` seconds.
        """
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        waiter = ResultWaiter.for_queue(self.queue.config)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = poll_interval if deadline is None else min(
                poll_interval, max(0.0, deadline - time.monotonic())
            )
            record = waiter.wait(self.jobid, step, poll_interval)
            if record is not None:
                return self._answer(record)
            if job_place(self.queue, self.jobid) is None:
                failed = self._failed_job()
                if failed is not None:
                    raise failed
                record = self.record()  # It may have finished since we looked.
                if record is not None:
                    return self._answer(record)
                raise NoResultError(
                    f"job {self.jobid} in {self.queue.dir} has no answer and is not"
                    " waiting: it finished keeping none (result_ttl 0, or a worker that"
                    " keeps none), its answer expired or was purged, or it never was"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"no answer for job {self.jobid} within {timeout:g} s: it is"
                    f" {self.status}; call get() again to wait on"
                )

    def _answer(self, record: ResultRecord) -> R:
        if record.status == FAILED:
            raise TaskFailed(
                self.jobid, record.error_type, record.error_message, record.traceback
            )
        value: Any = record.decoded()
        if record.kind == "pickle":
            if not self.allow_pickle:
                raise DirQueueError(
                    f"job {self.jobid}'s answer is pickled, and loading pickle runs code"
                    " its writer chose: read it through a TaskQueue(..., pickle=True) or"
                    " TaskResult(..., allow_pickle=True) if its workers are trusted"
                )
            value = pickle.loads(value)  # noqa: S301 - opted in: trusted workers only
        answer: R = value
        return answer
