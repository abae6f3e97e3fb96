"""Jobs' answers: one file per job in ``results/``, seen whole or not at all.

A worker that keeps a job's answer (the value its handler returned, or how its last
attempt failed) writes it here before it finishes the job, so that whoever finds the
job gone finds its answer. The layers above (:mod:`dirqueue.tasks`, ``dq result``) and
the worker reach ``results/`` only through this module: it is the one writer of those
files, as :mod:`dirqueue._enqueue` is the one writer of ``queue/``.

Each answer is written under a temporary name in ``tmp/`` (fsynced when the queue is
durable) and renamed into ``results/NAME``: a reader on any host of a shared
filesystem opens either the whole file or none (a rename is atomic on NFS too, and a
worker killed while writing leaves only its tmp file, which ``repair`` removes). The
file's mtime is set to the time the answer expires, so that sweeping the expired ones
takes a ``stat`` each and never a read. The Perl module never looks in ``results/``.

The content is one JSON object (see :class:`ResultRecord`); ``docs/format.md`` lists
its fields.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import math
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

from . import _dirfds, _fs
from ._config import QueueConfig
from ._format import is_job_name
from ._identity import current_pid
from ._inotify import Notifier, open_notifier
from ._layout import Layout
from .errors import CorruptJobError, DirQueueError, QueueIOError

__all__ = [
    "ALREADY_KEPT",
    "DEFAULT_RESULT_TTL",
    "RESULT_MAX_BYTES",
    "RESULT_TTL_KEY",
    "Encoded",
    "ResultRecord",
    "ResultWaiter",
    "UnstorableResultError",
    "answer_ttl",
    "count_results",
    "encode_value",
    "failure_record",
    "keep_answer",
    "keep_failure",
    "read_result",
    "remove_expired",
    "success_record",
    "sweep_now_and_then",
    "write_result",
]

_log = logging.getLogger("dirqueue")

#: How long an answer is kept unless its job says otherwise: a week.
DEFAULT_RESULT_TTL: Final = 7 * 24 * 3600.0
#: The largest answer read back (a larger file is refused, not read into memory).
RESULT_MAX_BYTES: Final = 256 << 20
#: A worker sweeps expired answers at its first answer, then at most this often.
SWEEP_INTERVAL: Final = 300.0
#: The kinds of value an answer holds (see :class:`Encoded`); "" for a failure.
_KINDS: Final = frozenset({"json", "str", "bytes", "pickle", ""})
#: Metadata by which a job asks for its answer to be kept, and for how many seconds
#: (0: none). Task jobs carry it; any dirqueue worker honours it.
RESULT_TTL_KEY: Final = "dq.result_ttl"
#: Statuses of an answer.
DONE: Final = "done"
FAILED: Final = "failed"
#: One encoder made once: ``json.dumps`` given an option builds a new encoder at every
#: call, a tenth of what keeping an answer cost.
_to_json: Final = json.JSONEncoder(allow_nan=False).encode


class UnstorableResultError(DirQueueError, TypeError):
    """A handler returned a value that cannot be kept as a result (not bytes, str, or
    something JSON can carry)."""


@dataclass(frozen=True)
class Encoded:
    """A value ready for a result file: ``kind`` says how ``value`` (a JSON value) is
    read back: ``json`` as it is, ``str`` as text, ``bytes`` and ``pickle`` from base64.

    A layer with its own encoding (the tasks' pickle) hands one of these to the worker
    so the engine never needs to know it.
    """

    kind: str
    value: Any


#: What a handler returns to say that the job's answer is already kept (an earlier
#: attempt wrote it): the worker leaves that answer as it is.
ALREADY_KEPT: Final = Encoded("kept", None)


def encode_value(value: object) -> Encoded:
    """``value`` as a result file keeps it: bytes, str or a JSON value (an
    :class:`Encoded` passes through); :class:`UnstorableResultError` otherwise."""
    if isinstance(value, Encoded):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Encoded("bytes", base64.b64encode(bytes(value)).decode("ascii"))
    if isinstance(value, str):
        return Encoded("str", value)
    if value is None or type(value) in (int, bool) or (
        type(value) is float and math.isfinite(value)
    ):
        return Encoded("json", value)  # Surely JSON: spared a trial dump.
    try:
        _to_json(value)
    except (TypeError, ValueError) as err:
        raise UnstorableResultError(
            f"cannot keep a {type(value).__name__} as a result ({err}): return bytes,"
            " str or a JSON value (dict, list, number, bool, None)"
        ) from None
    return Encoded("json", value)


@dataclass(frozen=True)
class ResultRecord:
    """One job's answer, as its result file holds it."""

    jobid: str
    #: ``done`` (the handler returned) or ``failed`` (its last attempt raised).
    status: str
    #: How ``value`` reads back (see :class:`Encoded`); empty for a failure.
    kind: str = ""
    value: Any = None
    #: For a failure: the exception's type name, message, and traceback text.
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    #: The attempt that gave this answer (1 for a job's first run).
    attempt: int = 0
    host: str = ""
    pid: int = 0
    finished_at: float = 0.0
    expires_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The record as its file's JSON object holds it."""
        # Not dataclasses.asdict, which deep-copies the value: a third of a task's
        # cost when it was.
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    def decoded(self) -> Any:
        """The value as the handler returned it (``json``, ``str`` or ``bytes``); a
        ``pickle`` value stays its bytes, for the layer that chose it to load."""
        if self.kind in ("bytes", "pickle"):
            return base64.b64decode(self.value)
        return self.value


_RECORD_FIELDS: Final = tuple(f.name for f in fields(ResultRecord))


def success_record(
    config: QueueConfig, jobid: str, value: object, attempt: int, ttl: float
) -> ResultRecord:
    """The answer of a job whose handler returned ``value``."""
    encoded = encode_value(value)
    now = time.time()
    return ResultRecord(
        jobid, DONE, encoded.kind, encoded.value, attempt=attempt,
        host=config.hostname, pid=current_pid(), finished_at=now, expires_at=now + ttl,
    )


def failure_record(  # noqa: PLR0917 - each is one field of the record
    config: QueueConfig, jobid: str, err: BaseException | None, message: str,
    traceback_text: str, attempt: int, ttl: float, error_type: str = "JobFailed",
) -> ResultRecord:
    """The answer of a job whose last attempt failed with ``err`` (None: no exception
    is at hand, as for a job whose workers died; ``message`` says what happened, and
    ``error_type`` names it)."""
    now = time.time()
    return ResultRecord(
        jobid, FAILED, error_type=type(err).__name__ if err is not None else error_type,
        error_message=message, traceback=traceback_text, attempt=attempt,
        host=config.hostname, pid=current_pid(), finished_at=now, expires_at=now + ttl,
    )


def answer_ttl(metadata: dict[str, str], keep: bool, default: float) -> float:
    """Seconds to keep a job's answer (0: keep none): the job's own ``result_ttl``, or
    ``default`` when its worker keeps every answer (``keep``)."""
    text = metadata.get(RESULT_TTL_KEY)
    if text is not None:
        try:
            ttl = float(text)
        except ValueError:
            ttl = default
        return ttl if 0 <= ttl < float("inf") else default
    return default if keep else 0.0


def keep_answer(config: QueueConfig, jobid: str, value: object, attempt: int, ttl: float) -> None:
    """Keep ``value`` (what a handler returned) as job ``jobid``'s answer for ``ttl``
    seconds (0: keep none); sweep expired answers now and then."""
    if ttl > 0 and value is not ALREADY_KEPT:
        write_result(config, success_record(config, jobid, value, attempt, ttl))
        sweep_now_and_then(config)


def keep_failure(  # noqa: PLR0917 - each is one field of the record
    config: QueueConfig, jobid: str, err: BaseException | None, error: str, detail: str,
    attempt: int, ttl: float, error_type: str = "JobFailed",
) -> None:
    """Keep how job ``jobid``'s last attempt failed as its answer (``ttl`` 0: none).

    A failure to write it is logged, not raised: the job still goes to ``failed/``
    with its error, and that record is the one that must not be lost.
    """
    if ttl <= 0:
        return
    message = str(err) if err is not None else error
    try:
        write_result(
            config,
            failure_record(config, jobid, err, message, detail, attempt, ttl, error_type),
        )
    except QueueIOError as io_err:
        _log.warning("job %s: its failure could not be kept as its result: %s", jobid, io_err)


def _parse(jobid: str, raw: bytes) -> ResultRecord | None:
    try:
        fields = json.loads(raw)
    except ValueError:
        return None  # Not ours to read (never a torn one: those never get the name).
    if not isinstance(fields, dict) or fields.get("jobid") != jobid:
        return None
    known = ResultRecord.__dataclass_fields__
    try:
        record = ResultRecord(**{k: v for k, v in fields.items() if k in known})
    except TypeError:
        return None
    # A planted file must not make a reader fail later in a way it cannot explain.
    if (
        record.status not in (DONE, FAILED)
        or record.kind not in _KINDS
        or not all(isinstance(v, str) for v in (
            record.error_type, record.error_message, record.traceback, record.host))
        or (record.kind in ("bytes", "pickle", "str") and not isinstance(record.value, str))
    ):
        return None
    if record.kind in ("bytes", "pickle"):
        try:
            base64.b64decode(record.value, validate=True)
        except ValueError:
            return None
    return record


def write_result(config: QueueConfig, record: ResultRecord) -> None:
    """Write ``record`` as ``results/NAME``, replacing any answer there: in ``tmp/``
    first, then renamed, so that no reader ever sees part of it.

    Both directories are reached through descriptors opened without following
    symlinks (and kept, :mod:`dirqueue._dirfds`): another user of a shared queue
    cannot point ``results/`` elsewhere.
    """
    payload = _payload(record)
    tmp_name = Layout.tmp_rewrite_name(record.jobid, current_pid(), "result")
    created: list[str] = []

    def into(results_fd: int) -> None:
        def from_tmp(tmp_fd: int) -> None:
            _write_and_rename(config, record, payload, tmp_name, tmp_fd, results_fd)

        _dirfds.at(config.dir, (Layout.TMP,), from_tmp)
        if config.durable:
            os.fsync(results_fd)

    try:
        # The two directories' descriptors are kept between answers (see _dirfds):
        # a worker answering job after job walks to neither again.
        _dirfds.at(config.dir, (Layout.RESULTS,), into, create=True, created=created)
        if config.durable and created:
            _fs.fsync_dir(config.dir)
    except OSError as err:
        raise QueueIOError(f"writing the result of job {record.jobid}", err) from err


def _payload(record: ResultRecord) -> bytes:
    """``record`` as its file holds it: the JSON object of :meth:`ResultRecord.as_dict`.

    An answer is written once per job, so its cost is a task's: for a done answer the
    fields every one has are laid out once (:data:`_DONE_PARTS`), and only the value,
    the job's id, the host and the numbers are encoded each time: the same text as
    ``json.dumps`` of the record's dict (``tests/test_results_store.py`` checks it).
    """
    if (
        record.status != DONE or record.error_type or record.error_message
        or record.traceback or type(record.attempt) is not int
        or type(record.pid) is not int or type(record.finished_at) is not float
        or type(record.expires_at) is not float
        or not math.isfinite(record.finished_at) or not math.isfinite(record.expires_at)
    ):
        return _to_json(record.as_dict()).encode("utf-8")
    return "".join((
        '{"jobid": ', _to_json(record.jobid), ', "status": "done", "kind": ',
        _to_json(record.kind), ', "value": ', _to_json(record.value), _DONE_PARTS,
        str(record.attempt), ', "host": ', _to_json(record.host), ', "pid": ',
        str(record.pid), ', "finished_at": ', repr(record.finished_at),
        ', "expires_at": ', repr(record.expires_at), "}",
    )).encode("utf-8")


#: What follows the value in every done answer: a failure's fields, empty, then the
#: attempt's key.
_DONE_PARTS: Final = ', "error_type": "", "error_message": "", "traceback": "", "attempt": '


def _write_and_rename(  # noqa: PLR0917 - write_result's one step, split out
    config: QueueConfig, record: ResultRecord, payload: bytes, tmp_name: str,
    tmp_fd: int, results_fd: int,
) -> None:
    fd = _fs.create_exclusive(tmp_name, config.data_file_mode, dir_fd=tmp_fd)
    try:
        try:
            _fs.write_all(fd, payload)
            # The mtime is the expiry time: a sweep decides by stat alone.
            os.utime(fd, (record.expires_at, record.expires_at))
            if config.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_name, record.jobid, src_dir_fd=tmp_fd, dst_dir_fd=results_fd)
    except BaseException:
        with contextlib.suppress(OSError):  # Else left for repair, by its age.
            os.unlink(tmp_name, dir_fd=tmp_fd)
        raise


