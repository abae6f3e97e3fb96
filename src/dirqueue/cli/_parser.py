"""The ``dq`` argument parser: subcommands, their options, and the option types.

:func:`build_parser` makes one subparser per subcommand in :mod:`dirqueue.cli._commands`,
each with an example in its ``--help``; the option types (:func:`parse_age` and its
kin) turn a bad value into a usage error that says what to write instead.
"""

from __future__ import annotations

import argparse
import datetime
import re
from typing import Final, NoReturn

from .._elastic import DEFAULT_GROW_INTERVAL, DEFAULT_SHRINK_AFTER, parse_workers
from .._format import is_job_name, validate_metadata
from .._jobsettings import InvalidGroupError, check_group
from .._numbers import EPOCH_TIME, SECONDS, SECONDS_OR_ZERO, Range, check_number
from .._version import __version__
from ..errors import DirQueueError, InvalidMetadataError, InvalidNumberError
from ..limits import InvalidLimitError, parse_rate
from ..repair import DEFAULT_MIN_AGE
from ..web import EPILOG as WEB_EPILOG
from ..web import add_arguments as web_arguments
from ..web import run as run_web
from ..worker import DEFAULT_MAX_ATTEMPTS
from ._cancel import cmd_cancel, cmd_empty
from ._commands import (
    EXIT_OK,
    EXIT_USAGE,
    Context,
    cmd_fsck,
    cmd_list,
    cmd_purge,
    cmd_requeue,
    cmd_result,
    cmd_show,
    cmd_stats,
    cmd_submit,
)
from ._completion import INSTALL, SHELLS, complete_as, completion_script
from ._limits import cmd_limit
from ._output import escape_controls
from ._run import cmd_deque, cmd_server

__all__ = ["build_parser", "parse_age"]


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line that say where to look."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes what was typed (an unknown argument, a bad choice) as it is.
        message = escape_controls(message)
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


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
    try:
        # The format's own rules (no ':' in a name, no reserved Q names): a bad item
        # is a bad command line, found before anything is submitted.
        validate_metadata({key: value})
    except InvalidMetadataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return key, value


def _job_id(text: str) -> str:
    if not is_job_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job id: copy one from 'dq list' or 'dq list --failed'"
        )
    return text


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 99") from None
    if not 0 <= value <= 99:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 0 (first) to 99 (last)")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be {least} or more")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _workers(text: str) -> tuple[int, int]:
    """``--workers``: N, or LEAST:MOST for an elastic pool."""
    try:
        return parse_workers(text)
    except InvalidNumberError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _count(text: str) -> int:
    return _whole_number(text, 0)


def _duration(text: str) -> float:
    """Seconds, as a number or an age (``30s``, ``5m``)."""
    try:
        return float(text)
    except ValueError:
        return parse_age(text)


def _in_range(text: str, value: float, allowed: Range) -> float:
    """``value`` (read from ``text``) if the API would take it: the same check
    (:func:`dirqueue._numbers.check_number`), as a usage error (argparse names the
    option)."""
    try:
        return check_number(repr(text), value, allowed)
    except InvalidNumberError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: use {err.allowed}") from None


def _seconds(text: str) -> float:
    return _in_range(text, _duration(text), SECONDS)


def _when(text: str) -> float:
    """An ISO 8601 time (local unless it has a zone) or seconds since the epoch."""
    try:
        when = float(text)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: write it like 2026-12-24T18:00 (local time),"
                " 2026-12-24T18:00+00:00, or seconds since the epoch"
            ) from None
    return _in_range(text, when, EPOCH_TIME)


def _group(text: str) -> str:
    try:
        return check_group(text)
    except InvalidGroupError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _rate(text: str) -> str:
    try:
        parse_rate(text)
    except InvalidLimitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _seconds_or_zero(text: str) -> float:
    return _in_range(text, _duration(text), SECONDS_OR_ZERO)


# -- the parser ----------------------------------------------------------------------

