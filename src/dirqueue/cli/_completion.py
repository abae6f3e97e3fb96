"""``dq completion SHELL``: shell completion scripts, written by shtab from the parser.

shtab (an optional extra: ``pip install 'dirqueue[completion]'``) turns the argparse
parser into a static script for bash, zsh, tcsh or fish: subcommands, their options,
the values of options with choices (``--format <TAB>``), directories after ``--dir``
and files where a file is wanted. It is chosen over argcomplete because its scripts
are static: a TAB runs no Python, so completion costs nothing on a busy host, and
nothing has to be registered in the shell beyond the script itself. dirqueue itself
does not depend on it: without it, ``dq completion`` says how to install it.

The parser marks what its arguments complete to with :func:`complete_as`, which needs
no shtab; the marks become shtab's when a script is made.
"""

from __future__ import annotations

import argparse
import importlib
import weakref
from typing import Final

__all__ = ["INSTALL", "SHELLS", "complete_as", "completion_script"]

#: The shells shtab writes scripts for (and that ``dq completion`` offers).
SHELLS: Final = ("bash", "zsh", "fish", "tcsh")
#: What to run to get the generator.
INSTALL: Final = "pip install 'dirqueue[completion]'"

#: The arguments that complete to a file or a directory, and which; read when a script
#: is made, so that building the parser never needs shtab.
_MARKED: weakref.WeakKeyDictionary[argparse.Action, str] = weakref.WeakKeyDictionary()
_KINDS: Final = {"file": "FILE", "directory": "DIRECTORY"}


def complete_as(action: argparse.Action, kind: str) -> argparse.Action:
    """Mark ``action``'s values as completing to a ``"file"`` or a ``"directory"``."""
    if kind not in _KINDS:
        raise ValueError(f"no completion kind {kind!r}: choose file or directory")
    _MARKED[action] = kind
    return action


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell``, made from ``parser`` by shtab.

    Raises :class:`ImportError` naming the install command when shtab is missing.
    """
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}: choose one of {', '.join(SHELLS)}")
    try:
        shtab = importlib.import_module("shtab")
    except ImportError:
        raise ImportError(
            f"completion scripts are written by shtab, which is not installed: {INSTALL}"
            " (or pip install shtab)",
            name="shtab",
        ) from None
    for action, kind in _MARKED.items():
        # shtab reads an action's 'complete' attribute: its own table of what each
        # shell calls to list files or directories.
        action.complete = getattr(shtab, _KINDS[kind])  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"
