"""The exceptions dirqueue raises.

Every error derives from :class:`DirQueueError`; the specific ones also derive from the
builtin that fits them, so ``except ValueError`` and ``except OSError`` keep working.
"""

from __future__ import annotations

import errno

__all__ = [
    "CorruptJobError",
    "DirQueueError",
    "HostAliveError",
    "InvalidMetadataError",
    "InvalidNumberError",
    "InvalidPriorityError",
    "JobLostError",
    "JobStateError",
    "NoSuchJobError",
    "QueueIOError",
    "QueueNotFoundError",
]


class DirQueueError(Exception):
    """Base class of every error raised by dirqueue."""


class InvalidMetadataError(DirQueueError, ValueError):
    """A metadata name or value breaks the on-disk format's rules.

    ``key`` is the offending metadata name.
    """

    def __init__(self, message: str, key: object = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidNumberError(DirQueueError, ValueError):
    """A number of seconds (a delay, a timeout, a lifetime) or a time that is not a
    finite number in its allowed range: ``nan``, an infinity, or out of range.

    ``name`` is the parameter, ``value`` the value given and ``allowed`` the range, in
    words.
    """

    def __init__(self, name: str, value: object, allowed: str) -> None:
        super().__init__(f"{name} must be {allowed}, not {value!r}")
        self.name = name
        self.value = value
        self.allowed = allowed


class InvalidPriorityError(DirQueueError, ValueError):
    """A priority outside 0..99, or not an integer. ``priority`` holds the value given."""

    def __init__(self, message: str, priority: object = None) -> None:
        super().__init__(message)
        self.priority = priority


class CorruptJobError(DirQueueError, ValueError):
    """A job name or control file that cannot be parsed.

    ``path`` is the file (or job id) that was rejected, when known.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class HostAliveError(DirQueueError, ValueError):
    """``repair(host=...)`` refused to free a host's locks: the host is this one, or
    one of its locks shows a fresh heartbeat (the host looks alive). ``host`` names it.
    """

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


class JobStateError(DirQueueError):
    """An operation that the job's state does not allow.

    For example ``finish()`` on a job that was only listed (read-only), or a job that was
    already finished or returned. ``jobid`` names the job.
    """

    def __init__(self, message: str, jobid: str | None = None) -> None:
        super().__init__(message)
        self.jobid = jobid


class NoSuchJobError(DirQueueError, LookupError):
    """No job by this id is where it was looked for (waiting, for a cancel; anywhere,
    for ``dq show``). ``jobid`` names it."""

    def __init__(self, message: str, jobid: str) -> None:
        super().__init__(message)
        self.jobid = jobid


class QueueIOError(DirQueueError, OSError):
    """A filesystem operation on the queue failed.

    It carries the ``errno``, ``strerror`` and ``filename`` of the underlying
    :class:`OSError`, and a message that says what dirqueue was doing. A failed enqueue
    has removed whatever it had written; a failed finish says in its message whether
    the job is still in the queue, and leaves any remains (a data file, a lock) for
    :meth:`DirQueue.repair` to collect.
    """

    def __init__(self, action: str, err: OSError, directory: str | None = None) -> None:
        filename = err.filename
        self._in_queue = False
        if directory is not None and not (isinstance(filename, str) and filename[:1] == "/"):
            # Work inside the queue goes through directory descriptors, so the error
            # names a descriptor ("5") or a name relative to one ("k"): meaningless
            # to whoever reads it. The queue directory tells them where to look.
            filename = directory
            self._in_queue = True
        OSError.__init__(self, err.errno, err.strerror, filename)
        self.action = action

    def __str__(self) -> str:
        where = f": {self.filename}" if self.filename else ""
        hint = ""
        if getattr(self, "_in_queue", False) and self.errno in (errno.EACCES, errno.EPERM):
            hint = (
                " (check that this user may write there: its owner, group and mode;"
                " a queue shared by several users wants a group directory, see"
                " docs/durability.md)"
            )
        return f"{self.action} failed: [Errno {self.errno}] {self.strerror}{where}{hint}"


class JobLostError(JobStateError):
    """The job's lock was broken while this process held it, and another worker took
    it: this process must not finish, return or update it.

    It happens when a worker stalls (stopped, swapped out, a frozen mount) for longer
    than ``active_file_lifetime``, so that its lock looked abandoned. ``jobid`` names
    the job and ``taken_by`` the new holder (``"HOST:PID"``) when it could be read.
    """

    def __init__(self, message: str, jobid: str | None = None, taken_by: str | None = None):
        super().__init__(message, jobid)
        self.taken_by = taken_by


class QueueNotFoundError(DirQueueError, FileNotFoundError):
    """The queue directory does not exist. ``filename`` is it.

    Only enqueueing makes a queue unasked: a consumer (a pickup, a wait, a worker) on
    a mistyped path would otherwise make an empty queue there and wait on it for ever.
    ``hint`` says how to go on; the default one speaks of the Python API.
    """

    def __init__(self, directory: str, hint: str = "") -> None:
        FileNotFoundError.__init__(
            self,
            errno.ENOENT,
            f"no queue at {directory!r}: "
            + (
                hint
                or "check the path, or make the queue first (DirQueue(path, create=True),"
                " DirQueue.create(), or an enqueue)"
            ),
            directory,
        )

    def __str__(self) -> str:
        return str(self.strerror)
