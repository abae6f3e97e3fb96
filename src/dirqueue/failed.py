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
worker holds the job's lock, so a reader sees the old file or the new one, never half.

**Failed jobs** live in ``DIR/failed/NAME/``, a directory the Perl module never reads:
``control`` (the control file, with the final count), ``data`` (a hard link to the
data, or a copy) and ``error.json`` (the last error, the attempts, when and where).
Each entry is built under a dot name and renamed into place, so a listing never sees
half of one; requeueing and purging first rename the entry to a dot name, so two
processes never requeue the same job twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from . import _fs
from ._format import CONTROL_FILE_MAX_BYTES, ControlFile, Layout, is_job_name, parse_control
from .errors import CorruptJobError, DirQueueError, JobStateError, QueueIOError

if TYPE_CHECKING:
    from .job import Job
    from .queue import DirQueue

__all__ = [
    "ATTEMPTS_KEY",
    "FailedJob",
    "FailedStore",
    "NoSuchFailedJobError",
    "attempts_of",
    "record_attempts",
]

#: The control-file field that counts a job's failed attempts.
ATTEMPTS_KEY: Final = "QATT"


class NoSuchFailedJobError(DirQueueError, LookupError):
    """No failed job has this id. ``jobid`` names it."""

    def __init__(self, message: str, jobid: str | None = None) -> None:
        super().__init__(message)
        self.jobid = jobid


def attempts_of(control: ControlFile) -> int:
    """How many attempts at a job have failed so far (0 when never)."""
    raw = control.extra_system.get(ATTEMPTS_KEY, "0")
    try:
        return max(0, int(raw.strip()))
    except ValueError:
        return 0  # Garbled by hand: count afresh rather than refuse the job.


def _write_file(path: str, data: bytes, mode: int, durable: bool) -> os.stat_result:
    fd = _fs.create_exclusive(path, mode)
    try:
        _fs.write_all(fd, data)
        if durable:
            os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _lock_is_ours(job: Job) -> bool:
    lock = job._lock_stat
    if lock is None or not job.is_active:
        return False
    try:
        current = os.lstat(job._queue.layout.active_path(job.jobid))
    except FileNotFoundError:
        return False
    return (current.st_ino, current.st_dev) == (lock.st_ino, lock.st_dev)


