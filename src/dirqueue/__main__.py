"""``python -m dirqueue``: the ``dq`` command line."""

from __future__ import annotations

import os
import sys

from .cli import main

if __name__ == "__main__":
    # ``python -m`` put the current directory first on sys.path; a handler module
    # (--handler MODULE:FUNCTION) must not be found there, where another user of the
    # queue may have planted one (as with ``python -P``; see load_handler).
    if not getattr(sys.flags, "safe_path", False) and sys.path and sys.path[0] in (
        "",
        os.getcwd(),
    ):
        del sys.path[0]
    sys.exit(main(prog="python -m dirqueue"))
