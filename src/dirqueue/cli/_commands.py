"""The ``dq`` subcommands: each builds a :class:`DirQueue`, calls the library, prints.

A subcommand is a function of a :class:`Context` (the parsed arguments and where to
print) that returns the exit status: :data:`EXIT_OK`, :data:`EXIT_FAILURE`,
:data:`EXIT_NO_JOB` (``dq deque`` found no job), :data:`EXIT_JOBS_FAILED` (a ``dq server``
run moved jobs to ``failed/``), or it raises :class:`UsageError` for a
command line that cannot be run as given (:data:`EXIT_USAGE`) and lets the library's
errors through for :func:`dirqueue.cli.main` to report. The subcommands that run jobs
(``deque``, ``server``) are in :mod:`dirqueue.cli._run`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import IO, Final

from .._results import count_results, read_result, remove_expired
from ..errors import DirQueueError, NoSuchJobError
from ..failed import FailedJob, FailedStore
from ..queue import DirQueue
from ..repair import RepairReport
from ..stats import STATES, JobInfo, QueueNotFoundError, list_jobs, require_queue
from ._data import open_job_data, print_data
from ._groups import group_lines, groups_json, print_group_lines
from ._output import (
    Progress,
    escape_controls,
    format_age,
    format_size,
    isatty,
    print_json,
    print_nl,
    replace_file,
    table,
)
from ._show import show_job
from ._stats import Snapshot, Watcher, prometheus_text, snapshot

__all__ = [
    "EXIT_FAILURE",
    "EXIT_JOBS_FAILED",
    "EXIT_NO_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "Context",
    "UsageError",
    "cmd_fsck",
    "cmd_list",
    "cmd_purge",
    "cmd_requeue",
    "cmd_result",
    "cmd_show",
    "cmd_stats",
    "cmd_submit",
]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_JOB: Final = 3
#: ``dq server --until-empty`` / ``--njobs``: the run ended, and moved jobs to failed/.
EXIT_JOBS_FAILED: Final = 4


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


class Context:
    """What a subcommand works with: the parsed arguments, and where to print."""

    def __init__(self, args: argparse.Namespace, out: IO[str], err: IO[str], prog: str):
        self.args = args
        self.out = out
        self.err = err
        self.prog = prog
        #: The progress bar being drawn on ``err``, taken off the screen before a note.
        self.progress: Progress | None = None

    def queue(self) -> DirQueue:
        """The queue named by ``--dir`` (or ``$DQ_DIR``), and ``--fanout``."""
        return DirQueue(self.args.dir, queue_fanout=bool(getattr(self.args, "fanout", False)))

    def consumer_queue(self) -> DirQueue:
        """The queue for ``deque`` and ``server``: it must exist, unless ``--create``.

        A worker on a mistyped path would otherwise make an empty queue there and wait
        on it for ever, while the jobs pile up in the real one.
        """
        queue = self.queue()
        if self.args.create:
            queue.create()
            return queue
        try:
            require_queue(queue)
        except QueueNotFoundError:
            raise DirQueueError(
                f"no queue at {queue.dir!r}: check --dir (or DQ_DIR), or give --create"
                " to start on a new, empty queue"
            ) from None
        return queue

    def say(self, text: str) -> None:
        """A note for people, on stderr (stdout carries the results); escaped."""
        if self.progress is not None:
            self.progress.clear()
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
            when = {"delay": args.delay, "not_before": args.at, "unique_key": args.unique,
                    "unique_while": args.unique_while, "depends_on": args.after,
                    "group": args.group, "dirqueue_only": args.dirqueue_only}
            if path == "-":
                jobid = queue.enqueue_fh(sys.stdin.buffer, metadata, args.priority, **when)
            else:
                jobid = queue.enqueue_file(path, metadata, args.priority, **when)
            if progress.tty:
                # Keep the bar on its own line when ids share the terminal.
                ctx.err.write("\r\033[K")
            ctx.out.write(jobid + "\n")
            if getattr(jobid, "existing", False):
                ctx.say(f"{path}: not submitted: job {jobid} holds key {args.unique!r}")
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


def cmd_list(ctx: Context) -> int:
    """``dq list``: the queue's jobs (or the failed ones), as a table or JSON."""
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    if args.corrupt:
        _list_corrupt(ctx, queue)
        return EXIT_OK
    if args.failed:
        failed = list(FailedStore(queue).jobs())
        if args.count:
            _print_count(ctx, len(failed))
        elif args.json:
            print_json([f.as_dict() for f in failed], ctx.out)
        elif args.nl:
            print_nl((f.as_dict() for f in failed), ctx.out)
        else:
            _print_failed(ctx, failed)
        return EXIT_OK
    infos = list(list_jobs(queue))
    if args.count:
        _print_count(ctx, len(infos))
    elif args.json:
        print_json([info.as_dict() for info in infos], ctx.out)
    elif args.nl:
        print_nl((info.as_dict() for info in infos), ctx.out)
    else:
        _print_jobs(ctx, infos, count_results(queue.config))
    return EXIT_OK