def read_result(
    config: QueueConfig, jobid: str, *, now: float | None = None
) -> ResultRecord | None:
    """Job ``jobid``'s answer, or None if it has none (yet, or any more: an expired
    answer not yet swept counts as gone). :class:`CorruptJobError` (a ``ValueError``)
    if ``jobid`` is not a job id: it is a name in ``results/``, never a path."""
    if not is_job_name(jobid):
        raise CorruptJobError(f"{jobid!r} is not a job id: pass one that submit returned", jobid)
    try:
        dir_fd = _fs.open_dir_nofollow(config.dir, (Layout.RESULTS,))
    except OSError as err:
        if _fs.is_gone(err):
            return None
        raise QueueIOError(f"opening {config.layout.results_dir}", err) from err
    try:
        fd, st = _fs.open_regular_stat(jobid, dir_fd)
    except OSError as err:
        if _fs.is_gone(err):
            return None
        raise QueueIOError(f"reading {config.layout.result_path(jobid)}", err) from err
    finally:
        _fs.close_dir(dir_fd)
    # The mtime is the expiry time (what sweeps go by): one already past is gone.
    if st.st_mtime <= (time.time() if now is None else now):
        os.close(fd)
        return None
    return _parse(jobid, _fs.read_limited(fd, RESULT_MAX_BYTES))


