"""The ``dq`` command line: a thin layer over the Python API.

Each subcommand builds a :class:`DirQueue`, calls the library, and prints. Errors become
one line on stderr and an exit status: 2 for a usage error, 1 for a failure, 3 when
``dq deque`` finds no job, 130 when interrupted. Output cut short by its reader (``dq
list | head -1``) is not an error: the exit status is 0 and nothing is printed. The
Perl module's tools (``dq-submit``, ``dq-deque``, ``dq-server``, ``dq-list``) are the
same subcommands under their old names.

This module holds the entry points (:func:`main`, the console scripts); the
subcommands are in :mod:`dirqueue.cli._commands`, the parser in
:mod:`dirqueue.cli._parser`, and what they print with in :mod:`dirqueue.cli._output`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Final, NoReturn

from ..errors import DirQueueError
from ._commands import (
    EXIT_FAILURE,
    EXIT_JOBS_FAILED,
    EXIT_NO_JOB,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    UsageError,
)
from ._output import Progress, escape_controls, format_age, format_size
from ._parser import build_parser, parse_age

__all__ = [
    "EXIT_FAILURE",
    "EXIT_JOBS_FAILED",
    "EXIT_NO_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "Progress",
    "UsageError",
    "build_parser",
    "escape_controls",
    "format_age",
    "format_size",
    "main",
    "parse_age",
    "perl_arguments",
    "perl_deque",
    "perl_list",
    "perl_server",
    "perl_submit",
    "run",
]


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
            args, unknown = parser.parse_known_args(argv)
            if unknown:
                # Reported by the subcommand's parser, so the message names it
                # ('dq server: unrecognized arguments'), not just 'dq'.
                args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    sub_prog = prog if prog.startswith("dq-") else f"{prog} {args.subcommand}"
    ctx = Context(args, out, err, sub_prog)
    func: Callable[[Context], int] = args.func
    try:
        if hasattr(args, "dir") and args.dir is None:
            args.dir = os.environ.get("DQ_DIR")
            if args.dir is None:
                raise UsageError("give the queue directory: --dir Q, or set DQ_DIR")
        with warnings.catch_warnings(), _library_log_shown(ctx):
            warnings.showwarning = _warning_printer(ctx)
            return func(ctx)
    except UsageError as error:
        ctx.say(f"{error} (see '{sub_prog} --help')")
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (dq list | head -1): what it did not read was not
        # wanted. Python's own advice: point stdout at /dev/null, so the flush at exit
        # does not fail again, and go quietly.
        _silence_stdout(out)
        return EXIT_OK
    except (DirQueueError, OSError, ValueError) as error:
        # Library errors say what was wrong and what to do; ValueError is what the
        # API raises for a bad setting (such as an empty --dir). They may quote a
        # file name or a metadata item, so they are escaped like everything else.
        ctx.say(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err.write(f"{sub_prog}: interrupted\n")
        return 130


def _silence_stdout(out: IO[str]) -> None:
    """Point ``out``'s file descriptor (if it has one) at /dev/null."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _LogPrinter(logging.Handler):
    """Prints the library's log (logger ``dirqueue``: a broken stale lock, a corrupt job
    moved aside) as escaped ``warning:`` notes on stderr."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(logging.WARNING)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        self.ctx.say(f"warning: {record.getMessage()}")


@contextlib.contextmanager
def _library_log_shown(ctx: Context) -> Iterator[None]:
    logger = logging.getLogger("dirqueue")
    handler = _LogPrinter(ctx)
    logger.addHandler(handler)
    # Shown here, not passed on to the root logger's last-resort printer as well.
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)


def _warning_printer(ctx: Context) -> Callable[..., None]:
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
    sys.exit(_flushed(main()))


def _flushed(code: int) -> int:
    """``code``, once stdout is flushed: a reader gone by now is no error either."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout(sys.stdout)
    return code


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
    sys.exit(_flushed(main([subcommand, *perl_arguments(sys.argv[1:])], prog=prog)))


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
