"""Helpers shared by the test modules (imported as ``_helpers``; tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

#: ``shared/`` sits next to the checkout (in CI and in every worktree).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES_TARBALL = SHARED / "fixtures" / "ipc-dirqueue-1.1-queues.tar.gz"


def files_under(directory: str | os.PathLike[str]) -> list[str]:
    """Every non-directory entry below ``directory``, as sorted relative paths."""
    found: list[str] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def lock_without_owner_line(text: str) -> str:
    """A lock file's text without dirqueue's ``owner ...`` line: what the Perl module
    reads (host, pid) and the heartbeat promise."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("owner "))
