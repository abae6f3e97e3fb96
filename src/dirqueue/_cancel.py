"""Cancelling jobs that have not run: one job (:func:`cancel`), or every job waiting
(:func:`empty`).

A waiting job is cancelled the way a worker would take it, then finished without
running: its lock is taken with the pickup's own protocol (a stale lock broken by the
one rule in :mod:`dirqueue._judge`), so a job a live worker holds is never touched, and
of a worker and a canceller racing for one job exactly one wins. A deferred job has no
lock (it is in no directory a worker takes from): it is claimed with one ``rename`` out
of ``deferred/`` into ``tmp/``, which a promotion racing it cannot also win (it finds
nothing, as when two promoters race), and then removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from . import _fs, _keys
from ._config import QueueConfig
from ._deferred import scan_deferred
from ._deps import scan_waiting
from ._format import is_job_name, parse_lock_file
from ._identity import current_pid
from ._jobfiles import read_control, unlink_data
from ._judge import read_lock_file
from ._layout import Layout
from ._scanner import locate, scan
from .errors import DirQueueError, JobStateError, NoSuchJobError, QueueIOError
from .job import Job

__all__ = ["cancel", "empty"]

#: Takes job NAME's lock as a pickup does: the job, or None if it is held or gone.
PickupNamed = Callable[[str], Job | None]


def _cancel_deferred(config: QueueConfig, jobid: str, where: str = Layout.DEFERRED) -> bool:
    """Remove deferred job ``jobid``; False if it is not in ``deferred/`` (or, with
    ``where``, a dependant in ``waiting/``, claimed the same way).

    The rename into ``tmp/`` is the claim: from then on no promotion can move the job
    back to ``queue/``. A crash after it leaves a tmp file and the data, which repair
    removes once they are old (``tmp-leftover``, ``orphan-data``), as it does for any
    interrupted operation.
    """
    layout = config.layout
    claimed = Layout.tmp_rewrite_name(jobid, current_pid(), "cancel")
    try:
        dfd = _fs.open_dir_nofollow(config.dir, (where,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return False
        raise QueueIOError(f"cancelling job {jobid} in {where}/", err) from err
    try:
        tfd = _fs.open_dir_nofollow(config.dir, (Layout.TMP,))
        try:
            os.rename(jobid, claimed, src_dir_fd=dfd, dst_dir_fd=tfd)
        except FileNotFoundError:
            return False  # Not deferred, or promoted (or cancelled) by another first.
        finally:
            _fs.close_dir(tfd)
    except OSError as err:
        raise QueueIOError(f"cancelling job {jobid} in {where}/", err) from err
    finally:
        _fs.close_dir(dfd)
    try:
        unlink_data(config, jobid)
    except OSError as err:
        # Out of the queue already: what is left is debris for repair, not a failure.
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise QueueIOError(
                f"removing the data of cancelled job {jobid} (repair() removes it)", err
            ) from err
    key = _unique_key_of(layout.tmp_path(claimed))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.tmp_path(claimed))
    if key:
        with contextlib.suppress(OSError, DirQueueError):
            _keys.release(config, key, jobid)  # Else stale by the lock rule.
    return True


def _unique_key_of(control_path: str) -> str | None:
    """The unique key a cancelled job held (its ``dq.unique``), if any."""
    try:
        return read_control(control_path).metadata.get(_keys.KEY_META)
    except (OSError, DirQueueError):
        return None


def _cancel_queued(pickup_named: PickupNamed, jobid: str) -> bool:
    """Take ``jobid``'s lock as a pickup would, and finish the job unrun; False if it is
    held by a live worker or not in ``queue/``."""
    job = pickup_named(jobid)
    if job is None:
        return False
    job.finish()
    return True


def cancel(config: QueueConfig, pickup_named: PickupNamed, jobid: str) -> None:
    """Delete job ``jobid``, queued (or stale), deferred or waiting for its parents,
    without running it.

    Raises :class:`JobStateError` if a live worker holds it (it is running: it is left
    to finish), and :class:`NoSuchJobError` if it is not waiting here.
    """
    if not is_job_name(jobid):
        raise NoSuchJobError(f"{jobid!r} is not a job id: copy one from 'dq list'", jobid)
    # deferred/ and waiting/ first: a promotion moves a job from there to queue/, never
    # back, so a job that is promoted meanwhile is still found in queue/ next. (A worker
    # moves a job to deferred/ only while it holds the lock: then it is active, and
    # refused.)
    if (
        _cancel_deferred(config, jobid)
        or _cancel_deferred(config, jobid, Layout.WAITING)
        or _cancel_queued(pickup_named, jobid)
    ):
        return
    layout = config.layout
    if locate(layout, jobid):
        owner = parse_lock_file(read_lock_file(config, jobid))
        holder = f" (held by {owner.host} pid {owner.pid})" if owner.host else ""
        raise JobStateError(
            f"cannot cancel job {jobid}: a worker is running it{holder}; it is left to"
            " run (a worker interrupted by a second SIGTERM or Ctrl-C returns it to the"
            " queue, where it can be cancelled)",
            jobid,
        )
    if os.path.isdir(layout.failed_job_dir(jobid)):
        raise NoSuchJobError(
            f"job {jobid} has failed, it is not waiting: delete it with"
            f" 'dq purge --failed {jobid}' (FailedStore.purge)",
            jobid,
        )
    raise NoSuchJobError(
        f"no job {jobid} waiting in {config.dir}: it has run already, was cancelled,"
        " or was never submitted here (see 'dq list')",
        jobid,
    )


def empty(config: QueueConfig, pickup_named: PickupNamed) -> list[str]:
    """Delete every job waiting now, queued (or stale), deferred and waiting for its
    parents; return their ids.

    Jobs that live workers hold are left to them, and jobs submitted while it runs may
    be left too: it empties the queue as it finds it, it does not stop producers.
    """
    done = [entry.name for entry in scan_deferred(config) if _cancel_deferred(config, entry.name)]
    done += [
        name for name in scan_waiting(config)
        if _cancel_deferred(config, name, Layout.WAITING)
    ]
    try:
        entries = scan(config.layout, ordered=False)
    except OSError as err:
        raise QueueIOError(f"listing the jobs in {config.layout.queue_dir}", err) from err
    # A job in two fan-out places is cancelled once, from wherever pickup finds it.
    for name in dict.fromkeys(entry.name for entry in entries):
        if _cancel_queued(pickup_named, name):
            done.append(name)
    return sorted(done)