_EPILOGS: Final = {
    "submit": "example:\n  dq submit --dir /var/spool/q --priority 10 --meta owner=alice *.txt",
    "deque": "example:\n  dq deque --dir /var/spool/q -- wc -l    # runs: wc -l DATAFILE",
    "server": (
        "examples:\n"
        "  dq server --dir /var/spool/q --workers 4 --handler mytasks:handle\n"
        "  dq server --dir /var/spool/q --workers 1:8 --shrink-after 1m -- ./convert\n"
        "  dq server --dir /var/spool/q --workers 2 --tasks myapp.tasks\n"
        "  dq server --dir /var/spool/q --until-empty -- ./process.sh"
    ),
    "list": "examples:\n  dq list --dir /var/spool/q\n  dq list --dir /var/spool/q --failed --json",
    "stats": (
        "examples:\n  dq stats --dir /var/spool/q --json\n"
        "  dq stats --dir /var/spool/q --watch 2\n"
        "  dq stats --dir Q --format prometheus"
        " --output /var/lib/node_exporter/textfile/q.prom"
    ),
    "show": (
        "examples:\n  dq show --dir /var/spool/q JOBID\n  dq show --dir Q --json JOBID\n"
        "  dq show --dir Q --data JOBID > job.bin"
    ),
    "limit": (
        "examples:\n  dq limit --dir /var/spool/q set gpu 2        # two gpu jobs at a time\n"
        "  dq limit --dir /var/spool/q set mail --rate 100/min\n"
        "  dq limit --dir /var/spool/q list\n  dq limit --dir /var/spool/q clear gpu"
    ),
    "result": "examples:\n  dq result --dir /var/spool/q JOBID\n  dq result --dir Q --json JOBID",
    "completion": (
        "examples:\n"
        "  dq completion bash > ~/.local/share/bash-completion/completions/dq\n"
        "  dq completion zsh > ~/.zfunc/_dq    # with fpath+=(~/.zfunc) in ~/.zshrc\n"
        "  dq completion fish > ~/.config/fish/completions/dq.fish\n"
        f"(needs shtab: {INSTALL})"
    ),
    "requeue": "examples:\n  dq requeue --dir /var/spool/q --failed\n  dq requeue --dir Q JOBID",
    "purge": "example:\n  dq purge --dir /var/spool/q --failed --older-than 7d",
    "cancel": "example:\n  dq cancel --dir /var/spool/q 50.20261128192616291083.DMzg5",
    "empty": "example:\n  dq empty --dir /var/spool/q",
    "watch": "examples:\n  dq watch --dir /var/spool/q\n  dq watch --dir /var/spool/q 10 --json",
    "web": WEB_EPILOG,
    "fsck": (
        "examples:\n  dq fsck --dir /var/spool/q\n"
        "  dq fsck --dir /var/spool/q --repair --min-age 10m\n"
        "  dq fsck --dir /var/spool/q --repair --host deadhost   # after a host died"
    ),
}

_HELP: Final = {
    "submit": "submit files (or stdin) as jobs; prints their ids",
    "deque": "run a command on one job: COMMAND ARG... DATAFILE",
    "server": "run a handler or command on job after job, in N worker processes",
    "list": "list the jobs in a queue (or the failed ones)",
    "show": "show one job whole: metadata, data, attempts, lock, the last error",
    "stats": "count queued, active, stale and failed jobs; --watch for a live view",
    "requeue": "put failed jobs back in the queue",
    "purge": "delete failed jobs, or expired results",
    "cancel": "delete waiting jobs without running them (not one a worker is running)",
    "empty": "delete every waiting job, queued and deferred (running jobs are left)",
    "watch": "a live view of the queue's counts: dq stats --watch",
    "limit": "set, list or clear groups' limits: N at a time, M a minute (docs/limits.md)",
    "result": "print a job's kept answer (its return value, or how it failed)",
    "fsck": "check a queue for what crashed processes left behind; --repair fixes it",
    "completion": "print a shell completion script for bash, zsh, fish or tcsh",
    "web": "a dashboard of queues in a browser, read-only unless --actions (docs/web.md)",
}

