"""``dq web``'s options and its entry point, for the CLI's parser.

Kept apart from the server so that building ``dq``'s parser imports nothing of
``http.server``: only running ``dq web`` does.
"""

from __future__ import annotations

import argparse
import os
from typing import IO

__all__ = ["add_arguments", "run"]

EPILOG = (
    "examples:\n  dq web --dir /var/spool/q\n"
    "  dq web --dir /var/spool/a --dir /var/spool/b --bind 127.0.0.1:9000 --actions\n"
    "(see docs/web.md)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``dq web``'s options on its subparser."""
    p.add_argument(
        "--dir", action="append", metavar="Q",
        help="a queue directory to watch; repeat for more (default: $DQ_DIR)",
    )
    p.add_argument(
        "--bind", default="127.0.0.1:8080", metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8080, this host only; port 0 picks a free one)",
    )
    p.add_argument(
        "--actions", action="store_true",
        help="allow requeue, purge and cancel, with the token printed at start"
        " (default: read-only)",
    )
    p.add_argument(
        "--sample-interval", type=float, default=10.0, metavar="SECONDS",
        help="how often the charts' samples are taken (default 10; kept in memory for an hour)",
    )


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run ``dq web`` with parsed ``args`` until interrupted."""
    from ._server import serve  # noqa: PLC0415 - http.server only when serving

    dirs = args.dir if isinstance(args.dir, list) else [args.dir]
    if not 0.1 <= args.sample_interval <= 3600:
        raise ValueError("--sample-interval: give seconds from 0.1 to 3600")
    return serve(
        [os.path.abspath(d) for d in dirs], args.bind, actions=args.actions,
        sample_interval=args.sample_interval, out=out,
    )
