"""``dq show JOBID``: one job whole, wherever it is (queued, active, deferred or failed).

:func:`show_job` asks each place a job can be, in turn, and returns one
:class:`JobView` with the same keys whatever the state (``None`` where a key does not
apply), so a script reading ``dq show --json`` needs no case per state. A new state is
one more finder in :data:`_FINDERS`; deferred jobs come with the queue's listing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._deps import dependants_of, parents_of
from .._format import is_job_name, last_error_of
from ..errors import DirQueueError, NoSuchJobError
from ..failed import FailedStore, NoSuchFailedJobError
from ..stats import list_jobs

if TYPE_CHECKING:
    from ..queue import DirQueue

__all__ = ["NoSuchJobError", "UnreadableJobError", "show_job"]

JobView = dict[str, Any]


def _blank(jobid: str) -> JobView:
    return {
        "id": jobid,
        "state": None,
        "priority": int(jobid[:2]),
        "size": None,
        "data_path": None,
        "submitted": None,
        "submitted_host": None,
        "attempts": 0,
        "metadata": {},
        "worker": None,
        "lock_age": None,
        "note": "",
        "due": None,
        "error": None,
        "detail": None,
        "failed_at": None,
        "failed_host": None,
        "failed_pid": None,
        "parents": [],
        "children": [],
    }


def _in_queue(queue: DirQueue, jobid: str, now: float) -> JobView | None:
    for info in list_jobs(queue, now=now):
        if info.job.jobid != jobid:
            continue
        job = info.job
        view = _blank(jobid)
        listed = info.as_dict()
        view.update(
            state=info.state,
            size=listed["size"],
            data_path=os.path.abspath(job.get_data_path()),
            submitted=listed["submitted"],
            submitted_host=listed["submitted_host"],
            attempts=info.attempts,
            metadata=listed["metadata"],
            worker=listed["worker"],
            note=info.note,
            due=listed["due"],
            # The last failed attempt's error, kept in the control file (QERR).
            error=last_error_of(job.control) or None,
        )
        if info.state not in ("queued", "deferred"):
            # The lock's mtime: when it was taken or last touched by its heartbeat. Gone
            # (finished or returned while we looked): no age.
            with contextlib.suppress(OSError):
                touched = os.stat(queue.layout.active_path(jobid)).st_mtime
                view["lock_age"] = max(0.0, now - touched)
        return view
    return None


def _failed(queue: DirQueue, jobid: str, now: float) -> JobView | None:
    try:
        failed = FailedStore(queue).get(jobid)
    except NoSuchFailedJobError:
        return None
    listed = failed.as_dict()
    view = _blank(jobid)
    view.update(
        state="failed",
        size=listed["size"],
        data_path=os.path.abspath(failed.data_path),
        submitted=listed["submitted"],
        submitted_host=listed["submitted_host"],
        attempts=failed.attempts,
        metadata=listed["metadata"],
        error=failed.error,
        detail=failed.detail,
        failed_at=failed.failed_at,
        failed_host=failed.host,
        failed_pid=failed.pid,
    )
    return view


class UnreadableJobError(DirQueueError, PermissionError):
    """A job's files are there, but this user cannot read them (or they are not a
    job's files). ``jobid`` names it, ``filename`` the file found."""

    def __init__(self, message: str, jobid: str, path: str) -> None:
        PermissionError.__init__(self, message)
        self.jobid = jobid
        self.filename = path

    def __str__(self) -> str:
        return str(self.args[0])


def _raise_if_unreadable(queue: DirQueue, jobid: str) -> None:
    """:class:`UnreadableJobError` if ``jobid`` left a file that the finders skipped.

    A job is listed only if its control file reads and parses; one that does not is
    still there, and must not be called finished (which leaves nothing behind).
    """
    layout = queue.layout
    places = [
        layout.queue_path(jobid),
        *(layout.queue_path(jobid, digit) for digit in layout.QUEUE_SUBDIRS),
        layout.deferred_path(jobid),
        layout.active_path(jobid),
        layout.failed_job_dir(jobid),
    ]
    for path in places:
        if not os.path.lexists(path):
            continue
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb"):
                    pass
        except OSError as err:
            why = f"{err.strerror.lower() if err.strerror else err}: this user cannot read it"
            fix = "check its owner and mode (ls -l), or run dq show as a user who can"
        else:
            why = "it is not a valid job"
            fix = "'dq fsck' says what is wrong, 'dq fsck --repair' moves it to corrupt/"
        raise UnreadableJobError(f"job {jobid} is in {path}, but {why}: {fix}", jobid, path)


#: Where a job can be, in the order asked: a job being requeued may be seen in both.
_FINDERS: Final[tuple[Callable[[DirQueue, str, float], JobView | None], ...]] = (
    _in_queue,
    _failed,
)


def show_job(queue: DirQueue, jobid: str, *, now: float | None = None) -> JobView:
    """Everything known about job ``jobid``; :class:`NoSuchJobError` if it is nowhere."""
    if not is_job_name(jobid):
        raise NoSuchJobError(
            f"{jobid!r} is not a job id: copy one from 'dq list' or 'dq list --failed'", jobid
        )
    when = time.time() if now is None else now
    for finder in _FINDERS:
        view = finder(queue, jobid, when)
        if view is not None:
            view["parents"] = parents_of(view["metadata"])[0]
            view["children"] = dependants_of(queue.config, jobid)
            return view
    _raise_if_unreadable(queue, jobid)
    raise NoSuchJobError(
        f"no job {jobid} in {queue.dir}: it is not queued, active or failed"
        " (finished jobs leave nothing behind)",
        jobid,
    )