def _entries(config: QueueConfig, dir_fd: int) -> list[tuple[str, os.stat_result]]:
    """The regular files in ``results/`` with their stat (dot names and anything
    else left alone)."""
    found = []
    for name in os.listdir(dir_fd):
        if name.startswith("."):
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as err:
            if _fs.is_gone(err):
                continue
            raise
        if stat.S_ISREG(st.st_mode):
            found.append((name, st))
    return found


def _with_results_dir(config: QueueConfig, use: Callable[[int], Any], empty: Any) -> Any:
    try:
        dir_fd = _fs.open_dir_nofollow(config.dir, (Layout.RESULTS,))
    except OSError as err:
        # Missing, or a symlink in its place (planted; fsck reports it): no answers.
        if _fs.is_gone(err) or err.errno in (errno.ELOOP, errno.ENOTDIR):
            return empty
        raise QueueIOError(f"opening {config.layout.results_dir}", err) from err
    try:
        return use(dir_fd)
    except OSError as err:
        raise QueueIOError(f"listing {config.layout.results_dir}", err) from err
    finally:
        _fs.close_dir(dir_fd)


def remove_expired(
    config: QueueConfig, *, now: float | None = None, dry_run: bool = False
) -> list[str]:
    """Remove the answers whose time has run out (mtime at or before ``now``); return
    their job ids. ``dry_run`` only lists them."""
    when = time.time() if now is None else now

    def sweep(dir_fd: int) -> list[str]:
        removed = []
        for name, st in _entries(config, dir_fd):
            if st.st_mtime > when:
                continue
            if not dry_run:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError as err:
                    if not _fs.is_gone(err):
                        raise
                    continue  # Another sweeper got there first.
            removed.append(name)
        return removed

    found: list[str] = _with_results_dir(config, sweep, [])
    return found