#: The subcommands that create jobs, the only ones --fanout means anything to.
_CREATE_JOBS: Final = frozenset({"submit"})
#: The names the Perl tools are installed as; they take --fanout, as the Perl tools do.
_PERL_TOOLS: Final = frozenset({"submit", "deque", "server", "list"})


def build_parser(prog: str = "dq") -> argparse.ArgumentParser:  # noqa: PLR0915 - one subparser after another
    """The ``dq`` argument parser, with one subparser per subcommand."""
    parser = _Parser(
        prog=prog,
        description="dq: a job queue in a directory, compatible with Perl's IPC::DirQueue.",
        epilog=(
            "Run 'dq COMMAND --help' for a command's options; 'python -m pydoc"
            " dirqueue' for the Python API. Exit status: 0 done, 1 failure, 2 usage"
            " error, 3 no job (dq deque). The queue directory defaults to $DQ_DIR."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    complete_as(common.add_argument(
        "--dir", metavar="Q", help="the queue directory (default: $DQ_DIR)"
    ), "directory")
    fanout = _Parser(add_help=False)
    fanout.add_argument(
        "--fanout",
        action="store_true",
        help="spread new jobs over queue/0 ... queue/f (the Perl tools' --fanout)",
    )
    hidden_fanout = _Parser(add_help=False)
    hidden_fanout.add_argument("--fanout", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    alias = prog.startswith("dq-")  # dq-submit and friends: one subcommand, its own name

    def add(name: str, *, queue: bool = True) -> argparse.ArgumentParser:
        parents = [common] if queue else []
        if name in _CREATE_JOBS:
            parents.append(fanout)
        elif alias and name in _PERL_TOOLS:
            parents.append(hidden_fanout)  # Old scripts pass it; it changes nothing here.
        p = sub.add_parser(
            name,
            prog=prog if alias else f"{prog} {name}",
            parents=parents,
            help=_HELP[name],
            description=_HELP[name],
            epilog=_EPILOGS[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(parser=p)
        return p

    p = add("submit")
    p.add_argument("--priority", type=_priority, default=50, help="0 (first) to 99; default 50")
    p.add_argument(
        "--meta", type=_meta_item, action="append", metavar="KEY=VALUE", help="metadata; repeat"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--delay", type=_seconds_or_zero, metavar="SECONDS",
        help="start the jobs this long from now (also 30s, 5m, 2h); they wait in deferred/",
    )
    when.add_argument(
        "--at", type=_when, metavar="TIME",
        help="start the jobs at TIME: ISO 8601 (2026-12-24T18:00, local time unless it"
        " has a zone) or seconds since the epoch",
    )
    p.add_argument(
        "--unique", metavar="KEY",
        help="submit only if no job with KEY is waiting, deferred or running (else print"
        " that job's id, and say so on stderr)",
    )
    p.add_argument(
        "--unique-while", choices=("active", "queued"), default="active",
        help="how long a job holds its --unique KEY: until it has ended (active, the"
        " default) or until a worker starts it (queued)",
    )
    p.add_argument(
        "--after", action="append", metavar="JOBID",
        help="wait in waiting/ until job JOBID has ended; repeat for several parents",
    )
    p.add_argument(
        "--group", type=_group, metavar="GROUP",
        help="the jobs' group, whose limits every dirqueue worker keeps (dq limit)",
    )
    p.add_argument(
        "--dirqueue-only", action="store_true",
        help="keep the jobs out of Perl workers' sight (queue/dq/): only dirqueue workers,"
        " which keep groups' limits, take them",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    complete_as(p.add_argument(
        "files", nargs="+", metavar="FILE", help="files to submit; - reads stdin"
    ), "file")
    p.set_defaults(func=cmd_submit)

    p = add("limit")
    p.add_argument("action", choices=("set", "list", "clear"), help="what to do")
    p.add_argument("group", nargs="?", type=_group, metavar="GROUP", help="the group")
    p.add_argument(
        "count", nargs="?", type=_positive_int, metavar="N",
        help="set: at most N of the group's jobs active at once, across hosts",
    )
    p.add_argument(
        "--rate", type=_rate, metavar="M/UNIT",
        help="set: at most M starts per UNIT (s, min, h, or e.g. 2s), across hosts",
    )
    p.add_argument("--json", action="store_true", help="list: a JSON array, with holders")
    p.set_defaults(func=cmd_limit)

    p = add("deque")
    p.add_argument(
        "--wait", type=_seconds_or_zero, default=0.0, metavar="SECONDS",
        help="wait this long for a job (default: do not wait)",
    )
    p.add_argument(
        "--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
        help=f"failed attempts before a job moves to failed/ (default {DEFAULT_MAX_ATTEMPTS})",
    )
    _create_option(p)
    _timeout_option(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    p.set_defaults(func=cmd_deque)

    _server_options(add("server"))

    p = add("list")
    p.add_argument("--count", action="store_true", help="print only how many jobs there are")
    _json_options(p, "a JSON array")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="list the failed jobs instead")
    which.add_argument(
        "--corrupt", action="store_true",
        help="list corrupt/ instead: jobs moved aside as unreadable, and why",
    )
    p.set_defaults(func=cmd_list)

    p = add("show")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print a JSON object")
    shown.add_argument(
        "--data", action="store_true",
        help="print the job's data instead: raw when piped, escaped on a terminal",
    )
    p.add_argument(
        "jobid", type=_job_id, metavar="JOBID", help="the job (queued, active or failed)"
    )
    p.set_defaults(func=cmd_show)

    p = add("result")
    p.add_argument("--json", action="store_true", help="print the whole record as JSON")
    p.add_argument("jobid", type=_job_id, metavar="JOBID", help="a job that kept its answer")
    p.set_defaults(func=cmd_result)

    p = add("stats")
    p.add_argument("--json", action="store_true", help="print a JSON object (--format json)")
    p.add_argument(
        "--format", choices=("table", "json", "prometheus"), default="table",
        help="table (default), json, or prometheus: the text format node_exporter's"
        " textfile collector reads",
    )
    p.add_argument(
        "--watch", type=_seconds, nargs="?", const=2.0, metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C: in place on a terminal,"
        " a line each time elsewhere (a JSON line with --json)",
    )
    p.add_argument(
        "--iterations", type=_positive_int, metavar="N",
        help="with --watch: stop after N refreshes",
    )
    complete_as(p.add_argument(
        "--output", metavar="FILE",
        help="write to FILE instead, replaced whole (written beside it, then renamed):"
        " for node_exporter's textfile collector",
    ), "file")
    p.set_defaults(func=cmd_stats)

    p = add("watch")
    p.add_argument("--json", action="store_true", help="a JSON object per refresh, one a line")
    p.add_argument(
        "watch", type=_seconds, nargs="?", default=2.0, metavar="SECONDS",
        help="refresh every SECONDS (default 2)",
    )
    p.add_argument("--iterations", type=_positive_int, metavar="N", help="stop after N refreshes")
    p.set_defaults(func=cmd_stats, format="table")

    p = add("cancel")
    p.add_argument(
        "jobids", nargs="+", type=_job_id, metavar="JOBID",
        help="waiting jobs (queued or deferred) to delete",
    )
    p.set_defaults(func=cmd_cancel)

    p = add("empty")
    p.set_defaults(func=cmd_empty)

    p = add("requeue")
    p.add_argument("--failed", action="store_true", help="requeue every failed job")
    p.add_argument(
        "jobids", nargs="*", type=_job_id, metavar="JOBID", help="failed jobs to requeue"
    )
    p.set_defaults(func=cmd_requeue)

    p = add("purge")
    p.add_argument("--failed", action="store_true", help="purge failed jobs")
    p.add_argument("--results", action="store_true", help="remove expired results")
    p.add_argument(
        "--older-than", type=parse_age, metavar="AGE",
        help="only jobs that failed at least this long ago (30m, 12h, 7d)",
    )
    p.add_argument(
        "jobids", nargs="*", type=_job_id, metavar="JOBID", help="only these failed jobs"
    )
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
    p.add_argument(
        "--host", metavar="HOST",
        help="a host known to be dead: also free the locks its workers hold (refused"
        " for this host, or one whose locks show a fresh heartbeat)",
    )
    _json_options(p, "a JSON object", nl="a JSON object per finding, one per line")
    p.set_defaults(func=cmd_fsck)

    p = add("web", queue=False)
    web_arguments(p)
    p.set_defaults(func=lambda ctx: run_web(ctx.args, ctx.out))

    p = add("completion", queue=False)
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help=", ".join(SHELLS))

    def print_completion(ctx: Context) -> int:
        try:
            # For the dq command, whatever name this one runs under (python -m dirqueue).
            script = completion_script(ctx.args.shell, build_parser("dq"))
        except ImportError as err:
            raise DirQueueError(str(err)) from None
        ctx.out.write(script)
        return EXIT_OK

    p.set_defaults(func=print_completion)
    return parser


def _json_options(
    p: argparse.ArgumentParser, what: str, nl: str = "one JSON object per line (ndjson)"
) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help=f"print {what}")
    group.add_argument("--nl", action="store_true", help=f"print {nl}")


def _create_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--create", action="store_true",
        help="make the queue if it does not exist (default: refuse a missing queue)",
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="a Python function to call with each job (MODULE installed or on PYTHONPATH,"
        " or a file: ./tasks.py:handle)",
    )
    p.add_argument(
        "--tasks", action="append", metavar="MODULE",
        help="run task jobs (see dirqueue.tasks) of the @q.task functions MODULE defines;"
        " repeatable. Plain jobs go to --handler or the command, if given",
    )
    p.add_argument(
        "--periodic", action="append", metavar="MODULE",
        help="offer the jobs of the @q.periodic tasks MODULE defines, each slot's once"
        " across every server on every host, and run them (as --tasks MODULE); repeatable",
    )
    p.add_argument(
        "--keep-results", action="store_true",
        help="keep every job's answer in results/ (the handler's return value, a failure;"
        " see dq result)",
    )
    p.add_argument(
        "--workers", type=_workers, default=(1, 1), metavar="N|LEAST:MOST",
        help="worker processes; LEAST:MOST (1:8) starts LEAST and more while every worker"
        " is busy and jobs wait, and lets idle ones go; SIGTTIN and SIGTTOU add or remove"
        " one (within 1 and MOST)",
    )
    p.add_argument(
        "--shrink-after", type=_seconds_or_zero, default=DEFAULT_SHRINK_AFTER,
        metavar="SECONDS",
        help="with LEAST:MOST, let a worker go once idle this long, while more than LEAST"
        f" run (also 30s, 5m; default {DEFAULT_SHRINK_AFTER:g})",
    )
    p.add_argument(
        "--grow-interval", type=_seconds_or_zero, default=DEFAULT_GROW_INTERVAL,
        metavar="SECONDS",
        help="with LEAST:MOST, start at most one worker this often while jobs wait"
        f" (default {DEFAULT_GROW_INTERVAL:g})",
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
    _timeout_option(p)
    _retry_options(p)
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="a line per job on stderr, and a failed attempt's traceback",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument(
        "--json", action="store_true",
        help="print the summary as JSON on stdout, alone: the jobs' stdout goes to stderr",
    )
    complete_as(p.add_argument(
        "--json-file", metavar="FILE",
        help="write the summary as JSON to FILE (the jobs keep stdout)",
    ), "file")
    _create_option(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
    p.set_defaults(func=cmd_server)


def _retry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retry-delay", type=_seconds_or_zero, default=0.0, metavar="SECONDS",
        help="wait before retrying a failed job (also 30s, 5m), doubling with each failed"
        " attempt, +-25%% jitter; the job waits in deferred/ (default 0: retry at once)",
    )
    p.add_argument(
        "--retry-delay-max", type=_seconds, default=3600.0, metavar="SECONDS",
        help="the longest wait between two attempts (default 1h)",
    )


def _timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS",
        help="fail an attempt that runs longer (also 30s, 5m): a command is killed with"
        " its process group, a Python handler's worker process is replaced",
    )
