"""A job's files: reading its control file, finding, opening and removing its data,
writing control files, and moving a corrupt job aside to ``corrupt/``.

Data files are reached from the job id alone (``data/C1/C2/BASE`` under this queue's
own directory), one directory at a time without following symlinks, and opened only if
they are regular files: whoever can write into a shared queue could otherwise make a
worker read, or ``finish()`` delete, any file the worker can reach. ``QDFN``, the
submitter's view of the path, is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from . import _dirfds, _fs
from ._config import QueueConfig
from ._format import CONTROL_FILE_MAX_BYTES, ControlFile, parse_control
from ._identity import current_pid
from ._layout import Layout
from .errors import CorruptJobError

__all__ = [
    "check_data",
    "create_control",
    "in_queue_dir",
    "move_aside",
    "on_name_in",
    "open_data",
    "read_control",
    "read_data",
    "set_aside",
    "unlink_data",
]

_T = TypeVar("_T")


def read_control(queue_path: str) -> ControlFile:
    """Read and parse the control file at ``queue_path``.

    Raises :class:`CorruptJobError` for anything that is not a regular file holding a
    control file (a symlink, FIFO, socket, directory...), and ``FileNotFoundError`` if
    it has gone.
    """
    try:
        fd, st = _fs.open_regular_stat(queue_path)
    except _fs.NotRegularFileError as err:
        raise CorruptJobError(f"control file {err.strerror}", queue_path) from None
    except IsADirectoryError:
        raise CorruptJobError("control file is a directory", queue_path) from None
    try:
        raw = _fs.read_whole(fd, st.st_size, CONTROL_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    return parse_control(raw, queue_path)


def _symlinked_dirs(jobid: str, path: str) -> CorruptJobError:
    return CorruptJobError(
        f"a directory above the data file of job {jobid} is a symlink or not a"
        " directory: refusing to follow it out of the queue",
        path,
    )


def check_data(
    config: QueueConfig, jobid: str, queue_path: str, control: ControlFile | None = None
) -> os.stat_result:
    """The ``lstat`` of job ``jobid``'s data file, checked.

    Raises :class:`CorruptJobError` if it is missing (while the control file is still
    there), not a regular file, or (given ``control``) not the size ``QDSB`` records;
    ``FileNotFoundError`` if the whole job has gone (finished meanwhile).
    """
    parts, base = Layout.data_parts(jobid)
    try:
        st = _dirfds.call(config.layout.dir, parts, os.lstat, base)
    except FileNotFoundError as err:
        path = config.layout.data_path(jobid)
        if not os.path.lexists(queue_path):
            raise  # The whole job is gone: finished, not corrupt.
        if os.path.lexists(path):
            # A missing data file sends the job to corrupt/: be sure first. (An NFS
            # client can report ENOENT for a file that is there, e.g. ESTALE recovery
            # after the server restarted.)
            raise OSError(errno.EAGAIN, "data file lookup failed, then found it", path) from err
        raise CorruptJobError(f"job {jobid} has a control file but no data file", path) from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _symlinked_dirs(jobid, config.layout.data_path(jobid)) from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise CorruptJobError(
            f"the data file of job {jobid} is a symlink or not a regular file",
            config.layout.data_path(jobid),
        )
    if control is not None and control.size_bytes is not None and st.st_size != control.size_bytes:
        # A data file that is not what was submitted (truncated, replaced, or a huge
        # sparse file planted to exhaust a worker's memory): never hand it on.
        raise CorruptJobError(
            f"the data file of job {jobid} is {st.st_size} bytes, but its control file"
            f" says {control.size_bytes} (QDSB)",
            config.layout.data_path(jobid),
        )
    return st


def open_data(config: QueueConfig, jobid: str) -> int:
    """Open job ``jobid``'s data file for reading; never through a symlink."""
    return _open_data_stat(config, jobid)[0]


def _open_data_stat(config: QueueConfig, jobid: str) -> tuple[int, os.stat_result]:
    """Job ``jobid``'s data file opened for reading, proved regular, and its fstat."""
    return _open_data_with(config, jobid, _fs.open_regular_stat)


