"""A shell command as a worker's handler: its environment, its stderr, its exit status.

:class:`CommandHandler` runs ``argv + ["/dev/fd/N"]`` for each job (``dq server --
CMD`` and ``dq deque``), N a descriptor of the job's data file; :func:`job_environment`
is what the command learns about its job;
:class:`CommandFailedError` is how a non-zero exit becomes the job's failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from . import _fs
from ._handler import JobTimeoutError
from ._procs import can_see, live_members, reap_orphans
from .errors import DirQueueError
from .failed import attempts_of

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "DEFAULT_KILL_GRACE",
    "CommandFailedError",
    "CommandHandler",
    "job_environment",
    "terminate_group",
]

#: How long a command gets to exit after SIGTERM before it is killed.
DEFAULT_KILL_GRACE: Final = 5.0
#: How much of a failed command's stderr the failed-job record keeps.
_STDERR_TAIL: Final = 4096
#: prctl(2): the signal a process gets when the thread that started it exits (Linux).
_PR_SET_PDEATHSIG: Final = 1
#: The commands this process runs now: never reaped by anyone but their ``Popen``.
_running: set[int] = set()
_running_guard = threading.Lock()


class CommandFailedError(DirQueueError):
    """A job's command exited non-zero (or was killed by a signal).

    ``returncode`` is its exit status (negative: the signal); ``detail`` the end of
    what it wrote to stderr.
    """

    def __init__(self, argv: Sequence[str], returncode: int, detail: str = "") -> None:
        if returncode < 0:
            how = f"was killed by {_signal_name(-returncode)}"
        else:
            how = f"exited {returncode}"
        super().__init__(f"command {_shell_words(argv)} {how}")
        self.argv = list(argv)
        self.returncode = returncode
        self.detail = detail


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _shell_words(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


_ENV_NAME_RE: Final = re.compile(r"[^A-Za-z0-9_]")


def job_environment(job: Job, attempt: int, data: str | None = None) -> dict[str, str]:
    """The environment variables a job's command gets (besides the worker's own).

    ``DQ_JOBID``, ``DQ_DIR`` (an absolute path, so a command that changes directory
    still finds it), ``DQ_DATA`` (``data``: what the command is given to read the data
    by, ``/dev/fd/N`` from :class:`CommandHandler`; the data file's absolute path if
    None), ``DQ_ATTEMPT``, ``DQ_METADATA`` (all metadata as a JSON object) and
    ``DQ_META_<NAME>`` per item: the name upper-cased, characters other
    than letters, digits and ``_`` turned into ``_``. Names that come out the same
    (``a-b`` and ``A_B``) would overwrite each other in an order no one chose; the
    first in sorted order (code point order: ``A_B`` before ``a-b``) gets the variable,
    and the others are only in ``DQ_METADATA``.
    """
    env = {
        "DQ_JOBID": job.jobid,
        "DQ_DIR": os.path.abspath(job.queue_dir),
        "DQ_DATA": data if data is not None else os.path.abspath(job.get_data_path()),
        "DQ_ATTEMPT": str(attempt),
        "DQ_METADATA": json.dumps(job.metadata, ensure_ascii=False, sort_keys=True),
    }
    for key in sorted(job.metadata):
        env.setdefault("DQ_META_" + _ENV_NAME_RE.sub("_", key).upper(), job.metadata[key])
    return env


class CommandHandler:
    """A handler that runs ``argv + ["/dev/fd/N"]`` for each job.

    N is a descriptor of the job's data file, open for reading in the command (and in
    what it starts that inherits it): reading ``/dev/fd/N`` reads the job's data
    whatever happens to the file's name meanwhile. ``DQ_DATA`` says the same
    (:func:`job_environment`).

    The command runs in a process group of its own, so a Ctrl-C at the terminal reaches
    the worker (which lets the job finish) and not the command, and it dies with its
    worker (see :func:`_tied_to`): a job's processes never run on beside the run that
    takes the job next. Its stdout is the worker's; its stderr is passed through and
    the last few KB kept for the failed-job record. Exit status 0 finishes the job;
    anything else raises :class:`CommandFailedError`.

    With a ``timeout`` (seconds), a command still running past it is stopped with its
    whole process group (what it started in the background too): SIGTERM, then SIGKILL
    to whatever is left after ``kill_grace`` seconds; the attempt fails with
    :class:`JobTimeoutError` ("timed out after N s").

    With ``capture_stdout``, the command's stdout (up to :data:`STDOUT_LIMIT` bytes) is
    the handler's return value, which a worker keeping answers keeps as the job's
    result, instead of going to the worker's stdout.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        capture_stdout: bool = False,
    ) -> None:
        if not argv:
            raise ValueError("a command handler needs a command to run")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
        if not kill_grace >= 0:
            raise ValueError(f"kill_grace must be 0 or more seconds, not {kill_grace}")
        self.argv = list(argv)
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.capture_stdout = capture_stdout

    def __repr__(self) -> str:
        if self.timeout is None:
            return f"CommandHandler({self.argv!r})"
        return f"CommandHandler({self.argv!r}, timeout={self.timeout!r})"

    def with_timeout(self, timeout: float | None) -> CommandHandler:
        """The same command with another ``timeout``."""
        return CommandHandler(
            self.argv, timeout=timeout, kill_grace=self.kill_grace,
            capture_stdout=self.capture_stdout,
        )

    def __call__(self, job: Job) -> bytes | None:
        attempt = attempts_of(job.control) + 1
        # The command is handed the data file open, as /dev/fd/N, never its path: a path
        # is followed when the command opens it, and by then another user of the queue
        # may have swapped the name for a symlink to a file only we may read (no check
        # of ours before the command starts can close that gap). The descriptor is the
        # job's own regular file, reached without following a symlink (CorruptJobError
        # otherwise, and the command never runs); what the name holds later is no matter.
        with job.open_data() as data:
            fd = data.fileno()
            argv = [*self.argv, _fd_path(fd)]
            env = {**os.environ, **job_environment(job, attempt, _fd_path(fd))}
            try:
                tie = _tied_to(os.getpid())
                with _running_guard:
                    proc = subprocess.Popen(  # noqa: S603 - running the user's command is the point
                        argv,
                        env=env,
                        stderr=subprocess.PIPE,
                        stdout=subprocess.PIPE if self.capture_stdout else None,
                        pass_fds=(fd,),
                        # Only system calls run there (_tied_to), which no thread can upset.
                        preexec_fn=tie,  # noqa: PLW1509
                    )
                    _running.add(proc.pid)
            except OSError as err:
                raise CommandFailedError(argv, 127, str(err)) from err
        tail = bytearray()
        pump = threading.Thread(target=_pump_stderr, args=(proc.stderr, tail), daemon=True)
        pump.start()
        out = bytearray()
        collector = None
        if proc.stdout is not None:  # Read as it comes: a full pipe would stall it.
            collector = threading.Thread(target=_collect, args=(proc.stdout, out), daemon=True)
            collector.start()
        timed_out = False
        try:
            try:
                returncode = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = terminate_group(proc, self.kill_grace)
        finally:
            if proc.poll() is None:
                # Interrupted (a second stop signal): stop the command too.
                terminate_group(proc, self.kill_grace)
            pump.join(timeout=self.kill_grace or DEFAULT_KILL_GRACE)
            _reap_after(proc)
            if collector is not None:
                collector.join(timeout=self.kill_grace or DEFAULT_KILL_GRACE)
        detail = tail.decode("utf-8", errors="replace")
        if timed_out and self.timeout is not None:
            raise JobTimeoutError(self.timeout, detail)
        if returncode != 0:
            raise CommandFailedError(argv, returncode, detail)
        return bytes(out) if self.capture_stdout else None


