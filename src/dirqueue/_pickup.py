"""Taking the next job: the listing of waiting jobs (and its cache), the lock, and
reading what we locked (moving it aside if it is corrupt).

Listing ``queue/`` costs milliseconds at 100,000 jobs, so a listing is reused while
``queue/``'s mtime says nothing changed, and, while it still has candidates, for up
to :data:`RESCAN_INTERVAL` even if something did.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from typing import Final

from . import _lock
from ._config import QueueConfig
from ._deferred import promote_due
from ._format import attempts_of, with_attempts
from ._identity import current_pid
from ._jobfiles import check_data, move_aside, read_control
from ._scanner import QueueEntry, locate, scan
from .errors import CorruptJobError, DirQueueError, QueueIOError
from .job import Job

__all__ = ["RESCAN_INTERVAL", "Picker"]

_log = logging.getLogger("dirqueue")

#: A queue listing is reused while queue/'s mtime is unchanged, unless that mtime is
#: this recent: on filesystems with coarse timestamps two changes in the same tick
#: leave one mtime, so a fresh one proves nothing.
_MTIME_TRUST_AFTER: Final = 2.0
#: While a listing still has candidates it is reused for up to this many seconds even
#: though queue/ changed, so a busy queue of 100,000 jobs is not re-read and re-sorted
#: for every pickup. The cost: a job of better priority that arrives meanwhile waits
#: up to this long to jump the line.
RESCAN_INTERVAL: Final = 1.0
#: How often (seconds) a pickup looks for deferred jobs that have come due: the
#: precision of a retry's back-off or a delayed job's start.
PROMOTE_INTERVAL: Final = 0.5


class _Listing:
    """A sorted snapshot of the waiting job names, reused while ``queue/`` is unchanged."""

    __slots__ = ("entries", "mtime_ns", "pos", "taken_at")

    def __init__(self, mtime_ns: int, entries: list[QueueEntry], taken_at: float):
        self.mtime_ns = mtime_ns
        self.entries = entries
        self.taken_at = taken_at
        #: Entries before this index are known to be gone from the queue (or ours).
        self.pos = 0

    def remaining(self) -> bool:
        return self.pos < len(self.entries)

    def unchanged(self, mtime_ns: int) -> bool:
        """True if queue/, now at ``mtime_ns``, provably has not changed since."""
        return self.mtime_ns == mtime_ns and self.taken_at - mtime_ns / 1e9 > _MTIME_TRUST_AFTER


class Picker:
    """Picks up jobs for one :class:`dirqueue.DirQueue` (holding its listing cache)."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._listing: _Listing | None = None
        #: When (monotonic) to look in deferred/ next.
        self._next_promote = 0.0

    def promote(self) -> None:
        """Move deferred jobs that have come due into queue/ (at most every
        PROMOTE_INTERVAL)."""
        now = time.monotonic()
        if now < self._next_promote:
            return
        try:
            moved, _ = promote_due(self.config)
        except OSError as err:
            raise QueueIOError("moving due jobs from deferred/ to queue/", err) from err
        # Not waiting until the next due time we saw: another process may defer a job
        # due sooner meanwhile.
        self._next_promote = now + PROMOTE_INTERVAL
        if moved:
            self._listing = None  # New candidates: list again.

    def pickup(self) -> Job | None:
        """Take the next waiting job, or None if there is none we can take."""
        self.promote()
        reusable = self._listing
        listing = self._candidates()
        job = self._pickup_from(listing)
        if job is None and listing is reusable and not self._is_current(listing):
            # The listing was reused (see RESCAN_INTERVAL) and jobs may have arrived
            # since: look again before reporting that there is nothing to take.
            job = self._pickup_from(self._candidates(rescan=True))
        return job

    def pickup_named(self, jobid: str) -> Job | None:
        """Take job ``jobid`` if it is waiting."""
        for entry in locate(self.config.layout, jobid):
            job = self.try_pickup(entry)
            if isinstance(job, Job):
                return job
        return None

    def _candidates(self, *, rescan: bool = False) -> _Listing:
        """Waiting jobs to try, reusing the last listing while queue/ is unchanged."""
        config = self.config
        try:
            try:
                mtime_ns = os.stat(config.layout.queue_dir).st_mtime_ns
            except FileNotFoundError:
                return _Listing(0, [], 0.0)
            now = time.time()
            cached = self._listing
            if (
                cached is not None
                and not rescan
                and (
                    cached.unchanged(mtime_ns)
                    or (cached.remaining() and now - cached.taken_at < RESCAN_INTERVAL)
                )
            ):
                return cached
            self._listing = _Listing(mtime_ns, scan(config.layout, ordered=config.ordered), now)
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {config.layout.queue_dir}", err) from err
        return self._listing

    def _is_current(self, listing: _Listing) -> bool:
        try:
            return listing.unchanged(os.stat(self.config.layout.queue_dir).st_mtime_ns)
        except FileNotFoundError:
            return False

    def _pickup_from(self, listing: _Listing) -> Job | None:
        entries = listing.entries
        for index in range(listing.pos, len(entries)):
            job = self.try_pickup(entries[index])
            if job is not _lock.Refused.HELD and index == listing.pos:
                listing.pos += 1  # Gone or ours: later pickups start past it.
            if isinstance(job, Job):
                return job
        return None

    def try_pickup(self, entry: QueueEntry) -> Job | _lock.Refused:
        """The job if we took it, else why not."""
        name = entry.name
        queue_path = self.config.layout.queue_path(name, entry.fanout)
        try:
            held = _lock.take(self.config, name, queue_path)
            if isinstance(held, _lock.Refused):
                return held
            return self._open_locked_job(name, queue_path, held)
        except OSError as err:
            if isinstance(err, DirQueueError):
                raise
            raise QueueIOError(f"picking up job {name}", err) from err

    def _open_locked_job(
        self, name: str, queue_path: str, held: _lock.HeldLock
    ) -> Job | _lock.Refused:
        """Step 5: read the job we hold; move it aside if it is corrupt."""
        config = self.config
        try:
            control = read_control(queue_path)
            check_data(config, name, queue_path, control)
        except FileNotFoundError:
            # Finished by another worker (whose lock we broke as stale) meanwhile.
            _lock.release(config, held)
            return _lock.Refused.GONE
        except PermissionError as err:
            # Not ours to read (a shared queue's modes are wrong): skip it, and let an
            # operator's repair() move it aside; a worker must not die on it.
            _lock.release(config, held)
            _log.warning("skipping unreadable job %s: %s", name, err)
            return _lock.Refused.HELD
        except OSError as err:
            if err.errno != errno.ESTALE:
                _lock.release(config, held)
                raise
            # Over NFS: the file was removed by another host while we read it.
            _lock.release(config, held)
            return _lock.Refused.GONE
        except CorruptJobError as err:
            # Leaving it in place would make every worker meet it again, forever.
            try:
                aside = move_aside(config, name, queue_path, str(err))
            finally:
                with contextlib.suppress(OSError):
                    _lock.release(config, held)
            _log.warning("skipping corrupt job %s, moved aside to %s: %s", queue_path, aside, err)
            return _lock.Refused.GONE
        except BaseException:
            _lock.release(config, held)
            raise
        job = Job(
            config,
            name,
            queue_path,
            control,
            config.layout.data_path(name),
            active_host=config.hostname,
            active_pid=current_pid(),
            held=held,
        )
        if held.broke is not None and held.broke.owner_died:
            _count_the_dead_workers_attempt(job, held.broke.reason)
        return job


def _count_the_dead_workers_attempt(job: Job, reason: str) -> None:
    """The worker that held ``job`` died (or went quiet) with it: its attempt failed
    without a word. Count it, so that a job that keeps killing its workers ends in
    ``failed/`` after ``max_attempts`` instead of crash-looping for ever."""
    attempts = attempts_of(job.control) + 1
    try:
        job.update_control(with_attempts(job.control, attempts, f"worker died: {reason}"))
    except DirQueueError as err:
        # A full disk, say: the job is still ours and still worth doing.
        _log.warning("could not count the attempt of job %s: %s", job.jobid, err)
