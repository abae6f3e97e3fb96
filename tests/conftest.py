"""Shared helpers for the test suite: queue directories and what is left in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue


@pytest.fixture
def qdir(tmp_path: Path) -> Path:
    """A queue directory that does not exist yet (DirQueue creates it)."""
    return tmp_path / "q"


@pytest.fixture
def queue(qdir: Path) -> DirQueue:
    """A DirQueue with default settings in a fresh directory."""
    return DirQueue(qdir)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: no process has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