def count_results(config: QueueConfig, *, now: float | None = None) -> int:
    """How many answers ``results/`` keeps (not yet expired)."""
    when = time.time() if now is None else now

    def count(dir_fd: int) -> int:
        return sum(1 for _, st in _entries(config, dir_fd) if st.st_mtime > when)

    total: int = _with_results_dir(config, count, 0)
    return total


_last_sweep: dict[tuple[int, str], float] = {}


def sweep_now_and_then(config: QueueConfig, clock: Callable[[], float] = time.monotonic) -> None:
    """Remove expired answers if this process has not for :data:`SWEEP_INTERVAL`
    seconds: how answers go without a daemon, at a listing's cost every few minutes."""
    key = (current_pid(), config.dir)
    now = clock()
    last = _last_sweep.get(key)
    if last is not None and now - last < SWEEP_INTERVAL:
        return
    _last_sweep[key] = now
    remove_expired(config)


class ResultWaiter:
    """Waits for answers to land in one queue's ``results/``.

    On a local filesystem inotify wakes it as an answer is renamed in (within
    milliseconds); elsewhere (NFS, where inotify sees only this host's changes) it
    opens the one file it waits for every ``poll_interval`` seconds, never listing the
    directory. One per thread and queue (see :meth:`for_queue`): an inotify descriptor
    costs the kernel milliseconds to close, so it is kept.
    """

    _cache = threading.local()

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._notifier: Notifier | None = None
        try:
            # Made now if missing: inotify can only watch a directory that is there.
            fd, _ = _fs.ensure_dir_nofollow(config.dir, (Layout.RESULTS,))
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise QueueIOError(f"opening {config.layout.results_dir}", err) from err
            return  # A reader who may not make it: it looks at the file, as on NFS.
        _fs.close_dir(fd)
        if _fs.is_local_filesystem(config.dir):
            notifier = open_notifier()
            if notifier is not None and notifier.watch(config.layout.results_dir) >= 0:
                self._notifier = notifier
                # Closed with the waiter (a thread's waiters go when the thread ends).
                weakref.finalize(self, notifier.close)
            elif notifier is not None:
                notifier.close()

    @classmethod
    def for_queue(cls, config: QueueConfig) -> ResultWaiter:
        """This thread's waiter for ``config``'s queue (made at first use)."""
        cache: dict[tuple[int, str], ResultWaiter] | None = getattr(cls._cache, "w", None)
        if cache is None:
            cache = cls._cache.w = {}
        key = (current_pid(), os.path.realpath(config.dir))
        waiter = cache.get(key)
        if waiter is None:
            waiter = cache[key] = cls(config)
        return waiter

    @property
    def uses_inotify(self) -> bool:
        """True if answers wake this waiter as they land."""
        return self._notifier is not None

    def wait(
        self, jobid: str, timeout: float | None, poll_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> ResultRecord | None:
        """Job ``jobid``'s answer, waiting up to ``timeout`` seconds (None: forever)
        for it; None if it did not come."""
        deadline = None if timeout is None else clock() + timeout
        notifier = self._notifier
        while True:
            if notifier is not None:
                notifier.events()  # Drained before the look: what lands next wakes us.
            record = read_result(self.config, jobid)
            if record is not None:
                return record
            pause = poll_interval
            if deadline is not None:
                remaining = deadline - clock()
                if remaining <= 0:
                    return None
                pause = min(pause, remaining)
            if notifier is not None:
                notifier.wait(pause)
            else:
                time.sleep(pause)
