"""The queues bench/peers.py compares, behind one small interface.

Each class opens one queue in one process: ``put(payload)`` adds a job, ``take()``
claims the next job, reads its data, completes it and returns the data (None when
nothing is waiting), ``wait_take(timeout)`` blocks until a job comes. A peer whose
library is not installed says why in ``missing()``; the libraries are imported only
by the process that uses them, so a consumer's peak RSS counts its own library alone.

The Perl module is not here: it runs in perl (bench/_peers_perl.pl), driven by
bench/_peer_workloads.py.
"""

from __future__ import annotations

import binascii
import contextlib
import importlib.util
import mailbox
import os
import random
import re
import socket
import time
from typing import ClassVar

#: The tightest sensible loop for a peer that has no blocking wait: look every 1 ms.
POLL_SECONDS = 0.001


def payload(number: int) -> bytes:
    """A job of 100 bytes whose first ten are its number, so order and loss can be checked."""
    return b"%010d" % number + b"." * 90


def number_of(data: bytes) -> int:
    """The number a :func:`payload` carries."""
    return int(data[:10])


class PeerQueue:
    """One queue, opened by one process."""

    name: ClassVar[str]
    #: What the peer does about fsync, for the table.
    fsync: ClassVar[str]
    #: The module that must be importable, or None.
    needs: ClassVar[str | None] = None

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def missing(cls) -> str | None:
        """Why this peer cannot run here, or None."""
        if cls.needs and importlib.util.find_spec(cls.needs) is None:
            return f"{cls.needs} is not installed (pip install -e '.[bench]')"
        return None

    def put(self, data: bytes) -> None:
        raise NotImplementedError

    def take(self) -> bytes | None:
        raise NotImplementedError

    def fill(self, count: int) -> None:
        """Put jobs 0 .. count-1, as fast as the peer allows (not timed)."""
        for number in range(count):
            self.put(payload(number))

    def wait_take(self, timeout: float) -> bytes | None:
        """Block until a job comes (by polling every :data:`POLL_SECONDS` by default)."""
        deadline = time.monotonic() + timeout
        while (data := self.take()) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_SECONDS)
        return data

    def close(self) -> None:
        """Release what the queue holds open."""


class DirQueuePeer(PeerQueue):
    name = "dirqueue"
    fsync = "none (durable=False)"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from dirqueue import DirQueue  # noqa: PLC0415 - imported by its user alone

        # Made on opening, as the other peers make theirs: a consumer may open it first.
        self.queue = DirQueue(path, durable=False, create=True)

    def put(self, data: bytes) -> None:
        self.queue.enqueue_string(data)

    def take(self) -> bytes | None:
        job = self.queue.pickup_queued_job()
        if job is None:
            return None
        data = job.get_data()
        job.finish()
        return data

    def fill(self, count: int) -> None:
        # The same files dirqueue's own enqueue writes, at the floor's speed.
        Bare(self.path).fill(count)

    def wait_take(self, timeout: float) -> bytes | None:
        job = self.queue.wait_for_queued_job(timeout=timeout)
        if job is None:
            return None
        data = job.get_data()
        job.finish()
        return data


class DirqPeer(PeerQueue):
    name = "dirq"
    fsync = "none"
    needs = "dirq"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from dirq.QueueSimple import QueueSimple  # noqa: PLC0415

        self.queue = QueueSimple(path)
        self.started = False

    def put(self, data: bytes) -> None:
        self.queue.add(data)

    def take(self) -> bytes | None:
        # Walk the listing dirq caches; list afresh once when it runs out.
        relisted = False
        while True:
            if self.started:
                name = self.queue.next()
            else:
                name, self.started, relisted = self.queue.first(), True, True
            if not name:
                if relisted:
                    return None
                self.started = False
                continue
            if self.queue.lock(name):
                data: bytes = self.queue.get(name)
                self.queue.remove(name)
                return data