def _open_data_with(
    config: QueueConfig, jobid: str, opener: Callable[..., _T]
) -> _T:
    """``opener(name, dir_fd=fd)`` on job ``jobid``'s data file, reached from the job id
    without following a symlink; what is found there that is not a file to read is a
    :class:`CorruptJobError`."""
    parts, base = Layout.data_parts(jobid)
    try:
        return _dirfds.call(config.layout.dir, parts, opener, base)
    except _fs.NotRegularFileError as err:
        raise CorruptJobError(
            f"data file of job {jobid} {err.strerror}: refusing to read it",
            config.layout.data_path(jobid),
        ) from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _symlinked_dirs(jobid, config.layout.data_path(jobid)) from None
        raise


def read_data(config: QueueConfig, jobid: str, size: int | None) -> bytes:
    """Job ``jobid``'s data; with ``size`` (``QDSB``), never more than that many bytes.

    A data file that has grown past its recorded size is refused
    (:class:`CorruptJobError`) rather than read into memory.
    """
    if size is None:
        fd, st = _open_data_stat(config, jobid)
        try:
            return _fs.read_whole(fd, st.st_size, sys.maxsize)
        finally:
            os.close(fd)
    # The recorded size (checked against the file's at pickup) stands in for an fstat:
    # one read of size + 1 bytes shows a file that grew, and anything that is not a
    # regular file (a FIFO, a directory put there since) reads as the wrong size, or
    # not at all. Only then is the file asked what it is, to say so.
    fd = _open_data_with(config, jobid, _fs.open_for_reading)
    try:
        try:
            data = _fs.read_whole(fd, size, size + 1)
        except (IsADirectoryError, BlockingIOError):
            data = None
        if data is not None and len(data) == size:
            return data
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptJobError(
                f"data file of job {jobid} is not a regular file: refusing to read it",
                config.layout.data_path(jobid),
            )
    finally:
        os.close(fd)
    got = "more" if data is None or len(data) > size else len(data)
    raise CorruptJobError(
        f"the data file of job {jobid} holds {got} bytes, not the {size} its control file"
        " records (QDSB)",
        config.layout.data_path(jobid),
    )


def unlink_data(config: QueueConfig, jobid: str) -> bool:
    """Remove job ``jobid``'s data file; never through a symlinked directory."""
    parts, base = Layout.data_parts(jobid)
    try:
        _dirfds.call(config.layout.dir, parts, os.unlink, base)
    except FileNotFoundError:
        return False
    return True


def in_queue_dir(
    config: QueueConfig,
    parts: tuple[str, ...],
    operation: Callable[[int], _T],
    *,
    missing_is_an_answer: bool = False,
) -> _T:
    """``operation(fd)`` on this thread's descriptor of ``DIR/parts...`` (``tmp/``,
    ``active/``...), never reached through a symlink, and made again if it has gone.

    Files in the queue's subdirectories are made, linked and removed through these
    descriptors, never by path: another user of a shared queue could otherwise swap
    ``tmp/`` for a symlink to a directory of ours and have our files made there. A
    descriptor kept from before names the directory it was opened on; one removed since
    (``dq fsck --repair`` removing a symlink found in its place, say) is opened afresh,
    and made again if missing, so a live queue object goes on working. With
    ``missing_is_an_answer`` (an ``lstat``, an ``unlink``), a name not found is the
    answer, not a sign that the directory has gone: the next operation that makes a
    name finds that out.
    """
    try:
        return _dirfds.at(
            config.dir, parts, operation, create=True, retry=not missing_is_an_answer
        )
    except OSError as err:
        _raise_if_dir_symlinked(config, parts, err)
        raise


def on_name_in(
    config: QueueConfig,
    parts: tuple[str, ...],
    function: Callable[..., _T],
    name: str,
    *,
    missing_is_an_answer: bool = False,
) -> _T:
    """``function(name, dir_fd=fd)`` in ``DIR/parts...``: :func:`in_queue_dir` for one
    call on one name, without a closure (see :func:`dirqueue._dirfds.call`)."""
    try:
        return _dirfds.call(
            config.layout.dir, parts, function, name, create=True, retry=not missing_is_an_answer
        )
    except OSError as err:
        _raise_if_dir_symlinked(config, parts, err)
        raise


