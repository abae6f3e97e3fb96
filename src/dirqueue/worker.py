"""The worker: a persistent process that runs a handler on job after job.

:class:`Worker` takes one step at a time (:meth:`Worker.run_once`), which tests drive
directly with their own clock and sleep; :meth:`Worker.run` loops until a limit or a
signal says stop. :func:`run_workers` runs N of them as forked processes under the
supervisor in :mod:`dirqueue._supervisor`. :class:`CommandHandler` (from
:mod:`dirqueue._command`) makes a shell command a handler, for ``dq server`` and
``dq deque``; :func:`load_handler` imports a Python one.

Failure policy: a handler that raises has its job returned to the queue with its
attempt count raised by one (see :mod:`dirqueue.failed` for where the count lives);
the attempt that reaches ``max_attempts`` moves the job to ``DIR/failed/`` instead,
with its last error, and so does one that raises :class:`FailJob`. A job is finished
only when the handler returns normally.

Signals: the first SIGTERM or SIGINT asks the worker to stop taking jobs; the job in
hand runs to its end. A second one interrupts the handler (a command gets SIGTERM) and
returns the job to the queue at once, without counting an attempt. Either way the
worker exits normally and leaves no lock behind. A worker under :func:`run_workers`
also stops (as after a first signal) when its supervisor dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Final

from ._command import (
    DEFAULT_KILL_GRACE,
    CommandFailedError,
    CommandHandler,
    job_environment,
    one_line,
)
from ._deferred import scan_deferred
from ._deps import scan_waiting
from ._deps import settle as settle_dependants
from ._format import last_error_of
from ._handler import (
    FailJob,
    HandlerCaller,
    InvalidHandlerError,
    JobTimeoutError,
    UnenforceableTimeoutError,
    check_handler,
    load_handler,
)
from ._jobsettings import InvalidJobSettingError, JobSettings, settings_of
from ._numbers import SECONDS, SECONDS_OR_ZERO, check_number
from ._outcomes import (
    JobBudget,
    JobInterrupted,
    LocalBudget,
    Outcome,
    StepResult,
    StopReason,
    WorkerReport,
    retry_backoff,
)
from ._results import DEFAULT_RESULT_TTL, answer_ttl, keep_answer, keep_failure
from .errors import DirQueueError, JobLostError, QueueIOError
from .failed import FAILED_STORE_RETRY, FailedStore, attempts_of
from .queue import DirQueue
from .stats import waiting_job_ids

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "CommandFailedError",
    "CommandHandler",
    "FailJob",
    "Handler",
    "InvalidHandlerError",
    "JobInterrupted",
    "JobTimeoutError",
    "Outcome",
    "StepResult",
    "StopReason",
    "UnenforceableTimeoutError",
    "Worker",
    "WorkerReport",
    "job_environment",
    "load_handler",
]

_log = logging.getLogger("dirqueue")

#: The signals a worker stops on, and the reason each gives.
_STOP_SIGNALS: Final[dict[int, StopReason]] = {
    signal.SIGTERM: StopReason.SIGTERM,
    signal.SIGINT: StopReason.SIGINT,
}



Handler = Callable[["Job"], object]
"""What a worker runs on each job: ``handler(job)``; returning finishes the job."""

DEFAULT_MAX_ATTEMPTS: Final = 3
#: How long ``until_empty`` waits for unlocked jobs that pickups do not take (the
#: pickup's listing is reused for about a second) before it calls the queue empty.
_UNSEEN_JOB_PATIENCE: Final = 3.0
#: How often (seconds) an idle worker settles the whole of waiting/.
_SETTLE_INTERVAL: Final = 1.0


class Worker:
    """Runs ``handler(job)`` on job after job from ``queue``.

    A job's own ``dq.timeout``, ``dq.max_attempts`` and ``dq.retry_delay`` metadata
    (:func:`dirqueue.job_settings`) override ``timeout``, ``max_attempts`` and
    ``retry_delay`` for that job.

    :param queue: the queue to take jobs from.
    :param handler: called with each job (active, held by this process); returning
        finishes the job, raising follows the failure policy. A coroutine function
        (``async def handle(job)``), or a function that returns an awaitable, is
        awaited on the worker's event loop (one per worker process, kept across jobs,
        closed when :meth:`run` ends or by :meth:`close`). Anything not callable is
        refused (:class:`InvalidHandlerError`).
    :param max_attempts: failed attempts, counted across all workers and hosts, after
        which a job moves to ``failed/``.
    :param njobs: stop after taking this many jobs (None: no limit).
    :param until_empty: stop as soon as no job is waiting.
    :param idle_timeout: stop after this many seconds without a job.
    :param poll_interval: how often a waiting worker looks for jobs from other hosts
        (local submissions wake it at once).
    :param on_result: called with every step's :class:`StepResult` that took a job.
    :param clock: monotonic time, injectable for tests.
    :param sleep: how to sleep, injectable for tests (a custom one turns off inotify).
    :param budget: a shared ``njobs`` allowance (used by :func:`run_workers`).
    :param parent_pid: stop taking jobs once this is no longer the worker's parent
        process (its supervisor died; used by :func:`run_workers`).
    :param timeout: seconds an attempt may run; one that runs longer fails with
        "timed out after N s" (retried, or moved to ``failed/``, as the policy says).
        A :class:`CommandHandler`'s command is stopped with its process group; an
        async handler's task is cancelled. A plain Python function is interrupted by
        SIGALRM (a :class:`JobTimeoutError` at the call; the worker must then run in
        the main thread, or :class:`UnenforceableTimeoutError` is raised before any
        job is taken, and the handler must leave SIGALRM alone). Under
        :func:`run_workers` its worker process is killed and replaced by the
        supervisor instead, which also stops a call blocked in C code (``dq server``
        runs one whenever ``--timeout`` is given with ``--handler``).
    :param retry_delay: seconds to wait before retrying a failed job: the n-th retry
        waits about ``retry_delay * 2**(n-1)`` (with +-25% jitter, so that jobs failed
        together do not come back together), at most ``retry_delay_max``. Meanwhile
        the job waits in ``deferred/``, where no worker on any host (Perl ones
        included) can take it. 0 (the default) returns it to the queue at once.
    :param retry_delay_max: the longest wait between two attempts.
    :param keep_results: keep every job's answer in ``results/`` for ``result_ttl``
        seconds: the handler's return value (bytes, str or a JSON value), or how its
        last attempt failed. A job whose metadata carries ``result_ttl`` (every task
        job does) has its answer kept for that long either way. A job's own
        ``max_attempts`` and ``retry_delay`` metadata override the worker's; an
        exception whose ``retry`` attribute is False fails its job at once.
    :param on_running: called with ``(jobid, attempt)`` as the handler starts on a
        job, and with ``(None, 0)`` once it has returned (used by :func:`run_workers`
        to watch for timeouts).
    :param on_step: called at the start of every step, before a job is taken or
        waited for (at least every ``poll_interval`` while idle): ``dq server
        --periodic`` offers its time slots' jobs from here.
    :param watched: this worker's process is killed from outside at
        :attr:`watchdog_timeout` (by :func:`run_workers`' supervisor), so a plain
        function's timeout needs no alarm.
    """

    def __init__(
        self,
        queue: DirQueue,
        handler: Handler,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        njobs: int | None = None,
        until_empty: bool = False,
        idle_timeout: float | None = None,
        poll_interval: float = 1.0,
        on_result: Callable[[StepResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        budget: JobBudget | None = None,
        parent_pid: int | None = None,
        timeout: float | None = None,
        on_running: Callable[[str | None, int], None] | None = None,
        retry_delay: float = 0.0,
        retry_delay_max: float = 3600.0,
        keep_results: bool = False,
        result_ttl: float = DEFAULT_RESULT_TTL,
        watched: bool = False,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        check_handler(handler)
        retry_delay = check_number("retry_delay", retry_delay, SECONDS_OR_ZERO)
        retry_delay_max = check_number("retry_delay_max", retry_delay_max, SECONDS)
        if retry_delay_max < retry_delay:
            raise ValueError(
                f"retry_delay must be at most retry_delay_max ({retry_delay_max}),"
                f" not {retry_delay}"
            )
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        if timeout is not None:
            timeout = check_number("timeout", timeout, SECONDS)
        if idle_timeout is not None:
            # nan never came: the worker waited for ever.
            idle_timeout = check_number("idle_timeout", idle_timeout, SECONDS_OR_ZERO)
        self.keep_results = keep_results
        self.result_ttl = result_ttl
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, not {max_attempts}")
        if njobs is not None and njobs < 0:
            raise ValueError(f"njobs must be 0 or more, not {njobs}")
        poll_interval = check_number("poll_interval", poll_interval, SECONDS)
        self.queue = queue
        self.handler = handler
        self.timeout = timeout
        self.on_running = on_running
        self.on_step = on_step
        plain = not isinstance(handler, CommandHandler)
        #: The command, without a time limit: each job's is set as it starts.
        self._command = handler if isinstance(handler, CommandHandler) else None
        if isinstance(handler, CommandHandler) and timeout is not None:
            handler = handler.with_timeout(timeout)
        self._caller = HandlerCaller(handler, timeout, alarm=plain and not watched)
        self._job_timeout = timeout
        self.max_attempts = max_attempts
        self.until_empty = until_empty
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self.on_result = on_result
        self.parent_pid = parent_pid
        self.failed = FailedStore(queue)
        self._clock = clock
        self._sleep = sleep
        self._budget: JobBudget | None = budget
        if self._budget is None and njobs:
            self._budget = LocalBudget(njobs)
        self.report = WorkerReport()
        self._stop_reason = ""
        self._signals = 0
        self._in_handler = False
        self._last_activity = clock()
        self._unseen_since: float | None = None
        #: When (monotonic) an idle worker next settles all of waiting/.
        self._next_settle = 0.0

    @property
    def job_timeout(self) -> float | None:
        """The time limit of the attempt running now (the job's own ``dq.timeout``, or
        the worker's ``timeout``), or of the next one."""
        return self._job_timeout

    @property
    def watchdog_timeout(self) -> float | None:
        """Seconds after which this worker's process must be killed from outside to
        stop an attempt (None: it needs no such help, or has no timeout).

        A command is stopped by the worker itself. An ``async def`` handler's task is
        cancelled on time, so the watchdog waits a grace longer, for a loop that some
        blocking call keeps from running.
        """
        timeout = self._job_timeout  # The current job's own, or the worker's.
        if timeout is None or isinstance(self.handler, CommandHandler):
            return None
        if self._caller.is_async:
            return timeout + DEFAULT_KILL_GRACE
        return timeout

    def close(self) -> None:
        """Close the worker's event loop, if an async handler made one."""
        self._caller.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stopping --------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once the worker takes no more jobs."""
        return bool(self._stop_reason)

    def request_stop(self, reason: str = StopReason.REQUESTED) -> None:
        """Take no more jobs; the job in hand (if any) runs to its end."""
        if not self._stop_reason:
            self._stop_reason = reason

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Flags only, except for the one thing a flag cannot do: stop a handler that
        # is running Python code in this thread, when asked a second time.
        self._signals += 1
        self.request_stop(_STOP_SIGNALS.get(signum, StopReason.SIGNAL))
        if self._signals >= 2 and self._in_handler:
            raise JobInterrupted(f"second {signal.Signals(signum).name} while a job ran")

    @contextlib.contextmanager
    def signal_handlers(self) -> Iterator[None]:
        """Within the block, SIGTERM and SIGINT stop the worker as described above."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- one step --------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> StepResult:
        """Take one job and run the handler on it, or wait up to ``timeout`` for one.

        ``timeout`` defaults to ``poll_interval`` (0 with ``until_empty``), so a
        waiting worker comes back often to see whether it should stop.
        """
        self._caller.check_alarm()  # Before a job is taken in vain.
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            # Orphaned: the supervisor is gone (SIGKILL, say) and nobody would collect
            # this worker's counts or forward it a signal. Where the kernel cannot send
            # a parent-death signal, this is how it learns.
            self.request_stop(StopReason.PARENT_GONE)
        if not self._stop_reason and self._budget is not None and not self._budget.reserve():
            self.request_stop(StopReason.NJOBS_REACHED)
        if self._stop_reason:
            return StepResult(Outcome.STOPPED)
        try:
            job = self._take(timeout)
        except BaseException:
            if self._budget is not None:
                self._budget.release()
            raise
        if job is None:
            if self._budget is not None:
                self._budget.release()
            if self.until_empty:
                if self._looks_empty():
                    self.request_stop(StopReason.QUEUE_EMPTY)
                else:
                    self._sleep(min(self.poll_interval, 0.05))
            elif (
                self.idle_timeout is not None
                and self._clock() - self._last_activity >= self.idle_timeout
            ):
                self.request_stop(StopReason.IDLE_TIMEOUT)
            self._settle_dependants(None)
            self.report.counts[Outcome.IDLE.value] += 1
            return StepResult(Outcome.IDLE)
        self._unseen_since = None
        result = self.process(job)
        # Whoever ends a parent settles its dependants: no daemon, and a child starts
        # as soon as its last parent is done.
        self._settle_dependants(job.jobid, result.outcome)
        self._last_activity = self._clock()
        self.report.counts[result.outcome.value] += 1
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _settle_dependants(self, parent: str | None, outcome: Outcome | None = None) -> None:
        """Promote the dependants in ``waiting/`` whose parents have all ended, and move
        to ``failed/`` those with a failed parent: the ones that name ``parent``, or
        (``parent`` None, at most every second while idle) all of them, which catches
        what a crash, a Perl worker or a plain ``Job.finish`` left."""
        if outcome not in (None, Outcome.FINISHED, Outcome.FAILED):
            return  # Still there (returned, retried later, lost): nothing to settle.
        if parent is None:
            now = time.monotonic()
            if now < self._next_settle:
                return
            self._next_settle = now + _SETTLE_INTERVAL
        try:
            for name, reason in settle_dependants(self.queue.config, parent):
                self.failed.fail_waiting(name, reason)
        except (OSError, DirQueueError) as err:
            _log.warning("settling the dependants in waiting/: %s (tried again later)", err)

    def _looks_empty(self) -> bool:
        """True when no job waits that this worker could take (for ``until_empty``).

        Deferred jobs (retries waiting for their back-off, delayed jobs) are still to
        come: the worker waits for them.
        """
        if not waiting_job_ids(self.queue):
            self._unseen_since = None
            config = self.queue.config
            return not scan_deferred(config) and not scan_waiting(config)
        # Unlocked jobs are there that the pickup did not take: most likely returned
        # after a failure since the pickup last listed the queue, which it will see on
        # its next listing. But a job that no pickup will ever take (a corrupt control
        # file) must not keep us waiting forever.
        now = self._clock()
        if self._unseen_since is None:
            self._unseen_since = now
        return now - self._unseen_since > _UNSEEN_JOB_PATIENCE

    def _take(self, timeout: float | None) -> Job | None:
        if self.on_step is not None:
            self.on_step()
        if timeout is None:
            timeout = 0.0 if self.until_empty else self.poll_interval
        if self.idle_timeout is not None:
            idle_left = self.idle_timeout - (self._clock() - self._last_activity)
            timeout = max(0.0, min(timeout, idle_left))
        if timeout <= 0:
            return self.queue.pickup_queued_job()
        return self.queue.wait_for_queued_job(
            timeout=timeout,
            poll_interval=min(self.poll_interval, timeout),
            sleep=self._sleep,
            clock=self._clock,
        )

    def process(self, job: Job) -> StepResult:
        """Run the handler on ``job`` (held by this process) and apply the policy."""
        attempt = attempts_of(job.control) + 1
        started = self._clock()
        try:
            try:
                settings = settings_of(job.metadata)
            except InvalidJobSettingError as err:
                return self._failed(job, attempt, err, started, JobSettings())
            max_attempts = settings.max_attempts or self.max_attempts
            if attempt > max_attempts:
                # Its attempts were used up without a handler ever reporting back: its
                # workers died on it (each death counted by whoever took the job next).
                # Running it again would kill another worker.
                error = last_error_of(job.control) or "its workers died"
                self._keep_failure(job, None, error, "", attempt - 1)
                return self._to_failed(
                    job, error, attempt - 1, started, max_attempts=max_attempts, ran=False
                )
            return self._process(job, attempt, started, settings)
        except JobLostError as err:
            # Taken over by another worker while we stalled: theirs now, and never a
            # reason for this worker to die.
            who = err.taken_by or "another worker"
            return StepResult(
                Outcome.LOST, job.jobid, attempt, f"lost: taken over by {who}",
                self._clock() - started,
            )

    def _process(
        self, job: Job, attempt: int, started: float, settings: JobSettings
    ) -> StepResult:
        try:
            # The job's own time limit, or the worker's.
            timeout = self.timeout if settings.timeout is None else settings.timeout
            if timeout != self._caller.timeout:
                command = self._command and self._command.with_timeout(timeout)
                self._caller.use_timeout(timeout, command)
            self._caller.check_alarm()  # In a thread: the job goes back, untried.
            self._job_timeout = timeout
            try:
                # A held job's lock is kept fresh by the queue's heartbeat thread
                # (DirQueue(lock_heartbeat=True), the default). With that turned off,
                # a long job still must not look abandoned: it is touched all the
                # same, without the lock's promise.
                self._in_handler = True
                if self.on_running is not None:
                    self.on_running(job.jobid, attempt)
                try:
                    with job.kept_fresh():
                        value = self._caller(job)
                        if job.is_active:
                            self._keep_answer(job, value, attempt)
                finally:
                    self._in_handler = False
                    if self.on_running is not None:
                        self.on_running(None, 0)
            except JobInterrupted:
                if job.is_active:
                    job.return_to_queue()
                return StepResult(
                    Outcome.RETURNED, job.jobid, attempt, seconds=self._clock() - started
                )
            except Exception as err:  # Any handler failure is the job's failure.
                return self._failed(job, attempt, err, started, settings)
        except BaseException:
            # KeyboardInterrupt, SystemExit from the handler, or worse: never leave
            # the job locked.
            if job.is_active:
                job.return_to_queue()
            raise
        if job.is_active:
            job.finish()
        return StepResult(Outcome.FINISHED, job.jobid, attempt, seconds=self._clock() - started)

    def _failed(
        self, job: Job, attempt: int, err: Exception, started: float, settings: JobSettings
    ) -> StepResult:
        error = one_line(err)
        # A command's failure carries its stderr as its detail, empty when it wrote
        # nothing: that is the detail, not the traceback of dirqueue's own code.
        detail = getattr(err, "detail", None)
        if detail is None:
            detail = "".join(traceback.format_exception(err))
        seconds = self._clock() - started
        if not job.is_active:
            # The handler ended the job itself, then raised: nothing left to decide.
            return StepResult(Outcome.FINISHED, job.jobid, attempt, error, seconds)
        detail = str(detail)
        max_attempts = settings.max_attempts or self.max_attempts
        # FailJob (a task call that cannot be read is one), or a job setting no attempt
        # would read better: failed now.
        if attempt >= max_attempts or isinstance(err, (FailJob, InvalidJobSettingError)):
            self._keep_failure(job, err, error, detail, attempt)
            return self._to_failed(job, error, attempt, started, detail, max_attempts=max_attempts)
        base = self.retry_delay if settings.retry_delay is None else settings.retry_delay
        delay = retry_backoff(attempt, base, max(self.retry_delay_max, base))
        try:
            if delay > 0:
                job.retry_later(delay, error=error)
            else:
                job.update_control(job.attempt_counted(attempt, error))
        except QueueIOError as io_err:
            # The count could not be written (a full disk, say): the job goes back all
            # the same, uncounted, rather than this worker dying and leaving it locked.
            error = f"{error} (attempt not counted: {io_err})"
            delay = 0.0
        finally:
            if job.is_active:
                job.return_to_queue()
        return StepResult(
            Outcome.RETRIED, job.jobid, attempt, error, seconds, detail, delay,
            max_attempts=max_attempts,
        )

    def _to_failed(
        self, job: Job, error: str, attempts: int, started: float, detail: str = "",
        *, max_attempts: int | None = None, ran: bool = True,
    ) -> StepResult:
        """Move ``job``, out of attempts, to ``failed/``; or, if ``failed/`` cannot be
        written, defer it (:meth:`FailedStore.add_or_defer`): never die of it, which
        would have the next worker take the job again, and again."""
        limit = max_attempts or self.max_attempts
        not_moved = self.failed.add_or_defer(
            job, error, attempts=attempts, detail=detail, max_attempts=limit
        )
        seconds = self._clock() - started
        if not_moved is None:
            return StepResult(Outcome.FAILED, job.jobid, attempts, error, seconds, detail,
                              ran=ran, max_attempts=limit)
        return StepResult(Outcome.RETRIED, job.jobid, attempts, not_moved, seconds, detail,
                          FAILED_STORE_RETRY, ran=ran, max_attempts=limit)

    def _keep_answer(self, job: Job, value: object, attempt: int) -> None:
        """Keep the handler's return value as the job's answer, if one is wanted:
        before the job is finished, so that a job found gone has its answer there."""
        ttl = answer_ttl(job.metadata, self.keep_results, self.result_ttl)
        keep_answer(self.queue.config, job.jobid, value, attempt, ttl)

    def _keep_failure(
        self, job: Job, err: BaseException | None, error: str, detail: str, attempt: int
    ) -> None:
        """Keep how the job's last attempt failed as its answer, if one is wanted."""
        ttl = answer_ttl(job.metadata, self.keep_results, self.result_ttl)
        keep_failure(self.queue.config, job.jobid, err, error, detail, attempt, ttl)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> WorkerReport:
        """Take jobs until a limit is reached or a signal asks to stop; report counts.

        Installs the SIGTERM/SIGINT handlers when called in the main thread.
        """
        handlers = (
            self.signal_handlers()
            if threading.current_thread() is threading.main_thread()
            else contextlib.nullcontext()
        )
        try:
            with handlers:
                while self.run_once().outcome is not Outcome.STOPPED:
                    pass
        finally:
            self.close()
        self.report.stop_reason = self._stop_reason
        return self.report
