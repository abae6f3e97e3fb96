"""The one way into the queue: writing a job's files and linking them in, crash-safely.

Used by every ``DirQueue.enqueue_*`` method and by ``FailedStore.requeue``, so a
requeued job is exactly as durable, and as careful with symlinks, as a new one.

Crash safety (``durable=True``): each step is on disk before the next step makes it
reachable, so that whatever moment power fails, what a reader can find after reboot is
a whole job or no job.

1. ``data/C1/C2/BASE`` is created exclusively (its name is the job's: a name taken
   gives the job another) and written; a requeue links its kept data there through
   ``tmp/NAME.data``. (No reader looks at a data file that no control file names, so
   neither its bytes nor a half-written file matter yet: after a crash here it is an
   orphan, which repair removes once it is old.)
2. ``tmp/NAME.ctrl`` is written.
3. Both files are fsynced, then ``data/C1/C2`` and the parent of every directory made
   for it: the job's bytes, its control file and its data file's name are all on disk
   before the control file can be reached from ``queue/``.
4. ``tmp/NAME.ctrl`` is moved to ``queue/NAME``: the job becomes visible, whole. On a
   local filesystem by one rename that never replaces (the tmp name goes with it);
   elsewhere by a link checked by inode (:func:`_put_control`).
5. ``queue/`` (or ``queue/X``, and ``queue/`` too if X was made) is fsynced: the job's
   name survives power loss. Only now does the enqueue return.
6. A linked tmp name is unlinked and ``queue/``'s mtime bumped. A crash here leaves
   stray tmp files (removed by repair), never a broken job.

A crash before step 4 leaves no job: only tmp files and perhaps a data file no control
file names, which repair removes once they are old enough that no enqueue can still be
working on them. A batch runs steps 1-2 for every job, step 3 once for all, step 4 for
every job and step 5 once. Step 3 of a batch of :data:`_SYNCFS_MIN_BATCH` jobs or more,
where one syncfs covers the filesystem (:func:`dirqueue._fs.syncfs_covers`), is that
one syncfs: a single commit for every file, name and directory written. Otherwise the
files are fsynced one after another (on a journalling filesystem the first fsync
commits the journal for all of them), then each data directory; files stay open from
step 1 to step 3, at most :data:`_SYNC_CHUNK` jobs' worth.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from . import _dirfds, _fs
from ._config import QueueConfig
from ._datawriter import DataWriter, check_free_space, link_or_copy
from ._format import ControlFile, make_job_id, validate_metadata, validate_priority
from ._identity import current_pid
from ._jobfiles import create_control, in_queue_dir, unlink_data
from ._jobsettings import is_dirqueue_only
from ._judge import filesystem_now
from ._layout import Layout
from .errors import DirQueueError, QueueIOError

__all__ = [
    "AlreadyQueued",
    "Gate",
    "bump_queue_mtime",
    "enqueue",
    "ensure_queue_dirs",
    "requeue",
]

#: A batch keeps at most this many jobs' files open, waiting to be fsynced together.
_SYNC_CHUNK: Final = 64
#: A durable batch of at least this many jobs is made durable by one syncfs of the
#: filesystem (where that covers it: _fs.syncfs_covers) instead of an fsync per file.
#: Below it the fsyncs cost less than flushing whatever else is dirty on the disk.
_SYNCFS_MIN_BATCH: Final = 8
#: How many new names an enqueue tries when the one it made is taken.
_NAME_ATTEMPTS: Final = 10


class Gate(Protocol):
    """What a job must hold before it is linked in (a unique job's key): claimed with
    the job's id just before the link, released if the job does not get in."""

    def claim(self, jobid: str) -> str | None:
        """Claim for ``jobid``: None if claimed, else the id of the job that holds it."""

    def release(self, jobid: str) -> None:
        """Give back what :meth:`claim` took for ``jobid``."""

    def seal(self, jobid: str) -> None:
        """Say that ``jobid`` is in the queue now, with its claim."""


class AlreadyQueued(Exception):
    """The gate is held by another job (``jobid``): nothing was enqueued."""

    def __init__(self, jobid: str) -> None:
        super().__init__(jobid)
        self.jobid = jobid


@dataclass(slots=True)
class _Staged:
    """A job being enqueued: what it has written so far, so a failure can undo it."""

    jobid: str
    secs: int
    usecs: int
    priority: int
    meta: dict[str, str]
    #: Names in tmp/ (made and removed through its descriptor, never by path).
    tmp_data: str
    #: A requeued job keeps its id: a clash is an error, not a reason to rename it.
    fixed_name: bool = False
    #: The control file to write (a requeue brings its own); made from the rest if None.
    control: ControlFile | None = None
    data_stat: os.stat_result | None = None
    size: int = 0
    data_linked: bool = False
    tmp_ctrl: str = ""
    queue_path: str = ""
    #: The directories from DIR to the control file linked (queue/, queue/X, deferred/).
    queue_parts: tuple[str, ...] = ()
    new_dirs: list[str] = field(default_factory=list)
    new_queue_dirs: list[str] = field(default_factory=list)
    #: Written files still open, to be fsynced together (durable mode).
    open_fds: list[int] = field(default_factory=list)
    #: For a delayed job: when it is due (it goes to deferred/ instead of queue/).
    due: float | None = None
    #: For a dependant: it goes to waiting/ instead of queue/ (see _deps).
    waiting: bool = False
    gate: Gate | None = None
    claimed: bool = False


def ensure_queue_dirs(config: QueueConfig) -> None:
    """Create the queue directory and its four subdirectories if missing.

    Raises :class:`QueueIOError` if one of the subdirectories is a symlink: in a queue
    shared by a group, another member could otherwise swap ``tmp/`` or ``active/`` for
    a symlink and have our files written elsewhere.
    """
    layout = config.layout
    try:
        created = _fs.makedirs(layout.dir)
        fd = _fs.open_dir_nofollow(layout.dir, ())
        try:
            for name in Layout.SUBDIRS:
                try:
                    os.mkdir(name, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    created.append(layout.path(name))
                sub = os.open(name, _fs.DIR_NOFOLLOW_FLAGS, dir_fd=fd)
                _fs.close_dir(sub)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(
                    errno.ELOOP,
                    "is a symlink or not a directory: a queue's subdirectories must be"
                    " real directories (run 'dq fsck --repair')",
                    layout.path(name),
                ) from None
            raise
        finally:
            _fs.close_dir(fd)
        if config.durable and created:
            # A new queue's subdirectories must be on disk before any job in them.
            _fsync_parents([], created)
    except OSError as err:
        raise QueueIOError(f"creating queue directory {layout.dir!r}", err) from err


def enqueue(
    config: QueueConfig,
    jobs: list[tuple[DataWriter, dict[str, str] | None, int]],
    size_hint: int,
    prepare: Callable[[], None],
    *,
    due: float | None = None,
    waiting: bool = False,
    gate: Gate | None = None,
) -> list[str]:
    """Enqueue ``(write_data, metadata, priority)`` jobs as one batch; return their ids.

    Validates everything first, then calls ``prepare()`` (which makes the queue's
    directories); on any failure, takes out what it had done and raises. With ``due``
    (seconds since the epoch) the jobs are deferred until then (:mod:`dirqueue._deferred`);
    with ``waiting`` they wait in ``waiting/`` for their parents. With ``gate`` (one
    job only) the job is linked in only once the gate is claimed for it; if another
    job holds it, nothing is enqueued and :class:`AlreadyQueued` is raised.
    """
    checked = [
        (write_data, validate_metadata(metadata), validate_priority(priority))
        for write_data, metadata, priority in jobs
    ]
    prepare()
    check_free_space(config, size_hint)
    if due is not None:
        # Given in this host's clock; kept (as the file's mtime) in the filesystem's,
        # which every host's pickup compares it with.
        due += filesystem_now(config) - time.time()
    pid = current_pid()
    staged: list[_Staged] = []

    # A big durable batch on a local journalling filesystem: one syncfs instead of two
    # fsyncs per job and one per data directory (see _run, step 3).
    whole_fs = (
        config.durable
        and len(checked) >= _SYNCFS_MIN_BATCH
        and _fs.syncfs_covers(config.layout.tmp_dir)
    )

    def stage() -> None:
        _stage_all(config, staged, checked, pid, whole_fs=whole_fs)
        for st in staged:
            st.due = due
            st.waiting = waiting
            st.gate = gate

    return _run(config, staged, stage, pid, whole_fs=whole_fs)


def requeue(config: QueueConfig, jobid: str, control: ControlFile, kept_data: str) -> str:
    """Put job ``jobid`` back in the queue under its own id, with ``control`` (its
    ``QDFN`` rewritten here) and the data file at ``kept_data``, which stays where it is.

    Raises :class:`DirQueueError` if a job of that id is already in the queue.
    """
    pid = current_pid()
    layout = config.layout
    staged: list[_Staged] = []

    def stage() -> None:
        tmp_data = layout.tmp_data_name(jobid)
        st = _Staged(
            jobid,
            control.submitted_secs,
            control.submitted_usecs,
            int(jobid[:2]),
            control.metadata,
            tmp_data,
            fixed_name=True,
            control=control,
        )
        link_or_copy(config, kept_data, tmp_data, st)
        staged.append(st)
        _link_data(config, st)

    return _run(config, staged, stage, pid)[0]


def _stage_all(
    config: QueueConfig,
    staged: list[_Staged],
    checked: list[tuple[DataWriter, dict[str, str], int]],
    pid: int,
    *,
    whole_fs: bool = False,
) -> None:
    for write_data, meta, priority in checked:
        _stage(config, staged, write_data, meta, priority, pid=pid)
        if len(staged) % _SYNC_CHUNK == 0:
            try:
                # Bounded open files (the syncfs of step 3 needs none of them open).
                _sync_files(staged[-_SYNC_CHUNK:], close_only=whole_fs)
            except OSError as err:
                raise QueueIOError("making the job durable (fsync)", err) from err


def _run(
    config: QueueConfig,
    staged: list[_Staged],
    stage: Callable[[], None],
    pid: int,
    *,
    whole_fs: bool = False,
) -> list[str]:
    action = "writing the job's data"
    sync_fd: int | None = None
    try:
        if whole_fs:
            # Opened before anything is written: syncfs reports a writeback error only
            # to descriptors opened before it happened.
            sync_fd = _fs.open_dir_nofollow(config.dir, (Layout.TMP,))
        # Steps 1-2.
        stage()
        # Step 3, once for the batch.
        action = "making the job durable (fsync)"
        if sync_fd is not None:
            # One commit of the filesystem: every job's bytes, its control file, its
            # data file's name and any directory made for it, all before step 4.
            _sync_files(staged, close_only=True)
            _fs.syncfs(sync_fd)
        elif config.durable:
            _sync_files(staged)
            _fsync_parents(
                [os.path.dirname(config.layout.data_path(s.jobid)) for s in staged],
                [d for s in staged for d in s.new_dirs],
            )
        # Step 4.
        action = "linking the job into the queue"
        for st in staged:
            _publish(config, st, pid)
        # Step 5, once for the batch.
        action = "making the job durable (fsync)"
        if config.durable:
            _fsync_parents(
                [os.path.dirname(s.queue_path) for s in staged],
                [d for s in staged for d in s.new_queue_dirs],
            )
    except BaseException as err:
        _roll_back(config, staged)
        if isinstance(err, OSError) and not isinstance(err, DirQueueError):
            raise QueueIOError(action, err, config.dir) from err
        raise
    finally:
        if sync_fd is not None:
            _fs.close_dir(sync_fd)
    # Step 6: the jobs are in the queue; the rest is tidying and a wake-up call.
    for st in staged:
        _unlink_tmp_names(config, st)
        if st.gate is not None:
            with contextlib.suppress(OSError):
                st.gate.seal(st.jobid)
    # The link into queue/ set queue/'s mtime already where the filesystem does that by
    # itself (seen once per process, _mtime_follows). Otherwise (and with fan-out, or
    # for jobs that went to deferred/, where queue/ itself did not change) touch it.
    if (
        config.queue_fanout
        or not _mtime_follows.get(config.dir, False)
        or staged[0].due is not None  # The same for every job of a batch.
        or any(len(st.queue_parts) > 1 for st in staged)
    ):
        bump_queue_mtime(config)
    return [st.jobid for st in staged]


#: Queue directory -> whether its filesystem changes a directory's mtime when a name is
#: added to it (POSIX says it must; IPC::DirQueue's author met filesystems that did
#: not, hence its utime() of queue/ after every enqueue). Only a change seen makes it
#: True: a filesystem with whole-second timestamps may show none, and keeps the utime.
_mtime_follows: dict[str, bool] = {}


def _stage(
    config: QueueConfig,
    staged: list[_Staged],
    write_data: DataWriter,
    meta: dict[str, str],
    priority: int,
    *,
    pid: int,
) -> None:
    """Steps 1-2 for one job: its data in data/, its control file in tmp/.

    The data file is created under its final name, exclusively: the name is the job's,
    and no reader looks at a data file before a control file in queue/ names it. With
    ``durable``, both files are left open in ``staged[-1].open_fds`` for step 3.
    """
    mode = config.data_file_mode
    jobid, secs, usecs = make_job_id(priority, config.hostname, pid)
    new_dirs: list[str] = []
    for attempt in range(_NAME_ATTEMPTS):
        parts, base = Layout.data_parts(jobid)
        probe = config.dir not in _mtime_follows
        before = _dir_mtime(config, parts) if probe else None
        try:
            fd = _dirfds.at(
                config.dir,
                parts,
                lambda dir_fd: _fs.create_exclusive(base, mode, dir_fd=dir_fd),  # noqa: B023
                create=True,
                created=new_dirs,
            )
        except FileExistsError:
            jobid, secs, usecs = _new_name(config, priority, pid, attempt)
            continue
        if probe and before is not None:
            # Once per queue and process: does a new name change its directory's mtime
            # by itself? (If not, every enqueue must touch queue/ for the waiters.)
            # Not judged by a directory made just now, which had no mtime before.
            after = _dir_mtime(config, parts)
            _mtime_follows[config.dir] = after not in (None, before)
        break
    else:
        raise DirQueueError(
            f"could not find a free job name in {config.layout.data_dir} after"
            f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
        )
    st = _Staged(jobid, secs, usecs, priority, meta, "", data_linked=True, new_dirs=new_dirs)
    staged.append(st)  # From here on a failure removes what this job left.
    try:
        st.size = write_data(fd)
    finally:
        if config.durable:
            st.open_fds.append(fd)  # fsynced with the others before step 4
        else:
            os.close(fd)
    for attempt in range(_NAME_ATTEMPTS):
        try:
            _write_tmp_control(config, st)
            return
        except FileExistsError:
            # A killed enqueue left a tmp file of this name: the job takes another.
            _move_data(config, st, pid, attempt)
    raise DirQueueError(f"could not find a free job name in {config.layout.tmp_dir}")


def _dir_mtime(config: QueueConfig, parts: tuple[str, ...]) -> int | None:
    try:
        return os.stat(config.layout.path(*parts)).st_mtime_ns
    except OSError:
        return None


def _move_data(config: QueueConfig, st: _Staged, pid: int, attempt: int) -> None:
    """Give job ``st`` a new name: link its data file under it, then unlink the old."""
    source = config.layout.data_path(st.jobid)
    for retry in range(attempt, attempt + _NAME_ATTEMPTS):
        jobid, secs, usecs = _new_name(config, st.priority, pid, retry)
        parts, base = Layout.data_parts(jobid)
        result = _dirfds.at(
            config.dir,
            parts,
            lambda dir_fd: _fs.link_verified(source, base, dst_dir_fd=dir_fd),  # noqa: B023
            create=True,
            created=st.new_dirs,
        )
        if result is _fs.LinkResult.LINKED:
            break
    else:
        raise DirQueueError(
            f"could not find a free job name in {config.layout.data_dir} after"
            f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
        )
    unlink_data(config, st.jobid)
    st.jobid, st.secs, st.usecs = jobid, secs, usecs
    if st.tmp_ctrl:
        _unlink_in_tmp(config, st.tmp_ctrl)
        st.tmp_ctrl = ""


def _link_data(config: QueueConfig, st: _Staged) -> None:
    """A requeue's data: link ``st.tmp_data`` into data/ under the job's own id and
    write its control file."""
    layout = config.layout
    parts, base = Layout.data_parts(st.jobid)
    result = in_queue_dir(
        config,
        (Layout.TMP,),
        lambda tmp_fd: _dirfds.at(
            config.dir,
            parts,
            lambda dir_fd: _fs.link_verified(
                st.tmp_data, base, st.data_stat, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd
            ),
            create=True,
            created=st.new_dirs,
        ),
    )
    if result is not _fs.LinkResult.LINKED:
        raise DirQueueError(
            f"job {st.jobid} already has data in {layout.data_dir}: it was requeued"
            " already; leaving the failed copy in place"
        )
    # Recorded at once, so a failure from here on undoes the link.
    st.data_linked = True
    _write_tmp_control(config, st)


def _write_tmp_control(config: QueueConfig, st: _Staged) -> None:
    layout = config.layout
    data_path = layout.data_path(st.jobid)
    if st.control is not None:
        # A requeue: the job's own fields (and the bytes of the lines it read, kept).
        control = replace(st.control, data_path=data_path, size_bytes=st.size)
    else:
        control = ControlFile(
            data_path=data_path,
            size_bytes=st.size,
            submitted_secs=st.secs,
            submitted_usecs=st.usecs,
            hostname=config.hostname,
            metadata=st.meta,
        )
    name = layout.tmp_control_name(st.jobid)
    fd = in_queue_dir(
        config,
        (Layout.TMP,),
        lambda tmp_fd: create_control(config, name, control, keep_open=config.durable,
                                      dir_fd=tmp_fd),
    )
    st.tmp_ctrl = name
    if fd is not None:
        st.open_fds.append(fd)  # fsynced with the others before step 4


def _publish(config: QueueConfig, st: _Staged, pid: int) -> None:
    """Step 4 for one job: link its control file into queue/ (or, delayed, deferred/),
    renaming it on a clash."""
    layout = config.layout
    fanout = Layout.choose_fanout(config.queue_fanout, is_dirqueue_only(st.meta))
    parts: tuple[str, ...] = Layout.queue_parts(fanout)
    if st.due is not None:
        parts = (Layout.DEFERRED,)
    elif st.waiting:
        parts = (Layout.WAITING,)
    for attempt in range(_NAME_ATTEMPTS):
        if st.gate is not None and not st.claimed:
            # Claimed before the link, never after: at no moment are two jobs with one
            # key both in the queue.
            holder = st.gate.claim(st.jobid)
            if holder is not None:
                raise AlreadyQueued(holder)
            st.claimed = True
        result = in_queue_dir(
            config, (Layout.TMP,), functools.partial(_link_control, config, st, parts)
        )
        if result is _fs.LinkResult.LINKED:
            # Recorded at once: from here a failure must take the job out again.
            st.queue_parts = parts
            st.queue_path = (
                layout.deferred_path(st.jobid)
                if st.due is not None
                else layout.waiting_path(st.jobid)
                if st.waiting
                else layout.queue_path(st.jobid, fanout)
            )
            return
        if st.fixed_name:
            raise DirQueueError(
                f"job {st.jobid} is already in {layout.queue_dir}: leaving the failed copy"
            )
        # Another host made the same name in the same microsecond. Move our data to a
        # new name and make that durable before its control file can point at it. A
        # gate claimed for the old name is given back and claimed again for the new.
        _release_gate(st)
        _move_data(config, st, pid, attempt)
        _write_tmp_control(config, st)
        if config.durable:
            _sync_files([st])
            _fsync_parents([os.path.dirname(layout.data_path(st.jobid))], st.new_dirs)
    raise DirQueueError(
        f"could not find a free job name in {layout.queue_dir} after"
        f" {_NAME_ATTEMPTS} tries: is the clock going backwards?"
    )


def _link_control(
    config: QueueConfig, st: _Staged, parts: tuple[str, ...], tmp_fd: int
) -> _fs.LinkResult:
    """Link ``tmp/`` (``tmp_fd``) ``st.tmp_ctrl`` as ``DIR/parts.../NAME``."""
    if st.due is not None:
        # The due time is the control file's mtime, set before the link shows it.
        os.utime(st.tmp_ctrl, (st.due, st.due), dir_fd=tmp_fd, follow_symlinks=False)
    return _dirfds.at(
        config.dir,
        parts,
        functools.partial(_put_control, config, st, tmp_fd),
        create=True,
        created=st.new_queue_dirs,
    )


#: Queue directory -> whether control files go into queue/ by a rename that never
#: replaces (a local filesystem that has it); else by a verified link.
_renames: dict[str, bool] = {}


def _put_control(config: QueueConfig, st: _Staged, tmp_fd: int, dir_fd: int) -> _fs.LinkResult:
    """``tmp/`` (``tmp_fd``) ``st.tmp_ctrl`` in as ``NAME`` in ``dir_fd``, never over a
    file there (EXISTS: another job has the name).

    On a local filesystem, one rename that never replaces: the name moves, and the tmp
    name goes with it (one call and one change of a directory where a link and an
    unlink take two; ``st.tmp_ctrl`` is then empty). Elsewhere a link, verified by
    inode (over NFS a retried link can report failure although it worked), whose tmp
    name step 6 unlinks.
    """
    moves = _renames.get(config.dir)
    if moves is None:
        moves = _renames[config.dir] = _fs.is_local_filesystem(config.layout.tmp_dir)
    if moves:
        moved = _fs.rename_noreplace(st.tmp_ctrl, st.jobid, src_dir_fd=tmp_fd,
                                     dst_dir_fd=dir_fd)
        if moved is not None:
            if not moved:
                return _fs.LinkResult.EXISTS
            st.tmp_ctrl = ""
            return _fs.LinkResult.LINKED
        _renames[config.dir] = False  # This filesystem cannot: link from now on.
    return _fs.link_verified(st.tmp_ctrl, st.jobid, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)


def _roll_back(config: QueueConfig, staged: list[_Staged]) -> None:
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
                in_queue_dir(
                    config,
                    st.queue_parts,
                    functools.partial(_unlink_name, st.jobid),
                    missing_is_an_answer=True,
                )
        _release_gate(st)  # Only once the job is out again.
    for st in staged:
        if st.data_linked:
            with contextlib.suppress(OSError):
                unlink_data(config, st.jobid)
        _unlink_tmp_names(config, st)


def _release_gate(st: _Staged) -> None:
    if st.gate is not None and st.claimed:
        st.claimed = False
        with contextlib.suppress(OSError):
            st.gate.release(st.jobid)  # Else stale at once: its job never came.


def _unlink_tmp_names(config: QueueConfig, st: _Staged) -> None:
    for name in (st.tmp_data, st.tmp_ctrl):
        if name:
            # A stray tmp file is harmless; repair() collects it.
            with contextlib.suppress(OSError):
                _unlink_in_tmp(config, name)


def _unlink_in_tmp(config: QueueConfig, name: str) -> None:
    """Remove ``tmp/name`` (through tmp/'s descriptor); gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        in_queue_dir(
            config,
            (Layout.TMP,),
            functools.partial(_unlink_name, name),
            missing_is_an_answer=True,
        )


def _unlink_name(name: str, dir_fd: int) -> None:
    os.unlink(name, dir_fd=dir_fd)


def _new_name(config: QueueConfig, priority: int, pid: int, attempt: int) -> tuple[str, int, int]:
    # A clash means another process made the same name in the same microsecond; back
    # off a little and add the pid and a random number, as the Perl module does.
    time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
    return make_job_id(
        priority, config.hostname, pid, collision_suffix=random.randint(0, 65535)
    )


def _sync_files(staged: list[_Staged], *, close_only: bool = False) -> None:
    """fsync and close the files of ``staged`` that are still open (with
    ``close_only``, only close them: a syncfs will follow)."""
    # Written first and synced together: on a journalling filesystem the first fsync
    # commits the journal for all of them, and the rest find little to do.
    for st in staged:
        while st.open_fds:
            fd = st.open_fds[0]
            try:
                if not close_only:
                    os.fsync(fd)
            finally:
                st.open_fds.pop(0)
                os.close(fd)


def _fsync_parents(directories: list[str], created: list[str]) -> None:
    # fsync the directories names were linked into, and the parent of every directory
    # made for them: a new directory is only durable once its parent names it. Each
    # directory once, however many jobs were linked into it. (A relative queue
    # directory's top has the current directory as its parent.)
    todo = [*directories, *(os.path.dirname(d) or "." for d in created)]
    for path in dict.fromkeys(todo):
        _fs.fsync_dir(path)


def bump_queue_mtime(config: QueueConfig) -> None:
    """Touch ``queue/``: waiting dequeuers on every host watch its mtime (and inotify
    sees the touch). Not ours (another user's queue)? The new entry changed it anyway.
    Through queue/'s descriptor: a symlink put in its place is not followed."""
    with contextlib.suppress(OSError):
        in_queue_dir(config, (Layout.QUEUE,), os.utime)


