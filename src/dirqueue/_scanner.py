"""The one scanner of ``queue/``: which jobs are waiting, in pickup order.

Pickup, ``jobs()``, ``dq stats`` and repair all list the queue through :func:`scan`,
so they agree on what a job is. The rules:

- A job is a name shaped like a job id, directly in ``queue/`` or in a fan-out
  subdirectory ``queue/0`` ... ``queue/f``, or in ``queue/dq/`` (jobs for dirqueue
  only). Fan-out subdirectories are read whatever the reader's own setting, so queues
  written with and without fan-out read alike.
- ``queue/`` and its fan-out subdirectories are opened without following symlinks: a
  symlink there would lead readers (and ``finish()``, which unlinks) out of the queue.
  A control file that is itself a symlink is listed like any job; pickup then finds it
  is not a regular file and moves it aside.
- Every other name is ignored, as the Perl module ignores it; a caller that cares
  (repair) is told of each through ``on_other``, except an NFS client's ``.nfsXXXX``
  silly renames, which come and go on their own.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import itertools
import os
import random
from collections.abc import Callable, Container, Iterable
from typing import Final, NamedTuple

from . import _fs
from ._format import match_job_name
from ._layout import Layout

__all__ = ["Listing", "QueueEntry", "locate", "pack", "scan", "scan_packed"]


class QueueEntry(NamedTuple):
    """A waiting (or active) job's control file: its name and fan-out digit."""

    name: str
    fanout: str | None


#: ``on_other(name, fanout_digit)``: a name in ``queue/`` (or ``queue/X/``) that is not
#: a job; ``fanout_digit`` is None for names directly in ``queue/``.
OtherCallback = Callable[[str, "str | None"], None]

_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


def scan(
    layout: Layout, *, ordered: bool = True, on_other: OtherCallback | None = None
) -> list[QueueEntry]:
    """Every job in ``queue/``, sorted by name when ``ordered`` (else shuffled)."""
    # Names are collected and sorted as plain strings (much faster than tuples at
    # 100,000 jobs); jobs in fan-out subdirectories, rare, are merged in after.
    job_re = match_job_name
    try:
        fd = _fs.open_dir_nofollow(layout.dir, (Layout.QUEUE,))
    except FileNotFoundError:
        return []
    fanned: list[QueueEntry] = []
    try:
        listed = os.listdir(fd)
        names = [name for name in listed if job_re(name)]
        if len(names) < len(listed):
            for name in sorted(set(listed).difference(names)):
                if (
                    ((len(name) == 1 and name in Layout.FANOUT_DIGITS)
                     or name == Layout.DIRQUEUE_ONLY)
                    and _scan_fanout(fd, name, fanned, on_other)
                ):
                    continue
                if on_other is not None and not Layout.is_nfs_silly_rename(name):
                    on_other(name, None)
    finally:
        _fs.close_dir(fd)
    if ordered:
        names.sort()
    else:
        random.shuffle(names)
    entries = [QueueEntry(name, None) for name in names]
    if fanned:
        entries.extend(fanned)
        if ordered:
            entries.sort()
        else:
            random.shuffle(entries)
    return entries


def _scan_fanout(
    queue_fd: int, digit: str, into: list[QueueEntry], on_other: OtherCallback | None
) -> bool:
    """List fan-out directory ``queue/DIGIT`` into ``into``; False if it is not one."""
    try:
        fd = os.open(digit, _fs.DIR_NOFOLLOW_FLAGS, dir_fd=queue_fd)
    except OSError as err:
        if _fs.is_gone(err):
            return True  # Gone since listed: nothing to report.
        if err.errno in _NOT_A_DIR:
            return False  # A symlink or a file: not a fan-out directory.
        raise
    try:
        for name in os.listdir(fd):
            if match_job_name(name):
                into.append(QueueEntry(name, digit))
            elif on_other is not None and not Layout.is_nfs_silly_rename(name):
                on_other(name, digit)
    finally:
        _fs.close_dir(fd)
    return True


