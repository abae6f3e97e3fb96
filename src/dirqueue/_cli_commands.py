"""The ``dq`` subcommands: each builds a :class:`DirQueue`, calls the library, prints.

A subcommand is a function of a :class:`Context` (the parsed arguments and where to
print) that returns the exit status: :data:`EXIT_OK`, :data:`EXIT_FAILURE`,
:data:`EXIT_NO_JOB` (``dq deque`` found no job), or it raises :class:`UsageError` for a
command line that cannot be run as given (:data:`EXIT_USAGE`) and lets the library's
errors through for :func:`dirqueue.cli.main` to report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO, Any, Final

from ._cli_output import Progress, escape_controls, format_age, format_size, print_json, table
from .errors import DirQueueError
from .failed import FailedJob, FailedStore
from .queue import DirQueue
from .repair import RepairReport
from .stats import JobInfo, list_jobs, queue_stats, require_queue
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

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NO_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "Context",
    "UsageError",
    "cmd_deque",
    "cmd_fsck",
    "cmd_list",
    "cmd_purge",
    "cmd_requeue",
    "cmd_server",
    "cmd_stats",
    "cmd_submit",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_JOB: Final = 3


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


class Context:
    """What a subcommand works with: the parsed arguments, and where to print."""

    def __init__(self, args: argparse.Namespace, out: IO[str], err: IO[str], prog: str):
        self.args = args
        self.out = out
        self.err = err
        self.prog = prog

    def queue(self) -> DirQueue:
        """The queue named by ``--dir`` (and ``--fanout``)."""
        return DirQueue(self.args.dir, queue_fanout=bool(getattr(self.args, "fanout", False)))

    def say(self, text: str) -> None:
        """A note for people, on stderr (stdout carries the results); escaped."""
        self.err.write(f"{self.prog}: {escape_controls(text)}\n")
        self.err.flush()

    def line(self, text: str) -> None:
        """A line of results for people, on stdout; escaped (tables escape their cells)."""
        self.out.write(escape_controls(text) + "\n")


def cmd_submit(ctx: Context) -> int:
    """``dq submit``: enqueue each file (or stdin); print the new job ids."""
    args = ctx.args
    files: list[str] = args.files
    if files.count("-") > 1:
        raise UsageError("'-' (standard input) can be given only once")
    for path in files:
        if path != "-" and not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            raise DirQueueError(f"{path} {what}: give the files to submit, or - for stdin")
    queue = ctx.queue()
    metadata = dict(args.meta or [])
    progress = Progress(
        f"{ctx.prog}", len(files), ctx.err, enabled=len(files) > 1 and not args.quiet
    )
    started = time.monotonic()
    try:
        for index, path in enumerate(files, 1):
            if path == "-":
                jobid = queue.enqueue_fh(sys.stdin.buffer, metadata, args.priority)
            else:
                jobid = queue.enqueue_file(path, metadata, args.priority)
            if progress.tty:
                # Keep the bar on its own line when ids share the terminal.
                ctx.err.write("\r\033[K")
            ctx.out.write(jobid + "\n")
            ctx.out.flush()
            progress.update(index)
    finally:
        progress.close()
    if len(files) > 1 and not args.quiet:
        elapsed = time.monotonic() - started
        ctx.say(
            f"submitted {len(files)} jobs to {queue.dir} in {elapsed:.2f}s"
            f" ({len(files) / max(elapsed, 1e-9):.0f} jobs/s)"
        )
    return EXIT_OK


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
    queue = ctx.queue()
    worker = Worker(
        queue,
        CommandHandler(command),
        max_attempts=args.max_attempts,
        njobs=1,
        until_empty=args.wait == 0,
        idle_timeout=args.wait or None,
        timeout=args.timeout,
    )
    with worker.signal_handlers():
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
            f" {result.error}; moved to failed/ (see 'dq list --failed')"
        )
    elif result.outcome is Outcome.RETURNED:
        ctx.say(f"interrupted: job {result.jobid} returned to the queue")
    return EXIT_FAILURE


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
        try:
            return load_handler(args.handler)
        except ValueError as err:
            raise DirQueueError(str(err)) from err
    return CommandHandler(command)


def cmd_server(ctx: Context) -> int:
    """``dq server``: run a handler or command on job after job, in N workers."""
    args = ctx.args
    handler = _server_handler(ctx)
    queue = ctx.queue()
    queue.create()  # A server may start before the first submission.
    njobs = args.njobs or None
    total = queue_stats(queue).queued if args.until_empty else 0
    if njobs and args.until_empty:
        total = min(total, njobs)
    progress = Progress(
        f"{ctx.prog}", total, ctx.err, enabled=args.until_empty and not args.quiet
    )
    verbose = args.verbose

    def on_result(result: StepResult) -> None:
        if verbose:
            text = f"{result.outcome.value} {result.jobid} in {result.seconds:.3f}s"
            if result.error:
                text += f": {result.error}"
            ctx.say(f"[{os.getpid()}] {text}")

    options: dict[str, Any] = {
        "max_attempts": args.max_attempts,
        "until_empty": args.until_empty,
        "idle_timeout": args.idle_timeout,
        "poll_interval": args.poll_interval,
        "timeout": args.timeout,
    }
    started = time.monotonic()
    if args.workers == 1 and not timeout_needs_supervisor(handler, args.timeout):
        done = 0

        def on_result_local(result: StepResult) -> None:
            nonlocal done
            on_result(result)
            if result.outcome is not Outcome.RETRIED:
                done += 1
            progress.update(done)

        worker = Worker(queue, handler, njobs=njobs, on_result=on_result_local, **options)
        try:
            reports = [worker.run()]
        finally:
            progress.close()
    else:

        def on_progress(jobs: int, reports: list[WorkerReport]) -> None:
            retried = sum(r.counts[Outcome.RETRIED.value] for r in reports)
            progress.update(jobs - retried)

        try:
            reports = run_workers(
                queue,
                handler,
                args.workers,
                njobs=njobs,
                on_progress=on_progress,
                on_result=on_result if verbose else None,
                **options,
            )
        finally:
            progress.close()
    elapsed = time.monotonic() - started
    _print_server_summary(ctx, reports, elapsed)
    return EXIT_OK if all(r.exit_code == 0 for r in reports) else EXIT_FAILURE


def _print_server_summary(ctx: Context, reports: list[WorkerReport], elapsed: float) -> None:
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    jobs = sum(r.jobs for r in reports)
    if ctx.args.json:
        print_json(
            {
                "workers": [r.as_dict() for r in reports],
                "jobs": jobs,
                **{o.value: sum(r.counts[o.value] for r in reports) for o in outcomes},
                "seconds": round(elapsed, 3),
                "restarts": sum(r.restarts for r in reports),
            },
            ctx.out,
        )
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
    ctx.out.write(table(rows, right=frozenset(range(1, 7))) + "\n")
    restarts = sum(r.restarts for r in reports)
    if restarts:
        ctx.line(f"{restarts} worker restart{'s' if restarts != 1 else ''}")
    rate = jobs / elapsed if elapsed > 0 else 0.0
    ctx.line(f"{jobs} jobs in {elapsed:.2f}s ({rate:.1f} jobs/s)")
    ctx.out.flush()


def cmd_list(ctx: Context) -> int:
    """``dq list``: the queue's jobs (or the failed ones), as a table or JSON."""
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    if args.failed:
        failed = list(FailedStore(queue).jobs())
        if args.count:
            _print_count(ctx, len(failed))
        elif args.json:
            print_json([f.as_dict() for f in failed], ctx.out)
        else:
            _print_failed(ctx, failed)
        return EXIT_OK
    infos = list(list_jobs(queue))
    if args.count:
        _print_count(ctx, len(infos))
    elif args.json:
        print_json([info.as_dict() for info in infos], ctx.out)
    else:
        _print_jobs(ctx, infos)
    return EXIT_OK