def _print_count(ctx: Context, count: int) -> None:
    if ctx.args.nl:
        print_nl([{"count": count}], ctx.out)
    elif ctx.args.json:
        print_json({"count": count}, ctx.out)
    else:
        ctx.line(str(count))


def _meta_text(metadata: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in metadata.items())


def _print_jobs(ctx: Context, infos: list[JobInfo], results: int = 0) -> None:
    # Finished jobs that kept their answers are counted, not listed (dq result JOBID).
    kept = f", {results} result{'' if results == 1 else 's'} kept" if results else ""
    if not infos:
        ctx.line(f"no jobs in {ctx.args.dir}{kept}")
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
    counts = {s: sum(1 for i in infos if i.state == s) for s in STATES}
    for rare in ("deferred", "waiting"):
        if not counts[rare]:
            del counts[rare]  # Named only when there are some.
    ctx.line(", ".join(f"{n} {s}" for s, n in counts.items()) + kept)


def _list_corrupt(ctx: Context, queue: DirQueue) -> None:
    """``dq list --corrupt``: :meth:`DirQueue.corrupt_jobs` as a table, a count or JSON."""
    entries = queue.corrupt_jobs()
    if ctx.args.count:
        _print_count(ctx, len(entries))
    elif ctx.args.json:
        print_json([e.as_dict() for e in entries], ctx.out)
    elif ctx.args.nl:
        print_nl((e.as_dict() for e in entries), ctx.out)
    elif not entries:
        ctx.line(f"no corrupt jobs in {ctx.args.dir}")
    else:
        rows = [["name", "moved at", "moved by", "reason"]]
        rows += [[e.name, e.moved_at or "-", e.moved_by or "-",
                  e.reason or "(no readable .reason file)"]
                 for e in entries]
        ctx.out.write(table(rows) + "\n")
        ctx.line(f"{len(entries)} in {queue.layout.corrupt_dir} (kept: dirqueue deletes"
                 " nothing there; see docs/durability.md to put a mended job back)")


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
    # The error's whole first line (a command's exit status is at its end); the rest
    # of it, and the traceback or the command's stderr, is in 'dq show JOBID'.
    ctx.out.write(table(rows, right=frozenset({1, 2, 3})) + "\n")
    ctx.line(f"{len(failed)} failed (see 'dq show JOBID' for a whole error and its detail)")


def cmd_stats(ctx: Context) -> int:
    """``dq stats``: :func:`queue_stats` as a table, JSON or Prometheus text; or live."""
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    form = "json" if args.json else args.format
    output: str | None = getattr(args, "output", None)
    if args.watch is not None:
        if form == "prometheus":
            # No "see --help" here: every usage error gets that hint once, from main().
            raise UsageError(
                "--watch shows a live view: for Prometheus, run 'dq stats --format"
                " prometheus --output FILE' from cron or a timer"
            )
        if output is not None:
            raise UsageError("--output writes one reading: leave out --watch")
        return _watch(ctx, queue, form)
    snap = snapshot(queue)
    if output is None:
        _print_stats(snap, form, ctx.out, queue)
        return EXIT_OK
    text = io.StringIO()
    _print_stats(snap, form, text, queue)
    replace_file(output, text.getvalue())
    return EXIT_OK


