"""Many workers: :func:`run_workers` runs N :class:`~dirqueue.worker.Worker` processes,
forked under the supervisor in :mod:`dirqueue._supervisor`, with their counters in
shared memory; and what the supervisor does when one dies (it says so at once, and
counts the attempt of a worker killed past its job's time limit). Given a range
(``workers=(1, 8)``), the count follows the backlog (:mod:`dirqueue._elastic`): the
workers say in shared memory when their jobs start and end, and the supervisor asks
an index of the queue of its own (:class:`~dirqueue._index.QueueIndex`: inotify on a
local filesystem, a re-read of a changed ``queue/`` at most every half second on a
network one) whether a job waits, only when every worker is busy. And
:func:`timeout_needs_supervisor`: whether a handler's time limit needs a supervisor
to be kept at all, even for one worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._command import CommandHandler
from ._elastic import (
    DEFAULT_GROW_INTERVAL,
    DEFAULT_SHRINK_AFTER,
    JobTimes,
    Scaler,
    Scaling,
)
from ._handler import check_handler, timed_out_message
from ._index import QueueIndex
from ._numbers import SECONDS_OR_ZERO, check_number
from ._outcomes import (
    ATTEMPT_COLUMN,
    COLUMNS,
    COUNTED,
    DEADLINE_COLUMN,
    EMPTY_COLUMN,
    JOB_ENDED_COLUMN,
    JOB_STARTED_COLUMN,
    JOBID_SIZE,
    STOP_COLUMN,
    TIMEOUT_COLUMN,
    Outcome,
    StepResult,
    StopReason,
    WorkerReport,
    stop_code,
    stop_reason_of,
)
from ._servers import Announcer
from ._supervisor import (
    ChildContext,
    ChildDeath,
    SharedBudget,
    SharedCounters,
    SharedText,
    supervise,
)
from ._timeouts import count_timed_out
from .errors import QueueNotFoundError
from .queue import DirQueue
from .worker import DEFAULT_MAX_ATTEMPTS, Handler, Worker

__all__ = ["run_workers", "timeout_needs_supervisor"]

_log = logging.getLogger("dirqueue")


def timeout_needs_supervisor(handler: Handler, timeout: float | None) -> bool:
    """True if ``handler``'s ``timeout`` is kept for sure only by killing its worker
    process (an alarm does not stop a call blocked in C code), so that ``dq server``
    runs the worker under :func:`run_workers` even alone."""
    return timeout is not None and not isinstance(handler, CommandHandler)


def run_workers(
    queue: DirQueue,
    handler: Handler,
    workers: int | tuple[int, int],
    *,
    njobs: int | None = None,
    on_progress: Callable[[int, list[WorkerReport]], None] | None = None,
    progress_interval: float = 0.2,
    shrink_after: float = DEFAULT_SHRINK_AFTER,
    grow_interval: float = DEFAULT_GROW_INTERVAL,
    on_scale: Callable[[int, str], None] | None = None,
    **worker_options: Any,
) -> list[WorkerReport]:
    """Run ``workers`` forked worker processes until each stops; report each one's counts.

    Each worker is a persistent process with its own copy of ``handler`` (imported
    once, before the fork) and its own warm caches. The supervisor forwards SIGTERM
    and SIGINT to every worker (a second signal reaches them a second time), and calls
    ``on_progress(jobs_done, reports)`` every ``progress_interval`` seconds (jobs
    finished or moved to ``failed/``, not attempts). ``njobs`` is a total shared by
    all workers. Other options go to :class:`Worker`.

    A worker that dies (a crash, a signal) while no stop was asked for is replaced at
    once, or after a wait that doubles (0.5 s up to 30 s) while it keeps dying within
    seconds; each death is logged at once (logger ``dirqueue``) and counted in its
    report's ``restarts``. With a ``timeout`` and a Python handler, a worker whose
    attempt runs past it is killed with its session (its commands) and replaced, and the
    attempt is counted as failed ("timed out after N s"): the supervisor takes the job
    back (its lock's owner is provably dead) and returns it to the queue (after the
    ``retry_delay`` back-off, as for any failure), or moves it to ``failed/`` at
    ``max_attempts``; that attempt's :class:`StepResult` goes to ``on_result`` called
    in the supervisor, since its worker is gone.

    ``workers=(least, most)`` makes the pool elastic: ``least`` start; one more starts
    (at most every ``grow_interval`` seconds, up to ``most``) while every worker is
    busy and a job waits; a worker idle for ``shrink_after`` seconds is let go (it
    stops as on SIGTERM, its stop reason ``let go``) while more than ``least`` run.
    SIGTTIN and SIGTTOU to the calling process ask for one more or one fewer (within
    1 and ``most``; a plain number N is N:N, which these signals move too), and move
    the count it shrinks back to. ``on_scale(count, note)`` hears each change, in
    words. A report is returned for each slot used (never more than ``most``): a slot
    reused after its worker was let go sums both.
    """
    least, most = (workers, workers) if isinstance(workers, int) else workers
    if isinstance(workers, int) and workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    scaling = Scaling(
        least, most,
        check_number("shrink_after", shrink_after, SECONDS_OR_ZERO),
        check_number("grow_interval", grow_interval, SECONDS_OR_ZERO),
    )
    check_handler(handler)
    if not queue.exists:
        # Each worker would raise it, die and be restarted for ever: say it once.
        raise QueueNotFoundError(queue.dir)
    fleet = _Fleet(queue, handler, most, njobs, worker_options)
    scaler = Scaler(scaling, fleet.job_times, fleet.jobs_waiting)
    # How many run, in servers/ for dq stats (an idle worker shows nowhere else).
    announcer = Announcer(queue.config, most)
    count = least

    def on_tick(pids: list[int]) -> None:
        announcer.update(count)
        if on_progress is not None:
            now = fleet.reports(pids)
            on_progress(sum(r.jobs for r in now), now)

    def scaled(workers: int, note: str) -> None:
        nonlocal count
        count = workers
        if on_scale is not None:
            on_scale(workers, note)

    try:
        results = supervise(
            least,
            fleet.child_main,
            on_tick=on_tick,
            interval=progress_interval,
            restart=True,
            # Always: a job may bring its own time limit (dq.timeout) to any worker.
            deadline_of=fleet.deadline_of,
            on_death=fleet.on_death,
            scaler=scaler,
            on_scale=scaled,
        )
    finally:
        announcer.withdraw()
        fleet.close()
    final = fleet.reports([r.pid for r in results])
    for report, result in zip(final, results, strict=True):
        report.exit_code = result.exit_code
        report.restarts = result.restarts
        if report.exit_code != 0:
            report.stop_reason = f"exit code {report.exit_code}"
        elif result.let_go:
            report.stop_reason = StopReason.LET_GO
    return final


class _Fleet:
    """What :func:`run_workers` shares with its forked workers, and its side of it:
    each worker's counts and current job in shared memory, and what the supervisor
    does when one dies."""

    def __init__(
        self,
        queue: DirQueue,
        handler: Handler,
        workers: int,
        njobs: int | None,
        worker_options: dict[str, Any],
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.counters = SharedCounters(workers, COLUMNS)
        self.running = SharedText(workers, JOBID_SIZE)
        self.budget = SharedBudget(njobs) if njobs else None
        self.user_callback = worker_options.pop("on_result", None)
        self.options = worker_options
        self.timeout: float | None = worker_options.get("timeout")
        self.max_attempts: int = worker_options.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        #: The supervisor's own index of the queue, made when first asked.
        self._index: QueueIndex | None = None

    # -- in a worker ---------------------------------------------------------------

    def child_main(self, child: ChildContext) -> None:
        counters, running, index = self.counters, self.running, child.index
        if self._index is not None:
            self._index.close()  # The supervisor's inotify descriptor: not ours to keep.
        user_step = self.options.get("on_step")
        # When the step under way began, and whether it took a job (the first step
        # has none before it to judge).
        step = {"began": 0, "took": 1}

        def on_step() -> None:
            now = _microseconds()
            if not step["took"]:
                # The step before took no job: its pickup, and its wait, found nothing.
                counters.set(index, EMPTY_COLUMN, step["began"])
            step["began"], step["took"] = now, 0
            if user_step is not None:
                user_step()

        def on_result(result: StepResult) -> None:
            step["took"] = 1
            column = COUNTED.get(result.outcome)
            if column is not None:
                counters.add(index, column)
            if self.user_callback is not None:
                self.user_callback(result)

        def on_running(jobid: str | None, attempt: int) -> None:
            if jobid is None:
                counters.set(index, DEADLINE_COLUMN, 0)
                counters.set(index, JOB_ENDED_COLUMN, _microseconds())
                return
            step["took"] = 1
            counters.set(index, JOB_STARTED_COLUMN, _microseconds())
            running.set(index, jobid)
            counters.set(index, ATTEMPT_COLUMN, attempt)
            limit = worker.watchdog_timeout
            if limit is not None:
                deadline = time.monotonic() + limit
                counters.set(index, DEADLINE_COLUMN, max(1, int(deadline * 1000)))
                counters.set(index, TIMEOUT_COLUMN, int((worker.job_timeout or 0) * 1000))

        worker = Worker(
            self.queue,
            self.handler,
            budget=self.budget,
            on_result=on_result,
            parent_pid=child.supervisor_pid,
            on_running=on_running,
            watched=True,
            **{**self.options, "on_step": on_step},
        )
        with worker.signal_handlers():
            child.signals_ready()  # Our handlers are up: a signal sent meanwhile lands.
            report = worker.run()
        counters.set(index, STOP_COLUMN, stop_code(report.stop_reason))

    # -- in the supervisor -----------------------------------------------------------

    def deadline_of(self, index: int) -> float | None:
        """When (``time.monotonic()``) worker ``index``'s attempt runs out, if it must
        be killed then."""
        deadline_ms = self.counters.row(index)[DEADLINE_COLUMN]
        return deadline_ms / 1000 if deadline_ms else None

    def job_times(self, index: int) -> JobTimes:
        """When worker ``index``'s current or last job started and ended, and its last
        pickup that found nothing began; written by the worker, read without a system
        call."""
        row = self.counters.row(index)
        return JobTimes(
            row[JOB_STARTED_COLUMN] / 1e6, row[JOB_ENDED_COLUMN] / 1e6, row[EMPTY_COLUMN] / 1e6
        )

    def jobs_waiting(self) -> bool:
        """True if a job waits in ``queue/`` that no worker has locked.

        Asked only when every worker is busy, at most once per grow interval. The
        index keeps itself current from inotify on a local filesystem (reading the
        events costs one ``read``, and ``queue/`` is never re-read); on a network
        one it re-reads ``queue/`` and ``active/`` only if their mtimes changed,
        at most every half second.
        """
        if self._index is None:
            self._index = QueueIndex(self.queue.config)
        try:
            self._index.refresh()
        except OSError as err:
            _log.warning("reading %s to decide on more workers: %s", self.queue.dir, err)
            return False
        return self._index.head() is not None

    def close(self) -> None:
        """Release the supervisor's index of the queue."""
        if self._index is not None:
            self._index.close()

    def on_death(self, death: ChildDeath) -> None:
        """Say at once that a worker died, and count a timed-out worker's attempt."""
        attempt = self.counters.row(death.index)[ATTEMPT_COLUMN]
        jobid = self.running.get(death.index)
        # The dead worker's row is ours to reset now: its replacement starts clean.
        self.counters.set(death.index, DEADLINE_COLUMN, 0)
        self.running.set(death.index, "")
        if death.restart_in is None:
            then = "not restarting: stopping"
        elif death.restart_in:
            then = f"restarting in {death.restart_in:g} s"
        else:
            then = "restarting"
        who = f"worker {death.index + 1} (pid {death.pid})"
        timeout_ms = self.counters.row(death.index)[TIMEOUT_COLUMN]
        if death.overdue and timeout_ms:
            # The job's own time limit, or the worker's: the one its deadline kept.
            error = timed_out_message(timeout_ms / 1000)
            _log.warning("%s killed: job %s %s; %s", who, jobid, error, then)
            result = count_timed_out(
                self.queue, jobid, attempt, error, self.max_attempts,
                retry_delay=self.options.get("retry_delay", 0.0),
                retry_delay_max=self.options.get("retry_delay_max", 3600.0),
                keep_results=self.options.get("keep_results", False),
            )
            if result is not None:
                self.counters.add(death.index, COUNTED[result.outcome])
                self._said(result)
        else:
            _log.warning("%s died: %s; %s", who, death.cause, then)

    def _said(self, result: StepResult) -> None:
        """The timed-out attempt's outcome, told as a worker tells its own: to the
        ``on_result`` callback (here, in the supervisor), or else to the log."""
        if self.user_callback is not None:
            self.user_callback(result)
            return
        then = "moved to failed/" if result.outcome is Outcome.FAILED else "retried"
        _log.warning(
            "job %s failed (attempt %d of %d): %s; %s",
            result.jobid, result.attempt, result.max_attempts, result.error, then,
        )

    def reports(self, pids: list[int]) -> list[WorkerReport]:
        """Each worker's counts so far (``pids``: the current process of each)."""
        found = []
        for index, pid in enumerate(pids):
            row = self.counters.row(index)
            report = WorkerReport(pid=pid, stop_reason=stop_reason_of(row[STOP_COLUMN]))
            for outcome, column in COUNTED.items():
                report.counts[outcome.value] = row[column]
            found.append(report)
        return found


def _microseconds() -> int:
    """``time.monotonic()`` in µs: one clock for every process of the host, so the
    supervisor can compare a worker's times with its own."""
    return int(time.monotonic() * 1e6)
