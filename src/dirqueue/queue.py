"""The queue: :class:`DirQueue`, the front of dirqueue's protocols.

``DirQueue`` holds a queue's settings and hands each request to the module that owns
its protocol: :mod:`dirqueue._enqueue` (the one way into the queue),
:mod:`dirqueue._pickup` (choosing, locking and waiting for the next job, with the
index of :mod:`dirqueue._index`), :mod:`dirqueue._scanner` (listing ``queue/``) and
:mod:`dirqueue.repair`. ``docs/design.md`` draws who calls whom.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Generic, TypeVar

from . import _cancel, _fs
from ._config import QueueConfig
from ._corrupt import CorruptEntry, list_corrupt
from ._datawriter import Chunk, DataWriter, write_chunks, writer
from ._deferred import scan_deferred
from ._deps import HasJobId, dependency_meta, parent_ids, scan_waiting, settle_child
from ._enqueue import AlreadyQueued, enqueue, ensure_queue_dirs
from ._format import DEFAULT_PRIORITY, is_job_name, parse_lock_file, validate_metadata
from ._jobfiles import check_data, read_control
from ._jobsettings import DIRQUEUE_ONLY, GROUP, check_group
from ._judge import read_lock_file
from ._keys import KEY_META, JobId, KeyGate, UniqueWhile
from ._layout import Layout
from ._numbers import EPOCH_TIME, SECONDS, SECONDS_OR_ZERO, check_number
from ._pickup import Picker
from ._scanner import scan
from .errors import CorruptJobError, QueueIOError, QueueNotFoundError
from .job import Job
from .repair import DEFAULT_MIN_AGE, RepairReport, repair_queue

__all__ = ["BatchItem", "DirQueue"]

_log = logging.getLogger("dirqueue")

#: One job for :meth:`DirQueue.enqueue_many`: its data, or its data and metadata.
BatchItem = str | bytes | tuple[str | bytes, dict[str, str] | None]
C = TypeVar("C")
T = TypeVar("T")


def _due(delay: float | None, not_before: float | datetime.datetime | None) -> float | None:
    """When a delayed job is due (seconds since the epoch), or None to queue it now."""
    if delay is not None and not_before is not None:
        raise ValueError("give delay or not_before, not both")
    if delay is not None:
        delay = check_number("delay", delay, SECONDS_OR_ZERO)
        return time.time() + delay if delay > 0 else None
    if not_before is None:
        return None
    if isinstance(not_before, datetime.datetime):
        # A naive datetime is local time. The year 9999 is a valid datetime, not a time
        # a file's mtime can hold.
        return check_number("not_before", not_before.timestamp(), EPOCH_TIME)
    return check_number("not_before", not_before, EPOCH_TIME)


def _check_lifetime(name: str, value: float) -> float:
    # nan made every lock look past its lifetime: a live worker's fresh lock broken.
    return check_number(name, value, SECONDS)


class _Setting(Generic[T]):
    """A ``DirQueue`` attribute kept in its :class:`QueueConfig`, which the protocol
    modules share: setting it on the queue is seen by all of them (checked by
    ``check``, if given, as the constructor checks it)."""

    name: str

    def __init__(self, check: Callable[[str, T], T] | None = None) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, queue: DirQueue, owner: type | None = None) -> T:
        value: T = getattr(queue.config, self.name)
        return value

    def __set__(self, queue: DirQueue, value: T) -> None:
        if self.check is not None:
            value = self.check(self.name, value)
        setattr(queue.config, self.name, value)


class DirQueue:
    """A job queue kept in directory ``dir``, in IPC::DirQueue's on-disk format.

    Any number of processes, on any number of hosts sharing the directory, may enqueue
    and pick up jobs at once.

    :param dir: the queue directory. An enqueue creates it, with its parents and
        subdirectories, as needed (as the Perl module does); a consumer (a pickup, a
        wait, a :class:`~dirqueue.Worker`) only makes the subdirectories of a directory
        that exists, and raises :class:`~dirqueue.errors.QueueNotFoundError` otherwise,
        so that a mistyped path fails at once instead of waiting on a new empty queue.
    :param create: create the queue now (the directory, its parents and its
        subdirectories): for a worker started before the first submission.
    :param data_file_mode: permission bits of data files (less the umask).
    :param queue_file_mode: permission bits of control and lock files (less the umask).
    :param ordered: pick jobs up in name order (priority, then submission time);
        ``False`` takes them in directory order, which is cheaper on huge queues.
    :param queue_fanout: spread control files over ``queue/0`` … ``queue/f``, for
        filesystems that slow down with many entries in one directory.
    :param buf_size: read size when copying data from a file.
    :param active_file_lifetime: seconds after which the lock of a dead worker may be
        broken and its job taken again.
    :param durable: fsync files and directories so that a returned enqueue survives
        power loss; ``False`` skips the fsyncs, like the Perl module.
    :param min_free_bytes: refuse an enqueue (``QueueIOError``, errno ``ENOSPC``) that
        would leave less than this many bytes free on the queue's filesystem; 0 checks
        nothing. A full disk fails an enqueue cleanly either way; this keeps room for
        the workers' own files.
    :param lock_heartbeat: while this process holds a job, a thread touches its lock
        every ``active_file_lifetime / 4`` seconds, and the lock says so. A dequeuer on
        any host may then break the lock once it has gone a whole lifetime untouched:
        that is how jobs held by dead hosts are recovered. IPC::DirQueue's own locks
        make no such promise and are broken only from their owner's host.
    """

    data_file_mode: _Setting[int] = _Setting()
    queue_file_mode: _Setting[int] = _Setting()
    ordered: _Setting[bool] = _Setting()
    queue_fanout: _Setting[bool] = _Setting()
    buf_size: _Setting[int] = _Setting()
    active_file_lifetime: _Setting[float] = _Setting(_check_lifetime)
    durable: _Setting[bool] = _Setting()
    min_free_bytes: _Setting[int] = _Setting()
    lock_heartbeat: _Setting[bool] = _Setting()
    hostname: _Setting[str] = _Setting()

    def __init__(
        self,
        dir: str | os.PathLike[str],  # noqa: A002 - the Perl module's name for it
        *,
        data_file_mode: int = 0o666,
        queue_file_mode: int = 0o666,
        ordered: bool = True,
        queue_fanout: bool = False,
        buf_size: int = 65536,
        active_file_lifetime: float = 600,
        durable: bool = True,
        min_free_bytes: int = 0,
        lock_heartbeat: bool = True,
        create: bool = False,
    ) -> None:
        if buf_size <= 0:
            raise ValueError(f"buf_size must be positive, not {buf_size}")
        active_file_lifetime = _check_lifetime("active_file_lifetime", active_file_lifetime)
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be 0 or more, not {min_free_bytes}")
        self.layout = Layout(dir)
        self.dir = self.layout.dir
        #: The settings, shared with the modules that implement the protocols.
        self.config = QueueConfig(
            layout=self.layout,
            hostname=socket.gethostname(),
            data_file_mode=data_file_mode,
            queue_file_mode=queue_file_mode,
            ordered=ordered,
            queue_fanout=queue_fanout,
            buf_size=buf_size,
            active_file_lifetime=active_file_lifetime,
            durable=durable,
            min_free_bytes=min_free_bytes,
            lock_heartbeat=lock_heartbeat,
        )
        self._picker = Picker(self.config)
        # The picker's inotify descriptor is kept open between calls (closing one costs
        # the kernel about 10 ms), and closed with the queue object.
        weakref.finalize(self, self._picker.close)
        self._dirs_ready = False
        if create:
            self.create()

    def __repr__(self) -> str:
        return f"DirQueue({self.dir!r})"

    def create(self) -> None:
        """Create the queue directory and its subdirectories if they are missing.

        Every enqueue does this on first use (a pickup only once the directory
        exists); a worker calls it (or passes ``create=True``) to start before the
        first submission. Raises :class:`QueueIOError` if a subdirectory is a symlink.
        """
        if not self._dirs_ready:
            ensure_queue_dirs(self.config)
            self._dirs_ready = True

    @property
    def exists(self) -> bool:
        """True if the queue directory exists (its subdirectories may be made yet)."""
        return self._dirs_ready or os.path.isdir(self.dir)

    def _open_for_pickup(self) -> None:
        """:meth:`create` for a consumer: the subdirectories of an existing queue
        directory, never the directory itself (:class:`QueueNotFoundError`)."""
        if not self.exists:
            raise QueueNotFoundError(self.dir)
        self.create()

    # -- enqueueing -------------------------------------------------------------------

    def enqueue_string(
        self,
        data: str | bytes,
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """Enqueue ``data`` (``str`` is stored as UTF-8) and return the new job's id.

        Every ``enqueue_*`` takes ``unique_key`` (and ``unique_ttl``, ``unique_while``),
        ``depends_on`` and ``allow_failure``: see ``docs/coordination.md``; and ``group``,
        the group whose limits hold for the job: see ``docs/limits.md``.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"enqueue_string takes str or bytes, not {type(data).__name__}")
        payload = bytes(data)
        return self._enqueue(
            writer(payload), metadata, priority, len(payload), _due(delay, not_before),
            unique_key=unique_key, unique_ttl=unique_ttl, unique_while=unique_while,
            depends_on=depends_on, allow_failure=allow_failure, group=group,
            dirqueue_only=dirqueue_only,
        )

    def enqueue_file(
        self,
        path: str | os.PathLike[str],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """Enqueue a copy of the file at ``path`` and return the new job's id."""
        # Open first, so a missing file fails before anything is written.
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise QueueIOError(f"reading the file to enqueue {os.fspath(path)!r}", err) from err
        with fh:
            return self.enqueue_fh(
                fh, metadata, priority, delay=delay, not_before=not_before,
                unique_key=unique_key, unique_ttl=unique_ttl, unique_while=unique_while,
                depends_on=depends_on, allow_failure=allow_failure, group=group,
            dirqueue_only=dirqueue_only,
            )

    def enqueue_fh(
        self,
        fileobj: IO[bytes] | IO[str],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """Enqueue what can be read from a binary or text file object; return the job id."""
        size = self.buf_size

        def chunks() -> Iterator[Chunk]:
            while True:
                chunk = fileobj.read(size)
                if not chunk:
                    return
                yield chunk

        return self._enqueue(
            lambda fd: write_chunks(fd, chunks()), metadata, priority, 0, _due(delay, not_before),
            unique_key=unique_key, unique_ttl=unique_ttl, unique_while=unique_while,
            depends_on=depends_on, allow_failure=allow_failure, group=group,
            dirqueue_only=dirqueue_only,
        )

    def enqueue_sub(
        self,
        callable: Callable[[], Chunk | None],  # noqa: A002 - the API's name for it
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """Enqueue the chunks ``callable()`` returns, until it returns ``None``.

        Chunks are ``str`` (stored as UTF-8) or ``bytes``; empty ones are skipped. If the
        callable raises, nothing is enqueued and the exception propagates.
        """

        def chunks() -> Iterator[Chunk]:
            while True:
                chunk = callable()
                if chunk is None:
                    return
                yield chunk

        return self._enqueue(
            lambda fd: write_chunks(fd, chunks()), metadata, priority, 0, _due(delay, not_before),
            unique_key=unique_key, unique_ttl=unique_ttl, unique_while=unique_while,
            depends_on=depends_on, allow_failure=allow_failure, group=group,
            dirqueue_only=dirqueue_only,
        )

    def enqueue_iter(
        self,
        chunks: Iterable[Chunk],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """Enqueue the chunks of an iterable or generator (``str`` or ``bytes``)."""
        return self._enqueue(
            lambda fd: write_chunks(fd, chunks), metadata, priority, 0, _due(delay, not_before),
            unique_key=unique_key, unique_ttl=unique_ttl, unique_while=unique_while,
            depends_on=depends_on, allow_failure=allow_failure, group=group,
            dirqueue_only=dirqueue_only,
        )

    def enqueue_many(
        self,
        items: Iterable[BatchItem],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
        *,
        delay: float | None = None,
        not_before: float | datetime.datetime | None = None,
    ) -> list[str]:
        """Enqueue several jobs at once; return their ids, in the order given.

        Each item is the job's data (``str``, stored as UTF-8, or ``bytes``) or a
        ``(data, metadata)`` pair whose metadata replaces ``metadata`` for that job. Each
        job appears in the queue atomically, exactly as with :meth:`enqueue_string`, but
        with ``durable=True`` the directories are fsynced once for the whole batch
        instead of once per job. On return every job is durable; if the call raises,
        none was enqueued (jobs already linked are taken out again, though a fast
        worker may have picked one up meanwhile, as with a failed single enqueue).
        """
        jobs: list[tuple[DataWriter, dict[str, str] | None, int]] = []
        total = 0
        for item in items:
            if isinstance(item, tuple):
                data, meta = item
            else:
                data, meta = item, metadata
            if isinstance(data, str):
                data = data.encode("utf-8")
            elif not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"enqueue_many takes str or bytes items, not {type(data).__name__}"
                )
            payload = bytes(data)
            total += len(payload)
            jobs.append((writer(payload), meta, priority))
        if not jobs:
            return []
        return enqueue(self.config, jobs, total, self.create, due=_due(delay, not_before))

    def _enqueue(
        self,
        write_data: DataWriter,
        metadata: dict[str, str] | None,
        priority: int,
        size_hint: int = 0,
        due: float | None = None,
        *,
        unique_key: str | None = None,
        unique_ttl: float | None = None,
        unique_while: UniqueWhile = "active",
        depends_on: Iterable[str | HasJobId] | None = None,
        allow_failure: bool = False,
        group: str | None = None,
        dirqueue_only: bool = False,
    ) -> str:
        """The one job's enqueue behind every ``enqueue_*``.

        ``unique_key``: enqueue only if no job with that key is waiting, deferred or
        running (:mod:`dirqueue._keys`); else nothing is enqueued and the id of the job
        that holds the key comes back as a :class:`JobId` whose ``existing`` is True.
        ``unique_ttl``: keep the key for that many seconds from now even after its job
        has ended: one job for the key in that time (an idempotent submission, a
        periodic job's time slot).
        ``unique_while``: ``"active"`` (the default) holds the key until the job has
        ended, as said; ``"queued"`` only until it starts: once a worker holds it, an
        enqueue with the key enqueues a new job (one job waiting to run per key).
        ``depends_on``: the job waits in ``waiting/`` until every one of those jobs has
        ended (:mod:`dirqueue._deps`); a parent that ends in ``failed/`` sends it to
        ``failed/`` too, unless ``allow_failure``.
        ``group``: the job's group (``dq.group`` metadata), whose limits every dirqueue
        worker keeps (:mod:`dirqueue.limits`). ``dirqueue_only``: keep the job out of
        Perl workers' sight (in ``queue/dq/``, which they never read), so that only
        workers that keep the limits take it.
        """
        if (
            group is None and not dirqueue_only and unique_key is None and depends_on is None
        ):
            # A plain job (most enqueues): none of the coordination below applies.
            return enqueue(self.config, [(write_data, metadata, priority)], size_hint,
                           self.create, due=due)[0]
        meta = metadata
        if group is not None:
            meta = {**validate_metadata(meta), GROUP: check_group(group)}
        if dirqueue_only:
            meta = {**validate_metadata(meta), DIRQUEUE_ONLY: "1"}
        gate = None
        if unique_key is not None:
            gate = KeyGate(self.config, unique_key, ttl=unique_ttl, while_=unique_while)
            holder = gate.held_by() if self.exists else None
            if holder is not None:
                return JobId(holder, existing=True)
            if unique_ttl is None:  # Else kept when the job ends: nobody releases it.
                meta = {**validate_metadata(meta), KEY_META: gate.name}
        parents = parent_ids(depends_on)
        if parents:
            meta = {
                **validate_metadata(meta), **dependency_meta(parents, allow_failure=allow_failure)
            }
        jobs = [(write_data, meta, priority)]
        try:
            jobid = enqueue(
                self.config, jobs, size_hint, self.create, due=due,
                waiting=bool(parents), gate=gate,
            )[0]
        except AlreadyQueued as held:
            return JobId(held.jobid, existing=True)
        if parents:
            settle_child(self.config, jobid)  # Its parents may all have ended already.
        return JobId(jobid) if gate is not None else jobid

    # -- picking up -------------------------------------------------------------------

    def pickup_queued_job(self, path: str | None = None) -> Job | None:
        """Take the next waiting job, or the one named by ``path``; None if there is none.

        ``path`` is a job's ``queue_path`` or its job id. The job returned is active:
        finish it or return it to the queue.
        """
        if path is None:
            if not self._dirs_ready:  # Once made, nothing to check per pickup.
                self._open_for_pickup()
            return self._picker.pickup()
        jobid = Layout.jobid_from_path(path)
        if not is_job_name(jobid):
            raise CorruptJobError(f"{path!r} names no job: pass a job id or a queue path", path)
        self._open_for_pickup()
        return self._picker.pickup_named(jobid, gated=True)

    # -- cancelling --------------------------------------------------------------------

    def cancel(self, jobid: str) -> None:
        """Delete job ``jobid`` without running it: a queued, stale or deferred job.

        Its lock is taken as a pickup takes it, so a job a live worker holds is never
        removed: that raises :class:`~dirqueue.errors.JobStateError` and leaves it to
        finish. :class:`~dirqueue.errors.NoSuchJobError` if the job is not waiting here
        (finished, failed, or never submitted).
        """
        try:
            _cancel.cancel(self.config, self._picker.pickup_named, jobid)
        finally:
            # The lock file a pickup made for the job: not kept for pickups to come.
            self._picker.lock_file.let_go()

    def empty(self) -> list[str]:
        """Cancel every job waiting now, queued, stale and deferred; return their ids.

        Jobs held by live workers are left to finish; failed jobs stay in ``failed/``
        (:meth:`FailedStore.purge` deletes them).
        """
        try:
            return _cancel.empty(self.config, self._picker.pickup_named)
        finally:
            self._picker.lock_file.let_go()

    def corrupt_jobs(self) -> list[CorruptEntry]:
        """What is in ``corrupt/``: jobs moved aside as unreadable, each with the reason
        recorded when it was moved (dirqueue never deletes them; see ``docs/durability.md``)."""
        return list_corrupt(self.config)

    # -- checking and repairing ---------------------------------------------------------

    def fsck(
        self, *, min_age: float = DEFAULT_MIN_AGE, host: str | None = None
    ) -> RepairReport:
        """Check the queue directory and report what :meth:`repair` would fix; change nothing."""
        return repair_queue(self.config, dry_run=True, min_age=min_age, host=host)

    def repair(
        self,
        *,
        dry_run: bool = False,
        min_age: float = DEFAULT_MIN_AGE,
        host: str | None = None,
    ) -> RepairReport:
        """Find and fix what killed processes left behind; return what was found and done.

        Removes tmp files, data files no control file names, and orphan locks once they
        are ``min_age`` seconds old (younger ones may belong to an operation still
        running), and the locks of workers that are provably dead or whose heartbeat
        has gone quiet. Moves corrupt or unreadable control files, control files
        without data, and anything that is not a lock file in ``active/``, to
        ``corrupt/`` with a ``.reason`` file; nothing corrupt is deleted. Safe to run
        while the queue is in use. ``dry_run=True`` is :meth:`fsck`.

        ``host``: a host known to be dead (powered off, its mount gone). The locks its
        workers hold are removed too, so their jobs go back to the workers: the only
        way to free a Perl worker's lock from another host, which no worker breaks.
        Raises :class:`~dirqueue.errors.HostAliveError`, changing nothing, if ``host``
        is this host, or if one of its locks shows a fresh heartbeat.
        """
        return repair_queue(self.config, dry_run=dry_run, min_age=min_age, host=host)

    # -- waiting ----------------------------------------------------------------------

    def wait_for_queued_job(
        self,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Job | None:
        """Pick up a job, waiting for one to arrive; None once ``timeout`` seconds pass.

        Jobs enqueued on this host wake the waiter at once (inotify, on Linux); the
        queue is also checked every ``poll_interval`` seconds, which is how jobs from
        other hosts of a network filesystem are seen. ``timeout=None`` waits forever.
        """
        poll_interval = check_number("poll_interval", poll_interval, SECONDS)
        if timeout is not None:
            timeout = check_number("timeout", timeout, SECONDS_OR_ZERO)
        self._open_for_pickup()
        deadline = None if timeout is None else clock() + timeout
        while True:
            job = self.pickup_queued_job()
            if job is not None:
                return job
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0:
                    return None
                pause = min(pause, remaining)
            if sleep is time.sleep:
                self._picker.wait(pause)
            else:
                sleep(pause)  # A test drives time.

    # -- listing ----------------------------------------------------------------------

    def jobs(self) -> Iterator[Job]:
        """Every job in the queue, waiting or active, then the deferred ones (soonest
        due first), as read-only snapshots.

        In pickup order when the queue is ordered. Jobs that vanish while being listed
        are skipped; corrupt ones are skipped with a warning.
        """
        yield from self._queued_jobs()
        yield from self._deferred_jobs()
        yield from self._parked_jobs(Layout.WAITING, scan_waiting(self.config))

    def _queued_jobs(self) -> Iterator[Job]:
        config = self.config
        layout = self.layout
        try:
            entries = scan(layout, ordered=config.ordered)
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {layout.queue_dir}", err) from err
        try:
            locked = set(os.listdir(layout.active_dir)) if entries else set()
        except FileNotFoundError:
            locked = set()
        for name, fanout in entries:
            queue_path = layout.queue_path(name, fanout)
            try:
                control = read_control(queue_path)
                check_data(config, name, queue_path)
            except OSError as err:
                if _fs.is_gone(err):
                    continue  # Finished meanwhile (ESTALE: by another NFS client).
                _log.warning("skipping unreadable job %s: %s", queue_path, err)
                continue
            except CorruptJobError as err:
                # A job finished while we looked loses its queue file, then its data.
                if os.path.lexists(queue_path):
                    _log.warning("skipping corrupt job %s: %s", queue_path, err)
                continue
            owner = parse_lock_file(read_lock_file(config, name) if name in locked else b"")
            yield Job(
                config,
                name,
                queue_path,
                control,
                layout.data_path(name),
                active_host=owner.host,
                active_pid=owner.pid,
            )

    def _deferred_jobs(self) -> Iterator[Job]:
        try:
            entries = scan_deferred(self.config)
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {self.layout.deferred_dir}", err) from err
        yield from self._parked_jobs(Layout.DEFERRED, entries)

    def _parked_jobs(
        self, where: str, entries: Iterable[tuple[str, float] | str]
    ) -> Iterator[Job]:
        """The jobs in ``deferred/`` (``(name, due)`` entries) or ``waiting/`` (names)."""
        config = self.config
        layout = self.layout
        for entry in entries:
            name, due = (entry, None) if isinstance(entry, str) else entry
            path = layout.path(where, name)
            try:
                control = read_control(path)
            except OSError as err:
                if not _fs.is_gone(err):
                    _log.warning("skipping unreadable job %s: %s", path, err)
                continue  # Promoted (or moved aside) while we looked.
            except CorruptJobError as err:
                _log.warning("skipping unreadable job %s: %s", path, err)
                continue
            yield Job(
                config, name, path, control, layout.data_path(name), deferred_until=due,
                waiting=where == Layout.WAITING,
            )

    def visit_all_jobs(self, visitor: Callable[[C, Job], Any], context: C = None) -> None:  # type: ignore[assignment]
        """Call ``visitor(context, job)`` for every job, as :meth:`jobs` lists them."""
        for job in self.jobs():
            visitor(context, job)
