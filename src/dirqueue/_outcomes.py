"""What a worker's steps come to: outcomes, stop reasons, reports, the retry back-off.

The vocabulary :mod:`dirqueue.worker`, its supervisor and the ``dq`` command share, kept
apart from the worker loop so that each can import it without the others.
"""

from __future__ import annotations

import contextlib
import enum
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "JOB_OUTCOMES",
    "JobBudget",
    "JobInterrupted",
    "LocalBudget",
    "Outcome",
    "StepResult",
    "StopReason",
    "WorkerReport",
    "retry_backoff",
]

class Outcome(str, enum.Enum):
    """What one :meth:`Worker.run_once` step did."""

    FINISHED = "finished"
    """The handler returned; the job is done and gone."""
    RETRIED = "retried"
    """The handler failed; the job went back to the queue for another attempt."""
    FAILED = "failed"
    """The handler failed for the ``max_attempts``-th time; the job is in ``failed/``."""
    RETURNED = "returned"
    """A second stop signal interrupted the handler; the job went back untouched."""
    LOST = "lost"
    """The job's lock was broken while the handler ran (the worker stalled past
    ``active_file_lifetime``) and another worker took it over: this worker left it
    alone. ``StepResult.error`` names the new holder."""
    IDLE = "idle"
    """No job was waiting."""
    STOPPED = "stopped"
    """The worker is stopping (a signal, or a limit was reached); nothing was taken."""


class StopReason(str, enum.Enum):
    """Why a worker stopped taking jobs (``WorkerReport.stop_reason``).

    A ``str`` enum: each compares equal to, and serialises as, the words shown in
    ``dq server``'s summary.
    """

    QUEUE_EMPTY = "queue empty"
    """``until_empty``, and no job was waiting."""
    NJOBS_REACHED = "njobs reached"
    """The ``njobs`` allowance was used up."""
    IDLE_TIMEOUT = "idle timeout"
    """No job came for ``idle_timeout`` seconds."""
    SIGTERM = "signal SIGTERM"
    """A SIGTERM asked the worker to stop."""
    SIGINT = "signal SIGINT"
    """A SIGINT (Ctrl-C) asked the worker to stop."""
    SIGNAL = "signal"
    """A signal, as a supervisor reports it for its workers (whichever signal it was)."""
    REQUESTED = "requested"
    """:meth:`Worker.request_stop` was called."""
    PARENT_GONE = "parent gone"
    """The process that started the worker (its supervisor) has died."""
    LET_GO = "let go"
    """An elastic supervisor let the worker go: it was idle, or SIGTTOU asked for one
    fewer (it ended its job in hand first)."""

    @property
    def is_signal(self) -> bool:
        """True for a stop asked for by a signal."""
        return self in (StopReason.SIGTERM, StopReason.SIGINT, StopReason.SIGNAL)

    def __str__(self) -> str:
        return self.value


