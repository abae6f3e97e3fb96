"""The queue: enqueueing, picking up, finishing and listing jobs in a directory."""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import random
import socket
import stat
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final, TypeVar

from . import _fs
from ._format import (
    CONTROL_FILE_MAX_BYTES,
    DEFAULT_PRIORITY,
    ControlFile,
    Layout,
    format_lock,
    is_job_name,
    lock_promises_heartbeat,
    make_job_id,
    match_job_name,
    parse_control,
    parse_lock,
    validate_metadata,
    validate_priority,
)
from ._waiting import DirWatcher
from .errors import CorruptJobError, DirQueueError, JobStateError, QueueIOError
from .job import Job
from .repair import DEFAULT_MIN_AGE, FindingKind, RepairReport, repair_queue

__all__ = ["BatchItem", "DirQueue"]

Chunk = str | bytes | bytearray | memoryview
#: One job for :meth:`DirQueue.enqueue_many`: its data, or its data and metadata.
BatchItem = str | bytes | tuple[str | bytes, dict[str, str] | None]
C = TypeVar("C")

#: A batch keeps at most this many jobs' files open, waiting to be fsynced together.
_SYNC_CHUNK: Final = 64
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
#: A stale-lock breaker's token (see _remove_lock) older than this belongs to a breaker
#: that died: breaking takes milliseconds.
_BREAK_TOKEN_STALE: Final = 30.0


class _Listing:
    """A sorted snapshot of the waiting job names, reused while ``queue/`` is unchanged."""

    __slots__ = ("entries", "mtime_ns", "pos", "taken_at")

    def __init__(self, mtime_ns: int, entries: list[tuple[str, str | None]], taken_at: float):
        self.mtime_ns = mtime_ns
        self.entries = entries
        self.taken_at = taken_at
        #: Entries before this index are known to be gone from the queue (or ours).
        self.pos = 0

    def remaining(self) -> bool:
        return self.pos < len(self.entries)