#: The most of a command's stdout kept as its answer (``capture_stdout``).
STDOUT_LIMIT: Final = 16 << 20


def _collect(stream: Any, out: bytearray) -> None:
    with stream:
        for chunk in iter(lambda: stream.read1(65536), b""):
            out.extend(chunk[: max(0, STDOUT_LIMIT - len(out))])


def _fd_path(fd: int) -> str:
    """The name under which a process that has descriptor ``fd`` opens its file anew
    (on Linux a fresh open of the very file, wherever its name has gone)."""
    return f"/dev/fd/{fd}"


def _pump_stderr(stream: Any, tail: bytearray) -> None:
    out = getattr(sys.stderr, "buffer", None)
    with stream:
        for chunk in iter(lambda: stream.read1(65536), b""):
            if out is not None:
                with contextlib.suppress(OSError, ValueError):
                    out.write(chunk)
                    out.flush()
            tail.extend(chunk)
            del tail[:-_STDERR_TAIL]


def _tied_to(worker: int) -> Callable[[], None]:
    """What a command's process does between fork and exec, so that it never outlives
    its worker's hold on the job.

    - It dies (SIGKILL) when the worker does: a worker killed with SIGKILL can stop
      nothing, and a restarted worker would run the job again beside it. (Linux sends
      this when the *thread* that started it exits; that thread waits for it.)
    - Its process group is its own (a timeout stops the group, and the worker is not in
      it). Where the worker leads a session (every worker ``dq server`` forks; a service
      or container started so), the group stays in that session: then what the command
      starts carries the worker's session id after the worker died, and the stale-lock
      judge holds the job while any of it lives, and a supervisor kills it before the
      job runs again (:mod:`dirqueue._procs`). Elsewhere (a worker in a terminal's
      session) it gets a session of its own, out of the terminal's reach.
    """
    in_my_session = os.getsid(0) == worker
    prctl: Any = None
    if sys.platform.startswith("linux"):
        # Looked up now: between fork and exec no lookup should allocate or lock.
        with contextlib.suppress(OSError, AttributeError):
            prctl = _fs.libc().prctl

    def between_fork_and_exec() -> None:
        if in_my_session:
            os.setpgid(0, 0)
        else:
            os.setsid()
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != worker:
            # The worker died before the request was made: what it would have sent.
            os.kill(os.getpid(), signal.SIGKILL)

    return between_fork_and_exec


def _reap_after(proc: subprocess.Popen[bytes]) -> None:
    """Forget a command that has ended; as PID 1 (a container without an init), reap
    what it left: its orphans are ours, and dead ones would pile up as zombies."""
    with _running_guard:
        if proc.returncode is not None:
            _running.discard(proc.pid)
        reap_orphans(keep=_running)


def terminate_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """Stop ``proc`` and every process in its group; return its exit status.

    SIGTERM to the group, then SIGKILL to whatever of it is left after ``grace``
    seconds. The group outlives its leader when the command started something in the
    background (``sleep 1000 & ...``), and that must not go on running after the
    attempt ended: so after the leader exits we keep looking at the group, not only at
    the leader. Its id cannot be reused while any member lives.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    return proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs. A zombie does not: ``killpg``
    finds it until its parent reaps it (as PID 1 that is us, and we reap here), but it
    runs nothing, and waiting for it would make every stop last the whole grace."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not can_see():
        return True
    with _running_guard:
        reap_orphans(keep=_running)
    return bool(live_members(pgrp=pgid))


def one_line(err: BaseException) -> str:
    """An error as one line: a command's own message, or ``Type: message``."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    name = type(err).__name__
    if isinstance(err, (CommandFailedError, JobTimeoutError)):
        return first
    return f"{name}: {first}" if first else name