def _print_count(ctx: Context, count: int) -> None:
    if ctx.args.json:
        print_json({"count": count}, ctx.out)
    else:
        ctx.line(str(count))


def _meta_text(metadata: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in metadata.items())


def _print_jobs(ctx: Context, infos: list[JobInfo]) -> None:
    if not infos:
        ctx.line(f"no jobs in {ctx.args.dir}")
        return
    rows = [["job id", "state", "pri", "size", "age", "tries", "worker", "metadata"]]
    for info in infos:
        job = info.job
        worker = f"{job.active_host}:{job.active_pid}" if job.active_pid else "-"
        rows.append(
            [
                job.jobid,
                info.state,
                f"{job.priority:02d}",
                format_size(job.get_data_size_bytes()),
                format_age(info.age),
                str(info.attempts),
                worker,
                _meta_text(job.metadata),
            ]
        )
    ctx.out.write(table(rows, right=frozenset({3, 4, 5}), clip={7: 40}) + "\n")
    # Below the table, unclipped: why an old lock is not stale, or when a job is taken
    # again. The summary stays the last line.
    for info in infos:
        if info.note:
            ctx.line(f"note: {info.job.jobid}: {info.note}")
    counts = {s: sum(1 for i in infos if i.state == s) for s in ("queued", "active", "stale")}
    ctx.line(", ".join(f"{n} {s}" for s, n in counts.items()))


