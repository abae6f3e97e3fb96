"""A job's data file, written: from ``str`` or ``bytes`` chunks (:func:`write_chunks`,
gathered into large writes, and written at least every second so a slow stream's file
never looks abandoned), or, for a requeue, the kept data linked into ``tmp/`` (copied
where the filesystem has no hard links). And the one check before anything is
written: that the job leaves the free space asked for. The steps around these, and
what makes them crash-safe, are :mod:`dirqueue._enqueue`'s.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from . import _fs
from ._config import QueueConfig
from ._jobfiles import in_queue_dir
from ._layout import Layout
from .errors import DirQueueError, QueueIOError

__all__ = [
    "Chunk",
    "DataWriter",
    "StagedData",
    "check_free_space",
    "link_or_copy",
    "write_chunks",
    "writer",
]

Chunk = str | bytes | bytearray | memoryview
#: Writes a job's data to the fd it is given and returns the byte count.
DataWriter = Callable[[int], int]

#: Chunks are gathered into writes of this size...
_WRITE_SIZE: Final = 1 << 16
#: ... or written after this many seconds, whichever comes first: a slow stream keeps
#: its tmp file's mtime fresh, so repair never takes it for a dead enqueue's leftover.
_WRITE_EVERY: Final = 1.0


class StagedData(Protocol):
    """What :func:`link_or_copy` records in the job being enqueued (``_enqueue``'s
    record of a staged job)."""

    jobid: str
    open_fds: list[int]
    data_stat: os.stat_result | None
    size: int


def _same_inode(a: str, b: str, b_dir_fd: int) -> bool:
    """True if path ``a`` and name ``b`` in ``b_dir_fd`` are one file (not following
    symlinks)."""
    try:
        return _fs.same_file(os.lstat(a), os.lstat(b, dir_fd=b_dir_fd))
    except OSError:
        return False


def link_or_copy(config: QueueConfig, source: str, tmp_data: str, st: StagedData) -> None:
    in_queue_dir(
        config, (Layout.TMP,), functools.partial(_link_or_copy_at, config, source, tmp_data, st)
    )


def _link_or_copy_at(
    config: QueueConfig, source: str, tmp_data: str, st: StagedData, tmp_fd: int
) -> None:
    linked = True
    try:
        os.link(source, tmp_data, dst_dir_fd=tmp_fd, follow_symlinks=False)
    except OSError as err:
        # Over NFS a lost reply to a retried link() reports EEXIST (or another error)
        # although the link was made: only the inode says.
        linked = _same_inode(source, tmp_data, tmp_fd)
        if not linked:
            if err.errno == errno.EEXIST:
                raise DirQueueError(
                    f"job {st.jobid} is being requeued by another process already"
                ) from None
            if err.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # No hard links here (some FUSE and SMB mounts): copy, never through a
            # symlink.
            src = _fs.open_regular(source)
            with os.fdopen(src, "rb") as fh:
                fd = _fs.create_exclusive(tmp_data, config.data_file_mode, dir_fd=tmp_fd)
                st.open_fds.append(fd)
                while chunk := fh.read(_WRITE_SIZE):
                    _fs.write_all(fd, chunk)
    if linked:
        # Issue 9: the kept data is fsynced (step 3) like a fresh job's: whoever wrote
        # it (a Perl producer, a durable=False queue) may never have. Opening it also
        # refuses a symlink planted in failed/, which link() copied as itself.
        try:
            fd = _fs.open_regular(tmp_data, tmp_fd)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_data, dir_fd=tmp_fd)
            raise
        st.open_fds.append(fd)
    if not config.durable:
        # Nothing to fsync: _run only closes the files it syncs.
        while st.open_fds:
            os.close(st.open_fds.pop())
    st.data_stat = os.lstat(tmp_data, dir_fd=tmp_fd)
    st.size = st.data_stat.st_size


def check_free_space(config: QueueConfig, size_hint: int) -> None:
    if config.min_free_bytes <= 0:
        return
    try:
        free = _fs.free_bytes(config.dir)
    except OSError as err:
        raise QueueIOError("checking free space for the job", err) from err
    if free - size_hint < config.min_free_bytes:
        raise QueueIOError(
            f"enqueueing {size_hint} bytes with {free} bytes free"
            f" (min_free_bytes={config.min_free_bytes}): refused, nothing was written",
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), config.dir),
        )


def write_chunks(fd: int, chunks: Iterable[Chunk]) -> int:
    """Write str (as UTF-8) or bytes chunks to ``fd``; return the byte count."""
    total = 0
    buffer = io.BytesIO()
    last_write = time.monotonic()
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
        if buffer.tell() >= _WRITE_SIZE or time.monotonic() - last_write >= _WRITE_EVERY:
            _fs.write_all(fd, buffer.getvalue())
            total += buffer.tell()
            buffer = io.BytesIO()
            last_write = time.monotonic()
    if buffer.tell():
        _fs.write_all(fd, buffer.getvalue())
        total += buffer.tell()
    return total


def writer(payload: bytes) -> DataWriter:
    """A :data:`DataWriter` of one ``bytes`` payload (written whole: nothing to gather)."""

    def write(fd: int) -> int:
        _fs.write_all(fd, payload)
        return len(payload)

    return write