class DiskcachePeer(PeerQueue):
    name = "diskcache"
    fsync = "SQLite WAL, synchronous=NORMAL: at checkpoints only"
    needs = "diskcache"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from diskcache import Deque  # noqa: PLC0415

        self.deque = Deque(directory=path)

    def put(self, data: bytes) -> None:
        self.deque.append(data)

    def take(self) -> bytes | None:
        try:
            data: bytes = self.deque.popleft()
        except IndexError:
            return None
        return data

    def close(self) -> None:
        self.deque.cache.close()


class LitequeuePeer(PeerQueue):
    name = "litequeue"
    fsync = "SQLite WAL, synchronous=NORMAL: at checkpoints only"
    needs = "litequeue"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from litequeue import LiteQueue  # noqa: PLC0415

        os.makedirs(path, exist_ok=True)
        self.queue = LiteQueue(os.path.join(path, "queue.sqlite3"))

    def put(self, data: bytes) -> None:
        self.queue.put(data.decode("ascii"))  # litequeue stores text

    def fill(self, count: int) -> None:
        with self.queue.transaction():
            super().fill(count)

    def take(self) -> bytes | None:
        message = self.queue.pop()
        if message is None:
            return None
        self.queue.done(message.message_id)
        return str(message.data).encode("ascii")

    def close(self) -> None:
        self.queue.close()


_MAILDIR_KEY = re.compile(r"(\d+)\.M(\d+)P(\d+)Q(\d+)")


def _maildir_order(key: str) -> tuple[int, ...]:
    # Maildir's names start with the delivery time (seconds, then microseconds not
    # padded to a fixed width): sorted as numbers they give the order of delivery.
    match = _MAILDIR_KEY.match(key)
    return tuple(int(g) for g in match.groups()) if match else (0,)


class MaildirPeer(PeerQueue):
    name = "Maildir"
    fsync = "each message file (not the directory)"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.box = mailbox.Maildir(path, factory=None, create=True)
        self.keys: list[str] = []

    def put(self, data: bytes) -> None:
        self.box.add(data)

    def fill(self, count: int) -> None:
        # Maildir's own file names in new/, written directly: add() fsyncs each one, and
        # that would make filling a deep queue on disk take minutes.
        new, host, pid = os.path.join(self.path, "new"), socket.gethostname(), os.getpid()
        for number in range(count):
            secs, nanos = divmod(time.time_ns(), 1_000_000_000)
            name = f"{secs}.M{nanos // 1000}P{pid}Q{number}.{host}"
            with open(os.path.join(new, name), "xb") as fh:
                fh.write(payload(number))

    def take(self) -> bytes | None:
        relisted = False
        while True:
            if not self.keys:
                if relisted:
                    return None
                self.keys = sorted(self.box.keys(), key=_maildir_order, reverse=True)
                relisted = True
                continue
            key = self.keys.pop()
            try:
                data = self.box.get_bytes(key)
                # Whoever removes the file has the job: the others lost the race.
                self.box.remove(key)
            except (KeyError, FileNotFoundError):
                continue
            return data


_TAG_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_"


def _host_tag(text: str) -> str:
    # docs/format.md, "The host tag"; kept here so that the floor loads no dirqueue code.
    checksum = sum(text.encode()) % 65536
    encoded = binascii.b2a_uu(str(checksum).encode(), backtick=True).decode()
    return "".join(_TAG_ALPHABET[ord(ch) - 0x20] for ch in encoded if " " <= ch <= "_")


def _data_location(jobid: str) -> tuple[str, str, str]:
    # docs/format.md, "Data files".
    if jobid[-1] in _TAG_ALPHABET and jobid[-2] in _TAG_ALPHABET:
        return jobid[-2], jobid[-1], jobid[:-2]
    return "0", "0", jobid


