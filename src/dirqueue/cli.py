"""The ``dq`` command line: a thin layer over the Python API.

Each subcommand builds a :class:`DirQueue`, calls the library, and prints. Errors become
one line on stderr and an exit status: 2 for a usage error, 1 for a failure, 3 when
``dq deque`` finds no job. The Perl module's tools (``dq-submit``, ``dq-deque``,
``dq-server``, ``dq-list``) are the same subcommands under their old names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import IO, Any, Final, NoReturn

from . import __version__
from .errors import DirQueueError
from .failed import FailedJob, FailedStore
from .queue import DirQueue
from .repair import DEFAULT_MIN_AGE, RepairReport
from .stats import JobInfo, list_jobs, queue_stats, require_queue
from .worker import (
    DEFAULT_MAX_ATTEMPTS,
    CommandHandler,
    Handler,
    Outcome,
    StepResult,
    Worker,
    WorkerReport,
    load_handler,
    run_workers,
)

__all__ = ["EXIT_FAILURE", "EXIT_NO_JOB", "EXIT_OK", "EXIT_USAGE", "escape_controls", "main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_JOB: Final = 3

#: Submissions of at least this many files print progress lines when not on a terminal.
_PLAIN_PROGRESS_MIN: Final = 20


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line that say where to look."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes what was typed (an unknown argument, a bad choice) as it is.
        message = escape_controls(message)
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


# -- output helpers ------------------------------------------------------------------

#: What a listing must not send to a terminal as it is, beyond C0 controls (which JSON
#: escapes by itself): DEL and the C1 controls (U+009B is CSI to many terminals), the
#: bidi marks, embeddings, overrides and isolates that reorder what is shown (Trojan
#: Source), the Unicode line and paragraph separators, and lone surrogates (a file
#: name's undecodable bytes, which cannot be written as UTF-8 at all).
_UNSAFE_BEYOND_C0: Final = (
    r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
)
_UNSAFE_RE: Final = re.compile(rf"[\\\x00-\x1f{_UNSAFE_BEYOND_C0}]")
_UNSAFE_IN_JSON_RE: Final = re.compile(rf"[{_UNSAFE_BEYOND_C0}]")
_SHORT_ESCAPES: Final = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` safe to show on a terminal: controls written as escapes, visibly.

    Metadata, host names, error text and file names in a queue are whatever the
    submitter or a hostile file name made them; shown raw, an escape sequence could
    clear the operator's screen, retitle the window or hide a line. C0 and C1 controls
    and DEL become ``\\x1b``-style escapes (``\\t``, ``\\n``, ``\\r`` by their short
    names), bidi controls, line separators and lone surrogates ``\\u202e``-style, and
    a backslash is doubled, so the escaped form reads back unambiguously. Every
    human-readable line ``dq`` prints goes through this function.
    """
    return _UNSAFE_RE.sub(_escape_char, text)


def _clipped(text: str, limit: int) -> str:
    """``text`` escaped and cut to ``limit`` characters with ``...``, never mid-escape."""
    shown = escape_controls(text)
    if len(shown) <= limit:
        return shown
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = escape_controls(char)
        if used + len(piece) > limit - 3:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + "..."


def format_age(seconds: float | None) -> str:
    """``"42s"``, ``"3m 07s"``, ``"2h 05m"``, ``"3d 04h"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    secs = int(max(0.0, seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h {secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d {secs % 86400 // 3600:02d}h"


def format_size(size: int) -> str:
    """``"512 B"``, ``"1.5 KiB"``, ``"20.0 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_AGE_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*")