def retry_backoff(
    attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt``: ``base``
    doubled for each attempt before it, +-25% at random, never more than ``cap``."""
    if base <= 0:
        return 0.0
    exponential: float = base * 2.0 ** min(attempt - 1, 62)
    return min(cap, exponential * (0.75 + 0.5 * jitter()))


@dataclass(frozen=True)
class StepResult:
    """The result of one :meth:`Worker.run_once` step."""

    outcome: Outcome
    jobid: str | None = None
    #: The attempt this was (1 for a job's first run).
    attempt: int = 0
    #: The error, one line, when the handler failed.
    error: str | None = None
    #: Seconds the handler ran.
    seconds: float = 0.0
    #: More about the failure: the traceback, or the end of a command's stderr.
    detail: str = ""
    #: For a retried job: seconds until its retry is due (0: at once).
    retry_in: float = 0.0
    #: False for a job moved to ``failed/`` without running: its failed attempts
    #: already reached ``max_attempts`` (``attempt`` is then the last one counted).
    ran: bool = True
    #: The job's ``max_attempts`` (its own, or the worker's); 0 where not told.
    max_attempts: int = 0


@dataclass
class WorkerReport:
    """What a worker did: jobs by outcome, and why it stopped.

    Under :func:`run_workers` a report is one worker's slot: ``restarts`` counts the
    processes that died in it and were replaced (``pid`` is the last one's), and the
    counts are all of theirs together.
    """

    pid: int = field(default_factory=os.getpid)
    counts: Counter[str] = field(default_factory=Counter)
    stop_reason: str = ""
    exit_code: int = 0
    restarts: int = 0

    @property
    def jobs(self) -> int:
        """Jobs brought to an end: finished, or moved to ``failed/``.

        A job retried twice and then finished is one job and three attempts.
        """
        return self.counts[Outcome.FINISHED.value] + self.counts[Outcome.FAILED.value]

    @property
    def attempts(self) -> int:
        """Jobs taken, each attempt once (finished, retried, failed, returned or lost):
        what ``njobs`` counts."""
        return sum(self.counts[o.value] for o in JOB_OUTCOMES)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in ``dq server --json`` summaries."""
        return {
            "pid": self.pid,
            "jobs": self.jobs,
            "attempts": self.attempts,
            **{o.value: self.counts[o.value] for o in JOB_OUTCOMES},
            "stop_reason": self.stop_reason,
            "exit_code": self.exit_code,
            "restarts": self.restarts,
        }


JOB_OUTCOMES: Final = (
    Outcome.FINISHED,
    Outcome.RETRIED,
    Outcome.FAILED,
    Outcome.RETURNED,
    Outcome.LOST,
)


class JobInterrupted(BaseException):
    """Raised inside a running handler by a second stop signal.

    A ``BaseException``, like :class:`KeyboardInterrupt`, so that handlers' ``except
    Exception`` blocks let it through.
    """


class JobBudget(Protocol):
    """A count of jobs still allowed (``njobs``), shared by the workers that use it."""

    def reserve(self) -> bool:
        """Take one job's allowance; False when none is left."""

    def release(self) -> None:
        """Give back an allowance that was not used (no job was found)."""


class LocalBudget:
    def __init__(self, njobs: int) -> None:
        self.left = njobs

    def reserve(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def release(self) -> None:
        self.left += 1


# -- a forked worker's row of the shared counters -------------------------------------

#: What a forked worker counts in its row of the shared counters, in this order, then
#: its stop reason as a :data:`STOP_CODES` index, then the job it runs now: the
#: attempt, when (``time.monotonic()``, in ms) the supervisor must kill it, and the
#: time limit (ms) that deadline keeps (the job's own, or the worker's); and when
#: (``time.monotonic()``, in µs) its current or last job started and ended, and when
#: its last pickup that found nothing began, which an elastic supervisor reads to know
#: it busy or idle.
COUNTED: Final = {outcome: column for column, outcome in enumerate(JOB_OUTCOMES)}
STOP_COLUMN: Final = len(JOB_OUTCOMES)
ATTEMPT_COLUMN: Final = STOP_COLUMN + 1
DEADLINE_COLUMN: Final = STOP_COLUMN + 2
TIMEOUT_COLUMN: Final = STOP_COLUMN + 3
JOB_STARTED_COLUMN: Final = STOP_COLUMN + 4
JOB_ENDED_COLUMN: Final = STOP_COLUMN + 5
EMPTY_COLUMN: Final = STOP_COLUMN + 6
COLUMNS: Final = STOP_COLUMN + 7
STOP_CODES: Final = (None, *StopReason)
#: Room for a job id in the shared memory (they are about 40 characters).
JOBID_SIZE: Final = 255


def stop_code(reason: str) -> int:
    with contextlib.suppress(ValueError):
        return STOP_CODES.index(StopReason(reason))
    return 0


def stop_reason_of(code: int) -> str:
    reason = STOP_CODES[code] if 0 <= code < len(STOP_CODES) else None
    if reason is None:
        return ""
    # A supervisor's summary has always said only "signal", whichever it was.
    return StopReason.SIGNAL if reason.is_signal else reason
