"""Directory descriptors kept open between jobs, so that a job's files are reached
without walking to their directory each time.

Every enqueue links into ``data/C1/C2`` and ``queue/`` from ``tmp/``; every pickup
links into ``active/`` and reads from and finishes in ``data/C1/C2``. Opened afresh
for each job (one ``openat2`` and one ``close``, with the walk that refuses
symlinks), those directories cost a third of an enqueue's system calls. Here each
thread keeps the descriptors it opened, up to :data:`PER_THREAD`, and hands them out
again.

Why this is safe:

- A descriptor is a directory reached once without following a symlink
  (:func:`dirqueue._fs.ensure_dir_nofollow`). Swapping a name for a symlink later
  does not move it: it still names the real directory.
- A directory removed since (``rm -r`` of a queue, a directory another host removed)
  makes every operation through the old descriptor fail with ``ENOENT`` (or ``ESTALE``
  over NFS), never succeed somewhere else. :func:`at` then forgets the descriptor and
  tries once more through a fresh one, so the operation's own answer is the one the
  caller sees.
- Each thread has its own descriptors and closes only those, so no thread can ever use
  a number another thread has closed (and the kernel given to some other file). A
  finished thread's descriptors are closed when its cache is collected.
- After ``fork`` the child keeps using the inherited descriptors (they name the same
  directories); they are opened ``O_CLOEXEC``, so a job's command never inherits them.

What it does not notice: a directory *renamed* away (not removed) keeps being used
under its new name by a process that had it open. For a ``tmp/`` another user moved
aside and replaced with a symlink that is the safe answer: the files still go where
they went, never through the symlink. Moving a live queue is not supported; stop
its workers first (as before unmounting the filesystem it is on: the
kept descriptors, like any open file, keep it busy).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Final, TypeVar

from . import _fs

__all__ = ["FEW", "PER_PROCESS", "PER_THREAD", "at", "call", "clear", "forget"]

#: Descriptors one thread keeps; the least recently opened goes first. A producer uses
#: three (tmp/, its data directory and queue/), a consumer tmp/, active/ and one per
#: producer it meets.
PER_THREAD: Final = 32
#: Descriptors all threads of a process keep together, beyond which each thread keeps
#: no more than :data:`FEW` (a pool of 100 consumer threads must not reach the usual
#: limit of 1,024 open files).
PER_PROCESS: Final = 128
FEW: Final = 4

_T = TypeVar("_T")
_Key = tuple[str, tuple[str, ...]]


#: How many descriptors the threads of this process keep (only a guide for how many
#: more to keep: two threads counting at once may leave it a little off).
_open_count = [0]


class _Held:
    """One open directory; closed when no thread's cache holds it any more."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd
        _open_count[0] += 1

    # os.close and the count bound here: a finalizer can run while the interpreter
    # shuts down (its modules' globals gone), or while a test has patched os.
    def __del__(
        self, _close: Callable[[int], None] = os.close, _count: list[int] = _open_count
    ) -> None:
        _count[0] -= 1
        try:  # noqa: SIM105 - no contextlib at shutdown either
            _close(self.fd)
        except OSError:
            pass


class _Cache(threading.local):
    def __init__(self) -> None:
        self.held: dict[_Key, _Held] = {}


_cache = _Cache()


def _get(root: str, parts: tuple[str, ...], create: bool) -> tuple[_Held, list[str], bool]:
    """This thread's descriptor of ``root/parts...`` (never through a symlink in
    ``parts``), the directories made for it (with ``create``), and whether it was
    opened just now. The caller must not close it, and keeps the ``_Held`` while it
    uses the descriptor: an operation in one directory may use another's (a link from
    tmp/ into queue/), whose opening may push the first out of the cache, and it is
    closed only once no one holds it."""
    held = _cache.held
    key = _key(root, parts)
    entry = held.get(key)
    if entry is not None:
        return entry, [], False
    if create:
        fd, created = _fs.ensure_dir_nofollow(root, parts)
    else:
        fd, created = _fs.open_dir_nofollow(root, parts), []
    if len(held) >= PER_THREAD or (len(held) >= FEW and _open_count[0] >= PER_PROCESS):
        del held[next(iter(held))]  # Closed by _Held.__del__.
    entry = held[key] = _Held(fd)
    return entry, created, True


def _key(root: str, parts: tuple[str, ...]) -> _Key:
    """The cache's key for ``root/parts...``: a relative ``root`` is taken from the
    current directory, as the name itself is (after a ``chdir``, "q" is another queue,
    and a descriptor kept for the old one must not serve it)."""
    if not root.startswith("/"):
        root = os.path.join(os.getcwd(), root)
    return root, parts


def forget(root: str, parts: tuple[str, ...]) -> None:
    """Close this thread's descriptor of ``root/parts...`` if it has one."""
    _cache.held.pop(_key(root, parts), None)


def clear() -> None:
    """Close every descriptor this thread keeps."""
    _cache.held.clear()


def at(
    root: str,
    parts: tuple[str, ...],
    operation: Callable[[int], _T],
    *,
    create: bool = False,
    created: list[str] | None = None,
    retry: bool = True,
) -> _T:
    """``operation(fd)`` with this thread's descriptor of ``root/parts...``.

    If it fails with ``ENOENT`` or ``ESTALE`` through a descriptor kept from before,
    the directory may have been removed since: the descriptor is dropped and the
    operation tried once more through a fresh one (unless ``retry`` is False: for an
    operation to which a missing name is a common answer). Directories made on the way
    are added to ``created``.
    """
    # The common case first, without a call: this thread keeps the directory already.
    entry = _cache.held.get((root, parts)) if root[:1] == "/" else None
    if entry is not None:
        fresh = False
    else:
        entry, made, fresh = _get(root, parts, create)
        if created is not None:
            created.extend(made)
    try:
        return operation(entry.fd)
    except OSError as err:
        if fresh or not retry or not _fs.is_gone(err):
            raise
    forget(root, parts)
    entry, made, _ = _get(root, parts, create)
    if created is not None:
        created.extend(made)
    return operation(entry.fd)


def call(
    root: str,
    parts: tuple[str, ...],
    function: Callable[..., _T],
    name: str,
    *,
    create: bool = False,
    retry: bool = True,
) -> _T:
    """``function(name, dir_fd=fd)`` with this thread's descriptor of ``root/parts...``:
    :func:`at` for the commonest operation, one call on one name (an ``lstat``, an
    ``open``, an ``unlink``), without a closure made for each. A pickup and a finish
    make seven such calls; the closures and their frames were a tenth of the Python
    of a take. The same rules as :func:`at`: a descriptor kept from before that
    answers ``ENOENT`` or ``ESTALE`` (with ``retry``) is dropped, and the call made
    once more through a fresh one.
    """
    entry = _cache.held.get((root, parts)) if root[:1] == "/" else None
    if entry is not None:
        try:
            return function(name, dir_fd=entry.fd)
        except OSError as err:
            if not retry or not _fs.is_gone(err):
                raise
        forget(root, parts)
    return at(root, parts, lambda fd: function(name, dir_fd=fd), create=create, retry=retry)