class Bare(PeerQueue):
    """The floor: IPC::DirQueue's format written and taken with the fewest system calls.

    Enqueue: create, write and close the data in ``tmp/``, link it into ``data/``,
    unlink the tmp name; the same for the control file into ``queue/``; set the
    mtime of ``queue/``. Take: list ``queue/`` once per pass (sorted: ordered), write a
    lock in ``tmp/``, link it to ``active/NAME``, read the control file (gone means
    finished by someone else) and the data, unlink the three. No fsync, no checks of
    the lock's owner, size or contents, no stale-lock handling.
    """

    name = "bare"
    fsync = "none"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        for sub in ("tmp", "data", "queue", "active"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        self.tmp = os.path.join(path, "tmp")
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.tag = _host_tag(self.host + str(self.pid))
        self.lock_body = f"{self.host}\n{self.pid}\n".encode()
        self.listing: list[str] = []
        self.made: set[str] = set()

    def _write_new(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def put(self, data: bytes) -> None:
        base, suffix = self.path, ""
        while True:
            secs, nanos = divmod(time.time_ns(), 1_000_000_000)
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(secs))
            jobid = f"50.{stamp}{nanos // 1000:06d}.{self.tag}{suffix}"
            c1, c2, rest = _data_location(jobid)
            tmp_data = f"{self.tmp}/{jobid}.data"
            data_path = f"{base}/data/{c1}/{c2}/{rest}"
            try:
                self._write_new(tmp_data, data)
                if c1 + c2 not in self.made:
                    os.makedirs(f"{base}/data/{c1}/{c2}", exist_ok=True)
                    self.made.add(c1 + c2)
                os.link(tmp_data, data_path)
            except FileExistsError:
                # A name taken (same microsecond, same tag): the format's way out.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_data)
                suffix = f".{self.pid}.{random.randrange(65536)}"
                continue
            os.unlink(tmp_data)
            break
        control = (
            f"QDFN: {data_path}\nQDSB: {len(data)}\nQSTT: {secs}\nQSTM: {nanos // 1000}\n"
            f"QSHN: {self.host}\n"
        ).encode()
        tmp_ctrl = f"{self.tmp}/{jobid}.ctrl"
        self._write_new(tmp_ctrl, control)
        os.link(tmp_ctrl, f"{base}/queue/{jobid}")
        os.unlink(tmp_ctrl)
        os.utime(f"{base}/queue")

    def take(self) -> bytes | None:
        base, relisted = self.path, False
        while True:
            if not self.listing:
                if relisted:
                    return None
                self.listing = sorted(os.listdir(f"{base}/queue"), reverse=True)
                relisted = True
                continue
            name = self.listing.pop()
            if not name[:1].isdigit():
                continue
            tmp_lock = f"{self.tmp}/{name}.{time.time_ns()}.{self.host}.{self.pid}.active"
            active = f"{base}/active/{name}"
            self._write_new(tmp_lock, self.lock_body)
            try:
                os.link(tmp_lock, active)
            except FileExistsError:
                continue
            finally:
                os.unlink(tmp_lock)
            queued = f"{base}/queue/{name}"
            try:
                fd = os.open(queued, os.O_RDONLY)
            except FileNotFoundError:
                os.unlink(active)  # Finished by another worker since we listed it.
                continue
            try:
                os.read(fd, 4096)
            finally:
                os.close(fd)
            c1, c2, rest = _data_location(name)
            data_path = f"{base}/data/{c1}/{c2}/{rest}"
            fd = os.open(data_path, os.O_RDONLY)
            try:
                data = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
            os.unlink(queued)
            os.unlink(data_path)
            os.unlink(active)
            return data

    def fill(self, count: int) -> None:
        for number in range(count):
            self.put(payload(number))


#: Every Python peer, by name, in the order of the table.
PYTHON_PEERS: dict[str, type[PeerQueue]] = {
    cls.name: cls
    for cls in (DirQueuePeer, DirqPeer, DiskcachePeer, LitequeuePeer, MaildirPeer, Bare)
}