def _print_failed(ctx: Context, failed: list[FailedJob]) -> None:
    if not failed:
        ctx.line(f"no failed jobs in {ctx.args.dir}")
        return
    now = time.time()
    rows = [["job id", "tries", "failed", "size", "error"]]
    for job in failed:
        rows.append(
            [
                job.jobid,
                str(job.attempts),
                format_age(now - job.failed_at) + " ago",
                format_size(job.size_bytes),
                job.error,
            ]
        )
    ctx.out.write(table(rows, right=frozenset({1, 2, 3}), clip={4: 60}) + "\n")
    ctx.line(f"{len(failed)} failed")


def cmd_stats(ctx: Context) -> int:
    """``dq stats``: :func:`queue_stats` as a table or JSON."""
    queue = ctx.queue()
    require_queue(queue)
    stats = queue_stats(queue)
    if ctx.args.json:
        print_json(stats.as_dict(), ctx.out)
        return EXIT_OK
    rows = [
        ["queued", str(stats.queued)],
        ["active", str(stats.active)],
        ["stale", str(stats.stale)],
        ["failed", str(stats.failed)],
        ["oldest waiting", format_age(stats.oldest_waiting_age)],
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value in rows:
        ctx.line(f"{name.ljust(width)}  {value.rjust(value_width)}")
    return EXIT_OK


def cmd_requeue(ctx: Context) -> int:
    """``dq requeue``: put failed jobs back in the queue (:class:`FailedStore`)."""
    args = ctx.args
    if not args.jobids and not args.failed:
        raise UsageError("name the failed jobs to requeue, or give --failed for all of them")
    queue = ctx.queue()
    require_queue(queue)
    store = FailedStore(queue)
    done = [store.requeue(j) for j in args.jobids] if args.jobids else store.requeue_all()
    for jobid in done:
        ctx.line(jobid)
    ctx.say(f"requeued {len(done)} failed job{'' if len(done) == 1 else 's'}")
    return EXIT_OK


def cmd_purge(ctx: Context) -> int:
    """``dq purge``: delete failed jobs (:meth:`FailedStore.purge`)."""
    args = ctx.args
    if not args.failed:
        raise UsageError("say what to purge: --failed (only failed jobs can be purged)")
    queue = ctx.queue()
    require_queue(queue)
    purged = FailedStore(queue).purge(args.jobids or None, older_than=args.older_than)
    for jobid in purged:
        ctx.line(jobid)
    ctx.say(f"purged {len(purged)} failed job{'' if len(purged) == 1 else 's'}")
    return EXIT_OK


def cmd_fsck(ctx: Context) -> int:
    """``dq fsck``: :meth:`DirQueue.fsck`, or :meth:`DirQueue.repair` with ``--repair``."""
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    check = queue.repair if args.repair else queue.fsck
    report = check(min_age=args.min_age)
    if args.json:
        print_json(report.to_dict(), ctx.out)
    else:
        _print_report(ctx, report)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _print_report(ctx: Context, report: RepairReport) -> None:
    if report.findings:
        rows = [["problem", "path", "what is wrong", "action"]]
        rows.extend(
            [f.kind, os.path.relpath(f.path, report.directory), f.detail, f.action]
            for f in report.findings
        )
        ctx.out.write(table(rows) + "\n")
    problems, unfixed = len(report.problems), len(report.unfixed)
    summary = (
        f"{report.jobs_checked} job{'' if report.jobs_checked == 1 else 's'} checked,"
        f" {problems} problem{'' if problems == 1 else 's'} found"
    )
    if not problems:
        ctx.line(summary)
    elif report.dry_run:
        ctx.line(summary + ", nothing changed")
        ctx.say("run 'dq fsck --repair' to fix them (corrupt jobs are moved aside,"
                " never deleted)")
    else:
        ctx.line(f"{summary}, {problems - unfixed} fixed")
        if unfixed:
            ctx.say(f"{unfixed} problem{'' if unfixed == 1 else 's'} could not be fixed:"
                    " see the action column")
