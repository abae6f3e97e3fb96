"""A job: its data file, metadata and submission details, and what a worker does with it."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING

from ._format import ControlFile
from ._heartbeat import Heartbeat
from .errors import JobStateError

if TYPE_CHECKING:
    from .queue import DirQueue

__all__ = ["Job"]


class Job:
    """One job in a queue.

    A job returned by :meth:`DirQueue.pickup_queued_job` is *active*: this process holds
    its lock until :meth:`finish` or :meth:`return_to_queue`. Used as a context manager,
    leaving the block normally finishes it and an exception returns it to the queue.

    A job from :meth:`DirQueue.jobs` or :meth:`DirQueue.visit_all_jobs` is read-only: a
    snapshot whose ``active_host``/``active_pid`` tell who (if anyone) works on it.
    """

    jobid: str
    """The job id, which is also the control file's name."""
    metadata: dict[str, str]
    """The job's ``name: value`` metadata."""
    queue_path: str
    """The control file's path (``DIR/queue/NAME``)."""
    active_host: str | None
    """Host of the worker holding the job, if it is active."""
    active_pid: int | None
    """Process id of the worker holding the job, if it is active."""

    def __init__(
        self,
        queue: DirQueue,
        jobid: str,
        queue_path: str,
        control: ControlFile,
        data_path: str,
        *,
        active_host: str | None = None,
        active_pid: int | None = None,
        lock_stat: os.stat_result | None = None,
    ) -> None:
        self._queue = queue
        self.jobid = jobid
        self.queue_path = queue_path
        self.metadata = control.metadata
        self.active_host = active_host
        self.active_pid = active_pid
        self._control = control
        self._data_path = data_path
        # The inode of the lock we linked; None for a read-only (listed) job.
        self._lock_stat = lock_stat
        self._state = "active" if lock_stat is not None else "listed"
        self._heartbeat: Heartbeat | None = None
        if lock_stat is not None and queue.lock_heartbeat:
            self._heartbeat = Heartbeat(
                queue.layout.active_path(jobid), queue.active_file_lifetime / 4
            )

    # -- what the job holds ---------------------------------------------------------

    @property
    def priority(self) -> int:
        """The priority, 0 (first) to 99 (last), taken from the job id."""
        return int(self.jobid[:2])

    @property
    def is_active(self) -> bool:
        """True while this process holds the job (picked up, not yet finished or returned)."""
        return self._state == "active"

    @property
    def control(self) -> ControlFile:
        """The parsed control file, system fields included."""
        return self._control

    def get_data_path(self) -> str:
        """The data file's path in this queue directory (found from the job id)."""
        return self._data_path

    def get_data(self) -> bytes:
        """The job's data, all of it.

        Raises :class:`CorruptJobError` rather than follow a symlink out of the queue.
        """
        return self._queue._read_data(self.jobid)

    def get_data_size_bytes(self) -> int:
        """The data's size in bytes, as recorded at submission."""
        if self._control.size_bytes is not None:
            return self._control.size_bytes
        return os.stat(self._data_path).st_size

    def get_time_submitted_secs(self) -> int:
        """Submission time, whole seconds since the epoch."""
        return self._control.submitted_secs

    def get_time_submitted_usecs(self) -> int:
        """The microseconds part of the submission time."""
        return self._control.submitted_usecs

    def get_hostname_submitted(self) -> str:
        """The name of the host that submitted the job."""
        return self._control.hostname

    # -- what a worker does ---------------------------------------------------------

    def _require_active(self, action: str) -> os.stat_result:
        if self._lock_stat is None:
            raise JobStateError(
                f"cannot {action} job {self.jobid}: it was listed, not picked up;"
                " use DirQueue.pickup_queued_job() to take it",
                self.jobid,
            )
        if self._state != "active":
            raise JobStateError(
                f"cannot {action} job {self.jobid}: it was already {self._state}", self.jobid
            )
        return self._lock_stat

    def touch_active_lock(self) -> None:
        """Refresh the lock's mtime, so a long job is not taken for a dead worker's."""
        self._require_active("touch the lock of")
        self._queue._touch_lock(self)

    def finish(self) -> None:
        """The job is done: remove it from the queue, its data, and the lock."""
        self._require_active("finish")
        self._stop_heartbeat()
        self._queue._finish(self)
        self._state = "finished"

    def return_to_queue(self) -> None:
        """Give the job back, untouched, for any worker to pick up again."""
        self._require_active("return")
        self._stop_heartbeat()
        self._queue._return(self)
        self._state = "returned"

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def __enter__(self) -> Job:
        self._require_active("use")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "active":
            return  # The block finished or returned it itself.
        if exc_type is None:
            self.finish()
        else:
            self.return_to_queue()

    def __repr__(self) -> str:
        return f"<Job {self.jobid} {self._state}>"
