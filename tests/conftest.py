"""Shared helpers for the test suite: queue directories and what is left in them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dirqueue import DirQueue

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


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    """A queue directory that does not exist yet (DirQueue creates it)."""
    return tmp_path / "q"


@pytest.fixture
def queue(qdir: Path) -> DirQueue:
    """A DirQueue with default settings in a fresh directory."""
    return DirQueue(qdir)