_AGE_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` as seconds."""
    match = _AGE_RE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: write a number with s, m, h, d or w, like 30m or 7d"
        )
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def _meta_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE: write it like owner=alice")
    return key, value


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 99") from None
    if not 0 <= value <= 99:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 0 (first) to 99 (last)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = parse_age(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _table(
    rows: Sequence[Sequence[str]],
    right: frozenset[int] = frozenset(),
    clip: dict[int, int] | None = None,
) -> str:
    """Rows as aligned columns; the first row is the header; ``right`` columns align right.

    Every cell is escaped (see :func:`escape_controls`), and cut to ``clip[column]``
    characters where given, before the columns are measured.
    """
    limits = clip or {}
    rows = [
        [
            _clipped(cell, limits[i]) if i in limits else escape_controls(cell)
            for i, cell in enumerate(row)
        ]
        for row in rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _print_json(value: Any, out: IO[str]) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    # json.dumps escapes C0 controls but leaves DEL, C1 controls, bidi controls and lone
    # surrogates raw. Outside strings JSON is ASCII, so each of these is in a string,
    # where \uXXXX stands for exactly that character: the value read back is unchanged.
    text = _UNSAFE_IN_JSON_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    out.write(text + "\n")


class Progress:
    """A progress bar on a terminal, plain lines elsewhere (written to ``stream``).

    On a terminal it redraws one line with ``\\r`` at most ten times a second. Elsewhere
    it prints a line at each tenth of the way, when there is enough to be worth it.
    """

    def __init__(
        self,
        label: str,
        total: int,
        stream: IO[str],
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.tty = enabled and _isatty(stream)
        self.plain = enabled and not self.tty and total >= _PLAIN_PROGRESS_MIN
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._last_draw = 0.0
        self._last_tenth = 0
        self._drawn = False

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` items are done (of ``total``, if it changed)."""
        self.done = done
        if total is not None:
            self.total = total
        self.total = max(self.total, done)
        if self.tty:
            now = self._clock()
            if now - self._last_draw >= 0.1 or done >= self.total:
                self._last_draw = now
                self._draw()
        elif self.plain and self.total:
            tenth = done * 10 // self.total
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(f"{self.label}: {done}/{self.total} ({tenth * 10}%)\n")
                self.stream.flush()

    def _draw(self) -> None:
        width = 30
        total = self.total or 1
        filled = width * self.done // total
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total}"
            f" {100 * self.done // total:3d}%  {rate:7.1f}/s"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self.tty and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- the commands --------------------------------------------------------------------


class _Context:
    def __init__(self, args: argparse.Namespace, out: IO[str], err: IO[str], prog: str):
        self.args = args
        self.out = out
        self.err = err
        self.prog = prog

    def queue(self) -> DirQueue:
        return DirQueue(self.args.dir, queue_fanout=bool(getattr(self.args, "fanout", False)))

    def say(self, text: str) -> None:
        """A note for people, on stderr (stdout carries the results); escaped."""
        self.err.write(f"{self.prog}: {escape_controls(text)}\n")
        self.err.flush()

    def line(self, text: str) -> None:
        """A line of results for people, on stdout; escaped (tables escape their cells)."""
        self.out.write(escape_controls(text) + "\n")


def cmd_submit(ctx: _Context) -> int:
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


def cmd_deque(ctx: _Context) -> int:
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


def _report_step(ctx: _Context, result: StepResult, max_attempts: int) -> int:
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


def _server_handler(ctx: _Context) -> Handler:
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


def cmd_server(ctx: _Context) -> int:
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
    }
    started = time.monotonic()
    if args.workers == 1:
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


def _print_server_summary(ctx: _Context, reports: list[WorkerReport], elapsed: float) -> None:
    outcomes = (Outcome.FINISHED, Outcome.RETRIED, Outcome.FAILED, Outcome.RETURNED)
    jobs = sum(r.jobs for r in reports)
    if ctx.args.json:
        _print_json(
            {
                "workers": [r.as_dict() for r in reports],
                "jobs": jobs,
                **{o.value: sum(r.counts[o.value] for r in reports) for o in outcomes},
                "seconds": round(elapsed, 3),
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
    ctx.out.write(_table(rows, right=frozenset(range(1, 7))) + "\n")
    rate = jobs / elapsed if elapsed > 0 else 0.0
    ctx.line(f"{jobs} jobs in {elapsed:.2f}s ({rate:.1f} jobs/s)")
    ctx.out.flush()


def cmd_list(ctx: _Context) -> int:
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    if args.failed:
        failed = list(FailedStore(queue).jobs())
        if args.count:
            _print_count(ctx, len(failed))
        elif args.json:
            _print_json([f.as_dict() for f in failed], ctx.out)
        else:
            _print_failed(ctx, failed)
        return EXIT_OK
    infos = list(list_jobs(queue))
    if args.count:
        _print_count(ctx, len(infos))
    elif args.json:
        _print_json([info.as_dict() for info in infos], ctx.out)
    else:
        _print_jobs(ctx, infos)
    return EXIT_OK


def _print_count(ctx: _Context, count: int) -> None:
    if ctx.args.json:
        _print_json({"count": count}, ctx.out)
    else:
        ctx.line(str(count))


def _meta_text(metadata: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in metadata.items())


def _print_jobs(ctx: _Context, infos: list[JobInfo]) -> None:
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
    ctx.out.write(_table(rows, right=frozenset({3, 4, 5}), clip={7: 40}) + "\n")
    counts = {s: sum(1 for i in infos if i.state == s) for s in ("queued", "active", "stale")}
    ctx.line(", ".join(f"{n} {s}" for s, n in counts.items()))


def _print_failed(ctx: _Context, failed: list[FailedJob]) -> None:
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
    ctx.out.write(_table(rows, right=frozenset({1, 2, 3}), clip={4: 60}) + "\n")
    ctx.line(f"{len(failed)} failed")


def cmd_stats(ctx: _Context) -> int:
    queue = ctx.queue()
    require_queue(queue)
    stats = queue_stats(queue)
    if ctx.args.json:
        _print_json(stats.as_dict(), ctx.out)
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


def cmd_requeue(ctx: _Context) -> int:
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


def cmd_purge(ctx: _Context) -> int:
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


def cmd_fsck(ctx: _Context) -> int:
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    check = queue.repair if args.repair else queue.fsck
    report = check(min_age=args.min_age)
    if args.json:
        _print_json(report.to_dict(), ctx.out)
    else:
        _print_report(ctx, report)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _print_report(ctx: _Context, report: RepairReport) -> None:
    if report.findings:
        rows = [["problem", "path", "what is wrong", "action"]]
        rows.extend(
            [f.kind, os.path.relpath(f.path, report.directory), f.detail, f.action]
            for f in report.findings
        )
        ctx.out.write(_table(rows) + "\n")
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


# -- the parser ----------------------------------------------------------------------

_EPILOGS: Final = {
    "submit": "example:\n  dq submit --dir /var/spool/q --priority 10 --meta owner=alice *.txt",
    "deque": "example:\n  dq deque --dir /var/spool/q -- wc -l    # runs: wc -l DATAFILE",
    "server": (
        "examples:\n"
        "  dq server --dir /var/spool/q --workers 4 --handler mytasks:handle\n"
        "  dq server --dir /var/spool/q --until-empty -- ./process.sh"
    ),
    "list": "examples:\n  dq list --dir /var/spool/q\n  dq list --dir /var/spool/q --failed --json",
    "stats": "example:\n  dq stats --dir /var/spool/q --json",
    "requeue": "examples:\n  dq requeue --dir /var/spool/q --failed\n  dq requeue --dir Q JOBID",
    "purge": "example:\n  dq purge --dir /var/spool/q --failed --older-than 7d",
    "fsck": (
        "examples:\n  dq fsck --dir /var/spool/q\n"
        "  dq fsck --dir /var/spool/q --repair --min-age 10m"
    ),
}

_HELP: Final = {
    "submit": "submit files (or stdin) as jobs; prints their ids",
    "deque": "run a command on one job: COMMAND ARG... DATAFILE",
    "server": "run a handler or command on job after job, in N worker processes",
    "list": "list the jobs in a queue (or the failed ones)",
    "stats": "count queued, active, stale and failed jobs",
    "requeue": "put failed jobs back in the queue",
    "purge": "delete failed jobs",
    "fsck": "check a queue for what crashed processes left behind; --repair fixes it",
}


def build_parser(prog: str = "dq") -> argparse.ArgumentParser:
    """The ``dq`` argument parser, with one subparser per subcommand."""
    parser = _Parser(
        prog=prog,
        description="dq: a job queue in a directory, compatible with Perl's IPC::DirQueue.",
        epilog="Run 'dq COMMAND --help' for a command's options. Docs: docs/cli.md",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--dir", required=True, metavar="Q", help="the queue directory")
    common.add_argument(
        "--fanout",
        action="store_true",
        help="spread new jobs over queue/0 ... queue/f (the Perl tools' --fanout)",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    alias = prog.startswith("dq-")  # dq-submit and friends: one subcommand, its own name

    def add(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            prog=prog if alias else f"{prog} {name}",
            parents=[common],
            help=_HELP[name],
            description=_HELP[name],
            epilog=_EPILOGS[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add("submit")
    p.add_argument("--priority", type=_priority, default=50, help="0 (first) to 99; default 50")
    p.add_argument(
        "--meta", type=_meta_item, action="append", metavar="KEY=VALUE", help="metadata; repeat"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument("files", nargs="+", metavar="FILE", help="files to submit; - reads stdin")
    p.set_defaults(func=cmd_submit)

    p = add("deque")
    p.add_argument(
        "--wait", type=_seconds_or_zero, default=0.0, metavar="SECONDS",
        help="wait this long for a job (default: do not wait)",
    )
    p.add_argument(
        "--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
        help=f"failed attempts before a job moves to failed/ (default {DEFAULT_MAX_ATTEMPTS})",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=cmd_deque)

    _server_options(add("server"))

    p = add("list")
    p.add_argument("--count", action="store_true", help="print only how many jobs there are")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--failed", action="store_true", help="list the failed jobs instead")
    p.set_defaults(func=cmd_list)

    p = add("stats")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_stats)

    p = add("requeue")
    p.add_argument("--failed", action="store_true", help="requeue every failed job")
    p.add_argument("jobids", nargs="*", metavar="JOBID", help="failed jobs to requeue")
    p.set_defaults(func=cmd_requeue)

    p = add("purge")
    p.add_argument("--failed", action="store_true", help="purge failed jobs (required)")
    p.add_argument(
        "--older-than", type=parse_age, metavar="AGE",
        help="only jobs that failed at least this long ago (30m, 12h, 7d)",
    )
    p.add_argument("jobids", nargs="*", metavar="JOBID", help="only these failed jobs")
    p.set_defaults(func=cmd_purge)

    p = add("fsck")
    p.add_argument(
        "--repair", action="store_true",
        help="fix what is found (default: report only, change nothing)",
    )
    p.add_argument(
        "--min-age", type=_seconds_or_zero, default=DEFAULT_MIN_AGE, metavar="AGE",
        help="leave debris younger than this alone: a live process may own it"
        f" (default {DEFAULT_MIN_AGE / 3600:g}h; 10m, 2h, or seconds)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_fsck)
    return parser


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--handler", metavar="MODULE:FUNCTION", help="a Python function to call with each job"
    )
    p.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="worker processes"
    )
    p.add_argument(
        "--njobs", type=_count, default=0, metavar="N",
        help="stop after N jobs in all (0: no limit; the Perl tool's option)",
    )
    p.add_argument("--until-empty", action="store_true", help="stop when no job is waiting")
    p.add_argument(
        "--idle-timeout", type=_seconds, metavar="SECONDS",
        help="stop after this long without a job (also 30s, 5m, 1h)",
    )
    p.add_argument(
        "--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
        help=f"failed attempts before a job moves to failed/ (default {DEFAULT_MAX_ATTEMPTS})",
    )
    p.add_argument(
        "--poll-interval", type=_seconds, default=1.0, metavar="SECONDS",
        help="how often to look for jobs from other hosts (default 1)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="a line per job on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
    p.set_defaults(func=cmd_server)


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = parse_age(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "dq",
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run ``dq`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser(prog)
    try:
        # argparse prints help and errors on sys.stdout/sys.stderr; send them where
        # the caller asked.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    sub_prog = prog if prog.startswith("dq-") else f"{prog} {args.subcommand}"
    ctx = _Context(args, out, err, sub_prog)
    func: Callable[[_Context], int] = args.func
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(ctx)
            return func(ctx)
    except UsageError as error:
        ctx.say(f"{error} (see '{sub_prog} --help')")
        return EXIT_USAGE
    except (DirQueueError, OSError, ValueError) as error:
        # Library errors say what was wrong and what to do; ValueError is what the
        # API raises for a bad setting (such as an empty --dir). They may quote a
        # file name or a metadata item, so they are escaped like everything else.
        ctx.say(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err.write(f"{sub_prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


def _warning_printer(ctx: _Context) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints the library's warnings as escaped notes.

    The library warns about what it skips or breaks (a corrupt job, a stale lock) and
    quotes the file name or the lock's host, which are not to be trusted; Python's own
    printer would send them to the terminal raw. Which warnings are shown is still up
    to the warnings filters (``-W``, ``PYTHONWARNINGS``).
    """

    def show(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        text = str(message).removeprefix("dirqueue: ")
        ctx.say(f"warning: {text}")

    return show


def run() -> NoReturn:
    """The ``dq`` console script."""
    sys.exit(main())


#: The Perl tools' options. Their Getopt::Long also takes them with one dash.
_PERL_OPTIONS: Final = ("dir", "njobs", "count", "fanout")


def perl_arguments(argv: Sequence[str]) -> list[str]:
    """``-dir Q`` and ``-dir=Q`` (Getopt::Long style) as ``--dir Q``, up to the command."""
    converted = []
    for index, arg in enumerate(argv):
        name = arg[1:].split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and name in _PERL_OPTIONS:
            converted.append("-" + arg)
        elif arg == "--" or not arg.startswith("-"):
            # Past the options: the rest (a file list, or the command) is as given,
            # apart from the values of options we just converted.
            if index and converted and converted[-1] in ("--dir", "--njobs"):
                converted.append(arg)
                continue
            converted.extend(argv[index:])
            break
        else:
            converted.append(arg)
    return converted


def _alias(subcommand: str) -> NoReturn:
    prog = f"dq-{subcommand}"
    sys.exit(main([subcommand, *perl_arguments(sys.argv[1:])], prog=prog))


def perl_submit() -> NoReturn:
    """``dq-submit``: IPC::DirQueue's tool, as ``dq submit``."""
    _alias("submit")


def perl_deque() -> NoReturn:
    """``dq-deque``: IPC::DirQueue's tool, as ``dq deque``."""
    _alias("deque")


def perl_server() -> NoReturn:
    """``dq-server``: IPC::DirQueue's tool, as ``dq server``."""
    _alias("server")


def perl_list() -> NoReturn:
    """``dq-list``: IPC::DirQueue's tool, as ``dq list``."""
    _alias("list")