def locate(layout: Layout, jobid: str) -> list[QueueEntry]:
    """Where job ``jobid``'s control file is: ``queue/`` and each fan-out directory
    that is a real directory (usually one place, or none)."""
    try:
        queue_fd = _fs.open_dir_nofollow(layout.dir, (Layout.QUEUE,))
    except FileNotFoundError:
        return []
    found: list[QueueEntry] = []
    try:
        if _exists_at(jobid, queue_fd):
            found.append(QueueEntry(jobid, None))
        for digit in Layout.QUEUE_SUBDIRS:
            try:
                fd = os.open(digit, _fs.DIR_NOFOLLOW_FLAGS, dir_fd=queue_fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, *_NOT_A_DIR):
                    continue
                raise
            try:
                if _exists_at(jobid, fd):
                    found.append(QueueEntry(jobid, digit))
            finally:
                _fs.close_dir(fd)
    finally:
        _fs.close_dir(queue_fd)
    return found


def _exists_at(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


# -- the index's listing: names packed into bytes ------------------------------------

#: Names sorted (as strings) and packed at a time: the strings alive at once while a
#: huge queue is read, a ``str`` costing about 80 bytes a name.
_RUN: Final = 65536
#: One name in this many is kept as a string, to find the others by bisecting.
_CHUNK: Final = 128


class _Run:
    """Up to :data:`_RUN` names, sorted, packed as ``\nNAME\nNAME\n``, with a cursor.

    Unordered, the cursor starts at a random name and wraps around to the one before it.
    """

    __slots__ = ("_blob", "_cursor", "_heads", "_limit", "_name", "_starts", "_stop", "_wrap")

    def __init__(self, names: list[str], *, ordered: bool) -> None:
        names.sort()
        self._blob = ("\n" + "\n".join(names) + "\n").encode("ascii")
        #: The newline before each name, of every _CHUNK-th name; then the last newline.
        offsets = list(itertools.accumulate((len(name) + 1 for name in names), initial=0))
        self._heads = names[::_CHUNK]
        self._starts = offsets[::_CHUNK]
        self._starts.append(offsets[-1])
        start = 0 if ordered else offsets[random.randrange(len(names))]
        #: The newline before the next name; and where the names ahead end, for now.
        self._cursor, self._limit = start, offsets[-1]
        #: Names from the start up to this newline come after the wrap.
        self._stop, self._wrap = start, start > 0
        self._name: str | None = None

    def peek(self) -> str | None:
        """The name at the cursor, or None once every name is passed."""
        if self._name is None:
            if self._cursor >= self._limit:
                if not self._wrap:
                    return None
                self._cursor, self._limit, self._wrap = 0, self._stop, False
            cursor = self._cursor
            self._name = self._blob[cursor + 1 : self._blob.find(b"\n", cursor + 1)].decode(
                "ascii"
            )
        return self._name

    def advance(self) -> None:
        """Pass the name at the cursor."""
        self._cursor = self._blob.find(b"\n", self._cursor + 1)
        self._name = None

    def ahead(self, needle: bytes, name: str) -> bool:
        """Whether ``name`` (``needle``: between newlines) is at or after the cursor."""
        chunk = bisect.bisect_right(self._heads, name) - 1
        if chunk < 0:
            return False
        starts = self._starts
        found = self._blob.find(needle, starts[chunk], starts[chunk + 1] + 1)
        if found < 0:
            return False
        return self._cursor <= found < self._limit or (self._wrap and found < self._stop)

    def __len__(self) -> int:
        return len(self._blob)


class Listing:
    """The names of one reading of ``queue/``, packed, in pickup order, with a cursor.

    At a million jobs a ``str`` per name and a set of them cost 300 MB; packed into
    ``bytes`` a name costs its length plus one byte. The names come in sorted runs of
    :data:`_RUN` (sorting them all at once would need a string each): the next name is
    the least of the runs' next names (ordered), or the next of the first run not
    done (unordered: each run from a random name). A name is looked up by bisecting a
    list of every :data:`_CHUNK`-th name of a run, then searching the bytes after it.
    Names before a run's cursor have been passed; :attr:`out` holds the names ahead
    that are no longer waiting (taken, held by another worker, gone), dropped from it
    as the cursor passes them.
    """

    __slots__ = ("_first", "_heap", "_ordered", "_runs", "out")

    def __init__(self, runs: list[_Run] | None = None, *, ordered: bool = True) -> None:
        self._runs = runs or []
        self._ordered = ordered
        self.out: set[str] = set()
        #: Ordered: each run's next name, least first. Unordered: the first run not done.
        self._heap: list[tuple[str, int]] = []
        self._first = 0
        if ordered:
            for index, run in enumerate(self._runs):
                name = run.peek()
                if name is not None:
                    self._heap.append((name, index))
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        """Bytes held (the names and their newlines)."""
        return sum(map(len, self._runs))

    def _next(self) -> tuple[str, int] | None:
        """The next name and its run's index, waiting or not."""
        if self._ordered:
            return self._heap[0] if self._heap else None
        runs = self._runs
        while self._first < len(runs):
            name = runs[self._first].peek()
            if name is not None:
                return name, self._first
            self._first += 1
        return None

    def _pass(self, index: int) -> None:
        """Move past the next name (of run ``index``, the one :meth:`_next` named)."""
        run = self._runs[index]
        run.advance()
        if self._ordered:
            name = run.peek()
            if name is None:
                heapq.heappop(self._heap)
            else:
                heapq.heapreplace(self._heap, (name, index))

    def current(self) -> str | None:
        """The next waiting name (passing those that are not), or None."""
        out = self.out
        while (found := self._next()) is not None:
            name, index = found
            if name not in out:
                return name
            out.discard(name)  # Passed: no longer ahead.
            self._pass(index)
        return None

    def has(self, name: str) -> bool:
        """Whether ``name`` is ahead of the cursor and waiting."""
        if name in self.out or not self._runs:
            return False
        try:
            needle = b"\n" + name.encode("ascii") + b"\n"
        except UnicodeEncodeError:
            return False  # Never a job name.
        return any(run.ahead(needle, name) for run in self._runs)

    def drop(self, name: str) -> None:
        """``name`` is no longer waiting (if it is ahead at all)."""
        found = self._next()
        if found is not None and found[0] == name:
            self._pass(found[1])  # The usual case: the name just taken was the next.
            return
        if self.has(name):
            self.out.add(name)


class _Packer:
    """Packs names given one at a time, holding at most :data:`_RUN` as strings."""

    __slots__ = ("_batch", "_ordered", "_runs")

    def __init__(self, *, ordered: bool) -> None:
        self._ordered = ordered
        self._batch: list[str] = []
        self._runs: list[_Run] = []

    def add(self, name: str) -> None:
        batch = self._batch
        batch.append(name)
        if len(batch) >= _RUN:
            self._runs.append(_Run(batch, ordered=self._ordered))
            self._batch = []

    def listing(self) -> Listing:
        if self._batch:
            self._runs.append(_Run(self._batch, ordered=self._ordered))
            self._batch = []
        runs = self._runs
        if not self._ordered:
            random.shuffle(runs)
        return Listing(runs, ordered=self._ordered)


def pack(names: Iterable[str], *, ordered: bool) -> Listing:
    """A :class:`Listing` of ``names`` (job names, so ASCII)."""
    packer = _Packer(ordered=ordered)
    for name in names:
        packer.add(name)
    return packer.listing()


def scan_packed(
    layout: Layout, *, ordered: bool, locked: Container[str]
) -> tuple[Listing, list[QueueEntry], dict[str, str]]:
    """Every job in ``queue/`` (and its fan-out directories) not in ``locked``, packed;
    the entries of those in ``locked``; and the fan-out digit of each job in one.

    Read as a stream (``os.scandir``), never as a list of every name: a million
    names as strings would cost more than the whole listing packed.
    """
    packer = _Packer(ordered=ordered)
    held: list[QueueEntry] = []
    fanout: dict[str, str] = {}
    try:
        fd = _fs.open_dir_nofollow(layout.dir, (Layout.QUEUE,))
    except FileNotFoundError:
        return Listing(ordered=ordered), held, fanout
    job_re = match_job_name
    try:
        digits: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                name = entry.name
                if job_re(name):
                    if name in locked:
                        held.append(QueueEntry(name, None))
                    else:
                        packer.add(name)
                elif (len(name) == 1 and name in Layout.FANOUT_DIGITS) or (
                    name == Layout.DIRQUEUE_ONLY
                ):
                    digits.append(name)
        fanned: list[QueueEntry] = []
        for digit in sorted(digits):
            _scan_fanout(fd, digit, fanned, None)
    finally:
        _fs.close_dir(fd)
    for one in fanned:
        if one.fanout is not None:
            fanout[one.name] = one.fanout
        if one.name in locked:
            held.append(one)
        else:
            packer.add(one.name)
    return packer.listing(), held, fanout
