"""Helpers shared by the test modules (imported as ``_helpers``; tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dirqueue._layout import TmpLockName

#: ``shared/`` sits next to the checkout (in CI and in every worktree).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES_TARBALL = SHARED / "fixtures" / "ipc-dirqueue-1.1-queues.tar.gz"


def files_under(directory: str | os.PathLike[str]) -> list[str]:
    """Every non-directory entry below ``directory``, as sorted relative paths; not
    the lock file in ``tmp/`` of a process that still runs (every job it takes is
    linked to it, and it goes when the process ends: see :func:`live_lock_files`)."""
    found: list[str] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if not is_live_lock_file(name):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def live_lock_files(tmp_dir: str | os.PathLike[str]) -> list[str]:
    """The names in ``tmp_dir`` of lock files whose processes (on this host) still run."""
    return sorted(name for name in os.listdir(tmp_dir) if is_live_lock_file(name))


def is_live_lock_file(name: str) -> bool:
    if not TmpLockName.is_lock_file(name):
        return False
    pid = TmpLockName.owner(name, socket.gethostname())
    return pid is not None and process_alive(pid)


def lock_without_owner_line(text: str) -> str:
    """A lock file's text without dirqueue's ``owner ...`` line: what the Perl module
    reads (host, pid) and the heartbeat promise."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("owner "))


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie that nobody reaped counts as gone; Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # "pid (comm) state ...": comm may hold spaces and parentheses.
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields from the state on)`` of every process (Linux's /proc/PID/stat)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
                yield int(entry), stat.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue


def processes_in_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    return [
        pid for pid, fields in _proc_stats() if int(fields[2]) == pgid and fields[0] not in "ZX"
    ]


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def handles_signal(pid: int, signum: int) -> bool:
    """True once process ``pid`` has a handler for ``signum`` (its SigCgt mask in
    /proc); where /proc cannot tell, True (the caller then relies on its own wait)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return True


def descendants_of(pid: int, *, children_only: bool = False) -> list[int]:
    """The pids of every process below ``pid`` (children, their children, ...; Linux)."""
    parents = {child: int(fields[1]) for child, fields in _proc_stats()}
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        if not children_only:
            frontier.extend(children)
    return found


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recorded_logs() -> Iterator[list[str]]:
    """The messages the ``dirqueue`` logger emits inside the block (any thread)."""
    logger = logging.getLogger("dirqueue")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def logs_warning(match: str) -> Iterator[list[str]]:
    """Like ``pytest.warns(match=...)``, for dirqueue's log: a message inside the block
    must match the regular expression ``match``."""
    with recorded_logs() as messages:
        yield messages
    assert any(re.search(match, m) for m in messages), (
        f"no dirqueue log message matches {match!r}: {messages}"
    )


def let_others_reach(path: Path) -> None:
    """Make ``path`` (0755) and every directory above it searchable by other users, for
    tests that act as another uid: pytest makes its directories 0700, and another
    pytest session starting meanwhile makes its user directory 0700 again, so every
    parent is looked at, not only up to the first searchable one."""
    path.chmod(0o755)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
