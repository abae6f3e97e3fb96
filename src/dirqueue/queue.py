"""The queue: enqueueing, picking up, finishing and listing jobs in a directory."""

from __future__ import annotations

import errno
import io
import os
import random
import socket
import stat
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Final, TypeVar, Union

from . import _fs
from ._format import (
    CONTROL_FILE_MAX_BYTES,
    DEFAULT_PRIORITY,
    ControlFile,
    Layout,
    format_lock,
    is_job_name,
    make_job_id,
    parse_control,
    parse_lock,
    validate_metadata,
    validate_priority,
)
from ._waiting import DirWatcher
from .errors import CorruptJobError, DirQueueError, QueueIOError
from .job import Job

__all__ = ["DirQueue"]

Chunk = Union[str, bytes, bytearray, memoryview]
C = TypeVar("C")

#: How many new names an enqueue tries when the one it made is taken.
_NAME_ATTEMPTS: Final = 10
#: A queue listing is reused while queue/'s mtime is unchanged, unless that mtime is
#: this recent: on filesystems with coarse timestamps two changes in the same tick
#: leave one mtime, so a fresh one proves nothing.
_MTIME_TRUST_AFTER: Final = 2.0
#: While a listing still has candidates it is reused for up to this many seconds even
#: though queue/ changed, so a busy queue of 100,000 jobs is not re-read and re-sorted
#: for every pickup. The cost: a job of better priority that arrives meanwhile waits
#: up to this long to jump the line.
_RESCAN_INTERVAL: Final = 1.0
#: How long a pickup waits for its new lock to come back when a stale-lock breaker has
#: moved it aside to inspect it (see _lock_landed).
_LOCK_IN_FLIGHT_WAIT: Final = 2.0


class _Listing:
    """A sorted snapshot of the waiting job names, reused while ``queue/`` is unchanged."""

    __slots__ = ("mtime_ns", "entries", "taken_at", "pos")

    def __init__(self, mtime_ns: int, entries: list[tuple[str, str | None]], taken_at: float):
        self.mtime_ns = mtime_ns
        self.entries = entries
        self.taken_at = taken_at
        #: Entries before this index are known to be gone from the queue (or ours).
        self.pos = 0

    def remaining(self) -> bool:
        return self.pos < len(self.entries)


def _unchanged(listing: _Listing, mtime_ns: int) -> bool:
    """True if queue/, now at ``mtime_ns``, provably has not changed since ``listing``."""
    return listing.mtime_ns == mtime_ns and listing.taken_at - mtime_ns / 1e9 > _MTIME_TRUST_AFTER


#: What a pickup attempt returns when the job is no longer in the queue at all.
_GONE: Final = object()


