"""The failure policy's storage: attempt counts, and the failed-job store.

**Attempts** are counted in the job's own control file, as one extra line
``QATT: N``. Every worker on every host reads the same file, so the count is shared
across hosts without another file to keep in step; it goes away with the job however
the job ends (a Perl worker that finishes it leaves nothing behind); and the Perl
module, which reads every line it does not know as metadata, tolerates it. The name is
a system field (``Q`` + three capitals) so that no one's metadata can collide with it
(the format forbids such metadata names) and Python code sees it in
``Job.control.extra_system``, not in ``Job.metadata``. The control file is replaced
atomically (written in ``tmp/``, fsynced, renamed over ``queue/NAME``) while the
worker holds the job's lock (:meth:`Job.update_control`), so a reader sees the old file
or the new one, never half.

**Failed jobs** live in ``DIR/failed/NAME/``, a directory the Perl module never reads:
``control`` (the control file, with the final count), ``data`` (a hard link to the
data, or a copy) and ``error.json`` (the last error, the attempts, when and where).
Each entry is built under a dot name and renamed into place, so a listing never sees
half of one; requeueing and purging first rename the entry to a dot name, so two
processes never requeue the same job twice. A requeue goes through the one way into the
queue (:mod:`dirqueue._enqueue`), so a requeued job is as durable as a new one.

The failed store works in ``failed/`` through descriptors opened without following
symlinks, and keeps a job's data only if it is a regular file in the queue: another
user of a shared queue must not be able to have a worker copy a private file there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from . import _deps, _dirfds, _enqueue, _fs, _keys
from ._config import QueueConfig
from ._format import (
    ATTEMPTS_KEY,
    CONTROL_FILE_MAX_BYTES,
    COUNTED_RUN_KEY,
    ControlFile,
    attempts_of,
    is_job_name,
    parse_control,
)
from ._jobfiles import in_queue_dir, read_control, unlink_data
from ._layout import Layout
from .errors import CorruptJobError, DirQueueError, JobLostError, JobStateError, QueueIOError
from .job import Job

if TYPE_CHECKING:
    from .queue import DirQueue

__all__ = [
    "ATTEMPTS_KEY",
    "FAILED_STORE_RETRY",
    "FailedJob",
    "FailedStore",
    "NoSuchFailedJobError",
    "attempts_of",
    "record_attempts",
]



_log = logging.getLogger("dirqueue")

#: How long a job out of attempts waits in deferred/ when failed/ cannot be written,
#: before a worker tries to move it there again.
FAILED_STORE_RETRY: Final = 60.0


class NoSuchFailedJobError(DirQueueError, LookupError):
    """No failed job has this id. ``jobid`` names it."""

    def __init__(self, message: str, jobid: str | None = None) -> None:
        super().__init__(message)
        self.jobid = jobid


#: How a failed job's new entry in failed/ is opened: a directory, never a symlink.
_ENTRY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_new(
    path: str, data: bytes, mode: int, durable: bool, *, dir_fd: int | None = None
) -> None:
    """Write a new file (``O_EXCL``, never through a symlink)."""
    fd = _fs.create_exclusive(path, mode, dir_fd=dir_fd)
    try:
        _fs.write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def record_attempts(job: Job, attempts: int) -> None:
    """Store ``attempts`` in the control file of ``job``, which this process holds.

    The new control file replaces the old with one ``rename``, under the job's lock
    (:meth:`Job.update_control`); :class:`JobLostError` if the lock was lost.
    """
    if not job.is_active:
        raise JobStateError(
            f"cannot record attempts of job {job.jobid}: it is not held by this process",
            job.jobid,
        )
    job.update_control(
        dataclasses.replace(
            job.control, extra_system={**job.control.extra_system, ATTEMPTS_KEY: str(attempts)}
        )
    )


@dataclass(frozen=True)
class FailedJob:
    """A job that failed ``max_attempts`` times and was moved to ``DIR/failed/``."""

    jobid: str
    attempts: int
    #: The last error, one line (``"ValueError: bad input"``, ``"command exited 3"``).
    error: str
    #: More about the last error: a traceback, or the end of a command's stderr.
    detail: str
    #: When it was moved aside, seconds since the epoch.
    failed_at: float
    #: The host and process of the worker that moved it.
    host: str
    pid: int
    control: ControlFile
    data_path: str

    @property
    def metadata(self) -> dict[str, str]:
        """The job's metadata, as submitted."""
        return self.control.metadata

    @property
    def priority(self) -> int:
        """The job's priority, from its id."""
        return int(self.jobid[:2])

    @property
    def size_bytes(self) -> int:
        """The data's size in bytes."""
        if self.control.size_bytes is not None:
            return self.control.size_bytes
        try:
            return os.stat(self.data_path).st_size
        except OSError:
            return 0

    def get_data(self) -> bytes:
        """The job's data."""
        return _fs.read_limited(_fs.open_regular(self.data_path), -1)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by ``dq list --failed --json``."""
        return {
            "id": self.jobid,
            "priority": self.priority,
            "size": self.size_bytes,
            "submitted": self.control.submitted_secs + self.control.submitted_usecs / 1e6,
            "submitted_host": self.control.hostname,
            "attempts": self.attempts,
            "error": self.error,
            "detail": self.detail,
            "failed_at": self.failed_at,
            "failed_host": self.host,
            "failed_pid": self.pid,
            "metadata": dict(self.metadata),
        }


class FailedStore:
    """The failed jobs of one queue, in ``DIR/failed/``: add, list, requeue, purge."""

    def __init__(self, queue: DirQueue) -> None:
        self.queue = queue
        self.config = queue.config
        self.layout: Layout = queue.layout

    def __repr__(self) -> str:
        return f"FailedStore({self.queue.dir!r})"

    # -- moving a job aside ----------------------------------------------------------

    def add(self, job: Job, error: str, *, attempts: int, detail: str = "") -> FailedJob:
        """Move ``job`` (held by this process) aside as failed, with its last error.

        Its control file, data and error record go to ``failed/NAME/``; then the job
        is finished, which takes it out of the queue.
        """
        if not job.is_active:
            raise JobStateError(
                f"cannot move job {job.jobid} to failed/: it is not held by this process",
                job.jobid,
            )
        layout = self.layout
        config = self.config
        jobid = job.jobid
        control = dataclasses.replace(
            job.control, extra_system={**job.control.extra_system, ATTEMPTS_KEY: str(attempts)}
        )
        record = {
            "jobid": jobid,
            "attempts": attempts,
            "error": error,
            "detail": detail,
            "failed_at": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        staging = layout.failed_staging_name(jobid, "new", _token())
        try:
            # Every step is taken through descriptors opened without following
            # symlinks, never by path: failed/ (or the entry being built) swapped for a
            # symlink by another user of the queue after a check must not lead the
            # job's files, or our mkdir, anywhere else.
            failed_fd, made = _fs.ensure_dir_nofollow(config.dir, (Layout.FAILED,))
            try:
                os.mkdir(staging, dir_fd=failed_fd)
                try:
                    self._fill_entry(job, failed_fd, staging, control, record)
                    try:
                        os.rename(staging, jobid, src_dir_fd=failed_fd, dst_dir_fd=failed_fd)
                    except OSError as err:
                        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                            raise
                        # An older failure of a job by the same id: the newer one wins.
                        self._remove_entry(jobid, "replaced")
                        os.rename(staging, jobid, src_dir_fd=failed_fd, dst_dir_fd=failed_fd)
                except BaseException:
                    _remove_new_entry(failed_fd, staging)
                    raise
                if config.durable:
                    os.fsync(failed_fd)
                    _fsync_made(made)
            finally:
                _fs.close_dir(failed_fd)
        except OSError as err:
            raise QueueIOError(f"moving job {jobid} to {layout.failed_dir}", err) from err
        try:
            job.finish()
        except JobLostError:
            # Taken over (or moved) meanwhile: the job lives on with its new holder,
            # so it has not failed; an entry left here would be requeued beside it.
            self._remove_entry(jobid, "lost")
            raise
        # What was written, not read back by path: failed/ may be another thing by now.
        return FailedJob(
            jobid=jobid,
            attempts=attempts,
            error=error,
            detail=detail,
            failed_at=_as_float(record["failed_at"]),
            host=str(record["host"]),
            pid=_as_int(record["pid"], 0),
            control=control,
            data_path=layout.failed_file(jobid, Layout.FAILED_DATA),
        )

    def fail_waiting(self, jobid: str, error: str) -> bool:
        """Move dependant ``jobid`` from ``waiting/`` to ``failed/`` unrun (a parent of
        it failed): claimed first by a rename out of ``waiting/``, which no promotion
        can also win. False if it had gone (promoted, or failed by another worker)."""
        config = self.config
        layout = self.layout
        claimed = _deps.claim_waiting(config, jobid)
        if claimed is None:
            return False
        try:
            control = read_control(claimed)
            job = Job(config, jobid, claimed, control, layout.data_path(jobid))
            record = {
                "jobid": jobid, "attempts": 0, "error": error, "detail": "",
                "failed_at": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
            }
            staging = layout.failed_staging_name(jobid, "new", _token())
            failed_fd, made = _fs.ensure_dir_nofollow(config.dir, (Layout.FAILED,))
            try:
                os.mkdir(staging, dir_fd=failed_fd)
                try:
                    self._fill_entry(job, failed_fd, staging, control, record)
                    os.rename(staging, jobid, src_dir_fd=failed_fd, dst_dir_fd=failed_fd)
                except BaseException:
                    _remove_new_entry(failed_fd, staging)
                    raise
                if config.durable:
                    os.fsync(failed_fd)
                    _fsync_made(made)
            finally:
                _fs.close_dir(failed_fd)
        except BaseException as err:
            # Put back where it was: it is still a dependant, failed by the next look.
            with contextlib.suppress(OSError):
                _put_back_waiting(config, os.path.basename(claimed), jobid)
            if isinstance(err, OSError) and not isinstance(err, DirQueueError):
                raise QueueIOError(
                    f"moving dependant {jobid} to {layout.failed_dir}", err
                ) from err
            raise
        with contextlib.suppress(OSError):
            unlink_data(config, jobid)
        with contextlib.suppress(OSError):
            name = os.path.basename(claimed)
            in_queue_dir(
                config, (Layout.TMP,), lambda tfd: os.unlink(name, dir_fd=tfd),
                missing_is_an_answer=True,
            )
        key = control.metadata.get(_keys.KEY_META)
        if key:
            with contextlib.suppress(OSError, DirQueueError):
                _keys.release(config, key, jobid)
        return True

    def add_or_defer(
        self, job: Job, error: str, *, attempts: int, max_attempts: int, detail: str = ""
    ) -> str | None:
        """:meth:`add`; or, if ``failed/`` cannot be written (a full disk; a symlink
        another user planted there), log an error and defer the job for
        :data:`FAILED_STORE_RETRY` seconds with its attempts counted, so that no
        handler runs it again: whoever takes it next tries ``failed/`` again. None if
        the job went to ``failed/``; else its error, saying why it did not.
        """
        try:
            self.add(job, error, attempts=attempts, detail=detail)
        except QueueIOError as err:
            _log.error(
                "job %s failed (attempt %d of %d: %s) but could not be moved to failed/"
                " (%s): it waits %g s in deferred/ and is moved then",
                job.jobid, attempts, max_attempts, error, err, FAILED_STORE_RETRY,
            )
            error = f"{error} (not moved to failed/: {err})"
            try:
                job.retry_later(FAILED_STORE_RETRY, error=error)
            except QueueIOError as defer_err:
                error = f"{error} (nor deferred: {defer_err})"
            finally:
                if job.is_active:
                    job.return_to_queue()
            return error
        return None

    def _fill_entry(
        self, job: Job, failed_fd: int, name: str, control: ControlFile, record: dict[str, Any]
    ) -> None:
        """Write a failed job's files into the new entry ``failed/NAME`` (``failed_fd``:
        ``failed/``), through the entry's own descriptor."""
        config = self.config
        fd = os.open(name, _ENTRY_FLAGS, dir_fd=failed_fd)
        try:
            _write_new(Layout.FAILED_CONTROL, control.to_bytes(), config.queue_file_mode,
                       config.durable, dir_fd=fd)
            record["data_kept"] = self._keep_data(job, fd)
            _write_new(
                Layout.FAILED_ERROR,
                (json.dumps(record, indent=1) + "\n").encode(),
                config.queue_file_mode,
                config.durable,
                dir_fd=fd,
            )
            if config.durable:
                os.fsync(fd)
        finally:
            _fs.close_dir(fd)

    def _keep_data(self, job: Job, entry_fd: int) -> bool:
        """Keep ``job``'s data in the new entry (``entry_fd``): a hard link to it, or a
        copy. False (and an empty file) if there is no data to keep, or what is at its
        name is not a regular file of the queue (a symlink planted there is never
        followed)."""
        config = self.config
        target = Layout.FAILED_DATA
        try:
            source = job.open_data()
        except FileNotFoundError:
            source = None  # Removed by hand: keep an empty one, still requeueable.
        except CorruptJobError:
            source = None
        if source is None:
            _write_new(target, b"", config.data_file_mode, config.durable, dir_fd=entry_fd)
            return False
        with source:
            opened = os.fstat(source.fileno())
            try:
                # Linked by name, never following a symlink; then checked to be the
                # very file we opened (the name may have been swapped meanwhile).
                os.link(job.get_data_path(), target, dst_dir_fd=entry_fd,
                        follow_symlinks=False)
                if _fs.same_file(os.lstat(target, dir_fd=entry_fd), opened):
                    return True
                os.unlink(target, dir_fd=entry_fd)
            except OSError:
                pass  # No hard links here (some FUSE and SMB mounts): copy instead.
            fd = _fs.create_exclusive(target, config.data_file_mode, dir_fd=entry_fd)
            try:
                while chunk := source.read(1 << 16):
                    _fs.write_all(fd, chunk)
                if config.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return True

    # -- reading ---------------------------------------------------------------------

    def _names(self) -> list[str]:
        try:
            with os.scandir(self.layout.failed_dir) as it:
                return sorted(e.name for e in it if is_job_name(e.name) and e.is_dir())
        except FileNotFoundError:
            return []

    def _read(self, jobid: str) -> FailedJob:
        layout = self.layout
        control = parse_control(
            _read_regular(layout.failed_file(jobid, Layout.FAILED_CONTROL)), jobid
        )
        record: dict[str, Any]
        try:
            loaded = json.loads(_read_regular(layout.failed_file(jobid, Layout.FAILED_ERROR)))
            record = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            record = {}
        return FailedJob(
            jobid=jobid,
            attempts=_as_int(record.get("attempts"), attempts_of(control)),
            error=str(record.get("error", "(no error record)")),
            detail=str(record.get("detail", "")),
            failed_at=_as_float(record.get("failed_at")),
            host=str(record.get("host", "")),
            pid=_as_int(record.get("pid"), 0),
            control=control,
            data_path=layout.failed_file(jobid, Layout.FAILED_DATA),
        )

    def get(self, jobid: str) -> FailedJob:
        """The failed job ``jobid``; raise :class:`NoSuchFailedJobError` if there is none."""
        if not is_job_name(jobid):
            raise NoSuchFailedJobError(
                f"{jobid!r} is not a job id: copy one from 'dq list --failed'", jobid
            )
        try:
            return self._read(jobid)
        except FileNotFoundError:
            raise NoSuchFailedJobError(
                f"no failed job {jobid} in {self.queue.dir}: see 'dq list --failed'", jobid
            ) from None

    def jobs(self) -> Iterator[FailedJob]:
        """Every failed job, in id order (priority, then submission time)."""
        for name in self._names():
            try:
                yield self._read(name)
            except CorruptJobError:
                continue  # Not ours to read.
            except OSError as err:
                if not _fs.is_gone(err):
                    raise
                # Requeued or purged while we looked (by another host: ESTALE).

    def count(self) -> int:
        """How many failed jobs there are."""
        return len(self._names())

    # -- requeue and purge -----------------------------------------------------------

    def _claim(self, jobid: str, purpose: str) -> str:
        """Rename ``failed/NAME`` to a dot name only we use; raise if it is not there."""
        if not is_job_name(jobid):
            raise NoSuchFailedJobError(
                f"{jobid!r} is not a job id: copy one from 'dq list --failed'", jobid
            )
        claimed = self.layout.failed_staging_dir(jobid, purpose, _token())
        try:
            os.rename(self.layout.failed_job_dir(jobid), claimed)
        except FileNotFoundError:
            raise NoSuchFailedJobError(
                f"no failed job {jobid} in {self.queue.dir}: see 'dq list --failed'", jobid
            ) from None
        except OSError as err:
            raise QueueIOError(f"claiming failed job {jobid}", err) from err
        if self.config.durable:
            # The claim on disk before the job is linked back into queue/: after a power
            # loss failed/NAME must not come back beside a requeued job (found by
            # crashcheck; docs/durability.md).
            try:
                _fs.fsync_dir(self.layout.failed_dir)
            except OSError as err:
                with contextlib.suppress(OSError):
                    os.rename(claimed, self.layout.failed_job_dir(jobid))
                raise QueueIOError(f"claiming failed job {jobid}", err) from err
        return claimed

    def _remove_entry(self, jobid: str, purpose: str) -> bool:
        try:
            claimed = self._claim(jobid, purpose)
        except NoSuchFailedJobError:
            return False
        shutil.rmtree(claimed, ignore_errors=True)
        return True

    def requeue(self, jobid: str) -> str:
        """Put failed job ``jobid`` back in the queue, its attempts reset; return its id.

        The job keeps its id, so it keeps its place in priority order. Its data is
        linked back to ``data/`` and its control file into ``queue/``, each with the
        enqueue protocol's verified link.
        """
        config = self.config
        claimed = self._claim(jobid, "requeue")
        try:
            try:
                control = parse_control(
                    _read_regular(os.path.join(claimed, Layout.FAILED_CONTROL)), jobid
                )
                extra = {k: v for k, v in control.extra_system.items()
                         if k not in (ATTEMPTS_KEY, COUNTED_RUN_KEY)}
                control = dataclasses.replace(control, extra_system=extra)
                self.queue.create()
                _enqueue.requeue(
                    config, jobid, control, os.path.join(claimed, Layout.FAILED_DATA)
                )
            except OSError as err:
                if isinstance(err, DirQueueError):
                    raise
                raise QueueIOError(f"requeueing failed job {jobid}", err) from err
        except BaseException:
            # If this fails the entry stays under its dot name; nothing is lost.
            with contextlib.suppress(OSError):
                os.rename(claimed, self.layout.failed_job_dir(jobid))
            raise
        shutil.rmtree(claimed, ignore_errors=True)
        return jobid

    def requeue_all(self) -> list[str]:
        """Requeue every failed job; return their ids."""
        done = []
        for name in self._names():
            try:
                done.append(self.requeue(name))
            except NoSuchFailedJobError:
                continue  # Another process requeued or purged it first.
        return done

    def purge(
        self,
        jobids: list[str] | None = None,
        *,
        older_than: float | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Delete failed jobs for good; return the ids deleted.

        ``jobids`` limits it to those jobs (all by default); ``older_than`` (seconds) to
        jobs that failed at least that long ago.
        """
        if now is None:
            now = time.time()
        names = self._names() if jobids is None else list(jobids)
        purged = []
        for name in names:
            if older_than is not None:
                try:
                    failed = self.get(name)
                except NoSuchFailedJobError:
                    continue
                if now - failed.failed_at < older_than:
                    continue
            if self._remove_entry(name, "purge"):
                purged.append(name)
        return purged


def _as_int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return int(value)
    return default


def _as_float(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _read_regular(path: str) -> bytes:
    """A failed-store file's bytes (at most a control file's limit), never through a
    symlink or from a FIFO."""
    return _fs.read_limited(_fs.open_regular(path), CONTROL_FILE_MAX_BYTES + 1)


def _put_back_waiting(config: QueueConfig, claimed: str, jobid: str) -> None:
    """Rename dependant ``jobid``, claimed as ``tmp/claimed``, back into ``waiting/``,
    through both directories' descriptors (never by path: tmp/ or waiting/ swapped for
    a symlink by another user must not move our file elsewhere)."""

    def rename(tmp_fd: int) -> None:
        _dirfds.at(
            config.dir,
            (Layout.WAITING,),
            lambda wfd: os.rename(claimed, jobid, src_dir_fd=tmp_fd, dst_dir_fd=wfd),
        )

    in_queue_dir(config, (Layout.TMP,), rename)


def _remove_new_entry(failed_fd: int, name: str) -> None:
    """Remove the entry ``failed/NAME`` we were building (what it can hold: a failed
    job's three files), through descriptors."""
    with contextlib.suppress(OSError):
        fd = os.open(name, _ENTRY_FLAGS, dir_fd=failed_fd)
        try:
            for which in (Layout.FAILED_CONTROL, Layout.FAILED_DATA, Layout.FAILED_ERROR):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(which, dir_fd=fd)
        finally:
            _fs.close_dir(fd)
        os.rmdir(name, dir_fd=failed_fd)


def _fsync_made(made: list[str]) -> None:
    """A failed/ made just now is durable only once the queue directory names it: the
    job's unlink from queue/ must not outlive it in a power loss (found by crashcheck)."""
    if made:
        _fs.fsync_dir(os.path.dirname(made[0]))


def _token() -> str:
    return f"{os.getpid()}.{time.time_ns()}.{threading.get_ident()}"
