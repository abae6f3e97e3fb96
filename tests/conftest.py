"""Shared helpers for the test suite: queue directories and what is left in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dirqueue._index
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
def judge_held_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pickup judges the locks it met held again (up to HELD_BATCH of them), as
    if HELD_RECHECK had passed: for tests of the stale-lock rules, which change a lock
    between two pickups made at once."""
    monkeypatch.setattr(dirqueue._index, "HELD_RECHECK", 0.0)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: no process has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
