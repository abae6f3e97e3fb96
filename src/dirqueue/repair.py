"""Checking and repairing a queue directory (``DirQueue.fsck()`` / ``DirQueue.repair()``).

Processes that die mid-operation leave debris: tmp files, a data file whose control file
was never linked, a lock whose worker is gone. None of it is ever visible as a job (see
the enqueue order in :mod:`dirqueue.queue`), but it takes space and, for locks, keeps a
job from the workers until ``active_file_lifetime`` passes. This module finds it, and
with ``dry_run=False`` removes it. Corrupt jobs are never deleted: they are moved to
``corrupt/`` with a ``.reason`` file, as a worker that meets one does.

Everything removed is first judged old enough (``min_age``) that no live process can
still be using it, so a repair may run while producers and workers are busy. Locks are
judged by the one rule pickup uses (:mod:`dirqueue._judge`).

A repair may run as root, or as another user, on a queue that members of a group can
write: every directory is opened without following symlinks and worked on through its
descriptor, so a subdirectory swapped for a symlink can never lead a removal outside
the queue.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from typing import Final

from . import _fs, _lock
from ._config import QueueConfig
from ._deferred import scan_deferred
from ._deps import claimed_dependant, scan_waiting
from ._findings import Finding, FindingKind, RepairReport
from ._format import data_location, is_job_name
from ._identity import current_pid, owner_is_dead
from ._jobfiles import check_data, move_aside, read_control, set_aside
from ._judge import Verdict, filesystem_now, judge
from ._keys import holder_of, is_held, list_keys, remove_if_stale
from ._layout import Layout, TmpLockName
from ._place import place_of
from ._results import remove_expired
from ._scanner import QueueEntry, locate, scan
from .errors import CorruptJobError, DirQueueError, HostAliveError, QueueIOError

__all__ = ["DEFAULT_MIN_AGE", "Finding", "FindingKind", "RepairReport", "repair_queue"]

#: Debris younger than this (seconds) is left alone by default: an enqueue or pickup
#: in progress may still own it. Real operations take milliseconds; a huge upload
#: through ``enqueue_fh`` keeps its tmp file's mtime fresh while it writes.
DEFAULT_MIN_AGE: Final = 3600.0


class _Repairer:
    def __init__(
        self, config: QueueConfig, *, dry_run: bool, min_age: float, host: str | None = None
    ) -> None:
        self.config = config
        #: A host the operator declared dead: its workers' locks are removed.
        self.dead_host = host
        self.layout: Layout = config.layout
        self.dry_run = dry_run
        self.min_age = min_age
        # Ages in the clock that stamped the files (see _judge.filesystem_now).
        self.now = filesystem_now(config)
        self.report = RepairReport(config.dir, dry_run)

    # -- helpers ----------------------------------------------------------------------

    def note(self, kind: FindingKind, path: str, detail: str, action: str, fixed: bool) -> None:
        self.report.findings.append(Finding(kind, path, detail, action, fixed))

    def age(self, st: os.stat_result, *, linked: bool = False) -> float:
        # A data file's ctime moves when it is linked into data/, so one linked a
        # moment ago counts as new however old its contents are. A tmp file or a lock
        # is judged by its mtime: writes (and touch_active_lock) move it.
        return self.now - (max(st.st_mtime, st.st_ctime) if linked else st.st_mtime)

    def old_enough(self, st: os.stat_result, *, linked: bool = False) -> bool:
        # min_age=0 means every process is gone: everything counts, even a file whose
        # ctime this very repair moved (removing its tmp/ twin), which no age would reach.
        return self.min_age <= 0 or self.age(st, linked=linked) >= self.min_age

    @contextlib.contextmanager
    def directory(self, *parts: str) -> Iterator[tuple[int, list[str]] | None]:
        """``(fd, names)`` of ``DIR/parts...``, reached without following symlinks.

        A symlink in place of the directory is reported (and, for ``tmp/`` and
        ``active/``, whose contents are only ever transient, removed); None then.
        """
        try:
            fd = _fs.open_dir_nofollow(self.config.dir, parts)
        except FileNotFoundError:
            yield None
            return
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._not_a_directory(parts)
            yield None
            return
        try:
            # An NFS client's .nfsXXXX files (open, unlinked) vanish on their own when
            # closed: neither strays nor leftovers.
            yield fd, [n for n in os.listdir(fd) if not Layout.is_nfs_silly_rename(n)]
        finally:
            _fs.close_dir(fd)

    def _not_a_directory(self, parts: tuple[str, ...]) -> None:
        path = self.layout.path(*parts)
        if not os.path.islink(path):
            self.note(FindingKind.STRAY, path, "not a directory", "left", fixed=False)
        elif parts in ((Layout.TMP,), (Layout.ACTIVE,)):
            self.remove_at(
                FindingKind.SYMLINK,
                parts[:-1],
                parts[-1],
                path,
                f"{parts[-1]}/ is a symlink: it would lead removals out of the queue",
            )
        else:
            self.note(
                FindingKind.SYMLINK,
                path,
                "a symlink in place of a queue directory: replace it with the real directory",
                "left",
                fixed=False,
            )

    def remove_at(
        self, kind: FindingKind, parts: tuple[str, ...], name: str, path: str, detail: str
    ) -> None:
        """Unlink ``name`` in ``DIR/parts...`` (a file, or a symlink itself)."""
        if self.dry_run:
            self.note(kind, path, detail, "would remove", fixed=False)
            return
        try:
            fd = _fs.open_dir_nofollow(self.config.dir, parts)
            try:
                os.unlink(name, dir_fd=fd)
            finally:
                _fs.close_dir(fd)
        except FileNotFoundError:
            pass  # Gone meanwhile: what we wanted.
        except OSError as err:
            self.note(kind, path, detail, f"left: removing failed: {err}", fixed=False)
            return
        self.note(kind, path, detail, "removed", fixed=True)

    def move_to_corrupt(
        self, kind: FindingKind, parts: tuple[str, ...], name: str, target: str, detail: str
    ) -> None:
        """Rename ``name`` in ``DIR/parts...`` to ``corrupt/TARGET``, unless taken."""
        path = self.layout.path(*parts, name)
        shown = self.layout.corrupt_path(target)
        if self.dry_run:
            self.note(kind, path, detail, f"would move to {shown}", fixed=False)
            return
        try:
            cfd, _ = _fs.ensure_dir_nofollow(self.config.dir, (Layout.CORRUPT,))
            try:
                fd = _fs.open_dir_nofollow(self.config.dir, parts)
                try:
                    try:
                        os.lstat(target, dir_fd=cfd)
                    except FileNotFoundError:
                        pass
                    else:
                        raise FileExistsError(errno.EEXIST, "already taken", shown)
                    os.rename(name, target, src_dir_fd=fd, dst_dir_fd=cfd)
                finally:
                    _fs.close_dir(fd)
            finally:
                _fs.close_dir(cfd)
        except OSError as err:
            self.note(kind, path, detail, f"left: moving failed: {err}", fixed=False)
            return
        self.note(kind, path, detail, f"moved to {shown}", fixed=True)

    def set_aside(
        self, kind: FindingKind, parts: tuple[str, ...], name: str, detail: str
    ) -> None:
        """Move ``name`` in ``DIR/parts...`` to ``corrupt/NAME[.N].lock``."""
        path = self.layout.path(*parts, name)
        if self.dry_run:
            self.note(kind, path, detail, "would move to corrupt/", fixed=False)
            return
        try:
            aside = set_aside(self.config, parts, name, ".lock")
        except OSError as err:
            self.note(kind, path, detail, f"left: moving failed: {err}", fixed=False)
            return
        self.note(kind, path, detail, f"moved to {aside}", fixed=True)

    # -- the passes -------------------------------------------------------------------

    def run(self) -> RepairReport:
        if self.dead_host is not None:
            self._check_host_is_dead(self.dead_host)
        # Without a readable queue/ (a symlink there), nothing can be called an orphan.
        self.queue_ok = self._queue_readable()
        self.check_tmp()
        self.check_active()
        live = self.check_queue()
        # Deferred jobs (listed after queue/, so that one moving between the two is
        # seen in one or the other) keep their data too.
        live.update(entry.name for entry in scan_deferred(self.config))
        # So do dependants waiting for their parents (a promotion moves one into
        # queue/, listed before: seen in one or the other).
        live.update(scan_waiting(self.config))
        if self.queue_ok:
            self.check_failed_claims(live)
            self.check_data(live)
        self.check_results()
        self.check_keys()
        return self.report

    def check_failed_claims(self, live: set[str]) -> None:
        """A failed job claimed for a requeue (``failed/.NAME.requeue.TOKEN``) by a
        process that died before it was done: in neither ``failed/`` nor the queue, it
        would be lost. Put back as ``failed/NAME`` if it did not reach the queue; if it
        did, the claim is what the requeue would have removed (found by crashcheck)."""
        for fd, name, st in self.entries(Layout.FAILED):
            jobid = Layout.failed_staging_job(name, "requeue")
            # The claim's rename moves the directory's ctime, not its mtime.
            if jobid is None or not stat.S_ISDIR(st.st_mode) or not self.old_enough(
                    st, linked=True):
                continue
            path = os.path.join(self.layout.failed_dir, name)
            detail = f"failed job {jobid}, claimed for a requeue by a process that died"
            requeued = jobid in live or _lstat_at(jobid, fd) is not None
            if self.dry_run:
                action = "would remove" if requeued else f"would put back as failed/{jobid}"
                self.note(FindingKind.TMP_LEFTOVER, path, detail, action, fixed=False)
                continue
            try:
                if requeued:
                    shutil.rmtree(path)
                else:
                    os.rename(name, jobid, src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as err:
                self.note(FindingKind.TMP_LEFTOVER, path, detail, f"left: {err}", fixed=False)
                continue
            self.note(FindingKind.TMP_LEFTOVER, path, detail,
                      "removed" if requeued else f"put back as failed/{jobid}", fixed=True)

    def check_keys(self) -> None:
        """Unique keys whose job is gone, judged stale by the one rule (see
        :mod:`dirqueue._keys`): left by a finisher that died before releasing it."""
        for name in list_keys(self.config):
            holder = holder_of(self.config, name)
            if holder is None or is_held(self.config, holder):
                continue
            if holder.while_queued and holder.jobid and place_of(self.config, holder.jobid):
                # Held only until its job started (unique_while="queued"): free, and
                # no fault; the next enqueue with the key, or the job's end, removes it.
                continue
            path = self.layout.key_path(name)
            detail = f"its job {holder.jobid} is gone"
            if self.dry_run:
                self.note(FindingKind.STALE_KEY, path, detail, "would remove", fixed=False)
            elif remove_if_stale(self.config, name):
                self.note(FindingKind.STALE_KEY, path, detail, "removed", fixed=True)

    def check_results(self) -> None:
        """Answers whose time to live ran out (see :mod:`dirqueue._results`)."""
        with self.directory(Layout.RESULTS) as listing:
            if listing is None:
                return  # None, or a symlink in its place (reported, left).
        for name in remove_expired(self.config, dry_run=self.dry_run):
            self.note(
                FindingKind.EXPIRED_RESULT, self.layout.result_path(name),
                "its time to live ran out", "would remove" if self.dry_run else "removed",
                fixed=not self.dry_run,
            )

    def _queue_readable(self) -> bool:
        try:
            _fs.close_dir(_fs.open_dir_nofollow(self.config.dir, (Layout.QUEUE,)))
        except FileNotFoundError:
            return True  # No jobs at all: every data file and lock is an orphan.
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                return False
            raise
        return True

    def entries(self, *parts: str) -> Iterator[tuple[int, str, os.stat_result]]:
        """``(dir_fd, name, lstat)`` of every entry of ``DIR/parts...`` still there."""
        with self.directory(*parts) as listing:
            if listing is None:
                return
            fd, names = listing
            for name in names:
                st = _lstat_at(name, fd)
                if st is not None:
                    yield fd, name, st

    def check_tmp(self) -> None:
        parts = (Layout.TMP,)
        for _, name, st in self.entries(*parts):
            path = self.layout.tmp_path(name)
            if stat.S_ISLNK(st.st_mode):
                self.remove_at(FindingKind.SYMLINK, parts, name, path, "symlink in tmp/")
                continue
            if stat.S_ISDIR(st.st_mode):
                self.note(FindingKind.STRAY, path, "a directory in tmp/", "left", False)
                continue
            dependant = claimed_dependant(name)
            if dependant is not None and self.old_enough(st):
                self._put_back_dependant(name, dependant)
                continue
            dead = self._tmp_owner_dead(name)
            if TmpLockName.is_lock_file(name) and dead is False:
                continue  # A live worker's lock file: every job it takes is linked to it.
            if self.old_enough(st) or dead:
                self.remove_at(
                    FindingKind.TMP_LEFTOVER,
                    parts,
                    name,
                    path,
                    f"left by a process that died ({self.age(st):.0f}s old)",
                )

    def _put_back_dependant(self, name: str, jobid: str) -> None:
        """A dependant claimed for ``failed/`` by a worker that died on the way: back to
        ``waiting/`` (a link, never over a name that is there; then the tmp name goes),
        where the next settle moves it to ``failed/`` properly."""
        path = self.layout.tmp_path(name)
        detail = f"dependant {jobid}, left on its way to failed/ by a process that died"
        if self.dry_run:
            self.note(FindingKind.TMP_LEFTOVER, path, detail, "would put back in waiting/",
                      False)
            return
        try:
            wfd, _ = _fs.ensure_dir_nofollow(self.config.dir, (Layout.WAITING,))
            try:
                tfd = _fs.open_dir_nofollow(self.config.dir, (Layout.TMP,))
                try:
                    ours = os.lstat(name, dir_fd=tfd)
                    try:
                        os.link(name, jobid, src_dir_fd=tfd, dst_dir_fd=wfd,
                                follow_symlinks=False)
                    except FileExistsError:
                        # Over NFS a lost reply says EEXIST although the link was made.
                        if not _fs.same_file(os.lstat(jobid, dir_fd=wfd), ours):
                            raise
                    os.unlink(name, dir_fd=tfd)
                finally:
                    _fs.close_dir(tfd)
            finally:
                _fs.close_dir(wfd)
        except OSError as err:
            self.note(FindingKind.TMP_LEFTOVER, path, detail, f"left: {err}", False)
            return
        self.note(FindingKind.TMP_LEFTOVER, path, detail, "put back in waiting/", True)

    def _tmp_owner_dead(self, name: str) -> bool | None:
        # A pickup's tmp lock (or a lock file) names its owner: only a provably dead one
        # lets us take it before min_age, and a live one keeps its lock file. None: no
        # owner on this host (only here can a process be seen alive; another host's lock
        # file goes at min_age, and its owner makes a new one if it needs one).
        host = self.config.hostname
        pid = TmpLockName.owner(name, host)
        if pid is None:
            return None
        if pid == current_pid():
            return False
        return owner_is_dead(host, pid, None, None, None, my_host=host)

    def _check_host_is_dead(self, host: str) -> None:
        """Refuse (before changing anything) to free the locks of this very host, or of
        a host one of whose locks shows a fresh heartbeat: it looks alive, and its
        workers would lose jobs they are doing. A host whose workers keep no heartbeat
        (Perl's) cannot be told alive from here: the operator's word stands."""
        if host == self.config.hostname:
            raise HostAliveError(
                f"{host} is this host: its dead workers' locks are removed without"
                " --host; a live worker's lock must not be", host
            )
        for fd, name, st in self.entries(Layout.ACTIVE):
            if not (stat.S_ISREG(st.st_mode) and is_job_name(name)):
                continue
            judged = judge(self.config, st, self._lock_text(fd, name), self.now)
            if judged.owner.host == host and judged.verdict is Verdict.HELD and (
                judged.owner.heartbeat
            ):
                raise HostAliveError(
                    f"host {host} looks alive: its worker's lock on job {name} shows a"
                    f" heartbeat {judged.age:.0f}s ago (lifetime"
                    f" {judged.lifetime:g}s); nothing was removed", host
                )

    @staticmethod
    def _lock_text(fd: int, name: str) -> bytes:
        with contextlib.suppress(OSError):
            return _fs.read_limited(_fs.open_regular(name, dir_fd=fd), 4096)
        return b""

    def check_active(self) -> None:
        for fd, name, st in self.entries(Layout.ACTIVE):
            self.check_lock(fd, name, st)

    def check_lock(self, fd: int, name: str, st: os.stat_result) -> None:
        parts = (Layout.ACTIVE,)
        path = self.layout.active_path(name)
        if stat.S_ISLNK(st.st_mode):
            self.remove_at(FindingKind.SYMLINK, parts, name, path, "symlink in active/")
            return
        if not is_job_name(name):
            self.note(FindingKind.STRAY, path, "not a job id; readers ignore it", "left", False)
            return
        raw = self._lock_text(fd, name) if stat.S_ISREG(st.st_mode) else b""
        judged = judge(self.config, st, raw, self.now)
        if judged.verdict is Verdict.NOT_A_LOCK:
            # Pickups skip the job while it is there; unlink cannot remove a directory.
            self.set_aside(
                FindingKind.NOT_A_FILE,
                parts,
                name,
                "not a lock file (a directory, socket or FIFO): it keeps the job from"
                " every worker",
            )
            return
        if judged.removable:
            self.remove_lock(FindingKind.DEAD_LOCK, name, st, judged.reason)
        elif self.dead_host is not None and judged.owner.host == self.dead_host:
            self.remove_lock(
                FindingKind.DEAD_HOST_LOCK,
                name,
                st,
                f"held by worker {judged.owner.host}:{judged.owner.pid}, a host declared"
                f" dead ({judged.age:.0f}s old)",
            )
        elif self.queue_ok and not locate(self.layout, name) and self.old_enough(st):
            owner = judged.owner
            self.remove_lock(
                FindingKind.ORPHAN_LOCK,
                name,
                st,
                f"lock of {owner.host}:{owner.pid} for a job no longer in the queue",
            )

    def remove_lock(self, kind: FindingKind, name: str, st: os.stat_result, detail: str) -> None:
        path = self.layout.active_path(name)
        if self.dry_run:
            self.note(kind, path, detail, "would remove", fixed=False)
            return
        try:
            removed = _lock.remove_judged(self.config, name, st)
        except OSError as err:
            self.note(kind, path, detail, f"left: removing failed: {err}", fixed=False)
            return
        if removed is False:
            self.note(
                kind, path, detail, "left: another worker took the job or is breaking the lock",
                False,
            )
        else:
            self.note(kind, path, detail, "removed", fixed=True)

    def check_queue(self) -> set[str]:
        """Check every control file; return the names of the jobs in the queue."""
        live: set[str] = set()
        others: list[tuple[str, str | None]] = []
        try:
            entries = scan(self.layout, on_other=lambda name, fanout: others.append((name, fanout)))
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._not_a_directory((Layout.QUEUE,))
            return live
        for name, fanout in others:
            parts = Layout.queue_parts(fanout)
            path = self.layout.path(*parts, name)
            if os.path.islink(path):
                self.remove_at(FindingKind.SYMLINK, parts, name, path, "symlink in queue/")
            else:
                detail = "not a job id; readers ignore it" if fanout is None else "not a job id"
                self.note(FindingKind.STRAY, path, detail, "left", False)
        for entry in entries:
            self.check_job(entry, live)
        return live

    def job_problem(self, name: str, queue_path: str) -> tuple[FindingKind, str] | None:
        """``(finding kind, reason)`` if job ``name`` is broken; None if fine or gone."""
        try:
            control = read_control(queue_path)
            check_data(self.config, name, queue_path, control)
        except PermissionError as err:
            return FindingKind.UNREADABLE_CONTROL, f"cannot be read: {err}"
        except OSError as err:
            if _fs.is_gone(err):
                return None  # Finished meanwhile (over NFS, by another host: ESTALE).
            raise
        except CorruptJobError as err:
            if err.path == self.layout.data_path(name) and not os.path.lexists(err.path):
                return FindingKind.MISSING_DATA, str(err)
            return FindingKind.CORRUPT_CONTROL, str(err)
        return None

    def check_job(self, entry: QueueEntry, live: set[str]) -> None:
        name = entry.name
        queue_path = self.layout.queue_path(name, entry.fanout)
        self.report.jobs_checked += 1
        problem = self.job_problem(name, queue_path)
        if problem is None:
            live.add(name)
            return
        kind, reason = problem
        if self.dry_run:
            self.note(kind, queue_path, reason, "would move to corrupt/", fixed=False)
            live.add(name)
            return
        # Move it aside under the job's lock, as a worker would, so that a worker that
        # holds the job (and is about to finish it) is never disturbed.
        try:
            held = _lock.take(self.config, name, queue_path)
        except OSError as err:
            self.note(kind, queue_path, reason, f"left: locking failed: {err}", fixed=False)
            live.add(name)
            return
        if isinstance(held, _lock.Refused):
            if held is not _lock.Refused.GONE:
                self.note(kind, queue_path, reason, "left: a worker holds it", fixed=False)
                live.add(name)
            return
        try:
            problem = self.job_problem(name, queue_path)  # Again, now that we hold it.
            if problem is None:
                live.add(name)
                return
            kind, reason = problem
            aside = move_aside(self.config, name, queue_path, reason)
        except OSError as err:
            self.note(kind, queue_path, reason, f"left: moving failed: {err}", fixed=False)
            live.add(name)
            return
        finally:
            with contextlib.suppress(OSError):
                _lock.release(self.config, held)
        self.note(kind, queue_path, reason, f"moved to {aside}", fixed=True)

    def check_data(self, live: set[str]) -> None:
        with self.directory(Layout.DATA) as top:
            if top is None:
                return
            fd, c1_names = top
            for c1 in c1_names:
                for c2 in self._data_subdirs(fd, (Layout.DATA,), c1):
                    with self.directory(Layout.DATA, c1, c2) as inner:
                        if inner is None:
                            continue
                        dfd, names = inner
                        for name in names:
                            self.check_data_file(dfd, name, c1, c2, live)

    def _data_subdirs(self, fd: int, parts: tuple[str, ...], c1: str) -> list[str]:
        """The data directories under ``data/C1``, reporting what is not one."""
        path = self.layout.path(*parts, c1)
        st = _lstat_at(c1, fd)
        if st is None:
            return []
        if stat.S_ISLNK(st.st_mode):
            self.remove_at(FindingKind.SYMLINK, parts, c1, path, "symlink in data/")
            return []
        if not stat.S_ISDIR(st.st_mode):
            self.note(FindingKind.STRAY, path, "not a data directory", "left", False)
            return []
        found: list[str] = []
        with self.directory(*parts, c1) as listing:
            if listing is None:
                return []
            c1fd, names = listing
            for c2 in names:
                sub = _lstat_at(c2, c1fd)
                sub_path = os.path.join(path, c2)
                if sub is None:
                    continue
                if stat.S_ISLNK(sub.st_mode):
                    self.remove_at(
                        FindingKind.SYMLINK, (*parts, c1), c2, sub_path, "symlink in data/"
                    )
                elif not stat.S_ISDIR(sub.st_mode):
                    self.note(FindingKind.STRAY, sub_path, "not a data directory", "left", False)
                else:
                    found.append(c2)
        return found

    def check_data_file(self, fd: int, name: str, c1: str, c2: str, live: set[str]) -> None:
        parts = (Layout.DATA, c1, c2)
        path = self.layout.path(*parts, name)
        st = _lstat_at(name, fd)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            self.remove_at(FindingKind.SYMLINK, parts, name, path, "symlink in data/")
            return
        owners = [
            jobid
            for jobid in (name + c1 + c2, name)
            if is_job_name(jobid) and data_location(jobid) == (c1, c2, name)
        ]
        if any(jobid in live for jobid in owners):
            return
        # Enqueues link the data before the control file: look again, and only take
        # what is old enough that no enqueue can still be on its way.
        if (
            any(
                locate(self.layout, jobid)
                or os.path.lexists(self.layout.deferred_path(jobid))
                or os.path.lexists(self.layout.waiting_path(jobid))
                for jobid in owners
            )
            or not self.old_enough(st, linked=True)
        ):
            return
        if not stat.S_ISREG(st.st_mode):
            self.note(FindingKind.STRAY, path, "not a regular file", "left", False)
            return
        detail = "no control file names this data file"
        for jobid in owners:
            stem = self._corrupt_stem_without_data(jobid)
            if stem is not None:
                # A corrupt job was moved aside but its data was left behind: reunite.
                self.move_to_corrupt(
                    FindingKind.ORPHAN_DATA,
                    parts,
                    name,
                    Layout.corrupt_data_name(stem),
                    detail + f"; its control file is in {self.layout.corrupt_path(stem)}",
                )
                return
        self.remove_at(FindingKind.ORPHAN_DATA, parts, name, path, detail)

    def _corrupt_stem_without_data(self, jobid: str) -> str | None:
        for n in range(1000):
            stem = Layout.corrupt_stem(jobid, n)
            if not os.path.lexists(self.layout.corrupt_path(stem)):
                return None
            if not os.path.lexists(self.layout.corrupt_path(Layout.corrupt_data_name(stem))):
                return stem
        return None


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    # The queue is in use while we look: whatever we listed may be gone by now.
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except OSError as err:
        if _fs.is_gone(err):
            return None
        raise


def repair_queue(
    config: QueueConfig, *, dry_run: bool, min_age: float, host: str | None = None
) -> RepairReport:
    """Check (and unless ``dry_run``, repair) a queue's directory; see the module doc.

    ``host``: a host the operator knows is dead; its workers' locks are removed too
    (:class:`~dirqueue.errors.HostAliveError` if it is this host, or looks alive).
    """
    if min_age < 0:
        raise ValueError(f"min_age must be 0 or more seconds, not {min_age}")
    if host is not None and not host:
        raise ValueError("host must be a host name, not empty")
    try:
        return _Repairer(config, dry_run=dry_run, min_age=min_age, host=host).run()
    except DirQueueError:
        raise
    except OSError as err:
        raise QueueIOError(f"checking queue {config.dir!r}", err) from err
