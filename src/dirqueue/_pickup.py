"""Taking the next job: asking the index (:mod:`dirqueue._index`) which job is next,
locking it, and reading what we locked (moving it aside if it is corrupt).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from . import _claims, _lock, _lockfile
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

__all__ = ["PROMOTE_INTERVAL", "Admission", "Gate", "Picker", "add_gate"]

_log = logging.getLogger("dirqueue")

#: How often (seconds) a pickup looks for deferred jobs that have come due: the
#: precision of a retry's back-off or a delayed job's start.
PROMOTE_INTERVAL: Final = 0.5


class Admission(enum.Enum):
    """A gate's answer for a job it was shown (besides a due time: put it off)."""

    #: Take it: the gate has done what it needed (a slot taken, given back through
    #: :attr:`Job.on_release`).
    TAKE = "take"
    #: Not now: give it back at once, untouched, and pass over it until the next pickup.
    PARK = "park"


class Gate(Protocol):
    """A "may I take this job?" check on the pickup path, for a layer above the engine
    (:mod:`dirqueue.limits`: groups' concurrency and rate limits). The engine knows
    nothing of what it checks; it asks, in this order, for every job it is about to take.
    """

    def new_pass(self) -> None:
        """A pickup begins (what the gate learned in the last one may have changed)."""

    def may_try(self, name: str, queue_path: str) -> bool:
        """Before job ``name`` (its control file at ``queue_path``) is locked: False to
        pass over it without locking it (the gate knows already that it would say
        :attr:`Admission.PARK`)."""

    def admit(self, job: Job) -> Admission | float:
        """Job ``job`` is locked and read: take it, park it, or put it off until the
        time returned (the filesystem's clock), without counting an attempt."""


#: The gates every new :class:`Picker` builds, one each (see :func:`add_gate`).
_gate_factories: list[Callable[[QueueConfig], Gate]] = []


def add_gate(factory: Callable[[QueueConfig], Gate]) -> None:
    """Have every picker made from now on ask a gate made by ``factory`` (once)."""
    if factory not in _gate_factories:
        _gate_factories.append(factory)


class Picker:
    """Picks up jobs for one :class:`dirqueue.DirQueue` (holding its index)."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.index = QueueIndex(config)
        self.lock_file = _lockfile.LockFileKeeper(config)
        self.gates = [factory(config) for factory in _gate_factories]
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
            moved, _ = promote_due(self.config, lambda: filesystem_now(self.config))
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
        if time.monotonic() >= self._next_promote:  # (Asked as promote() would.)
            self.promote()
        index = self.index
        for gate in self.gates:
            gate.new_pass()
        # First a few jobs held by others that come before the first waiting one, in
        # case a holder died: a pickup's cost stays flat however many are in progress.
        try:
            entry, due = index.begin_pass()
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {self.config.layout.queue_dir}", err) from err
        for held in due:
            alive_until: list[float] = []
            outcome = self.try_pickup(held, alive_until=alive_until.append, keep_spare=True)
            job = self._admit(held, self._settle(held, outcome, alive_until))
            if job is not None:
                return job
        # The head found above is still the head: trying held jobs changes only those.
        queue_path = self.config.layout.queue_path
        while entry is not None:
            path = queue_path(entry.name, entry.fanout)
            if not self._may_try(entry, path):
                index.park(entry.name)
                entry = index.head()
                continue
            alive_until = []
            outcome = self.try_pickup(
                entry,
                seen_free=index.exact,
                alive_until=alive_until.append,
                keep_spare=True,
                queue_path=path,
            )
            job = self._admit(entry, self._settle(entry, outcome, alive_until))
            if job is not None:
                return job
            entry = index.head()
        # Nothing to take: this worker may now wait, or exit without a word.
        self.lock_file.let_go()
        _claims.drop_spare(self.config)
        return None

    def pickup_named(self, jobid: str, *, gated: bool = False) -> Job | None:
        """Take job ``jobid`` if it is waiting (and, ``gated``, if the gates let us:
        not so to cancel it)."""
        for entry in locate(self.config.layout, jobid):
            job = self._settle(entry, self.try_pickup(entry))
            if gated:
                job = self._admit(entry, job)
            if job is not None:
                return job
        return None

    def _may_try(self, entry: QueueEntry, path: str) -> bool:
        """Whether every gate lets us try ``entry`` (its control file at ``path``)."""
        name = entry.name
        # A loop, not all() over a generator: asked for every job taken.
        for gate in self.gates:  # noqa: SIM110
            if not gate.may_try(name, path):
                return False
        return True

    def _admit(self, entry: QueueEntry, job: Job | None) -> Job | None:
        """``job`` if every gate lets us take it; else given back (parked) or put off."""
        if job is None:
            return None
        for gate in self.gates:
            try:
                verdict = gate.admit(job)
            except BaseException:
                with contextlib.suppress(OSError, DirQueueError):
                    job.return_to_queue()
                raise
            if verdict is Admission.TAKE:
                continue
            # Given back either way; what earlier gates took goes with it (on_release).
            if verdict is Admission.PARK:
                job.return_to_queue(wake=False)
                self.index.park(entry.name)
            else:
                # Not an attempt: the job never ran. Due in the filesystem's clock, as
                # every deferred job's is.
                delay = max(verdict - filesystem_now(self.config), 0.001)
                job.retry_later(delay, count=False)
                self.index.gone(entry.name)
                self._next_promote = 0.0  # It may be due before our next look.
            return None
        return job

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
        _claims.drop_spare(self.config)

    def _settle(
        self,
        entry: QueueEntry,
        outcome: Job | _lock.Refused,
        alive_until: Sequence[float] = (),
    ) -> Job | None:
        """Tell the index what a try at ``entry`` found; the job if we took it.

        ``alive_until``: what :func:`_lock.take` told of the lock it judged alive (the
        time before which it cannot go stale), so the index does not judge it again
        before then.
        """
        if isinstance(outcome, Job):
            self.index.taken(entry.name)
            return outcome
        if outcome in (_lock.Refused.HELD, _lock.Refused.LOST) and alive_until:
            self.index.held(entry.name, stale_not_before=alive_until[-1])
        elif outcome is not _lock.Refused.GONE:
            self.index.held(entry.name)
        else:
            self.index.gone(entry.name)
        return None

    def try_pickup(
        self,
        entry: QueueEntry,
        *,
        seen_free: bool = False,
        alive_until: Callable[[float], None] | None = None,
        keep_spare: bool = False,
        queue_path: str | None = None,
    ) -> Job | _lock.Refused:
        """The job if we took it, else why not (``seen_free``, ``alive_until``,
        ``keep_spare``: see :func:`_lock.take`; ``queue_path``: the entry's, if the
        caller has it)."""
        name = entry.name
        if queue_path is None:
            queue_path = self.config.layout.queue_path(name, entry.fanout)
        try:
            held = _lock.take(
                self.config,
                name,
                queue_path,
                seen_free=seen_free,
                keeper=self.lock_file,
                alive_until=alive_until,
                unseen_here=self.index.lock_unseen_here,
                keep_spare=keep_spare,
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