def record_attempts(job: Job, attempts: int) -> None:
    """Store ``attempts`` in the control file of ``job``, which this process holds.

    The new control file replaces the old with one ``rename``, under the job's lock.
    """
    if not job.is_active:
        raise JobStateError(
            f"cannot record attempts of job {job.jobid}: it is not held by this process",
            job.jobid,
        )
    queue = job._queue
    control = dataclasses.replace(
        job.control, extra_system={**job.control.extra_system, ATTEMPTS_KEY: str(attempts)}
    )
    tmp = queue.layout.tmp_path(f"{job.jobid}.{time.time_ns()}.{os.getpid()}.attempts")
    try:
        written = _write_file(tmp, control.to_bytes(), queue.queue_file_mode, queue.durable)
        # A lock broken as stale means another worker may be finishing the job: then
        # a rename would bring a finished job back to life.
        if not _lock_is_ours(job) or not os.path.lexists(job.queue_path):
            raise JobStateError(
                f"job {job.jobid} is no longer ours (its lock was broken): not updating it",
                job.jobid,
            )
        try:
            os.rename(tmp, job.queue_path)
        except FileNotFoundError:
            # Over NFS a retried rename reports ENOENT although the first one worked.
            st = os.lstat(job.queue_path)
            if (st.st_ino, st.st_dev) != (written.st_ino, written.st_dev):
                raise
        if queue.durable:
            _fs.fsync_dir(os.path.dirname(job.queue_path))
    except OSError as err:
        raise QueueIOError(f"recording the attempts of job {job.jobid}", err) from err
    finally:
        _fs.unlink_quietly(tmp)
    job._control = control


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
        with open(self.data_path, "rb") as fh:
            return fh.read()

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
        queue = self.queue
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
        staging = layout.failed_staging_dir(jobid, "new", _token())
        try:
            _fs.makedirs(layout.failed_dir)
            os.mkdir(staging)
            try:
                _write_file(
                    os.path.join(staging, Layout.FAILED_CONTROL),
                    control.to_bytes(),
                    queue.queue_file_mode,
                    queue.durable,
                )
                self._keep_data(job.get_data_path(), os.path.join(staging, Layout.FAILED_DATA))
                _write_file(
                    os.path.join(staging, Layout.FAILED_ERROR),
                    (json.dumps(record, indent=1) + "\n").encode(),
                    queue.queue_file_mode,
                    queue.durable,
                )
                if queue.durable:
                    _fs.fsync_dir(staging)
                target = layout.failed_job_dir(jobid)
                try:
                    os.rename(staging, target)
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    # An older failure of a job by the same id: the newer one wins.
                    self._remove_entry(jobid, "replaced")
                    os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if queue.durable:
                _fs.fsync_dir(layout.failed_dir)
        except OSError as err:
            raise QueueIOError(f"moving job {jobid} to {layout.failed_dir}", err) from err
        job.finish()
        return self.get(jobid)

    def _keep_data(self, source: str, target: str) -> None:
        try:
            os.link(source, target)
        except FileNotFoundError:
            # The data file has gone (removed by hand): keep an empty one, so the
            # entry is still complete and requeueable.
            _write_file(target, b"", self.queue.data_file_mode, self.queue.durable)
        except OSError:
            # No hard links here (some FUSE and SMB mounts): copy instead.
            shutil.copyfile(source, target)
            if self.queue.durable:
                fd = os.open(target, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    # -- reading ---------------------------------------------------------------------

    def _names(self) -> list[str]:
        try:
            with os.scandir(self.layout.failed_dir) as it:
                return sorted(e.name for e in it if is_job_name(e.name) and e.is_dir())
        except FileNotFoundError:
            return []

    def _read(self, jobid: str) -> FailedJob:
        layout = self.layout
        with open(layout.failed_file(jobid, Layout.FAILED_CONTROL), "rb") as fh:
            control = parse_control(fh.read(CONTROL_FILE_MAX_BYTES + 1), jobid)
        record: dict[str, Any]
        try:
            with open(layout.failed_file(jobid, Layout.FAILED_ERROR), "rb") as fh:
                loaded = json.loads(fh.read())
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
            except (FileNotFoundError, CorruptJobError):
                continue  # Requeued or purged while we looked, or not ours to read.

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
        queue = self.queue
        layout = self.layout
        claimed = self._claim(jobid, "requeue")
        restore = True
        linked: list[str] = []
        tmp_ctrl = layout.tmp_path(f"{jobid}.{time.time_ns()}.{os.getpid()}.requeue")
        try:
            with open(os.path.join(claimed, Layout.FAILED_CONTROL), "rb") as fh:
                control = parse_control(fh.read(CONTROL_FILE_MAX_BYTES + 1), jobid)
            extra = {k: v for k, v in control.extra_system.items() if k != ATTEMPTS_KEY}
            data_path = layout.data_path(jobid)
            control = dataclasses.replace(control, extra_system=extra, data_path=data_path)
            for directory in (layout.queue_dir, layout.tmp_dir, os.path.dirname(data_path)):
                _fs.makedirs(directory)
            kept = os.path.join(claimed, Layout.FAILED_DATA)
            if _fs.link_verified(kept, data_path) == _fs.LinkResult.EXISTS:
                raise DirQueueError(
                    f"job {jobid} already has data in {layout.data_dir}: it was requeued"
                    " already; leaving the failed copy in place"
                )
            linked.append(data_path)
            written = _write_file(
                tmp_ctrl, control.to_bytes(), queue.queue_file_mode, queue.durable
            )
            fanout = random.choice(Layout.FANOUT_DIGITS) if queue.queue_fanout else None
            queue_path = layout.queue_path(jobid, fanout)
            if fanout:
                _fs.makedirs(os.path.dirname(queue_path))
            if _fs.link_verified(tmp_ctrl, queue_path, written) == _fs.LinkResult.EXISTS:
                raise DirQueueError(
                    f"job {jobid} is already in {layout.queue_dir}: leaving the failed copy"
                )
            linked.append(queue_path)
            restore = False
        except OSError as err:
            raise QueueIOError(f"requeueing failed job {jobid}", err) from err
        finally:
            _fs.unlink_quietly(tmp_ctrl)
            if restore:
                for path in linked:
                    _fs.unlink_quietly(path)
                # If this fails the entry stays under its dot name; nothing is lost.
                with contextlib.suppress(OSError):
                    os.rename(claimed, layout.failed_job_dir(jobid))
        shutil.rmtree(claimed, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.utime(layout.queue_dir)  # Wake waiting workers, as an enqueue does.
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


def _token() -> str:
    return f"{os.getpid()}.{time.time_ns()}.{threading.get_ident()}"