def _print_stats(
    snap: Snapshot, form: str, out: IO[str], queue: DirQueue | None = None
) -> None:
    """One reading of ``dq stats`` in ``form`` (table, json or prometheus) on ``out``;
    with ``queue``, its limited groups too (table and json)."""
    groups = [] if queue is None or form == "prometheus" else groups_json(queue)
    if form == "json":
        print_json({**snap.as_dict(), "groups": groups} if groups else snap.as_dict(), out)
    elif form == "prometheus":
        out.write(prometheus_text(snap))
    else:
        stats = snap.stats
        rows = [
            ["queued", str(stats.queued)],
            ["active", str(stats.active)],
            ["stale", str(stats.stale)],
            ["failed", str(stats.failed)],
            ["deferred", str(stats.deferred)],
            ["oldest waiting", format_age(stats.oldest_waiting_age)],
        ]
        if stats.waiting:  # Only queues with dependants have a line for them.
            rows.insert(5, ["waiting", str(stats.waiting)])
        if stats.results:  # Only queues that keep answers have a line for them.
            rows.insert(4, ["results", str(stats.results)])
        for host, count in snap.workers_by_host.items():  # Servers at work, if any.
            rows.append([f"workers {host}", str(count)])
        width = max(len(r[0]) for r in rows)
        value_width = max(len(r[1]) for r in rows)
        for name, value in rows:
            out.write(escape_controls(f"{name.ljust(width)}  {value.rjust(value_width)}") + "\n")
        if groups and queue is not None:
            print_group_lines(queue, out)


def _watch(ctx: Context, queue: DirQueue, form: str) -> int:
    """``dq stats --watch``: redrawn in place on a terminal, a line per refresh elsewhere
    (a JSON object per line with ``--json``); until Ctrl-C or ``--iterations``."""
    args = ctx.args
    watcher = Watcher()
    in_place = form == "table" and isatty(ctx.out)
    drawn = 0
    shown = 0
    try:
        while True:
            snap = snapshot(queue)
            if form == "json":
                print_nl([{"time": round(snap.taken_at, 3), **snap.as_dict()}], ctx.out)
            elif in_place:
                rows = watcher.table(snap)
                # Up over the last block and clear it, then draw the new one.
                ctx.out.write(f"\033[{drawn}F\033[J" if drawn else "")
                ctx.out.write(f"{queue.dir}  (every {args.watch:g}s; Ctrl-C to stop)\n")
                ctx.out.write("\n".join(rows) + "\n")
                drawn = len(rows) + 1
            else:
                ctx.line(watcher.plain(snap))
            ctx.out.flush()
            shown += 1
            if args.iterations and shown >= args.iterations:
                return EXIT_OK
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK  # The way to leave a live view, not an interruption.


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
    if not args.failed and not args.results:
        raise UsageError("say what to purge: --failed jobs, or expired --results")
    queue = ctx.queue()
    require_queue(queue)
    if args.results:
        expired = remove_expired(queue.config)
        ctx.say(f"purged {len(expired)} expired result{'' if len(expired) == 1 else 's'}")
        if not args.failed:
            return EXIT_OK
    store = FailedStore(queue)
    for jobid in args.jobids:
        store.get(jobid)  # Each one named must be there, as for 'dq requeue'.
    purged = store.purge(args.jobids or None, older_than=args.older_than)
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
    report = check(min_age=args.min_age, host=args.host)
    if args.json:
        print_json(report.to_dict(), ctx.out)
    elif args.nl:
        print_nl((f.to_dict() for f in report.findings), ctx.out)
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