class DirQueue:
    """A job queue kept in directory ``dir``, in IPC::DirQueue's on-disk format.

    Any number of processes, on any number of hosts sharing the directory, may enqueue
    and pick up jobs at once.

    :param dir: the queue directory; created, with its subdirectories, as needed.
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
    """

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
    ) -> None:
        if buf_size <= 0:
            raise ValueError(f"buf_size must be positive, not {buf_size}")
        if active_file_lifetime <= 0:
            raise ValueError(
                f"active_file_lifetime must be a positive number of seconds, not {active_file_lifetime}"
            )
        self.layout = Layout(dir)
        self.dir = self.layout.dir
        self.data_file_mode = data_file_mode
        self.queue_file_mode = queue_file_mode
        self.ordered = ordered
        self.queue_fanout = queue_fanout
        self.buf_size = buf_size
        self.active_file_lifetime = active_file_lifetime
        self.durable = durable
        self.hostname = socket.gethostname()
        self._listing: _Listing | None = None
        self._dirs_ready = False

    def __repr__(self) -> str:
        return f"DirQueue({self.dir!r})"

    # -- setup ------------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        if self._dirs_ready:
            return
        layout = self.layout
        try:
            for directory in (layout.queue_dir, layout.data_dir, layout.active_dir, layout.tmp_dir):
                _fs.makedirs(directory)
        except OSError as err:
            raise QueueIOError(f"creating queue directory {self.dir!r}", err) from err
        self._dirs_ready = True

    # -- enqueueing -------------------------------------------------------------------

    def enqueue_string(
        self,
        data: str | bytes,
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Enqueue ``data`` (``str`` is stored as UTF-8) and return the new job's id."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"enqueue_string takes str or bytes, not {type(data).__name__}")
        payload = bytes(data)
        return self._enqueue(lambda fd: _write_chunks(fd, [payload]), metadata, priority)

    def enqueue_file(
        self,
        path: str | os.PathLike[str],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Enqueue a copy of the file at ``path`` and return the new job's id."""
        # Open first, so a missing file fails before anything is written.
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise QueueIOError(f"reading the file to enqueue {os.fspath(path)!r}", err) from err
        with fh:
            return self.enqueue_fh(fh, metadata, priority)

    def enqueue_fh(
        self,
        fileobj: IO[bytes] | IO[str],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Enqueue what can be read from a binary or text file object; return the job id."""
        size = self.buf_size

        def chunks() -> Iterator[Chunk]:
            while True:
                chunk = fileobj.read(size)
                if not chunk:
                    return
                yield chunk

        return self._enqueue(lambda fd: _write_chunks(fd, chunks()), metadata, priority)

    def enqueue_sub(
        self,
        callable: Callable[[], Chunk | None],  # noqa: A002 - the API's name for it
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
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

        return self._enqueue(lambda fd: _write_chunks(fd, chunks()), metadata, priority)

    def enqueue_iter(
        self,
        chunks: Iterable[Chunk],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> str:
        """Enqueue the chunks of an iterable or generator (``str`` or ``bytes``)."""
        return self._enqueue(lambda fd: _write_chunks(fd, chunks), metadata, priority)

    def _enqueue(
        self,
        write_data: Callable[[int], int],
        metadata: dict[str, str] | None,
        priority: int,
    ) -> str:
        priority = validate_priority(priority)
        meta = validate_metadata(metadata)
        self._ensure_dirs()
        layout = self.layout
        pid = os.getpid()
        jobid, secs, usecs = make_job_id(priority, self.hostname, pid)
        tmp_data = tmp_ctrl = ""
        linked: list[str] = []  # Targets we linked, to undo on failure.
        action = "writing the job's data"
        try:
            # 1. The data, under a tmp name nobody reads.
            for attempt in range(_NAME_ATTEMPTS):
                try:
                    fd = _fs.create_exclusive(layout.tmp_path(jobid + ".data"), self.data_file_mode)
                    break
                except FileExistsError:
                    jobid, secs, usecs = self._new_name(priority, pid, attempt)
            else:
                raise DirQueueError(f"could not find a free job name in {layout.tmp_dir}")
            tmp_data = layout.tmp_path(jobid + ".data")
            try:
                size = write_data(fd)
                if self.durable:
                    os.fsync(fd)
                data_stat = os.fstat(fd)
            finally:
                os.close(fd)

            # 2. Link data and control file under a name free in both data/ and queue/.
            action = "linking the job into the queue"
            fanout = random.choice(Layout.FANOUT_DIGITS) if self.queue_fanout else None
            for attempt in range(_NAME_ATTEMPTS):
                data_path = layout.data_path(jobid)
                new_dirs = _fs.makedirs(os.path.dirname(data_path))
                if _fs.link_verified(tmp_data, data_path, data_stat) == _fs.LinkResult.EXISTS:
                    jobid, secs, usecs = self._new_name(priority, pid, attempt)
                    continue
                linked.append(data_path)
                control = ControlFile(
                    data_path=data_path,
                    size_bytes=size,
                    submitted_secs=secs,
                    submitted_usecs=usecs,
                    hostname=self.hostname,
                    metadata=meta,
                )
                tmp_ctrl = self._write_tmp_control(jobid, control)
                if self.durable:
                    # The data file's name must be on disk before a control file
                    # that points at it can be.
                    self._fsync_dirs(os.path.dirname(data_path), new_dirs)
                queue_path = layout.queue_path(jobid, fanout)
                new_dirs = _fs.makedirs(os.path.dirname(queue_path)) if fanout else []
                if _fs.link_verified(tmp_ctrl, queue_path) == _fs.LinkResult.EXISTS:
                    _fs.unlink_quietly(data_path)
                    linked.remove(data_path)
                    _fs.unlink_quietly(tmp_ctrl)
                    tmp_ctrl = ""
                    jobid, secs, usecs = self._new_name(priority, pid, attempt)
                    continue
                linked.append(queue_path)
                if self.durable:
                    self._fsync_dirs(os.path.dirname(queue_path), new_dirs)
                break
            else:
                raise DirQueueError(
                    f"could not find a free job name in {layout.queue_dir} after"
                    f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
                )
        except BaseException as err:
            for path in (*linked, tmp_data, tmp_ctrl):
                if path:
                    try:
                        _fs.unlink_quietly(path)
                    except OSError:
                        pass  # Best effort; `repair()` collects what is left.
            if isinstance(err, OSError) and not isinstance(err, DirQueueError):
                raise QueueIOError(action, err) from err
            raise
        # The job is in the queue: the rest is tidying and a wake-up call.
        for path in (tmp_data, tmp_ctrl):
            try:
                _fs.unlink_quietly(path)
            except OSError:
                pass
        self._bump_queue_mtime()
        return jobid

    def _new_name(self, priority: int, pid: int, attempt: int) -> tuple[str, int, int]:
        # A clash means another process made the same name in the same microsecond;
        # back off a little and add the pid and a random number, as the Perl module does.
        time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
        return make_job_id(priority, self.hostname, pid, collision_suffix=random.randint(0, 65535))

    def _write_tmp_control(self, jobid: str, control: ControlFile) -> str:
        path = self.layout.tmp_path(jobid + ".ctrl")
        fd = _fs.create_exclusive(path, self.queue_file_mode)
        try:
            _fs.write_all(fd, control.to_bytes())
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _fs.unlink_quietly(path)
            raise
        os.close(fd)
        return path

    def _fsync_dirs(self, directory: str, created: list[str]) -> None:
        # fsync the directory a name was linked into, and the parent of every directory
        # made for it: a new directory is only durable once its parent names it.
        todo = [directory, *(os.path.dirname(d) for d in created)]
        for path in dict.fromkeys(todo):
            _fs.fsync_dir(path)

    def _bump_queue_mtime(self) -> None:
        # Waiting dequeuers on every host watch queue/'s mtime (and inotify sees this).
        try:
            os.utime(self.layout.queue_dir)
        except OSError:
            pass  # Not ours (another user's queue): the new entry changed it anyway.

    # -- picking up -------------------------------------------------------------------

    def _scan(self) -> list[tuple[str, str | None]]:
        """Every waiting job's ``(name, fanout digit)``, sorted when ordered."""
        entries: list[tuple[str, str | None]] = []
        try:
            with os.scandir(self.layout.queue_dir) as it:
                for entry in it:
                    name = entry.name
                    if is_job_name(name):
                        entries.append((name, None))
                    elif len(name) == 1 and name in Layout.FANOUT_DIGITS and entry.is_dir():
                        # Fan-out subdirectories are read whatever our own setting, so
                        # queues written with and without fan-out are read alike.
                        try:
                            with os.scandir(entry.path) as sub:
                                entries.extend((s.name, name) for s in sub if is_job_name(s.name))
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            return []
        if self.ordered:
            entries.sort()
        else:
            random.shuffle(entries)
        return entries

    def _candidates(self, *, rescan: bool = False) -> _Listing:
        """Waiting jobs to try, reusing the last listing while queue/ is unchanged."""
        try:
            mtime_ns = os.stat(self.layout.queue_dir).st_mtime_ns
        except FileNotFoundError:
            return _Listing(0, [], 0.0)
        now = time.time()
        cached = self._listing
        if (
            cached is not None
            and not rescan
            and (
                _unchanged(cached, mtime_ns)
                or (cached.remaining() and now - cached.taken_at < _RESCAN_INTERVAL)
            )
        ):
            return cached
        self._listing = _Listing(mtime_ns, self._scan(), now)
        return self._listing

    def _listing_is_current(self, listing: _Listing) -> bool:
        try:
            return _unchanged(listing, os.stat(self.layout.queue_dir).st_mtime_ns)
        except FileNotFoundError:
            return False

    def pickup_queued_job(self, path: str | None = None) -> Job | None:
        """Take the next waiting job, or the one named by ``path``; None if there is none.

        ``path`` is a job's ``queue_path`` or its job id. The job returned is active:
        finish it or return it to the queue.
        """
        self._ensure_dirs()
        if path is not None:
            jobid = self.layout.jobid_from_path(path)
            if not is_job_name(jobid):
                raise CorruptJobError(f"{path!r} names no job: pass a job id or a queue path", path)
            for name, fanout in self._locate(jobid):
                job = self._try_pickup(name, fanout)
                if isinstance(job, Job):
                    return job
            return None
        reusable = self._listing
        listing = self._candidates()
        job = self._pickup_from(listing)
        if job is None and listing is reusable and not self._listing_is_current(listing):
            # The listing was reused (see _RESCAN_INTERVAL) and jobs may have arrived
            # since: look again before reporting that there is nothing to take.
            job = self._pickup_from(self._candidates(rescan=True))
        return job

    def _pickup_from(self, listing: _Listing) -> Job | None:
        entries = listing.entries
        for index in range(listing.pos, len(entries)):
            job = self._try_pickup(*entries[index])
            if job is not None and index == listing.pos:
                listing.pos += 1  # Gone or ours: later pickups start past it.
            if isinstance(job, Job):
                return job
        return None

    def _locate(self, jobid: str) -> list[tuple[str, str | None]]:
        spots: list[tuple[str, str | None]] = [(jobid, None)]
        spots.extend((jobid, digit) for digit in Layout.FANOUT_DIGITS)
        return [s for s in spots if os.path.lexists(self.layout.queue_path(*s))]

    def _try_pickup(self, name: str, fanout: str | None) -> Job | object | None:
        """The job if we took it, ``_GONE`` if it left the queue, None if it is locked."""
        layout = self.layout
        queue_path = layout.queue_path(name, fanout)
        active_path = layout.active_path(name)
        if not os.path.lexists(queue_path):
            # Done by another worker since we listed it: a cheap check before the
            # lock file is written.
            return _GONE
        try:
            lock = os.lstat(active_path)
        except FileNotFoundError:
            pass
        else:
            if not self._break_if_stale(name, active_path, lock):
                return None
        pid = os.getpid()
        tmp_lock = layout.tmp_path(f"{name}.{time.time_ns()}.{self.hostname}.{pid}.active")
        try:
            fd = _fs.create_exclusive(tmp_lock, self.queue_file_mode)
        except FileExistsError:
            return None
        try:
            try:
                _fs.write_all(fd, format_lock(self.hostname, pid))
                lock_stat = os.fstat(fd)
            finally:
                os.close(fd)
            if not os.path.lexists(queue_path):
                return _GONE
            try:
                os.link(tmp_lock, active_path)
            except OSError:
                pass  # Only the inode below says whether the lock is ours.
            if not self._lock_landed(tmp_lock, active_path, lock_stat):
                return None  # Another worker's lock.
        finally:
            _fs.unlink_quietly(tmp_lock)
        # The job is ours; read it, unless it was finished in the meantime.
        try:
            control = self._read_control(queue_path)
            data_path = self._resolve_data_path(name, control)
        except FileNotFoundError:
            self._unlock_if_ours(active_path, lock_stat)
            return _GONE
        except CorruptJobError as err:
            warnings.warn(f"dirqueue: skipping corrupt job {queue_path}: {err}", stacklevel=3)
            self._unlock_if_ours(active_path, lock_stat)
            return None
        except BaseException:
            self._unlock_if_ours(active_path, lock_stat)
            raise
        return Job(
            self,
            name,
            queue_path,
            control,
            data_path,
            active_host=self.hostname,
            active_pid=pid,
            lock_stat=lock_stat,
        )

    def _read_control(self, queue_path: str) -> ControlFile:
        # Anything in queue/ may carry a job's name. A symlink must not redirect us, a
        # FIFO must not block us (O_NONBLOCK), and only a regular file is a job.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(queue_path, flags)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise CorruptJobError("control file is a symbolic link", queue_path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CorruptJobError("control file is not a regular file", queue_path)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(CONTROL_FILE_MAX_BYTES + 1)
        return parse_control(raw, queue_path)

    def _resolve_data_path(self, jobid: str, control: ControlFile) -> str:
        # The job id alone says where the data is in *this* DIR; QDFN holds the
        # submitter's view, which may be another mount point or a moved queue. QDFN is
        # not used as a fallback: whoever can write a control file could otherwise make
        # a worker read, and finish() delete, any file the worker can reach.
        local = self.layout.data_path(jobid)
        if not os.path.isfile(local):
            raise CorruptJobError(f"job {jobid} has no data file at {local!r}", local)
        return local

    def _break_if_stale(self, name: str, active_path: str, lock: os.stat_result) -> bool:
        """True if the lock at ``active_path`` was stale and we removed it."""
        age = time.time() - lock.st_mtime
        lifetime = self.active_file_lifetime
        if age <= lifetime:
            return False
        host, pid = self._read_lock(active_path)
        if not self._owner_is_dead(host, pid):
            return False
        # A random grace (scaled to the lifetime) makes two dequeuers rarely break the
        # same lock at once.
        if age <= lifetime + random.uniform(0, min(255.0, lifetime / 2)):
            return False
        # Move the lock aside rather than unlinking it, then check that what we moved
        # is the stale lock we judged: if another worker broke it and locked the job
        # anew in the meantime, put that fresh lock back.
        aside = self.layout.tmp_path(f"{name}.{time.time_ns()}.{os.getpid()}.broken")
        try:
            os.rename(active_path, aside)
        except FileNotFoundError:
            return True  # Someone else broke it; try to take the job ourselves.
        moved = os.lstat(aside)
        if (moved.st_ino, moved.st_dev, moved.st_mtime_ns) != (
            lock.st_ino,
            lock.st_dev,
            lock.st_mtime_ns,
        ):
            try:
                os.link(aside, active_path)
            except OSError:
                pass
            _fs.unlink_quietly(aside)
            return False
        _fs.unlink_quietly(aside)
        warnings.warn(
            f"dirqueue: broke stale lock on {name} (worker {host}:{pid}, {age:.0f}s old)",
            stacklevel=4,
        )
        return True

    def _read_lock(self, active_path: str) -> tuple[str | None, int | None]:
        # As in _read_control: a FIFO must not block us, and only a regular file is read.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(active_path, flags)
        except OSError:
            return None, None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None, None
        with os.fdopen(fd, "rb") as fh:
            return parse_lock(fh.read(4096))

    def _owner_is_dead(self, host: str | None, pid: int | None) -> bool:
        if host is not None and host != self.hostname:
            return False  # We cannot see another host's processes: assume it lives.
        if pid is None or pid <= 0:
            return True  # An unreadable lock names no live owner.
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):
            return True  # Gone, or a pid (from a corrupt lock) that no process can have.
        except PermissionError:
            return False  # It exists, under another user.
        return False

    def _lock_landed(self, tmp_lock: str, active_path: str, lock_stat: os.stat_result) -> bool:
        """True if ``active_path`` is now our lock (the inode created as ``tmp_lock``)."""
        # A dequeuer breaking the stale lock we replaced may move our new lock aside to
        # check it (_break_if_stale), and puts it back at once. While active/NAME is not
        # ours but our inode has a name besides tmp_lock, the lock is in flight: wait for
        # it to land, rather than give up and leave the job locked in our name by nobody.
        deadline = time.monotonic() + _LOCK_IN_FLIGHT_WAIT
        while True:
            try:
                target = os.lstat(active_path)
            except FileNotFoundError:
                pass
            else:
                if (target.st_ino, target.st_dev, target.st_uid) == (
                    lock_stat.st_ino,
                    lock_stat.st_dev,
                    lock_stat.st_uid,
                ):
                    return True
            try:
                in_flight = os.lstat(tmp_lock).st_nlink > 1
            except FileNotFoundError:
                return False
            if not in_flight or time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _unlock_if_ours(self, active_path: str, lock_stat: os.stat_result) -> None:
        # Remove the lock only if it is still the file we linked: a lock broken as
        # stale and re-taken by another worker is theirs now.
        try:
            current = os.lstat(active_path)
        except FileNotFoundError:
            return
        if (current.st_ino, current.st_dev) == (lock_stat.st_ino, lock_stat.st_dev):
            _fs.unlink_quietly(active_path)

    # -- a job's end ------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        assert job._lock_stat is not None
        try:
            _fs.unlink_quietly(job.queue_path)
            _fs.unlink_quietly(job.get_data_path())
            self._unlock_if_ours(self.layout.active_path(job.jobid), job._lock_stat)
        except OSError as err:
            raise QueueIOError(f"finishing job {job.jobid}", err) from err

    def _return(self, job: Job) -> None:
        assert job._lock_stat is not None
        try:
            self._unlock_if_ours(self.layout.active_path(job.jobid), job._lock_stat)
        except OSError as err:
            raise QueueIOError(f"returning job {job.jobid} to the queue", err) from err
        self._bump_queue_mtime()

    def _touch_lock(self, job: Job) -> None:
        try:
            os.utime(self.layout.active_path(job.jobid))
        except OSError as err:
            raise QueueIOError(f"refreshing the lock of job {job.jobid}", err) from err

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
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        self._ensure_dirs()
        deadline = None if timeout is None else clock() + timeout
        with DirWatcher([self.layout.queue_dir, self.layout.active_dir], sleep=sleep) as watcher:
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
                watcher.wait(pause)

    # -- listing ----------------------------------------------------------------------

    def jobs(self) -> Iterator[Job]:
        """Every job in the queue, waiting or active, as read-only snapshots.

        In pickup order when the queue is ordered. Jobs that vanish while being listed
        are skipped; corrupt ones are skipped with a warning.
        """
        layout = self.layout
        for name, fanout in self._scan():
            queue_path = layout.queue_path(name, fanout)
            try:
                control = self._read_control(queue_path)
                data_path = self._resolve_data_path(name, control)
            except FileNotFoundError:
                continue
            except CorruptJobError as err:
                # A job finished while we looked loses its queue file, then its data.
                if os.path.lexists(queue_path):
                    warnings.warn(
                        f"dirqueue: skipping corrupt job {queue_path}: {err}", stacklevel=2
                    )
                continue
            host, pid = self._read_lock(layout.active_path(name))
            yield Job(
                self,
                name,
                queue_path,
                control,
                data_path,
                active_host=host,
                active_pid=pid,
            )

    def visit_all_jobs(self, visitor: Callable[[C, Job], Any], context: C = None) -> None:  # type: ignore[assignment]
        """Call ``visitor(context, job)`` for every job, as :meth:`jobs` lists them."""
        for job in self.jobs():
            visitor(context, job)


def _write_chunks(fd: int, chunks: Iterable[Chunk]) -> int:
    """Write str (as UTF-8) or bytes chunks to ``fd``; return the byte count."""
    total = 0
    buffer = io.BytesIO()
    for chunk in chunks:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        elif not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data chunks must be str or bytes, not {type(chunk).__name__}"
            )
        if not chunk:
            continue
        buffer.write(chunk)
        if buffer.tell() >= 1 << 16:
            _fs.write_all(fd, buffer.getvalue())
            total += buffer.tell()
            buffer = io.BytesIO()
    if buffer.tell():
        _fs.write_all(fd, buffer.getvalue())
        total += buffer.tell()
    return total
