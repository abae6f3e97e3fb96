"""The ``dq`` subcommands that run jobs: ``dq deque`` (one job, one command) and
``dq server`` (a persistent server of one or more workers), with their output: a line
for every failed attempt, a progress display, and a summary that never shares standard
output with the jobs' own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from ..coord import PeriodicOfferer
from ..errors import DirQueueError
from ..queue import DirQueue
from ..stats import jobs_left
from ..tasks import TaskHandler, periodic_tasks
from ..worker import (
    CommandHandler,
    Handler,
    Outcome,
    StepResult,
    Worker,
    WorkerReport,
    load_handler,
)
from ..workers import run_workers, timeout_needs_supervisor
from ._commands import (
    EXIT_FAILURE,
    EXIT_JOBS_FAILED,
    EXIT_NO_JOB,
    EXIT_OK,
    Context,
    UsageError,
)
from ._output import Progress, escape_controls, isatty, print_json, table
from ._signals import StopAnnouncer

__all__ = ["cmd_deque", "cmd_server"]


def _command_from(args: argparse.Namespace) -> list[str]:
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    return command


def cmd_deque(ctx: Context) -> int:
    """``dq deque``: run a command on one job, as one step of a :class:`Worker`."""
    args = ctx.args
    command = _command_from(args)
    if not command:
        raise UsageError("give the command to run on the job, like: dq deque --dir Q -- cat")
    queue = ctx.consumer_queue()
    worker = Worker(
        queue,
        CommandHandler(command),
        max_attempts=args.max_attempts,
        njobs=1,
        until_empty=args.wait == 0,
        idle_timeout=args.wait or None,
        timeout=args.timeout,
    )
    with worker.signal_handlers(), StopAnnouncer(ctx.say).wrapping():
        # Short steps while waiting, so that a signal ends the wait promptly.
        result = worker.run_once()
        while result.outcome is Outcome.IDLE and not worker.stopping:
            result = worker.run_once()
    if result.outcome in (Outcome.IDLE, Outcome.STOPPED):
        ctx.say(f"no job waiting in {queue.dir}")
        return EXIT_NO_JOB
    return _report_step(ctx, result, result.max_attempts or args.max_attempts)


def _report_step(ctx: Context, result: StepResult, max_attempts: int) -> int:
    if result.outcome is Outcome.FINISHED:
        return EXIT_OK
    if result.outcome is Outcome.RETRIED:
        ctx.say(
            f"job {result.jobid} failed (attempt {result.attempt} of {max_attempts}):"
            f" {result.error}; returned to the queue"
        )
    elif result.outcome is Outcome.FAILED and not result.ran:
        ctx.say(f"job {result.jobid} {_not_run(result, max_attempts)}")
    elif result.outcome is Outcome.FAILED:
        ctx.say(
            f"job {result.jobid} failed (attempt {result.attempt} of {max_attempts}):"
            f" {result.error}; moved to failed/ (see 'dq show {result.jobid}')"
        )
    elif result.outcome is Outcome.RETURNED:
        ctx.say(f"interrupted: job {result.jobid} returned to the queue")
    return EXIT_FAILURE


def _not_run(result: StepResult, max_attempts: int) -> str:
    """Why a job went to ``failed/`` without running: its attempts were spent before."""
    spent = f"{result.attempt} failed attempt{'s' if result.attempt != 1 else ''}"
    return (
        f"not run: its {spent} already reach{'es' if result.attempt == 1 else ''}"
        f" --max-attempts {max_attempts} (last error: {result.error});"
        f" moved to failed/ (see 'dq show {result.jobid}')"
    )


def _load_handler(ctx: Context, spec: str) -> Handler:
    """``load_handler``, its failures as one line (the traceback too, with ``-v``)."""
    if ":" not in spec:
        raise UsageError(f"--handler {spec!r} is not MODULE:FUNCTION: write it like tasks:handle")
    try:
        return load_handler(spec)
    except Exception as err:
        # ValueError: the library's own words (no such module or function, not callable).
        # Anything else was raised by the module's own code as it was imported: a
        # SyntaxError, or whatever its top level raised.
        if ctx.args.verbose:
            ctx.err.write("".join(traceback.format_exception(err)))
        if isinstance(err, ValueError):
            message = str(err)
        else:
            first = (str(err).strip().splitlines() or [""])[0]
            message = (
                f"cannot import handler module {spec.rpartition(':')[0]!r}:"
                f" {type(err).__name__}: {first}"
            )
        if not ctx.args.verbose:
            message += " (-v shows the traceback)"
        raise DirQueueError(message) from err


def _server_handler(ctx: Context) -> Handler:
    args = ctx.args
    command = _command_from(args)
    if args.handler and command:
        raise UsageError("give either --handler MODULE:FUNCTION or a command after --, not both")
    if args.periodic:
        args.tasks = [*(args.tasks or []), *args.periodic]  # Their jobs are task jobs.
    if args.tasks:
        # Task jobs to the tasks' handler; plain ones to the handler or command, if any.
        plain = _load_handler(ctx, args.handler) if args.handler else None
        # (Loaded before the queue is checked, as a handler is: its errors come first.)
        return TaskHandler(ctx.queue(), args.tasks, fallback=plain or (
            CommandHandler(command, capture_stdout=args.keep_results) if command else None))
    if not args.handler and not command:
        raise UsageError(
            "give a handler: --handler MODULE:FUNCTION, or a command after --"
            " (dq server --dir Q -- COMMAND ARG...)"
        )
    if args.handler:
        return _load_handler(ctx, args.handler)
    return CommandHandler(command, capture_stdout=args.keep_results)


@contextlib.contextmanager
def _job_output_to_stderr() -> Iterator[None]:
    """Within the block, what jobs write to standard output goes to standard error.

    For ``dq server --json``: standard output then carries the JSON summary alone, so
    ``dq server --json -- cat > summary.json`` gives a file that parses. Done on the
    file descriptors, so that commands and forked workers inherit it.
    """
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield  # Not real files (an embedding program): nothing to redirect.
        return
    sys.stdout.flush()
    saved = os.dup(out_fd)
    os.dup2(err_fd, out_fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()  # A Python handler's print()s: to stderr with the rest.
        os.dup2(saved, out_fd)
        os.close(saved)


def _periodic_offerer(queue: DirQueue, modules: list[str]) -> PeriodicOfferer:
    """The offerer of the periodic tasks ``modules`` define for ``queue``, imported
    here, before any worker is forked (each worker offers at each of its steps)."""
    for module in modules:
        importlib.import_module(module)  # TaskHandler has imported it already.
    offerer = PeriodicOfferer(queue, periodic_tasks())
    if not offerer.tasks:
        raise UsageError(
            f"--periodic {' '.join(modules)}: no @q.periodic task there is for the queue"
            f" {queue.dir!r}: define them with q = TaskQueue({queue.dir!r}) and"
            " @q.periodic(every=...)"
        )
    return offerer


def _clearing_progress(handler: Handler, progress: Progress) -> Handler:
    def handle(job: Any) -> object:
        progress.clear()  # The job may write to the terminal: not onto the bar's line.
        return handler(job)

    return handle


def cmd_server(ctx: Context) -> int:
    """``dq server``: run a handler or command on job after job, in N workers.

    The jobs own standard output; everything ``dq`` says (progress, ``-v`` lines, the
    summary) is on standard error, and ``--json`` puts the summary alone on standard
    output (the jobs' output then goes to standard error) or in ``--json-file``.
    """
    args = ctx.args
    handler = _server_handler(ctx)
    queue = ctx.consumer_queue()
    njobs = args.njobs or None
    count_total = _Total(queue, njobs)
    total = count_total(0) if args.until_empty else 0
    progress = Progress(
        f"{ctx.prog}", total, ctx.err, enabled=args.until_empty and not args.quiet
    )
    least, most = args.workers
    if progress.tty and most > 1 and (args.verbose or isatty(sys.stdout)):
        # Forked workers write their jobs' output and -v lines at any moment; a bar
        # redrawn in place would land in them. Whole lines only, then.
        progress = Progress(f"{ctx.prog}", total, io.StringIO(), enabled=False)
    ctx.progress = progress
    if progress.tty:
        handler = _clearing_progress(handler, progress)
    verbose = args.verbose
    # A server that runs until stopped says where it listens and a line per job, as
    # rq's worker does: silence there looks like a hang. --until-empty has its bar.
    each_job = verbose or not (args.until_empty or args.quiet)
    if not (args.until_empty or args.quiet):
        ctx.say(_serving_line(queue.dir, args))

    def on_result(result: StepResult) -> None:
        if result.outcome in (Outcome.RETRIED, Outcome.FAILED, Outcome.LOST):
            # Every failed attempt, as it happens, whatever the verbosity: a failing
            # command must never go unnoticed.
            ctx.say(_failure_line(result, result.max_attempts or args.max_attempts))
            if verbose and result.detail:
                ctx.err.write(escape_controls(result.detail.rstrip("\n")) + "\n")
        elif each_job:
            ctx.say(_job_line(result, verbose))

    options = _worker_options(args, queue)
    announcer = StopAnnouncer(ctx.say)
    scale = _Peak(least)
    redirect = _job_output_to_stderr() if args.json else contextlib.nullcontext()
    started = time.monotonic()
    with redirect:
        if most == 1 and not timeout_needs_supervisor(handler, args.timeout):
            reports = _serve_here(
                ctx, _AnnouncingWorker(queue, handler, njobs=njobs, announcer=announcer,
                                       **options), on_result, progress, count_total
            )
        else:

            def on_progress(jobs: int, reports: list[WorkerReport]) -> None:
                # Called in the supervisor, whose signal handlers are up by now.
                announcer.wrap_installed()
                progress.update(jobs, count_total(jobs) if progress.shown else None)

            options.update(on_progress=on_progress, on_result=on_result, njobs=njobs)
            try:
                reports = _serve_forked(ctx, queue, handler, scale, options)
            finally:
                progress.close()
    elapsed = time.monotonic() - started
    ctx.progress = None
    _print_server_summary(ctx, reports, elapsed, scale.peak if least < most else None)
    if not all(r.exit_code == 0 for r in reports):
        return EXIT_FAILURE
    moved = sum(r.counts[Outcome.FAILED.value] for r in reports)
    if moved and (args.until_empty or njobs):
        ctx.say(f"{moved} job{'s' if moved != 1 else ''} moved to failed/: see 'dq list --failed'")
        return EXIT_JOBS_FAILED
    return EXIT_OK


def _worker_options(args: argparse.Namespace, queue: DirQueue) -> dict[str, Any]:
    """The options ``dq server`` gives each :class:`Worker`."""
    options: dict[str, Any] = {
        "max_attempts": args.max_attempts,
        "until_empty": args.until_empty,
        "idle_timeout": args.idle_timeout,
        "poll_interval": args.poll_interval,
        "timeout": args.timeout,
        "retry_delay": args.retry_delay,
        "retry_delay_max": max(args.retry_delay_max, args.retry_delay),
        "keep_results": args.keep_results,
    }
    if args.periodic:
        options["on_step"] = _periodic_offerer(queue, args.periodic).tick
    return options


class _Peak:
    """The most workers an elastic server ran at once."""

    def __init__(self, peak: int) -> None:
        self.peak = peak


def _serve_forked(
    ctx: Context, queue: DirQueue, handler: Handler, scale: _Peak, options: dict[str, Any]
) -> list[WorkerReport]:
    """``run_workers`` with ``--workers``, saying each change in their number."""
    args = ctx.args

    def on_scale(count: int, note: str) -> None:
        # Each change, as it happens: a pool that grows and shrinks unseen cannot be
        # told from one that is stuck.
        scale.peak = max(scale.peak, count)
        if not args.quiet:
            ctx.say(_scale_line(note))

    return run_workers(
        queue, handler, args.workers, shrink_after=args.shrink_after,
        grow_interval=args.grow_interval, on_scale=on_scale, **options,
    )


def _scale_line(note: str) -> str:
    """A line for a change in the number of workers (or a signal that changed none)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    return f"{stamp} workers {note}"


def _serving_line(directory: str, args: argparse.Namespace) -> str:
    """What a server that runs until stopped says first: where, how many, what."""
    least, most = args.workers
    workers = f"{most} worker{'s' if most != 1 else ''}"
    if least < most:
        workers = f"{least} to {most} workers (more while jobs wait)"
    command = shlex.join(_command_from(args))
    what = f"handler {args.handler}" if args.handler else f"command {command}"
    until = f", stopping after {args.njobs} jobs" if args.njobs else ""
    return (
        f"serving {os.path.abspath(directory)} with {workers}, {what}{until}"
        " (a line per job; Ctrl-C stops after the jobs running)"
    )


def _job_line(result: StepResult, verbose: bool) -> str:
    """One line for a job that did not fail: when, which job, what became of it, how long."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    where = f" [worker pid {os.getpid()}]" if verbose else ""
    return f"{stamp} job {result.jobid} {result.outcome.value} in {result.seconds:.3f}s{where}"


class _Total:
    """The progress display's total: jobs done so far plus those still in the queue
    (waiting, held or deferred), so that jobs submitted during a drain count too.

    Read again whenever the count done reaches the last total (where a stale one would
    stall the display at 100%), and otherwise at most every half second, or less
    often on a big queue: never more than a twentieth of the run's time goes to it
    (listing 100,000 names takes about 0.2 s).
    """

    def __init__(self, queue: Any, njobs: int | None) -> None:
        self.queue = queue
        self.njobs = njobs
        self._total = 0
        self._read_at: float | None = None
        self._every = 0.5

    def __call__(self, done: int) -> int:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self._every or done >= self._total:
            left = jobs_left(self.queue)
            self._read_at = time.monotonic()
            self._every = max(0.5, 20 * (self._read_at - now))
            self._total = done + left
            if self.njobs:
                # njobs counts attempts taken; a total of jobs is at most that.
                self._total = min(self._total, self.njobs)
        return max(self._total, done)


def _failure_line(result: StepResult, max_attempts: int) -> str:
    """One line for a failed attempt: when, which job, which attempt, what, and what next."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    what = f"{stamp} job {result.jobid} attempt {result.attempt}/{max_attempts}"
    if result.outcome is Outcome.LOST:
        return f"{what}: {result.error}; left to its new holder"
    if result.outcome is Outcome.FAILED and not result.ran:
        return f"{stamp} job {result.jobid} {_not_run(result, max_attempts)}"
    if result.outcome is Outcome.FAILED:
        return f"{what} failed: {result.error}; moved to failed/ (dq show {result.jobid})"
    when = f"in {result.retry_in:.1f}s" if result.retry_in > 0 else "at once"
    return f"{what} failed: {result.error}; retried {when}"


class _AnnouncingWorker(Worker):
    """A :class:`Worker` whose signal handlers first say what the signal does."""

    def __init__(self, *args: Any, announcer: StopAnnouncer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._announcer = announcer

    @contextlib.contextmanager
    def signal_handlers(self) -> Iterator[None]:
        with super().signal_handlers(), self._announcer.wrapping():
            yield


def _serve_here(
    ctx: Context, worker: Worker, on_result: Any, progress: Progress, total: _Total
) -> list[WorkerReport]:
    done = 0

    def on_result_local(result: StepResult) -> None:
        nonlocal done
        on_result(result)
        if result.outcome in (Outcome.FINISHED, Outcome.FAILED):
            done += 1
        progress.update(done, total(done) if progress.shown else None)

    worker.on_result = on_result_local
    try:
        return [worker.run()]
    finally:
        progress.close()


def _summary(
    reports: list[WorkerReport], elapsed: float, peak: int | None = None
) -> dict[str, Any]:
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    elastic = {} if peak is None else {"workers_peak": peak}
    return {
        **elastic,
        "workers": [r.as_dict() for r in reports],
        "jobs": sum(r.jobs for r in reports),
        "attempts": sum(r.attempts for r in reports),
        **{o.value: sum(r.counts[o.value] for r in reports) for o in outcomes},
        "seconds": round(elapsed, 3),
        "restarts": sum(r.restarts for r in reports),
    }


def _write_json_file(path: str, value: Any) -> None:
    """``value`` as JSON in ``path``, replaced whole (a reader never sees half of it)."""
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as file:
        print_json(value, file)
    os.replace(partial, path)


def _print_server_summary(
    ctx: Context, reports: list[WorkerReport], elapsed: float, peak: int | None
) -> None:
    """The table of workers (a row per slot: an elastic pool reuses the slot of a
    worker let go) and the totals; ``peak``: the most an elastic pool ran at once."""
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    jobs = sum(r.jobs for r in reports)
    attempts = sum(r.attempts for r in reports)
    if ctx.args.json_file:
        _write_json_file(ctx.args.json_file, _summary(reports, elapsed, peak))
    if ctx.args.json:
        print_json(_summary(reports, elapsed, peak), ctx.out)
        ctx.out.flush()
        return
    if ctx.args.quiet:
        return
    rows = [["worker", "pid", "attempts", *(o.value for o in outcomes), "stopped because"]]
    for number, report in enumerate(reports, 1):
        rows.append(
            [
                str(number),
                str(report.pid),
                str(report.attempts),
                *(str(report.counts[o.value]) for o in outcomes),
                report.stop_reason,
            ]
        )
    if len(reports) > 1:
        rows.append(
            [
                "total",
                "",
                str(attempts),
                *(str(sum(r.counts[o.value] for r in reports)) for o in outcomes),
                "",
            ]
        )
    # On stderr: standard output is the jobs'.
    ctx.err.write(table(rows, right=frozenset(range(1, 7))) + "\n")
    restarts = sum(r.restarts for r in reports)
    if restarts:
        ctx.err.write(f"{restarts} worker restart{'s' if restarts != 1 else ''}\n")
    if peak is not None:
        least, most = ctx.args.workers
        ctx.err.write(f"workers {least} to {most}: at most {peak} at once\n")
    rate = jobs / elapsed if elapsed > 0 else 0.0
    # Jobs brought to an end, each once however many attempts it took.
    counted = f"{jobs} job{'s' if jobs != 1 else ''}"
    if attempts != jobs:
        counted += f" ({attempts} attempt{'s' if attempts != 1 else ''})"
    ctx.err.write(escape_controls(f"{counted} in {elapsed:.2f}s ({rate:.1f} jobs/s)") + "\n")
    ctx.err.flush()