def cmd_show(ctx: Context) -> int:
    """``dq show JOBID``: one job whole, queued, active, deferred or failed
    (:func:`show_job`)."""
    queue = ctx.queue()
    require_queue(queue)
    if ctx.args.data:
        print_data(open_job_data(queue, ctx.args.jobid), ctx.out)
        return EXIT_OK
    try:
        view = show_job(queue, ctx.args.jobid)
    except NoSuchJobError:
        if read_result(queue.config, ctx.args.jobid) is None:
            raise
        return cmd_result(ctx)  # Finished, and its answer kept: that is all there is.
    if ctx.args.json:
        print_json(view, ctx.out)
        return EXIT_OK
    now = time.time()
    rows = [
        ("job id", view["id"]),
        ("state", view["state"]),
        ("priority", f"{view['priority']:02d}"),
        ("submitted", _when(view["submitted"], now) + f" on {view['submitted_host']}"),
        ("data", f"{view['data_path']} ({format_size(view['size'])})"),
        ("attempts", f"{view['attempts']} failed so far" if view["state"] != "failed"
         else str(view["attempts"])),
    ]
    rows += [(f"meta {key}", value) for key, value in view["metadata"].items()]
    # The job's group's limits and holders (none for a job without a group).
    rows += group_lines(queue, only=view["metadata"].get("dq.group") or "")
    if view["worker"] is not None:
        worker = view["worker"]
        rows.append(("held by", f"{worker['host']} pid {worker['pid']}"))
    if view["lock_age"] is not None:
        rows.append(("lock touched", format_age(view["lock_age"]) + " ago"))
    if view["note"]:
        rows.append(("note", view["note"]))
    rows += [("after", " ".join(view["parents"]))] if view["parents"] else []
    rows += [("before", " ".join(view["children"]))] if view["children"] else []
    if view["state"] == "failed":
        rows.append(("failed", _when(view["failed_at"], now)
                     + f" on {view['failed_host']} (pid {view['failed_pid']})"))
        rows.append(("error", view["error"]))
    elif view["error"]:
        rows.append(("last error", view["error"]))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        ctx.line(f"{name.ljust(width)}  {value}")
    if view["detail"]:
        ctx.line("detail:")
        for text in str(view["detail"]).rstrip("\n").split("\n"):
            ctx.line("  " + text)
    return EXIT_OK


def cmd_result(ctx: Context) -> int:
    """``dq result JOBID``: a job's answer (:func:`read_result`): the value, or the
    failure with its traceback; ``--json`` prints the whole record."""
    queue = ctx.queue()
    require_queue(queue)
    record = read_result(queue.config, ctx.args.jobid)
    if record is None:
        raise NoSuchJobError(
            f"job {ctx.args.jobid} has no result in {queue.dir}: not finished yet, kept"
            " none (see result_ttl, dq server --keep-results), or expired", ctx.args.jobid
        )
    if ctx.args.json:
        print_json(record.as_dict(), ctx.out)
        return EXIT_FAILURE if record.status == "failed" else EXIT_OK
    if record.status == "failed":
        ctx.line(f"failed: {record.error_type}: {record.error_message}")
        for text in record.traceback.rstrip("\n").split("\n") if record.traceback else []:
            ctx.line("  " + text)
        return EXIT_FAILURE
    if record.kind == "json":
        print_json(record.value, ctx.out)
    elif record.kind == "str":
        ctx.out.write(record.value if record.value.endswith("\n") else record.value + "\n")
    elif record.kind == "bytes":  # A command's stdout, say: as it was.
        _write_bytes(ctx.out, record.decoded())
    else:  # A pickle, which only its own layer may load: base64, as kept.
        ctx.line(f"{record.kind} (base64): {record.value}")
    return EXIT_OK


def _write_bytes(out: IO[str], data: bytes) -> None:
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # A text-only stream (a test's StringIO).
        out.write(data.decode("utf-8", "replace"))
    else:
        buffer.write(data)
        buffer.flush()


def _when(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    return f"{stamp} ({format_age(now - seconds)} ago)"
