"""The ``dq`` subcommands that run jobs: ``dq deque`` (one job, one command) and
``dq server`` (a persistent server of one or more workers), with their output: a line
for every failed attempt, a progress display, and a summary that never shares standard
output with the jobs' own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from ._cli_commands import (
    EXIT_FAILURE,
    EXIT_JOBS_FAILED,
    EXIT_NO_JOB,
    EXIT_OK,
    Context,
    UsageError,
)
from ._cli_output import Progress, escape_controls, isatty, print_json, table
from ._cli_signals import StopAnnouncer
from .errors import DirQueueError
from .stats import queue_stats
from .worker import (
    CommandHandler,
    Handler,
    Outcome,
    StepResult,
    Worker,
    WorkerReport,
    load_handler,
    run_workers,
    timeout_needs_supervisor,
)

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
    return _report_step(ctx, result, args.max_attempts)


def _report_step(ctx: Context, result: StepResult, max_attempts: int) -> int:
    if result.outcome is Outcome.FINISHED:
        return EXIT_OK
    if result.outcome is Outcome.RETRIED:
        ctx.say(
            f"job {result.jobid} failed (attempt {result.attempt} of {max_attempts}):"
            f" {result.error}; returned to the queue"
        )
    elif result.outcome is Outcome.FAILED:
        ctx.say(
            f"job {result.jobid} failed (attempt {result.attempt} of {max_attempts}):"
            f" {result.error}; moved to failed/ (see 'dq show {result.jobid}')"
        )
    elif result.outcome is Outcome.RETURNED:
        ctx.say(f"interrupted: job {result.jobid} returned to the queue")
    return EXIT_FAILURE


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
    if not args.handler and not command:
        raise UsageError(
            "give a handler: --handler MODULE:FUNCTION, or a command after --"
            " (dq server --dir Q -- COMMAND ARG...)"
        )
    if args.handler:
        return _load_handler(ctx, args.handler)
    return CommandHandler(command)


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
    total = queue_stats(queue).queued if args.until_empty else 0
    if njobs and args.until_empty:
        total = min(total, njobs)
    progress = Progress(
        f"{ctx.prog}", total, ctx.err, enabled=args.until_empty and not args.quiet
    )
    if progress.tty and args.workers > 1 and (args.verbose or isatty(sys.stdout)):
        # Forked workers write their jobs' output and -v lines at any moment; a bar
        # redrawn in place would land in them. Whole lines only, then.
        progress = Progress(f"{ctx.prog}", total, io.StringIO(), enabled=False)
    ctx.progress = progress
    if progress.tty:
        handler = _clearing_progress(handler, progress)
    verbose = args.verbose

    def on_result(result: StepResult) -> None:
        if result.outcome in (Outcome.RETRIED, Outcome.FAILED, Outcome.LOST):
            # Every failed attempt, as it happens, whatever the verbosity: a failing
            # command must never go unnoticed.
            ctx.say(_failure_line(result, args.max_attempts))
            if verbose and result.detail:
                ctx.err.write(escape_controls(result.detail.rstrip("\n")) + "\n")
        elif verbose:
            text = f"{result.outcome.value} {result.jobid} in {result.seconds:.3f}s"
            ctx.say(f"[{os.getpid()}] {text}")

    options: dict[str, Any] = {
        "max_attempts": args.max_attempts,
        "until_empty": args.until_empty,
        "idle_timeout": args.idle_timeout,
        "poll_interval": args.poll_interval,
        "timeout": args.timeout,
        "retry_delay": args.retry_delay,
        "retry_delay_max": max(args.retry_delay_max, args.retry_delay),
    }
    announcer = StopAnnouncer(ctx.say)
    redirect = _job_output_to_stderr() if args.json else contextlib.nullcontext()
    started = time.monotonic()
    with redirect:
        if args.workers == 1 and not timeout_needs_supervisor(handler, args.timeout):
            reports = _serve_here(
                ctx, _AnnouncingWorker(queue, handler, njobs=njobs, announcer=announcer,
                                       **options), on_result, progress
            )
        else:

            def on_progress(jobs: int, reports: list[WorkerReport]) -> None:
                # Called in the supervisor, whose signal handlers are up by now.
                announcer.wrap_installed()
                retried = sum(r.counts[Outcome.RETRIED.value] for r in reports)
                progress.update(jobs - retried)

            try:
                reports = run_workers(
                    queue,
                    handler,
                    args.workers,
                    njobs=njobs,
                    on_progress=on_progress,
                    on_result=on_result,
                    **options,
                )
            finally:
                progress.close()
    elapsed = time.monotonic() - started
    ctx.progress = None
    _print_server_summary(ctx, reports, elapsed)
    if not all(r.exit_code == 0 for r in reports):
        return EXIT_FAILURE
    moved = sum(r.counts[Outcome.FAILED.value] for r in reports)
    if moved and (args.until_empty or njobs):
        ctx.say(f"{moved} job{'s' if moved != 1 else ''} moved to failed/: see 'dq list --failed'")
        return EXIT_JOBS_FAILED
    return EXIT_OK


def _failure_line(result: StepResult, max_attempts: int) -> str:
    """One line for a failed attempt: when, which job, which attempt, what, and what next."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    what = f"{stamp} job {result.jobid} attempt {result.attempt}/{max_attempts}"
    if result.outcome is Outcome.LOST:
        return f"{what}: {result.error}; left to its new holder"
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
    ctx: Context, worker: Worker, on_result: Any, progress: Progress
) -> list[WorkerReport]:
    done = 0

    def on_result_local(result: StepResult) -> None:
        nonlocal done
        on_result(result)
        if result.outcome is not Outcome.RETRIED:
            done += 1
        progress.update(done)

    worker.on_result = on_result_local
    try:
        return [worker.run()]
    finally:
        progress.close()


def _summary(reports: list[WorkerReport], elapsed: float) -> dict[str, Any]:
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    return {
        "workers": [r.as_dict() for r in reports],
        "jobs": sum(r.jobs for r in reports),
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


def _print_server_summary(ctx: Context, reports: list[WorkerReport], elapsed: float) -> None:
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    jobs = sum(r.jobs for r in reports)
    if ctx.args.json_file:
        _write_json_file(ctx.args.json_file, _summary(reports, elapsed))
    if ctx.args.json:
        print_json(_summary(reports, elapsed), ctx.out)
        ctx.out.flush()
        return
    if ctx.args.quiet:
        return
    rows = [["worker", "pid", "jobs", *(o.value for o in outcomes), "stopped because"]]
    for number, report in enumerate(reports, 1):
        rows.append(
            [
                str(number),
                str(report.pid),
                str(report.jobs),
                *(str(report.counts[o.value]) for o in outcomes),
                report.stop_reason,
            ]
        )
    if len(reports) > 1:
        rows.append(
            [
                "total",
                "",
                str(jobs),
                *(str(sum(r.counts[o.value] for r in reports)) for o in outcomes),
                "",
            ]
        )
    # On stderr: standard output is the jobs'.
    ctx.err.write(table(rows, right=frozenset(range(1, 7))) + "\n")
    restarts = sum(r.restarts for r in reports)
    if restarts:
        ctx.err.write(f"{restarts} worker restart{'s' if restarts != 1 else ''}\n")
    rate = jobs / elapsed if elapsed > 0 else 0.0
    ctx.err.write(escape_controls(f"{jobs} jobs in {elapsed:.2f}s ({rate:.1f} jobs/s)") + "\n")
    ctx.err.flush()
