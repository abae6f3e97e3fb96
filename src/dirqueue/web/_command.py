"""``dq web``'s options and its entry point, for the CLI's parser.

Kept apart from the server so that building ``dq``'s parser imports nothing of
``http.server``: only running ``dq web`` does.
"""

from __future__ import annotations

import argparse
import os
from typing import IO

__all__ = ["add_arguments", "parse_bind", "run"]

EPILOG = (
    "examples:\n  dq web --dir /var/spool/q\n"
    "  dq web --dir /var/spool/a --dir /var/spool/b --bind 127.0.0.1:9000 --actions\n"
    "(see docs/web.md)"
)


def parse_bind(text: str) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT`` (``[::1]:8080`` for IPv6, ``:8080`` for
    127.0.0.1); an ``argparse`` type, so a bad one is a usage error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, such as 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0.1 to 3600")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``dq web``'s options on its subparser."""
    p.add_argument(
        "--dir", action="append", metavar="Q",
        help="a queue directory to watch; repeat for more (default: $DQ_DIR)",
    )
    p.add_argument(
        "--bind", type=parse_bind, default=("127.0.0.1", 8080), metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8080, this host only; port 0 picks a free one)",
    )
    p.add_argument(
        "--actions", action="store_true",
        help="allow requeue, purge and cancel, with the token printed at start"
        " (default: read-only)",
    )
    p.add_argument(
        "--sample-interval", type=_interval, default=10.0, metavar="SECONDS",
        help="how often the charts' samples are taken (default 10; kept in memory for an hour)",
    )


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``dq web`` with parsed ``args`` until interrupted."""
    from ._server import serve  # noqa: PLC0415 - http.server only when serving

    dirs = args.dir if isinstance(args.dir, list) else [args.dir]
    return serve(
        [os.path.abspath(d) for d in dirs], args.bind, actions=args.actions,
        sample_interval=args.sample_interval, out=out,
    )