@dataclass
class _Staged:
    """A job being enqueued: what it has written so far, so a failure can undo it."""

    jobid: str
    secs: int
    usecs: int
    priority: int
    meta: dict[str, str]
    tmp_data: str
    data_stat: os.stat_result | None = None
    size: int = 0
    data_linked: bool = False
    tmp_ctrl: str = ""
    queue_path: str = ""
    new_dirs: list[str] = field(default_factory=list)
    new_queue_dirs: list[str] = field(default_factory=list)
    #: Written files still open, to be fsynced together (durable mode).
    open_fds: list[int] = field(default_factory=list)


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
    ) -> None:
        if buf_size <= 0:
            raise ValueError(f"buf_size must be positive, not {buf_size}")
        if active_file_lifetime <= 0:
            raise ValueError(
                "active_file_lifetime must be a positive number of seconds,"
                f" not {active_file_lifetime}"
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
        if min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must be 0 or more, not {min_free_bytes}")
        self.min_free_bytes = min_free_bytes
        self.lock_heartbeat = lock_heartbeat
        self.hostname = socket.gethostname()
        self._listing: _Listing | None = None
        # The inotify watcher of wait_for_queued_job, kept open between calls: closing
        # one costs the kernel about 10 ms, which every wake-up would otherwise pay.
        self._watcher: DirWatcher | None = None
        self._watcher_pid = 0
        self._dirs_ready = False

    def __repr__(self) -> str:
        return f"DirQueue({self.dir!r})"

    # -- setup ------------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        if self._dirs_ready:
            return
        layout = self.layout
        created: list[str] = []
        try:
            for directory in (layout.queue_dir, layout.data_dir, layout.active_dir, layout.tmp_dir):
                created.extend(_fs.makedirs(directory))
            if self.durable and created:
                # A new queue's subdirectories must be on disk before any job in them.
                self._fsync_all([], created)
            for directory in (layout.queue_dir, layout.data_dir, layout.active_dir, layout.tmp_dir):
                # In a queue shared by a group, another member could swap tmp/ or
                # active/ for a symlink and have our files written elsewhere.
                if os.path.islink(directory):
                    raise OSError(
                        errno.ELOOP,
                        "is a symlink: a queue's subdirectories must be real directories",
                        directory,
                    )
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
        return self._enqueue(_writer(payload), metadata, priority, len(payload))

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

    def enqueue_many(
        self,
        items: Iterable[BatchItem],
        metadata: dict[str, str] | None = None,
        priority: int = DEFAULT_PRIORITY,
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
        jobs: list[tuple[Callable[[int], int], dict[str, str] | None, int]] = []
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
            jobs.append((_writer(payload), meta, priority))
        if not jobs:
            return []
        return self._enqueue_all(jobs, total)

    def _enqueue(
        self,
        write_data: Callable[[int], int],
        metadata: dict[str, str] | None,
        priority: int,
        size_hint: int = 0,
    ) -> str:
        return self._enqueue_all([(write_data, metadata, priority)], size_hint)[0]

    # Crash safety of an enqueue (durable=True): each step is on disk before the next
    # step makes it reachable, so that whatever moment power fails, what a reader can
    # find after reboot is a whole job or no job.
    #   1. tmp/NAME.data is written and linked to data/C1/C2/BASE. (No reader looks
    #      at a data file that no control file names, so its bytes need not be on
    #      disk yet: after a crash here it is an orphan, which repair() removes.)
    #   2. tmp/NAME.ctrl is written.
    #   3. Both files are fsynced, then data/C1/C2 and the parent of every directory
    #      made for it: the job's bytes, its control file and its data file's name
    #      are all on disk before the control file can be reached from queue/.
    #   4. tmp/NAME.ctrl is linked to queue/NAME: the job becomes visible, whole.
    #   5. queue/ (or queue/X, and queue/ too if X was made) is fsynced: the job's name
    #      survives power loss. Only now does the enqueue return.
    #   6. The tmp names are unlinked and queue/'s mtime bumped. A crash here leaves
    #      stray tmp files (removed by repair()), never a broken job.
    # A crash before step 4 leaves no job: only tmp files and perhaps a data file no
    # control file names, which repair() removes once they are old enough that no
    # enqueue can still be working on them. A batch runs steps 1-2 for every job, step
    # 3 once for all (its files fsynced one after another: on a journalling filesystem
    # the first fsync commits the journal for all of them), step 4 for every job and
    # step 5 once. Files stay open from step 1 to step 3, at most _SYNC_CHUNK jobs' worth.

    def _enqueue_all(
        self,
        jobs: list[tuple[Callable[[int], int], dict[str, str] | None, int]],
        size_hint: int,
    ) -> list[str]:
        checked = [
            (write_data, validate_metadata(metadata), validate_priority(priority))
            for write_data, metadata, priority in jobs
        ]
        self._ensure_dirs()
        self._check_free_space(size_hint)
        pid = os.getpid()
        staged: list[_Staged] = []
        action = ["writing the job's data"]
        try:
            # Steps 1-2.
            for write_data, meta, priority in checked:
                self._stage(staged, write_data, meta, priority, pid)
                if len(staged) % _SYNC_CHUNK == 0:
                    action[0] = "making the job durable (fsync)"
                    self._sync_files(staged[-_SYNC_CHUNK:])  # Bounded open files.
                    action[0] = "writing the job's data"
            # Step 3, once for the batch.
            action[0] = "making the job durable (fsync)"
            if self.durable:
                self._sync_files(staged)
                self._fsync_all(
                    [os.path.dirname(self.layout.data_path(s.jobid)) for s in staged],
                    [d for s in staged for d in s.new_dirs],
                )
            # Step 4.
            action[0] = "linking the job into the queue"
            for st in staged:
                self._publish(st, pid)
            # Step 5, once for the batch.
            action[0] = "making the job durable (fsync)"
            if self.durable:
                self._fsync_all(
                    [os.path.dirname(s.queue_path) for s in staged],
                    [d for s in staged for d in s.new_queue_dirs],
                )
        except BaseException as err:
            self._roll_back(staged)
            if isinstance(err, OSError) and not isinstance(err, DirQueueError):
                raise QueueIOError(action[0], err) from err
            raise
        # Step 6: the jobs are in the queue; the rest is tidying and a wake-up call.
        for st in staged:
            for path in (st.tmp_data, st.tmp_ctrl):
                # A stray tmp file is harmless; repair() collects it.
                with contextlib.suppress(OSError):
                    _fs.unlink_quietly(path)
        self._bump_queue_mtime()
        return [st.jobid for st in staged]

    def _check_free_space(self, size_hint: int) -> None:
        if self.min_free_bytes <= 0:
            return
        try:
            free = _fs.free_bytes(self.dir)
        except OSError as err:
            raise QueueIOError("checking free space for the job", err) from err
        if free - size_hint < self.min_free_bytes:
            raise QueueIOError(
                f"enqueueing {size_hint} bytes with {free} bytes free"
                f" (min_free_bytes={self.min_free_bytes}): refused, nothing was written",
                OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.dir),
            )

    def _stage(
        self,
        staged: list[_Staged],
        write_data: Callable[[int], int],
        meta: dict[str, str],
        priority: int,
        pid: int,
    ) -> None:
        """Steps 1-2 for one job: its data in data/, its control file in tmp/.

        With ``durable``, both files are left open in ``staged[-1].open_fds`` for step 3.
        """
        layout = self.layout
        jobid, secs, usecs = make_job_id(priority, self.hostname, pid)
        for attempt in range(_NAME_ATTEMPTS):
            try:
                fd = _fs.create_exclusive(layout.tmp_path(jobid + ".data"), self.data_file_mode)
                break
            except FileExistsError:
                jobid, secs, usecs = self._new_name(priority, pid, attempt)
        else:
            raise DirQueueError(f"could not find a free job name in {layout.tmp_dir}")
        st = _Staged(jobid, secs, usecs, priority, meta, layout.tmp_path(jobid + ".data"))
        staged.append(st)  # From here on a failure removes what this job left.
        try:
            st.size = write_data(fd)
            st.data_stat = os.fstat(fd)
        finally:
            if self.durable:
                st.open_fds.append(fd)  # fsynced with the others before step 4
            else:
                os.close(fd)
        self._link_data(st, pid)

    def _link_data(self, st: _Staged, pid: int) -> None:
        """Link ``st``'s data under a name free in data/ and tmp/; write its control file."""
        for attempt in range(_NAME_ATTEMPTS):
            _, c1, c2, base = self.layout.data_components(st.jobid)
            fd, created = _fs.ensure_dir_nofollow(self.dir, (Layout.DATA, c1, c2))
            st.new_dirs.extend(created)
            try:
                result = _fs.link_verified(st.tmp_data, base, st.data_stat, dst_dir_fd=fd)
                # Recorded at once, so a failure from here on undoes the link.
                st.data_linked = result == _fs.LinkResult.LINKED
            finally:
                _fs.close_dir(fd)
            if st.data_linked:
                control = ControlFile(
                    data_path=self.layout.data_path(st.jobid),
                    size_bytes=st.size,
                    submitted_secs=st.secs,
                    submitted_usecs=st.usecs,
                    hostname=self.hostname,
                    metadata=st.meta,
                )
                try:
                    st.tmp_ctrl = self._write_tmp_control(st.jobid, control, st)
                    return
                except FileExistsError:
                    # A killed enqueue left a tmp file of this name: pick another.
                    self._unlink_data(st.jobid)
                    st.data_linked = False
            st.jobid, st.secs, st.usecs = self._new_name(st.priority, pid, attempt)
        raise DirQueueError(
            f"could not find a free job name in {self.layout.data_dir} after"
            f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
        )

    def _publish(self, st: _Staged, pid: int) -> None:
        """Step 4 for one job: link its control file into queue/, renaming it on a clash."""
        fanout = random.choice(Layout.FANOUT_DIGITS) if self.queue_fanout else None
        parts = (Layout.QUEUE,) if fanout is None else (Layout.QUEUE, fanout)
        for attempt in range(_NAME_ATTEMPTS):
            fd, created = _fs.ensure_dir_nofollow(self.dir, parts)
            st.new_queue_dirs.extend(created)
            try:
                result = _fs.link_verified(st.tmp_ctrl, st.jobid, dst_dir_fd=fd)
                if result == _fs.LinkResult.LINKED:
                    # Recorded at once: from here a failure must take the job out again.
                    st.queue_path = self.layout.queue_path(st.jobid, fanout)
            finally:
                _fs.close_dir(fd)
            if st.queue_path:
                return
            # Another host made the same name in the same microsecond. Move our data to
            # a new name and make that durable before its control file can point at it.
            self._unlink_data(st.jobid)
            st.data_linked = False
            _fs.unlink_quietly(st.tmp_ctrl)
            st.tmp_ctrl = ""
            st.jobid, st.secs, st.usecs = self._new_name(st.priority, pid, attempt)
            self._link_data(st, pid)
            if self.durable:
                self._sync_files([st])
                self._fsync_all([os.path.dirname(self.layout.data_path(st.jobid))], st.new_dirs)
        raise DirQueueError(
            f"could not find a free job name in {self.layout.queue_dir} after"
            f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
        )

    def _roll_back(self, staged: list[_Staged]) -> None:
        # Control files first, so that no job is ever in the queue without its data.
        # Best effort: whatever cannot be removed now, repair() collects later.
        for st in staged:
            for fd in st.open_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            st.open_fds.clear()
        for st in reversed(staged):
            if st.queue_path:
                with contextlib.suppress(OSError):
                    _fs.unlink_quietly(st.queue_path)
        for st in staged:
            if st.data_linked:
                with contextlib.suppress(OSError):
                    self._unlink_data(st.jobid)
            for path in (st.tmp_data, st.tmp_ctrl):
                if path:
                    with contextlib.suppress(OSError):
                        _fs.unlink_quietly(path)

    def _new_name(self, priority: int, pid: int, attempt: int) -> tuple[str, int, int]:
        # A clash means another process made the same name in the same microsecond;
        # back off a little and add the pid and a random number, as the Perl module does.
        time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
        return make_job_id(priority, self.hostname, pid, collision_suffix=random.randint(0, 65535))

    def _write_tmp_control(
        self, jobid: str, control: ControlFile, staged: _Staged | None = None
    ) -> str:
        path = self.layout.tmp_path(jobid + ".ctrl")
        fd = _fs.create_exclusive(path, self.queue_file_mode)
        try:
            _fs.write_all(fd, control.to_bytes())
            if self.durable and staged is None:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _fs.unlink_quietly(path)
            raise
        if self.durable and staged is not None:
            staged.open_fds.append(fd)  # fsynced with the others before step 4
        else:
            os.close(fd)
        return path

    def _sync_files(self, staged: list[_Staged]) -> None:
        """fsync and close the files of ``staged`` that are still open."""
        # Written first and synced together: on a journalling filesystem the first
        # fsync commits the journal for all of them, and the rest find little to do.
        for st in staged:
            while st.open_fds:
                fd = st.open_fds[0]
                try:
                    os.fsync(fd)
                finally:
                    st.open_fds.pop(0)
                    os.close(fd)

    def _fsync_all(self, directories: list[str], created: list[str]) -> None:
        # fsync the directories names were linked into, and the parent of every
        # directory made for them: a new directory is only durable once its parent
        # names it. Each directory once, however many jobs were linked into it.
        # (A relative queue directory's top has the current directory as its parent.)
        todo = [*directories, *(os.path.dirname(d) or "." for d in created)]
        for path in dict.fromkeys(todo):
            _fs.fsync_dir(path)

    def _data_dir_fd(self, jobid: str) -> tuple[int, str]:
        """An fd of job ``jobid``'s data directory, reached without following symlinks."""
        _, c1, c2, base = self.layout.data_components(jobid)
        return _fs.open_dir_nofollow(self.dir, (Layout.DATA, c1, c2)), base

    def _unlink_data(self, jobid: str) -> bool:
        """Remove job ``jobid``'s data file; never through a symlinked directory."""
        try:
            fd, base = self._data_dir_fd(jobid)
        except FileNotFoundError:
            return False
        try:
            os.unlink(base, dir_fd=fd)
        except FileNotFoundError:
            return False
        finally:
            _fs.close_dir(fd)
        return True

    def _open_data(self, jobid: str) -> int:
        """Open job ``jobid``'s data file for reading; never through a symlink.

        Raises :class:`CorruptJobError` if a symlink or something other than a regular
        file is found on the way: the data path is never trusted to stay in the queue.
        """
        path = self.layout.data_path(jobid)
        try:
            fd, base = self._data_dir_fd(jobid)
            try:
                return _fs.open_regular(base, dir_fd=fd)
            finally:
                _fs.close_dir(fd)
        except _fs.NotRegularFileError as err:
            raise CorruptJobError(
                f"data file of job {jobid} {err.strerror}: refusing to read it", path
            ) from None
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CorruptJobError(
                    f"a directory above the data file of job {jobid} is a symlink or not a"
                    " directory: refusing to follow it out of the queue",
                    path,
                ) from None
            raise

    def _read_data(self, jobid: str) -> bytes:
        return _fs.read_limited(self._open_data(jobid), -1)

    def _bump_queue_mtime(self) -> None:
        # Waiting dequeuers on every host watch queue/'s mtime (and inotify sees this).
        # Not ours (another user's queue)? The new entry changed it anyway.
        with contextlib.suppress(OSError):
            os.utime(self.layout.queue_dir)

    # -- picking up -------------------------------------------------------------------

    def _scan(self) -> list[tuple[str, str | None]]:
        """Every waiting job's ``(name, fanout digit)``, sorted when ordered."""
        # Names are collected and sorted as plain strings (much faster than tuples at
        # 100,000 jobs); jobs in fan-out subdirectories, rare, are merged in after.
        job_re = match_job_name
        fanned: list[tuple[str, str | None]] = []
        try:
            listed = os.listdir(self.layout.queue_dir)
        except FileNotFoundError:
            return []
        names = [name for name in listed if job_re(name)]
        digits = (
            sorted(n for n in listed if len(n) == 1 and n in Layout.FANOUT_DIGITS)
            if len(names) < len(listed)
            else []
        )
        for digit in digits:
            # Fan-out subdirectories are read whatever our own setting, so queues
            # written with and without fan-out are read alike. A symlink here must not
            # lead the scan (and finish()) elsewhere.
            sub = os.path.join(self.layout.queue_dir, digit)
            try:
                if not stat.S_ISDIR(os.lstat(sub).st_mode):
                    continue
                fanned.extend((name, digit) for name in os.listdir(sub) if job_re(name))
            except FileNotFoundError:
                pass
        if self.ordered:
            names.sort()
        else:
            random.shuffle(names)
        entries: list[tuple[str, str | None]] = [(name, None) for name in names]
        if fanned:
            entries.extend(fanned)
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
        listing = self._list_candidates()
        job = self._pickup_from(listing)
        if job is None and listing is reusable and not self._listing_is_current(listing):
            # The listing was reused (see _RESCAN_INTERVAL) and jobs may have arrived
            # since: look again before reporting that there is nothing to take.
            job = self._pickup_from(self._list_candidates(rescan=True))
        return job

    def _list_candidates(self, *, rescan: bool = False) -> _Listing:
        try:
            return self._candidates(rescan=rescan)
        except OSError as err:
            raise QueueIOError(f"listing the jobs in {self.layout.queue_dir}", err) from err

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
        return [
            s
            for s in spots
            if os.path.lexists(self.layout.queue_path(*s))
            # A fan-out directory that is a symlink leads out of the queue.
            and (s[1] is None or not os.path.islink(os.path.dirname(self.layout.queue_path(*s))))
        ]

    def _try_pickup(self, name: str, fanout: str | None) -> Job | object | None:
        """The job if we took it, ``_GONE`` if it left the queue, None if it is locked."""
        queue_path = self.layout.queue_path(name, fanout)
        try:
            lock_stat = self._lock_job(name, queue_path)
            if not isinstance(lock_stat, os.stat_result):
                return lock_stat
            return self._open_locked_job(name, queue_path, lock_stat)
        except OSError as err:
            if isinstance(err, DirQueueError):
                raise
            raise QueueIOError(f"picking up job {name}", err) from err

    def _lock_job(
        self, name: str, queue_path: str
    ) -> os.stat_result | object | None:
        """Steps 1-4 of the pickup protocol: our lock's stat if job ``name`` is ours now,
        else ``_GONE`` (it left the queue) or None (someone else holds it)."""
        layout = self.layout
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
        linked = False
        try:
            try:
                _fs.write_all(fd, format_lock(self.hostname, pid, self.lock_heartbeat))
                lock_stat = os.fstat(fd)
            finally:
                os.close(fd)
            if not os.path.lexists(queue_path):
                return _GONE
            linked = True
            # Whatever link() says, only the inode says whether the lock is ours.
            with contextlib.suppress(OSError):
                os.link(tmp_lock, active_path)
            if not self._lock_landed(active_path, lock_stat):
                return None  # Another worker's lock.
        except BaseException:
            # A lock we may have linked but could not confirm would keep the job from
            # every worker until we die: take it back if it is ours.
            if linked:
                with contextlib.suppress(OSError):
                    self._unlock_if_ours(active_path, lock_stat)
            raise
        finally:
            with contextlib.suppress(OSError):
                _fs.unlink_quietly(tmp_lock)
        return lock_stat

    def _open_locked_job(self, name: str, queue_path: str, lock_stat: os.stat_result) -> object:
        """Step 5: read the job we hold; move it aside if it is corrupt."""
        active_path = self.layout.active_path(name)
        try:
            control = self._read_control(queue_path)
            self._check_data(name, queue_path)
            data_path = self.layout.data_path(name)
        except FileNotFoundError:
            # Finished by another worker (whose lock we broke as stale) meanwhile.
            self._unlock_if_ours(active_path, lock_stat)
            return _GONE
        except PermissionError as err:
            # Not ours to read (a shared queue's modes are wrong): skip it, and let an
            # operator's repair() move it aside; a worker must not die on it.
            self._unlock_if_ours(active_path, lock_stat)
            warnings.warn(f"dirqueue: skipping unreadable job {name}: {err}", stacklevel=5)
            return None
        except CorruptJobError as err:
            # Leaving it in place would make every worker meet it again, forever.
            try:
                aside = self._move_aside(name, queue_path, str(err))
            finally:
                self._unlock_if_ours(active_path, lock_stat)
            warnings.warn(
                f"dirqueue: skipping corrupt job {queue_path}, moved aside to {aside}: {err}",
                stacklevel=5,
            )
            return _GONE
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
            active_pid=os.getpid(),
            lock_stat=lock_stat,
        )

    def _check_data(self, jobid: str, queue_path: str) -> None:
        """Raise :class:`CorruptJobError` unless job ``jobid``'s data file is in place."""
        path = self.layout.data_path(jobid)
        try:
            fd, base = self._data_dir_fd(jobid)
            try:
                st = os.lstat(base, dir_fd=fd)
            finally:
                _fs.close_dir(fd)
        except FileNotFoundError as err:
            if not os.path.lexists(queue_path):
                raise  # The whole job is gone: finished, not corrupt.
            if os.path.lexists(path):
                # A missing data file sends the job to corrupt/: be sure first. (An NFS
                # client can report ENOENT for a file that is there, e.g. ESTALE
                # recovery after the server restarted.)
                raise OSError(
                    errno.EAGAIN, "data file lookup failed, then found it", path
                ) from err
            raise CorruptJobError(
                f"job {jobid} has a control file but no data file", path
            ) from None
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CorruptJobError(
                    f"a directory above the data file of job {jobid} is a symlink or not"
                    " a directory",
                    path,
                ) from None
            raise
        if not stat.S_ISREG(st.st_mode):
            raise CorruptJobError(
                f"the data file of job {jobid} is a symlink or not a regular file", path
            )

    def _move_aside(self, name: str, queue_path: str, reason: str) -> str:
        """Move job ``name``'s control and data files to ``corrupt/``, with a reason file.

        The caller holds the job's lock. Returns the control file's new path. Nothing is
        deleted: an operator can read the reason, mend the job and put it back.
        """
        fd, _ = _fs.ensure_dir_nofollow(self.dir, (Layout.CORRUPT,))
        try:
            stem = name
            for n in itertools.count(1):
                try:
                    rfd = _fs.create_exclusive(
                        stem + Layout.REASON_SUFFIX, self.queue_file_mode, dir_fd=fd
                    )
                    break
                except FileExistsError:
                    stem = f"{name}.{n}"
            # The reason goes first: a crash after it leaves a reason for nothing, never
            # a moved job without one.
            text = (
                f"job: {name}\nfrom: {queue_path}\nreason: {reason}\n"
                f"moved-by: {self.hostname} pid {os.getpid()}\n"
                f"moved-at: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            )
            try:
                try:
                    _fs.write_all(rfd, text.encode("utf-8", errors="replace"))
                finally:
                    os.close(rfd)
                try:
                    os.rename(queue_path, stem, dst_dir_fd=fd)
                except OSError:
                    moved = not os.path.lexists(queue_path) and os.path.lexists(
                        self.layout.corrupt_path(stem)
                    )
                    if not moved:
                        raise
                    # Done although it said otherwise (a lost reply over NFS): go on.
            except BaseException:
                # The job is still in the queue: take back the reason for a move that
                # did not happen, so the next try uses this name again.
                with contextlib.suppress(OSError):
                    os.unlink(stem + Layout.REASON_SUFFIX, dir_fd=fd)
                raise
            # The job has left the queue. Its data follows; if that fails, repair()
            # finds the data file without a control file and brings it here.
            try:
                dfd, base = self._data_dir_fd(name)
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                return self.layout.corrupt_path(stem)  # No data, or not in the queue.
            try:
                os.rename(base, stem + ".data", src_dir_fd=dfd, dst_dir_fd=fd)
            except FileNotFoundError:
                pass  # It had none.
            finally:
                _fs.close_dir(dfd)
        finally:
            _fs.close_dir(fd)
        return self.layout.corrupt_path(stem)

    def _read_control(self, queue_path: str) -> ControlFile:
        try:
            fd = _fs.open_regular(queue_path)
        except _fs.NotRegularFileError as err:
            raise CorruptJobError(f"control file {err.strerror}", queue_path) from None
        raw = _fs.read_limited(fd, CONTROL_FILE_MAX_BYTES + 1)
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
        raw = self._read_lock_file(active_path)
        host, pid = parse_lock(raw)
        if not (lock_promises_heartbeat(raw) or self._owner_is_dead(host, pid)):
            return False
        # A random grace (scaled to the lifetime) makes two dequeuers rarely break the
        # same lock at once.
        if age <= lifetime + random.uniform(0, min(255.0, lifetime / 2)):
            return False
        removed = self._remove_lock(name, active_path, lock)
        if removed is None:
            return True  # Someone else broke it; try to take the job ourselves.
        if not removed:
            return False
        warnings.warn(
            f"dirqueue: broke stale lock on {name} (worker {host}:{pid}, {age:.0f}s old)",
            stacklevel=4,
        )
        return True

    def _remove_lock(self, name: str, active_path: str, lock: os.stat_result) -> bool | None:
        """Remove the lock ``lock`` (as judged) at ``active_path``.

        True if removed; False if the lock there now is another, or another dequeuer is
        breaking it (left in place either way); None if no lock was there any more.
        """
        # Breakers of one job take turns: each holds a token, tmp/NAME.breaking, while
        # it checks that the lock is still the one it judged stale and unlinks it. A
        # lock is only ever removed by its owner or by the token's holder, so nothing
        # can put a fresh lock in its place between the check and the unlink -- unless
        # the owner, judged dead, was alive and ends the job at that very moment, or a
        # breaker stalls for longer than _BREAK_TOKEN_STALE between the two steps.
        # (Moving the lock aside to check it, instead, leaves the job unlocked for a
        # moment while the lock is away, and a third dequeuer can take it then.)
        token = self._take_break_token(name)
        if token is None:
            return False
        try:
            try:
                current = os.lstat(active_path)
            except FileNotFoundError:
                return None
            if (current.st_ino, current.st_dev, current.st_mtime_ns) != (
                lock.st_ino,
                lock.st_dev,
                lock.st_mtime_ns,
            ):
                return False  # Broken and re-taken (or touched) since we judged it.
            try:
                os.unlink(active_path)
            except FileNotFoundError:
                return None
            return True
        finally:
            self._drop_break_token(token)

    def _take_break_token(self, name: str) -> tuple[str, os.stat_result] | None:
        """Hold job ``name``'s breaker token: its path and our inode, or None if taken."""
        path = self.layout.breaker_token_path(name)
        mine = self.layout.tmp_path(
            f"{name}.{time.time_ns()}.{self.hostname}.{os.getpid()}.breaker"
        )
        fd = _fs.create_exclusive(mine, self.queue_file_mode)
        try:
            ours = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            for _ in range(2):
                # As with locks, link() is atomic on NFS too, and only the inode says
                # whether it worked.
                with contextlib.suppress(OSError):
                    os.link(mine, path)
                try:
                    there = os.lstat(path)
                except FileNotFoundError:
                    continue
                if (there.st_ino, there.st_dev) == (ours.st_ino, ours.st_dev):
                    return path, ours
                if time.time() - there.st_mtime <= _BREAK_TOKEN_STALE:
                    return None  # Another dequeuer is breaking this lock right now.
                # Left by a breaker that died: clear it, and try once more.
                with contextlib.suppress(OSError):
                    _fs.unlink_quietly(path)
            return None
        finally:
            with contextlib.suppress(OSError):
                _fs.unlink_quietly(mine)

    def _drop_break_token(self, token: tuple[str, os.stat_result]) -> None:
        path, ours = token
        with contextlib.suppress(OSError):
            there = os.lstat(path)
            if (there.st_ino, there.st_dev) == (ours.st_ino, ours.st_dev):
                os.unlink(path)

    def _read_lock_file(self, active_path: str) -> bytes:
        try:
            fd = _fs.open_regular(active_path)  # A FIFO planted here must not hang us.
        except OSError:
            return b""
        return _fs.read_limited(fd, 4096)

    def _read_lock(self, active_path: str) -> tuple[str | None, int | None]:
        return parse_lock(self._read_lock_file(active_path))

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

    def _lock_landed(self, active_path: str, lock_stat: os.stat_result) -> bool:
        """True if ``active_path`` is now our lock (the inode we created)."""
        try:
            target = os.lstat(active_path)
        except FileNotFoundError:
            # Look twice before concluding that no lock landed: a lock of ours left
            # behind would keep the job from every worker. (An NFS client can report
            # ENOENT for a name that is there, e.g. in ESTALE recovery.)
            if not os.path.lexists(active_path):
                return False
            target = os.lstat(active_path)
        return (target.st_ino, target.st_dev, target.st_uid) == (
            lock_stat.st_ino,
            lock_stat.st_dev,
            lock_stat.st_uid,
        )

    def _unlock_if_ours(self, active_path: str, lock_stat: os.stat_result) -> None:
        # Remove the lock only if it is still the file we linked: a lock broken as
        # stale and re-taken by another worker is theirs now.
        try:
            current = os.lstat(active_path)
        except FileNotFoundError:
            # Our lock is normally there, so this is rare: look again before leaving
            # a lock that would keep the job from every worker until we die.
            if not os.path.lexists(active_path):
                return
            current = os.lstat(active_path)
        if (current.st_ino, current.st_dev) == (lock_stat.st_ino, lock_stat.st_dev):
            try:
                os.unlink(active_path)
            except FileNotFoundError:
                if os.path.lexists(active_path):
                    raise  # Still there: the job is still ours, and still locked.

    # -- a job's end ------------------------------------------------------------------

    def _finish(self, job: Job) -> None:
        if job._lock_stat is None:
            raise JobStateError(f"job {job.jobid} is not held by this process: nothing to finish")
        # The control file goes first: once it is gone the job is finished, and no
        # reader can meet a control file whose data was already removed.
        try:
            try:
                os.unlink(job.queue_path)
            except FileNotFoundError:
                if os.path.lexists(job.queue_path):
                    raise  # Not gone at all: the job is still in the queue.
        except OSError as err:
            raise QueueIOError(f"finishing job {job.jobid} (still in the queue)", err) from err
        failed: OSError | None = None
        try:
            self._unlink_data_refusing_symlinks(job.jobid)
        except OSError as err:
            failed = err
        try:
            self._unlock_if_ours(self.layout.active_path(job.jobid), job._lock_stat)
        except OSError as err:
            failed = failed or err
        if failed is not None:
            raise QueueIOError(
                f"finishing job {job.jobid} (out of the queue; repair() removes what is"
                " left of it)",
                failed,
            ) from failed

    def _unlink_data_refusing_symlinks(self, jobid: str) -> bool:
        try:
            return self._unlink_data(jobid)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        warnings.warn(
            f"dirqueue: not removing the data of job {jobid}: a directory above it is a"
            " symlink, which may lead out of the queue (see repair())",
            stacklevel=4,
        )
        return False

    def _return(self, job: Job) -> None:
        if job._lock_stat is None:
            raise JobStateError(f"job {job.jobid} is not held by this process: nothing to return")
        try:
            self._unlock_if_ours(self.layout.active_path(job.jobid), job._lock_stat)
        except OSError as err:
            raise QueueIOError(f"returning job {job.jobid} to the queue", err) from err
        self._bump_queue_mtime()

    def _touch_lock(self, job: Job) -> None:
        try:
            os.utime(self.layout.active_path(job.jobid), follow_symlinks=False)
        except OSError as err:
            raise QueueIOError(f"refreshing the lock of job {job.jobid}", err) from err

    # -- checking and repairing ---------------------------------------------------------

    def fsck(self, *, min_age: float = DEFAULT_MIN_AGE) -> RepairReport:
        """Check the queue directory and report what :meth:`repair` would fix; change nothing."""
        return repair_queue(self, dry_run=True, min_age=min_age)

    def repair(self, *, dry_run: bool = False, min_age: float = DEFAULT_MIN_AGE) -> RepairReport:
        """Find and fix what killed processes left behind; return what was found and done.

        Removes tmp files, data files no control file names, and orphan locks once they
        are ``min_age`` seconds old (younger ones may belong to an operation still
        running), and the locks of workers on this host that are dead. Moves corrupt
        or unreadable control files, and control files without data, to ``corrupt/``
        with a ``.reason`` file; nothing corrupt is deleted. Safe to run while the
        queue is in use. ``dry_run=True`` is :meth:`fsck`.
        """
        return repair_queue(self, dry_run=dry_run, min_age=min_age)

    def _job_problem(self, name: str, queue_path: str) -> tuple[str, str] | None:
        """``(finding kind, reason)`` if job ``name`` is broken; None if fine or gone."""
        try:
            self._read_control(queue_path)
            self._check_data(name, queue_path)
        except FileNotFoundError:
            return None
        except PermissionError as err:
            return FindingKind.UNREADABLE_CONTROL, f"cannot be read: {err}"
        except CorruptJobError as err:
            if err.path == self.layout.data_path(name):
                if os.path.lexists(err.path):
                    return FindingKind.CORRUPT_CONTROL, str(err)
                return FindingKind.MISSING_DATA, str(err)
            return FindingKind.CORRUPT_CONTROL, str(err)
        return None

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
        if sleep is not time.sleep:
            # A test drives time: a watcher of its own, which only sleeps.
            with DirWatcher([], sleep=sleep) as sleeper:
                return self._wait_loop(sleeper, deadline, poll_interval, clock)
        return self._wait_loop(self._shared_watcher(), deadline, poll_interval, clock)

    def _wait_loop(
        self,
        watcher: DirWatcher,
        deadline: float | None,
        poll_interval: float,
        clock: Callable[[], float],
    ) -> Job | None:
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

    def _shared_watcher(self) -> DirWatcher:
        """This process's watcher of queue/ and active/, made on first use."""
        watcher = self._watcher
        if watcher is not None and self._watcher_pid == os.getpid():
            return watcher
        if watcher is not None:
            # Inherited across fork(): the parent's. Closing our copy of the descriptor
            # is cheap (the parent still holds it) and leaves the parent's events alone.
            watcher.close()
        watcher = DirWatcher([self.layout.queue_dir, self.layout.active_dir])
        self._watcher, self._watcher_pid = watcher, os.getpid()
        weakref.finalize(self, watcher.close)
        return watcher

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


def _writer(payload: bytes) -> Callable[[int], int]:
    return lambda fd: _write_chunks(fd, [payload])


def _write_chunks(fd: int, chunks: Iterable[Chunk]) -> int:
    """Write str (as UTF-8) or bytes chunks to ``fd``; return the byte count."""
    total = 0
    buffer = io.BytesIO()
    for chunk in chunks:
        if isinstance(chunk, str):
            raw: bytes | bytearray | memoryview = chunk.encode("utf-8")
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            raw = chunk
        else:
            raise TypeError(f"data chunks must be str or bytes, not {type(chunk).__name__}")
        if not raw:
            continue
        buffer.write(raw)
        if buffer.tell() >= 1 << 16:
            _fs.write_all(fd, buffer.getvalue())
            total += buffer.tell()
            buffer = io.BytesIO()
    if buffer.tell():
        _fs.write_all(fd, buffer.getvalue())
        total += buffer.tell()
    return total
