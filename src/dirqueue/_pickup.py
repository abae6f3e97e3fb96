"""Taking the next job: asking the index (:mod:`dirqueue._index`) which job is next,
locking it, and reading what we locked (moving it aside if it is corrupt).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from typing import Final

from . import _lock, _lockfile
from ._config import QueueConfig
from ._deferred import drop_crashed_twin, promote_due
from ._deps import settle as settle_dependants
from ._format import attempts_of, counted_run_of, run_of, with_attempts, with_counted_run
from ._identity import current_pid
from ._index import QueueIndex
from ._jobfiles import check_data, move_aside, read_control
from ._judge import Judgement, filesystem_now
from ._scanner import QueueEntry, locate
from .errors import CorruptJobError, DirQueueError, QueueIOError
from .job import Job

__all__ = ["PROMOTE_INTERVAL", "Picker"]

_log = logging.getLogger("dirqueue")

#: How often (seconds) a pickup looks for deferred jobs that have come due: the
#: precision of a retry's back-off or a delayed job's start.
PROMOTE_INTERVAL: Final = 0.5


class Picker:
    """Picks up jobs for one :class:`dirqueue.DirQueue` (holding its index)."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.index = QueueIndex(config)
        self.lock_file = _lockfile.LockFileKeeper(config)
        #: When (monotonic) to look in deferred/ next.
        self._next_promote = 0.0

    def promote(self) -> None:
        """Move deferred jobs that have come due into queue/ (at most every
        PROMOTE_INTERVAL)."""
        now = time.monotonic()
        if now < self._next_promote:
            return
        try:
            # Due times are in the filesystem's clock, as lock ages are: a worker whose
            # own clock is fast must not start a delayed job early.
            moved, _ = promote_due(self.config, filesystem_now(self.config))
        except OSError as err:
            raise QueueIOError("moving due jobs from deferred/ to queue/", err) from err
        # Dependants whose parents have all ended, left in waiting/ by a crash (or a
        # parent ended by a Perl worker, or by a plain Job.finish). Those with a failed
        # parent are left for a Worker, which moves them to failed/.
        with contextlib.suppress(OSError, DirQueueError):
            settle_dependants(self.config)
        # Not waiting until the next due time we saw: another process may defer a job
        # due sooner meanwhile.
        self._next_promote = now + PROMOTE_INTERVAL
        if moved:
            self.index.changed_here()

    def pickup(self) -> Job | None:
        """Take the next waiting job, or None if there is none we can take."""
        self.promote()
        index = self.index
        try:
            index.refresh()
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {self.config.layout.queue_dir}", err) from err
        # First a few jobs held by others that come before the first waiting one, in
        # case a holder died: a pickup's cost stays flat however many are in progress.
        entry = index.head()
        for held in index.held_due(entry):
            job = self._settle(held, self.try_pickup(held))
            if job is not None:
                return job
        # The head found above is still the head: trying held jobs changes only those.
        while entry is not None:
            job = self._settle(entry, self.try_pickup(entry, seen_free=index.exact))
            if job is not None:
                return job
            entry = index.head()
        # Nothing to take: this worker may now wait, or exit without a word.
        self.lock_file.let_go()
        return None

    def pickup_named(self, jobid: str) -> Job | None:
        """Take job ``jobid`` if it is waiting."""
        for entry in locate(self.config.layout, jobid):
            job = self._settle(entry, self.try_pickup(entry))
            if job is not None:
                return job
        return None

    def wait(self, timeout: float) -> None:
        """Sleep until the queue may have changed (inotify), or ``timeout`` seconds."""
        notifier = self.index.notifier()
        if notifier is None:
            time.sleep(timeout)
        else:
            notifier.wait(timeout)

    def close(self) -> None:
        """Release the index's inotify descriptor, and this queue object's lock file."""
        self.index.close()
        self.lock_file.let_go()

    def _settle(self, entry: QueueEntry, outcome: Job | _lock.Refused) -> Job | None:
        """Tell the index what a try at ``entry`` found; the job if we took it."""
        if isinstance(outcome, Job):
            self.index.taken(entry.name)
            return outcome
        if outcome is not _lock.Refused.GONE:
            self.index.held(entry.name)
        else:
            self.index.gone(entry.name)
        return None

    def try_pickup(self, entry: QueueEntry, *, seen_free: bool = False) -> Job | _lock.Refused:
        """The job if we took it, else why not (``seen_free``: see :func:`_lock.take`)."""
        name = entry.name
        queue_path = self.config.layout.queue_path(name, entry.fanout)
        try:
            held = _lock.take(
                self.config, name, queue_path, seen_free=seen_free, keeper=self.lock_file
            )
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
        if held.broke is not None:
            # A dead holder may have died deferring it, leaving it in deferred/ too.
            drop_crashed_twin(config, name, queue_path)
            if held.broke.owner_died:
                _count_the_dead_workers_attempt(job, held.broke)
        return job


def _count_the_dead_workers_attempt(job: Job, broke: Judgement) -> None:
    """The worker that held ``job`` died (or went quiet) with it: its attempt failed
    without a word. Count it, so that a job that keeps killing its workers ends in
    ``failed/`` after ``max_attempts`` instead of crash-looping for ever.

    Unless the control file says that very run's attempt is counted already: a worker
    killed after recording its failure and before letting go of the job."""
    owner = broke.owner
    run = run_of(owner.host, owner.pid, owner.boot, owner.start)
    if owner.pid is not None and counted_run_of(job.control) == run:
        _log.info("job %s: the attempt of dead worker %s was counted already", job.jobid, run)
        return
    attempts = attempts_of(job.control) + 1
    control = with_attempts(job.control, attempts, f"worker died: {broke.reason}")
    try:
        job.update_control(with_counted_run(control, run))
    except DirQueueError as err:
        # A full disk, say: the job is still ours and still worth doing.
        _log.warning("could not count the attempt of job %s: %s", job.jobid, err)
