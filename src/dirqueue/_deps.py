"""Dependants: jobs that wait in ``waiting/`` until the jobs they depend on have ended.

A dependant's control file is linked into ``waiting/`` instead of ``queue/`` (as a
delayed job's is into ``deferred/``), so no worker can take it early, the Perl
module's included: IPC::DirQueue opens only ``queue/``, ``data/``, ``active/`` and
``tmp/``. Its parents are named in its metadata (``dq.depends_on``, ids separated by
spaces; ``dq.allow_failure: 1`` if a failed parent does not fail it).

A parent has *ended* when it is in none of ``queue/``, ``deferred/`` and ``waiting/``
(:func:`dirqueue._place.place_of`, then confirmed by a listing: a look by name may be
a miss an NFS client kept); it *failed* if ``failed/NAME`` is there then (the
failed-job store builds that before it takes the job out of the queue). A parent id
that names no job at all counts as ended: it ran before its child was submitted.

There is no daemon: the worker that ends a parent settles the dependants that name it
(:func:`settle`, with ``parent``), and every worker settles the whole of ``waiting/``
about once a second, which catches what a crash, a Perl worker or a plain
``Job.finish`` left. Settling a dependant whose parents have all ended moves it into
``queue/`` with one ``rename`` (two settlers race harmlessly: one rename wins); one with
a failed parent, unless allowed, is returned for the caller to move to ``failed/``
(:meth:`dirqueue.failed.FailedStore.fail_waiting`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from typing import Final, Literal, Protocol

from . import _fs
from ._config import QueueConfig
from ._format import is_job_name
from ._identity import current_pid
from ._jobfiles import read_control
from ._jobsettings import is_dirqueue_only
from ._layout import Layout
from ._place import listed_jobs, place_of
from .errors import DirQueueError

__all__ = [
    "ALLOW_FAILURE_META",
    "DEPENDS_META",
    "HasJobId",
    "InvalidDependencyError",
    "claim_waiting",
    "claimed_dependant",
    "dependants_of",
    "dependency_meta",
    "parent_ids",
    "parents_of",
    "scan_waiting",
    "settle",
    "settle_child",
]

DEPENDS_META: Final = "dq.depends_on"
#: The purpose in the tmp name of a dependant claimed for failed/ (see claim_waiting).
_DEPFAIL: Final = "depfail"
ALLOW_FAILURE_META: Final = "dq.allow_failure"

ParentState = Literal["running", "done", "failed"]


class HasJobId(Protocol):
    """Anything that names a job (a ``Job``, a task's ``TaskResult``)."""

    @property
    def jobid(self) -> str: ...


class InvalidDependencyError(DirQueueError, ValueError):
    """A ``depends_on`` entry that is not a job id."""

    def __init__(self, message: str, parent: object) -> None:
        super().__init__(message)
        self.parent = parent


def parent_ids(depends_on: Iterable[str | HasJobId] | None) -> list[str]:
    """The job ids of ``depends_on`` (ids, or objects with a ``jobid``), checked."""
    if depends_on is None:
        return []
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    found: list[str] = []
    for parent in depends_on:
        jobid = parent if isinstance(parent, str) else getattr(parent, "jobid", None)
        if not isinstance(jobid, str) or not is_job_name(jobid):
            raise InvalidDependencyError(
                f"depends_on holds {parent!r}, which is not a job id: pass the ids"
                " enqueue_* returned (or the jobs or task results themselves)",
                parent,
            )
        if jobid not in found:
            found.append(jobid)
    return found


def dependency_meta(parents: list[str], *, allow_failure: bool) -> dict[str, str]:
    """The metadata that names a dependant's parents."""
    meta = {DEPENDS_META: " ".join(parents)}
    if allow_failure:
        meta[ALLOW_FAILURE_META] = "1"
    return meta


def parents_of(metadata: dict[str, str]) -> tuple[list[str], bool]:
    """A job's parents and whether it may run after a failed one."""
    parents = [p for p in metadata.get(DEPENDS_META, "").split() if is_job_name(p)]
    return parents, metadata.get(ALLOW_FAILURE_META) == "1"


def parent_state(config: QueueConfig, parent: str) -> ParentState:
    """Whether ``parent`` still runs (or waits), has ended, or ended in ``failed/``."""
    if place_of(config, parent) is not None:
        return "running"
    if os.path.isdir(config.layout.failed_job_dir(parent)):
        return "failed"
    # Looked again: a failing job's failed/ entry is built before it leaves queue/, so
    # a job seen gone with no entry might be a requeue from failed/ under way.
    return "running" if place_of(config, parent) is not None else "done"


def scan_waiting(config: QueueConfig) -> list[str]:
    """The names in ``waiting/``, in queue order."""
    try:
        fd = _fs.open_dir_nofollow(config.dir, (Layout.WAITING,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return []
        raise
    try:
        return sorted(n for n in os.listdir(fd) if is_job_name(n))
    finally:
        _fs.close_dir(fd)


#: waiting/ name -> (parents, allow_failure): a control file never changes while it
#: waits, so each process reads it once.
_parents_cache: dict[str, tuple[list[str], bool]] = {}
_CACHE_MAX: Final = 65536
#: waiting/ name -> the parents seen ended well (never to run again).
_ended: dict[str, set[str]] = {}


def _parents_of_waiting(config: QueueConfig, name: str) -> tuple[list[str], bool] | None:
    seen = _parents_cache.get(name)
    if seen is not None:
        return seen
    try:
        control = read_control(config.layout.waiting_path(name))
    except (OSError, DirQueueError):
        return None  # Gone (promoted, claimed) or unreadable: a pickup moves it aside.
    seen = parents_of(control.metadata)
    if len(_parents_cache) >= _CACHE_MAX:
        _parents_cache.clear()
        _ended.clear()
    _parents_cache[name] = seen
    return seen


def settle_child(config: QueueConfig, name: str) -> str | None:
    """Settle dependant ``name``: promote it if every parent has ended; return why it
    failed if a parent failed (and that is not allowed); else leave it (None)."""
    known = _parents_of_waiting(config, name)
    if known is None:
        return None
    parents, allow_failure = known
    ended = _ended.setdefault(name, set())
    gone: list[str] = []
    for parent in parents:
        if parent in ended:
            continue
        state = parent_state(config, parent)
        if state == "running":
            _confirm_ended(config, gone, ended)
            return None
        if state == "failed" and not allow_failure:
            if parent in listed_jobs(config):
                return None  # A miss kept by a lookup cache (see listed_jobs).
            return f"parent job {parent} failed (see 'dq show {parent}')"
        gone.append(parent)
    if _confirm_ended(config, gone, ended):
        _promote(config, name)
    return None


def _confirm_ended(config: QueueConfig, gone: list[str], ended: set[str]) -> bool:
    """Confirm that the parents ``gone`` (found in no directory by name) have ended,
    by one listing for all of them, and add those to ``ended``; True if all had.

    A look by name may be a miss that an NFS client kept from before the job got
    there (:func:`dirqueue._place.listed_jobs`). A job id is never used again, so a
    parent confirmed ended stays ended: a fan-in of a thousand confirms each parent
    once, not once per finish.
    """
    if not gone:
        return True
    present = listed_jobs(config)
    ended.update(parent for parent in gone if parent not in present)
    return present.isdisjoint(gone)


def settle(config: QueueConfig, parent: str | None = None) -> list[tuple[str, str]]:
    """Settle every dependant in ``waiting/`` (only those that name ``parent``, if
    given); return ``(name, reason)`` for each that must go to ``failed/``."""
    doomed: list[tuple[str, str]] = []
    for name in scan_waiting(config):
        if parent is not None:
            known = _parents_of_waiting(config, name)
            if known is None or parent not in known[0]:
                continue
        reason = settle_child(config, name)
        if reason is not None:
            doomed.append((name, reason))
    return doomed


def dependants_of(config: QueueConfig, parent: str) -> list[str]:
    """The dependants in ``waiting/`` that name ``parent`` (for ``dq show``)."""
    return [
        name
        for name in scan_waiting(config)
        if (known := _parents_of_waiting(config, name)) is not None and parent in known[0]
    ]


def _dirqueue_only(wfd: int, name: str) -> bool:
    """Whether dependant ``name`` is for dirqueue only (promoted into ``queue/dq/``)."""
    try:
        fd = _fs.open_regular(name, dir_fd=wfd)
    except OSError:
        return False  # Gone, or not a file: the rename will tell.
    return is_dirqueue_only(_fs.read_limited(fd, 1 << 20))


def _promote(config: QueueConfig, name: str) -> bool:
    """Move ``waiting/NAME`` into ``queue/`` (its fan-out directory, if any); False if
    another process moved it first."""
    wfd = _fs.open_dir_nofollow(config.dir, (Layout.WAITING,))
    try:
        fanout = Layout.choose_fanout(config.queue_fanout, _dirqueue_only(wfd, name))
        qfd, made = _fs.ensure_dir_nofollow(config.dir, Layout.queue_parts(fanout))
        try:
            try:
                os.rename(name, name, src_dir_fd=wfd, dst_dir_fd=qfd)
            except FileNotFoundError:
                return False
            if config.durable:
                os.fsync(qfd)
                for directory in made:
                    _fs.fsync_dir(os.path.dirname(directory))
                os.fsync(wfd)
        finally:
            _fs.close_dir(qfd)
    finally:
        _fs.close_dir(wfd)
    _parents_cache.pop(name, None)
    _ended.pop(name, None)
    # Waiting dequeuers watch queue/'s mtime (a rename may not move it everywhere).
    with contextlib.suppress(OSError):
        os.utime(config.layout.queue_dir)
    return True


def claim_waiting(config: QueueConfig, name: str) -> str | None:
    """Take dependant ``name`` out of ``waiting/`` for good, by renaming it into
    ``tmp/`` (the claim no promotion can also win, as a deferred job's cancel does);
    the path it has now, or None if it had gone."""
    claimed = Layout.tmp_rewrite_name(name, current_pid(), _DEPFAIL)
    wfd = _fs.open_dir_nofollow(config.dir, (Layout.WAITING,))
    try:
        tfd = _fs.open_dir_nofollow(config.dir, (Layout.TMP,))
        try:
            os.rename(name, claimed, src_dir_fd=wfd, dst_dir_fd=tfd)
        except FileNotFoundError:
            return None
        finally:
            _fs.close_dir(tfd)
    finally:
        _fs.close_dir(wfd)
    _parents_cache.pop(name, None)
    _ended.pop(name, None)
    return config.layout.tmp_path(claimed)


def claimed_dependant(tmp_name: str) -> str | None:
    """The dependant whose control file ``tmp_name`` (in ``tmp/``) is, claimed for
    ``failed/`` by a worker that died before it got there; else None."""
    parts = tmp_name.rsplit(".", 3)  # NAME.TIME.PID.depfail (Layout.tmp_rewrite_name)
    if len(parts) != 4 or parts[3] != _DEPFAIL or not is_job_name(parts[0]):
        return None
    return parts[0]
