"""A job: its data file, metadata and submission details, and what a worker does with
it (finish it, return it to the queue, keep its lock fresh).

A job's files are removed only by the holder of its lock, and only after checking that
the lock is still its own: a worker that stalled past ``active_file_lifetime`` may have
had its lock broken and the job taken by another worker, and must then leave the job
alone (:class:`JobLostError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO

from . import _fs, _keys, _lock
from ._config import QueueConfig
from ._enqueue import bump_queue_mtime
from ._format import (
    ControlFile,
    attempts_of,
    parse_lock_file,
    run_of,
    with_attempts,
    with_counted_run,
)
from ._heartbeat import Heartbeat
from ._identity import current_pid, this_process
from ._jobfiles import create_control, in_queue_dir, open_data, read_data, unlink_data
from ._judge import filesystem_now, read_lock_file
from ._keys import KEY_META
from ._layout import Layout
from ._numbers import SECONDS_OR_ZERO, check_number
from .errors import DirQueueError, JobLostError, JobStateError, QueueIOError

__all__ = ["Job"]

_log = logging.getLogger("dirqueue")


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
    deferred_until: float | None
    """For a listed job waiting in ``deferred/``: when it is due (seconds since the
    epoch); None for a job in the queue."""
    waiting: bool
    """For a listed job in ``waiting/``: True (it waits for its parents, named in its
    ``dq.depends_on`` metadata)."""

    def __init__(
        self,
        config: QueueConfig,
        jobid: str,
        queue_path: str,
        control: ControlFile,
        data_path: str,
        *,
        active_host: str | None = None,
        active_pid: int | None = None,
        held: _lock.HeldLock | None = None,
        deferred_until: float | None = None,
        waiting: bool = False,
    ) -> None:
        self._config = config
        self.deferred_until = deferred_until
        self.waiting = waiting
        self.jobid = jobid
        self.queue_path = queue_path
        self.metadata = control.metadata
        self.active_host = active_host
        self.active_pid = active_pid
        self._control = control
        self._data_path = data_path
        # Our lock; None for a read-only (listed) job.
        self._held = held
        # Set once we start to remove our own lock: a finish or return that failed
        # after that point may find it gone when it is tried again.
        self._letting_go = False
        # Set once finish() has tried to unlink the control file.
        self._finishing = False
        self._state = "active" if held is not None else "listed"
        # The process whose lock holds the job (a forked child takes it over).
        self._holder_pid = current_pid()
        self._heartbeat: Heartbeat | None = None
        #: Called once this process has let go of the job (finished, returned, deferred
        #: or lost): a layer above the engine gives back what it took with the job (a
        #: group's slot, see :mod:`dirqueue.limits`).
        self.on_release: list[Callable[[], None]] = []
        if held is not None and config.lock_heartbeat:
            self._heartbeat = Heartbeat(
                lambda: _lock.touch(config, held), config.active_file_lifetime / 4
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
    def attempt(self) -> int:
        """The attempt this is at the job: 1 for its first run, one more for each failed
        attempt counted before (on any worker or host). For a job only listed, the
        attempt its next run will be."""
        return attempts_of(self._control) + 1

    @property
    def control(self) -> ControlFile:
        """The parsed control file, system fields included."""
        return self._control

    @property
    def queue_dir(self) -> str:
        """The directory of the queue the job belongs to, as the queue was given it."""
        return self._config.dir

    def get_data_path(self) -> str:
        """The data file's path in this queue directory (found from the job id)."""
        return self._data_path

    def get_data(self) -> bytes:
        """The job's data, all of it (never more than its recorded size).

        Raises :class:`CorruptJobError` rather than follow a symlink out of the queue,
        or read a data file that is not the size its control file records.
        """
        if self._holder_pid != current_pid():  # (The usual case without a call.)
            self._taken_over_if_forked()
        return read_data(self._config, self.jobid, self._control.size_bytes)

    def open_data(self) -> BinaryIO:
        """The job's data as a binary file object, for data too big to read whole.

        Opened without following symlinks; raises :class:`CorruptJobError` for anything
        that is not a regular file in the queue.
        """
        self._taken_over_if_forked()
        return os.fdopen(open_data(self._config, self.jobid), "rb")

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

    @property
    def lock_stat(self) -> os.stat_result | None:
        """The ``lstat`` of this process's lock on the job when it was taken (its device
        and inode name the file); None for a listed job."""
        return None if self._held is None else self._held.stat

    def _require_active(self, action: str) -> _lock.HeldLock:
        if self._held is None:
            raise JobStateError(
                f"cannot {action} job {self.jobid}: it was listed, not picked up;"
                " use DirQueue.pickup_queued_job() to take it",
                self.jobid,
            )
        if self._state == "lost":
            raise JobLostError(
                f"cannot {action} job {self.jobid}: another worker took it over", self.jobid
            )
        if self._state != "active":
            raise JobStateError(
                f"cannot {action} job {self.jobid}: it was already {self._state}", self.jobid
            )
        if self._holder_pid != current_pid():
            self._take_over_after_fork()  # As _taken_over_if_forked, held and active.
        return self._held

    def _taken_over_if_forked(self) -> None:
        """A held job's first use in a child forked since the pickup takes it over."""
        if self._held is not None and self._state == "active" and (
            self._holder_pid != current_pid()
        ):
            self._take_over_after_fork()

    def _take_over_after_fork(self) -> None:
        """In a child forked since the pickup, on its first call on the job: put a lock
        naming this process in place of the parent's (see :func:`_lock.adopt`), and
        keep it fresh from here (no thread of the parent's came along).

        The parent, or a sibling, that acts on the job afterwards finds it taken over
        (JobLostError); if one of them acted first, this process finds that instead.
        """
        held = self._held
        if held is None:
            return
        parent, self._holder_pid = self._holder_pid, current_pid()
        self._heartbeat = None  # The parent's: it beats in the parent, not here.
        try:
            adopted = _lock.adopt(self._config, held, parent)
        except OSError as err:
            raise QueueIOError(f"taking over job {self.jobid} from process {parent}", err) from err
        if adopted is not None:
            self._held = adopted
            self.active_pid = current_pid()
            self._restart_heartbeat()

    def _require_ours(self, action: str) -> _lock.HeldLock:
        """Our lock, checked to be still in place; else the job is lost to us.

        A lock that is gone was broken by another worker, which may be finishing the
        job or about to take it, unless we removed it ourselves in an earlier attempt
        that then failed.
        """
        held = self._require_active(action)
        try:
            standing = _lock.standing(self._config, held)
        except OSError as err:
            raise QueueIOError(f"checking the lock of job {self.jobid}", err) from err
        if standing is _lock.Standing.TAKEN or (
            standing is _lock.Standing.GONE and not self._letting_go
        ):
            self._stop_heartbeat()
            self._state = "lost"
            owner = parse_lock_file(read_lock_file(self._config, self.jobid))
            taken_by = (
                f"{owner.host}:{owner.pid}"
                if standing is _lock.Standing.TAKEN and owner.host is not None
                else None
            )
            raise JobLostError(
                f"cannot {action} job {self.jobid}: its lock was broken while this process"
                " held it (stalled for longer than active_file_lifetime?)"
                + (f" and it was taken over by {taken_by}" if taken_by else "")
                + "; the job was left to its new holder",
                self.jobid,
                taken_by,
            )
        return held

    def touch_active_lock(self) -> None:
        """Refresh the lock's mtime, so a long job is not taken for a dead worker's.

        Raises :class:`JobLostError` if the lock is no longer ours.
        """
        held = self._require_active("touch the lock of")
        try:
            touched = _lock.touch(self._config, held)
        except OSError as err:
            raise QueueIOError(f"refreshing the lock of job {self.jobid}", err) from err
        if not touched:
            self._require_ours("touch the lock of")

    @contextlib.contextmanager
    def kept_fresh(self) -> Iterator[None]:
        """Keep the lock fresh while inside the block, even with
        ``DirQueue(lock_heartbeat=False)`` (then without the lock's heartbeat promise),
        so a long job is never taken for a dead worker's. A no-op when the queue's
        heartbeat already does it."""
        held = self._require_active("keep fresh the lock of")
        config = self._config
        if config.lock_heartbeat:
            yield
            return
        beat = Heartbeat(lambda: _lock.touch(config, held), config.active_file_lifetime / 4)
        try:
            yield
        finally:
            beat.stop()

    def finish(self) -> None:
        """The job is done: remove it from the queue, its data, and the lock.

        Raises :class:`JobLostError` (and removes nothing) if another worker took the
        job over after this process's lock was broken.
        """
        held = self._require_ours("finish")
        jobid = self.jobid
        if not self._finishing:
            # Ours, but moved out of queue/ by another (a stalled holder's retry_later
            # that resumed after we broke its lock)? The job lives on there, and calling
            # it done would make it come back. (Looked at first: over NFS the unlink
            # below can answer ENOENT for its own retried success.)
            try:
                os.lstat(self.queue_path)
            except FileNotFoundError:
                # Looked at twice: over NFS a name that is there can read as ENOENT.
                if not os.path.lexists(self.queue_path):
                    self._lose_moved(held, "finish")
            except OSError as err:
                raise QueueIOError(f"finishing job {jobid} (still in the queue)", err) from err
        self._stop_heartbeat()
        # The control file goes first: once it is gone the job is finished, and no
        # reader can meet a control file whose data was already removed.
        self._finishing = True  # An unlink that reports failure may still have worked.
        try:
            try:
                os.unlink(self.queue_path)
            except FileNotFoundError:
                if os.path.lexists(self.queue_path):
                    raise  # Not gone at all: the job is still in the queue.
        except OSError as err:
            self._restart_heartbeat()
            raise QueueIOError(f"finishing job {jobid} (still in the queue)", err) from err
        failed: OSError | None = None
        self._letting_go = True
        try:
            self._remove_finished_data()
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                failed = err
            else:
                _log.warning(
                    "not removing the data of job %s: a directory above it is a symlink,"
                    " which may lead out of the queue (see repair())",
                    jobid,
                )
        try:
            _lock.release(self._config, held)
        except OSError as err:
            failed = failed or err
        if failed is not None:
            # Still ours, and active: finish() may be called again to complete it.
            self._restart_heartbeat()
            raise QueueIOError(
                f"finishing job {jobid} (out of the queue; finish() again, or repair(),"
                " removes what is left of it)",
                failed,
            ) from failed
        self._state = "finished"
        self._let_go_finished()

    def _let_go_finished(self) -> None:
        """What a finished job gives back: what it held, and its unique key (each
        asked only if there is one: a plain job has neither, and finishes once a job
        taken)."""
        if self.on_release:
            self._released()
        if self.metadata.get(KEY_META):
            self._release_key()

    def _released(self) -> None:
        """Run (once) what waits for this process to let go of the job."""
        while self.on_release:
            callback = self.on_release.pop()
            try:
                callback()
            except (OSError, DirQueueError) as err:
                # Left to the stale-lock rule, as a crash here would be.
                _log.warning("job %s: could not give back what it held (%s)", self.jobid, err)

    def _release_key(self) -> None:
        """Give back a finished unique job's key (``dq.unique_key``). Only now, with the
        job out of the queue: at no moment two jobs with one key. A crash before this
        leaves the key to the stale-lock rule."""
        key = self.metadata.get(KEY_META)
        if key:
            try:
                _keys.release(self._config, key, self.jobid)
            except (OSError, DirQueueError) as err:
                _log.warning("job %s finished, but its unique key stays (%s)", self.jobid, err)

    def _lose_moved(self, held: _lock.HeldLock, action: str) -> None:
        """Our lock is in place but the job's control file is no longer in ``queue/``:
        let go of the lock (the job must not stay locked where it comes back) and
        raise :class:`JobLostError`."""
        self._stop_heartbeat()
        self._state = "lost"
        with contextlib.suppress(OSError):
            _lock.release(self._config, held)
        self._released()
        raise JobLostError(
            f"cannot {action} job {self.jobid}: its control file was moved out of the"
            " queue by another process while this one held the job; the job was left"
            " where it went",
            self.jobid,
        )

    def _remove_finished_data(self) -> None:
        """Remove the data of a job whose control file :meth:`finish` has unlinked."""
        if self._config.durable:
            # The control file's removal on disk before the data's: after a power loss
            # the job is finished for good (not run again), or whole; never a control
            # file whose data is gone (found by crashcheck, docs/durability.md).
            _fs.fsync_dir(os.path.dirname(self.queue_path))
        unlink_data(self._config, self.jobid)

    def return_to_queue(self, *, wake: bool = True) -> None:
        """Give the job back, untouched, for any worker to pick up again.

        Raises :class:`JobLostError` if another worker holds the job now. ``wake=False``
        leaves ``queue/``'s mtime alone: for a job held for a moment and given back
        unrun (a pickup's gate said no), which no waiting worker needs to hear of;
        over NFS every bump makes every host read ``queue/`` again.
        """
        held = self._require_ours("return")
        self._stop_heartbeat()
        self._letting_go = True
        try:
            _lock.release(self._config, held)
        except OSError as err:
            raise QueueIOError(f"returning job {self.jobid} to the queue", err) from err
        self._state = "returned"
        self._released()
        if wake:
            bump_queue_mtime(self._config)

    def update_control(self, control: ControlFile, *, due: float | None = None) -> None:
        """Replace the job's control file with ``control`` (its system fields and
        metadata), atomically: written in ``tmp/``, then renamed over ``queue/NAME``.

        Only while this process holds the job; :class:`JobLostError` if it lost it.
        ``due`` (for :meth:`retry_later`) is set as the new file's mtime.
        """
        self._require_ours("update")
        config = self._config
        layout = config.layout
        control = dataclasses.replace(control, data_path=self._control.data_path)
        # Made in tmp/ through its descriptor, never by path (a tmp/ swapped for a
        # symlink must not have the file made outside the queue).
        tmp = layout.tmp_rewrite_name(self.jobid, current_pid(), "attempts")

        def create(fd: int) -> int:
            create_control(config, tmp, control, dir_fd=fd)
            return os.dup(fd)  # tmp/ as the file was made in, for the steps below.

        try:
            tmp_fd = in_queue_dir(config, (Layout.TMP,), create)
        except OSError as err:
            raise QueueIOError(f"updating the control file of job {self.jobid}", err) from err
        try:
            if due is not None:
                os.utime(tmp, (due, due), dir_fd=tmp_fd, follow_symlinks=False)
            written = os.lstat(tmp, dir_fd=tmp_fd)
            # Checked again just before the rename: a lock broken meanwhile means another
            # worker may be finishing the job, and a rename would bring it back to life.
            self._require_ours("update")
            if not os.path.lexists(self.queue_path):
                raise JobStateError(
                    f"job {self.jobid} is no longer in the queue: not updating it", self.jobid
                )
            try:
                # Swapped in where the system can: a job finished by another since the
                # check is then not brought back (the swap needs a file to swap with).
                # (queue/NAME named first: inotify then reports it leaving before the new
                # file arriving, and an index that sees every change keeps the job.)
                swapped = _fs.exchange(self.queue_path, tmp, b_dir_fd=tmp_fd)
            except FileNotFoundError:
                raise JobStateError(
                    f"job {self.jobid} is no longer in the queue: not updating it", self.jobid
                ) from None
            try:
                if not swapped:
                    os.rename(tmp, self.queue_path, src_dir_fd=tmp_fd)
            except FileNotFoundError:
                # Over NFS a retried rename reports ENOENT although the first one worked.
                if not _fs.same_file(os.lstat(self.queue_path), written):
                    raise
            if config.durable:
                _fs.fsync_dir(os.path.dirname(self.queue_path))
        except OSError as err:
            if isinstance(err, QueueIOError):
                raise
            raise QueueIOError(f"updating the control file of job {self.jobid}", err) from err
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=tmp_fd)
            _fs.close_dir(tmp_fd)
        self._control = control
        self.metadata = control.metadata

    def attempt_counted(self, attempts: int, error: str | None = None) -> ControlFile:
        """The job's control file with ``attempts`` failed attempts (and ``error`` as
        the last error), this run's among them: for :meth:`update_control`.

        The file also names this run (our lock's owner: host, pid, boot, start), so
        that if this process dies after writing it and before letting go of the job,
        the dequeuer that breaks our lock sees the attempt already counted.
        """
        me = this_process()
        run = run_of(self._config.hostname, current_pid(), me.boot, me.start)
        return with_counted_run(with_attempts(self._control, attempts, error), run)

    def retry_later(
        self, delay: float, *, error: str | None = None, count: bool = True
    ) -> None:
        """Give the job back to be tried again in ``delay`` seconds, counting one more
        failed attempt (with ``error`` as its last error); with ``count=False`` the job
        is only put off (a group's rate limit), its attempts left as they are.

        Until it is due the job waits in ``deferred/``, where no worker (Perl ones
        included) can take it; then any dirqueue process that looks moves it back to
        ``queue/``. ``delay <= 0`` returns it to the queue at once. At every step the
        job is in exactly one place: a crash leaves it deferred or queued, never lost
        or doubled. :class:`JobLostError` if another worker holds it now;
        :class:`InvalidNumberError` for a ``delay`` that is not a number of seconds
        from 0 to ten years (``nan`` would queue it at once, ``inf`` overflow).
        """
        if isinstance(delay, (int, float)) and delay < 0:
            delay = 0  # At once, as documented (and nan is not < 0: refused below).
        delay = check_number("delay", delay, SECONDS_OR_ZERO)
        held = self._require_ours("retry")
        control = (
            self.attempt_counted(attempts_of(self._control) + 1, error)
            if count
            else self._control
        )
        if delay <= 0:
            self.update_control(control)
            self.return_to_queue()
            return
        config = self._config
        # In the filesystem's clock, which every host's pickup compares it with.
        due = filesystem_now(config) + delay
        # 1. The new control file (attempt counted, due time as its mtime) replaces the
        #    old in queue/, atomically. A crash now: the job is queued, counted.
        self.update_control(control, due=due)
        self._stop_heartbeat()
        # 2. Moved to deferred/ (see _move_to_deferred). A crash now: deferred, and our
        #    lock an orphan that repair removes.
        try:
            dfd, created = _fs.ensure_dir_nofollow(config.dir, (Layout.DEFERRED,))
            try:
                self._move_to_deferred(dfd, created)
                if config.durable:
                    _fs.fsync_dir(os.path.dirname(self.queue_path))
            finally:
                _fs.close_dir(dfd)
        except OSError as err:
            self._restart_heartbeat()
            if isinstance(err, QueueIOError):
                raise
            raise QueueIOError(f"deferring job {self.jobid}", err) from err
        # 3. Let go of the lock. (If that fails the job is deferred but still ours:
        #    return_to_queue() lets go of it.)
        self._letting_go = True
        try:
            _lock.release(config, held)
        except OSError as err:
            raise QueueIOError(f"unlocking deferred job {self.jobid}", err) from err
        self._state = "deferred"
        self._released()

    def _move_to_deferred(self, dfd: int, created: list[str]) -> None:
        """Move our control file from ``queue/`` to ``deferred/`` (``dfd``), only while
        the job is still ours.

        A rename after a check would move whatever is in ``queue/`` then: a worker
        stopped between the two, whose lock was broken meanwhile, would move the new
        holder's job away (and that holder's finish() would call it done). So the file
        is linked into ``deferred/`` first, the lock checked, and only then unlinked
        from ``queue/``; a job taken over before the check is left where it was. A
        holder that lost it after the check finds its control file gone, and is told
        (JobLostError), while the job waits in ``deferred/``. A crash between link and
        unlink leaves the job queued with a second name in ``deferred/``, which
        :func:`dirqueue._deferred.promote_due` drops.
        """
        source = os.lstat(self.queue_path)
        try:
            os.link(self.queue_path, self.jobid, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError:
            # A link made can report failure (over NFS, a retried request whose reply
            # was lost): the inode says. Another file by that name: not ours to touch.
            if not _is_at(dfd, self.jobid, source):
                raise
        try:
            if self._config.durable:
                # The name in deferred/ on disk before the one in queue/ goes: a power
                # loss between them must leave the job in both (the twin is dropped), never
                # in neither (found by crashcheck).
                os.fsync(dfd)
                for directory in created:
                    _fs.fsync_dir(os.path.dirname(directory))
            self._require_ours("retry")
            self._unlink_queued(dfd)
        except BaseException:
            # Not moved: the job stays in queue/ (with its new holder, if it was taken
            # over), and only there.
            if os.path.lexists(self.queue_path):
                with contextlib.suppress(OSError):
                    os.unlink(self.jobid, dir_fd=dfd)
            raise

    def _unlink_queued(self, dfd: int) -> None:
        """The last step of :meth:`_move_to_deferred`: our control file's name in
        ``queue/`` goes, the job's lock checked just before."""
        try:
            os.unlink(self.queue_path)
        except OSError:
            if os.path.lexists(self.queue_path):
                raise  # Still there: not moved (the caller drops the second name).
            # Gone: our unlink (whose reply was lost), or, our lock broken after the
            # check, the new holder finished the job; then the name we linked in
            # deferred/ would bring it back.
            if _lock.standing(self._config, self._require_active("retry")) is _lock.Standing.OURS:
                return
            with contextlib.suppress(OSError):
                os.unlink(self.jobid, dir_fd=dfd)
            self._require_ours("retry")  # Raises JobLostError.
            raise

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def _restart_heartbeat(self) -> None:
        held = self._held
        config = self._config
        if held is not None and config.lock_heartbeat and self._heartbeat is None:
            self._heartbeat = Heartbeat(
                lambda: _lock.touch(config, held), config.active_file_lifetime / 4
            )

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


def _is_at(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """True if ``name`` in ``dir_fd`` is the file ``st`` describes."""
    try:
        return _fs.same_file(os.lstat(name, dir_fd=dir_fd), st)
    except OSError:
        return False