def _raise_if_dir_symlinked(config: QueueConfig, parts: tuple[str, ...], err: OSError) -> None:
    where = config.layout.path(*parts)
    if err.errno in (errno.ELOOP, errno.ENOTDIR) and err.filename in (
        "/".join(parts),
        where,
    ):
        # The directory itself (not a name in it) is a symlink: say so, and how to mend it.
        raise OSError(
            err.errno,
            "is a symlink or not a directory: a queue's subdirectories must be real"
            " directories (run 'dq fsck --repair')",
            where,
        ) from None


def create_control(
    config: QueueConfig,
    path: str,
    control: ControlFile,
    *,
    keep_open: bool = False,
    dir_fd: int | None = None,
) -> int | None:
    """Write ``control`` to the new file ``path`` (``O_EXCL``, never through a symlink;
    with ``dir_fd``, a name in that directory).

    With ``keep_open``, returns its still open fd (for the caller to fsync with others);
    otherwise it is fsynced here when the queue is durable, closed, and None returned.
    The file is removed again if writing fails.
    """
    fd = _fs.create_exclusive(path, config.queue_file_mode, dir_fd=dir_fd)
    try:
        _fs.write_all(fd, control.to_bytes())
        if config.durable and not keep_open:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path, dir_fd=dir_fd)
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None


def set_aside(config: QueueConfig, parts: tuple[str, ...], name: str, suffix: str) -> str:
    """Move ``DIR/parts.../name`` (a stray that is not a job file: a directory at a
    lock's name, say) to ``corrupt/NAME[.N]SUFFIX``, the first such name free, through
    descriptors opened without following symlinks. Returns its new path."""
    layout = config.layout
    cfd, _ = _fs.ensure_dir_nofollow(config.dir, (Layout.CORRUPT,))
    try:
        fd = _fs.open_dir_nofollow(config.dir, parts)
        try:
            for n in itertools.count():
                target = layout.corrupt_stem(name, n) + suffix
                try:
                    os.lstat(target, dir_fd=cfd)
                except FileNotFoundError:
                    break
            os.rename(name, target, src_dir_fd=fd, dst_dir_fd=cfd)
        finally:
            _fs.close_dir(fd)
    finally:
        _fs.close_dir(cfd)
    return layout.corrupt_path(target)


def move_aside(config: QueueConfig, jobid: str, queue_path: str, reason: str) -> str:
    """Move job ``jobid``'s control and data files to ``corrupt/``, with a reason file.

    The caller holds the job's lock. Returns the control file's new path. Nothing is
    deleted: an operator can read the reason, mend the job and put it back.
    """
    layout = config.layout
    fd, _ = _fs.ensure_dir_nofollow(config.dir, (Layout.CORRUPT,))
    try:
        for n in itertools.count():
            stem = layout.corrupt_stem(jobid, n)
            try:
                rfd = _fs.create_exclusive(
                    layout.corrupt_reason_name(stem), config.queue_file_mode, dir_fd=fd
                )
                break
            except FileExistsError:
                continue
        # The reason goes first: a crash after it leaves a reason for nothing, never a
        # moved job without one.
        text = (
            f"job: {jobid}\nfrom: {queue_path}\nreason: {reason}\n"
            f"moved-by: {config.hostname} pid {current_pid()}\n"
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
                    layout.corrupt_path(stem)
                )
                if not moved:
                    raise
                # Done although it said otherwise (a lost reply over NFS): go on.
        except BaseException:
            # The job is still in the queue: take back the reason for a move that did
            # not happen, so the next try uses this name again.
            with contextlib.suppress(OSError):
                os.unlink(layout.corrupt_reason_name(stem), dir_fd=fd)
            raise
        # The job has left the queue. Its data follows; if that fails, repair() finds
        # the data file without a control file and brings it here.
        parts, base = Layout.data_parts(jobid)
        target = layout.corrupt_data_name(stem)
        try:
            _dirfds.at(
                config.dir,
                parts,
                lambda dfd: os.rename(base, target, src_dir_fd=dfd, dst_dir_fd=fd),
            )
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise
            # No data, or not in the queue (a symlink above it).
    finally:
        _fs.close_dir(fd)
    return layout.corrupt_path(stem)
