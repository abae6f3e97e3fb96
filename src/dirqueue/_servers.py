"""Which servers run on a queue, and how many workers each: ``servers/HOST.PID``.

An idle worker holds no lock, so the queue's own directories cannot tell a host with
eight idle workers from a host with none; and an elastic server changes its count as
the backlog comes and goes. So each supervising server (:func:`dirqueue.run_workers`)
keeps one small file in ``servers/`` saying how many workers it runs: rewritten whole
(a dot name, then renamed) when the count changes and every :data:`REFRESH` seconds
while it does not, so its mtime is a heartbeat; removed when the server ends.
``dq stats`` (:func:`read_servers`) counts only the files rewritten within
:data:`STALE_AFTER` seconds by the filesystem's clock (a SIGKILLed server's file is
ignored, and removed by the next server that writes its own).

Nothing here decides anything about jobs: a file lost, stale or unwritable costs a
wrong count in ``dq stats``, never a job. Writing never raises; a failure is logged
once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Final

from . import _fs
from ._config import QueueConfig
from ._judge import filesystem_now
from ._layout import Layout

__all__ = ["REFRESH", "STALE_AFTER", "Announcer", "ServerEntry", "read_servers"]

_log = logging.getLogger("dirqueue")

#: Seconds between two rewrites of an unchanged entry (its heartbeat).
REFRESH: Final = 10.0
#: An entry not rewritten for this long (filesystem clock) is a dead server's.
STALE_AFTER: Final = 6 * REFRESH
#: The most of an entry read (they are about 60 bytes).
_READ_LIMIT: Final = 4096


@dataclass(frozen=True)
class ServerEntry:
    """One server's line in ``dq stats``: where, which process, how many workers."""

    host: str
    pid: int
    workers: int
    most: int


class Announcer:
    """This process's entry in ``servers/`` (one per supervising server)."""

    def __init__(self, config: QueueConfig, most: int) -> None:
        self.config = config
        self.most = most
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = Layout.server_entry_name(self.host, self.pid)
        self._said: int | None = None
        self._due = 0.0
        self._failed = False
        self._swept = False

    def update(self, workers: int, now: float | None = None) -> None:
        """Say ``workers`` if it changed, or if the last word is :data:`REFRESH` old."""
        now = time.monotonic() if now is None else now
        if workers == self._said and now < self._due:
            return
        self._said, self._due = workers, now + REFRESH
        text = f"host {self.host}\npid {self.pid}\nworkers {workers}\nmost {self.most}\n"
        try:
            fd, _ = _fs.ensure_dir_nofollow(self.config.dir, (Layout.SERVERS,))
            try:
                _write_whole(fd, self.name, text.encode("utf-8"), self.config.data_file_mode)
                if not self._swept:
                    self._swept = True
                    _sweep(self.config, fd)
            finally:
                _fs.close_dir(fd)
        except OSError as err:
            if not self._failed:
                # Once: a read-only or full queue must not fill the log every 10 s.
                _log.warning("cannot say in %s how many workers run: %s",
                             self.config.layout.servers_dir, err)
            self._failed = True

    def withdraw(self) -> None:
        """Remove the entry (the server ends)."""
        with contextlib.suppress(OSError):
            fd = _fs.open_dir_nofollow(self.config.dir, (Layout.SERVERS,))
            try:
                os.unlink(self.name, dir_fd=fd)
            finally:
                _fs.close_dir(fd)


def _write_whole(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """``name`` replaced whole: a reader sees the old entry or the new, never half."""
    partial = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial, dir_fd=dir_fd)  # Our own, from a write cut short.
    fd = _fs.create_exclusive(partial, mode, dir_fd=dir_fd)
    try:
        _fs.write_all(fd, data)
    finally:
        os.close(fd)
    os.rename(partial, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _sweep(config: QueueConfig, dir_fd: int) -> None:
    """Remove the entries (and half-written ones) of servers that died without a word:
    no live server leaves its entry unwritten for :data:`STALE_AFTER` seconds."""
    now = filesystem_now(config)
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if now - st.st_mtime > STALE_AFTER:
                os.unlink(name, dir_fd=dir_fd)


def read_servers(config: QueueConfig) -> list[ServerEntry]:
    """The servers whose entries are fresh, by host then pid (none: an empty list)."""
    try:
        dir_fd = _fs.open_dir_nofollow(config.dir, (Layout.SERVERS,))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    try:
        now = filesystem_now(config)
        for name in os.listdir(dir_fd):
            if name.startswith("."):
                continue  # Being written.
            with contextlib.suppress(OSError, ValueError):
                fd, st = _fs.open_regular_stat(name, dir_fd)
                if now - st.st_mtime > STALE_AFTER:
                    os.close(fd)
                    continue
                entry = _parse(_fs.read_limited(fd, _READ_LIMIT))
                if entry is not None:
                    found.append(entry)
    finally:
        _fs.close_dir(dir_fd)
    return sorted(found, key=lambda e: (e.host, e.pid))


def _parse(data: bytes) -> ServerEntry | None:
    """An entry's lines (``key value``); None if one is missing or not a number."""
    fields = dict(
        line.partition(" ")[::2] for line in data.decode("utf-8", "replace").splitlines()
    )
    try:
        return ServerEntry(
            fields["host"], int(fields["pid"]), int(fields["workers"]), int(fields["most"])
        )
    except (KeyError, ValueError):
        return None
