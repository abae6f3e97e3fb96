"""Many workers: :func:`run_workers` runs N :class:`~dirqueue.worker.Worker` processes,
forked under the supervisor in :mod:`dirqueue._supervisor`, with their counters in
shared memory; and what the supervisor does when one dies (it says so at once, and
counts the attempt of a worker killed past its job's time limit). And
:func:`timeout_needs_supervisor`: whether a handler's time limit needs a supervisor
to be kept at all, even for one worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._command import CommandHandler
from ._handler import check_handler, timed_out_message
from ._outcomes import (
    ATTEMPT_COLUMN,
    COLUMNS,
    COUNTED,
    DEADLINE_COLUMN,
    JOBID_SIZE,
    STOP_COLUMN,
    TIMEOUT_COLUMN,
    Outcome,
    StepResult,
    WorkerReport,
    stop_code,
    stop_reason_of,
)
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
    workers: int,
    *,
    njobs: int | None = None,
    on_progress: Callable[[int, list[WorkerReport]], None] | None = None,
    progress_interval: float = 0.2,
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
    """
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    check_handler(handler)
    if not queue.exists:
        # Each worker would raise it, die and be restarted for ever: say it once.
        raise QueueNotFoundError(queue.dir)
    fleet = _Fleet(queue, handler, workers, njobs, worker_options)

    def on_tick(pids: list[int]) -> None:
        if on_progress is not None:
            now = fleet.reports(pids)
            on_progress(sum(r.jobs for r in now), now)

    results = supervise(
        workers,
        fleet.child_main,
        on_tick=on_tick,
        interval=progress_interval,
        restart=True,
        # Always: a job may bring its own time limit (dq.timeout) to any worker.
        deadline_of=fleet.deadline_of,
        on_death=fleet.on_death,
    )
    final = fleet.reports([r.pid for r in results])
    for report, result in zip(final, results, strict=True):
        report.exit_code = result.exit_code
        report.restarts = result.restarts
        if report.exit_code != 0:
            report.stop_reason = f"exit code {report.exit_code}"
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

    # -- in a worker ---------------------------------------------------------------

    def child_main(self, child: ChildContext) -> None:
        counters, running, index = self.counters, self.running, child.index

        def on_result(result: StepResult) -> None:
            column = COUNTED.get(result.outcome)
            if column is not None:
                counters.add(index, column)
            if self.user_callback is not None:
                self.user_callback(result)

        def on_running(jobid: str | None, attempt: int) -> None:
            if jobid is None:
                counters.set(index, DEADLINE_COLUMN, 0)
                return
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
            **self.options,
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
