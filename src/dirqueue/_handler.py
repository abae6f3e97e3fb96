"""What a worker calls: checking a handler, and awaiting an async one.

:func:`check_handler` refuses, when the handler is given, what could never run a job
(not callable, or a generator function whose body a call would never run).
:class:`HandlerCaller` calls a handler on a job and, when the call gives back an
awaitable (``async def handle(job)``, or a function that returns a future), runs it to
its end on the worker's event loop: one per worker process, made at the first async
job (after any fork) and kept across jobs, so connection pools and the like live as
long as the worker; :meth:`HandlerCaller.close` closes it when the worker stops.

:class:`JobTimeoutError` is the failure of an attempt that ran past its time limit, as
the worker, a command handler and the supervisor all report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import DirQueueError

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "FailJob",
    "HandlerCaller",
    "InvalidHandlerError",
    "JobTimeoutError",
    "UnenforceableTimeoutError",
    "check_handler",
    "load_handler",
    "timed_out_message",
]


class InvalidHandlerError(DirQueueError, ValueError):
    """A handler that can never run a job: not callable, or a generator function.

    ``spec`` names it as given (``MODULE:FUNCTION``, or its ``repr``).
    """

    def __init__(self, message: str, spec: str) -> None:
        super().__init__(message)
        self.spec = spec


def timed_out_message(timeout: float) -> str:
    """The one way a timed-out attempt is described: ``timed out after 30 s``."""
    return f"timed out after {timeout:g} s"


class JobTimeoutError(DirQueueError, TimeoutError):
    """An attempt at a job ran past the worker's ``timeout`` and was stopped.

    ``timeout`` is the limit in seconds; ``detail`` what the attempt left to show (a
    command's last stderr).
    """

    def __init__(self, timeout: float, detail: str = "") -> None:
        super().__init__(timed_out_message(timeout))
        self.timeout = timeout
        self.detail = detail


class FailJob(DirQueueError):
    """Raised by a handler: this job fails now, and no attempt is left to retry it.

    For a failure no retry can mend (input that does not parse, a customer that does
    not exist): the worker moves the job to ``failed/`` at once, with this error, as
    at its ``max_attempts``-th failure. Any other exception is retried as usual.
    """


class UnenforceableTimeoutError(DirQueueError, RuntimeError):
    """A plain function's ``timeout`` that this worker cannot keep: it runs outside
    the main thread (where no alarm signal reaches it) and no supervisor watches it.
    """


class _AlarmRang(BaseException):
    # A BaseException, like JobInterrupted, so that a handler's "except Exception"
    # does not swallow its own time limit; turned into JobTimeoutError at the call.
    pass


def _call_with_alarm(handler: Callable[[Job], object], job: Job, timeout: float) -> object:
    """``handler(job)``, interrupted by SIGALRM after ``timeout`` seconds.

    Only the main thread receives signals, so only there can Python code be stopped
    from inside its process. The handler's own SIGALRM handler is put back after it.
    """
    def on_alarm(signum: int, frame: object) -> None:
        raise _AlarmRang

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return handler(job)
        finally:
            # An alarm that rings here, as the handler returns, still lands in the
            # except below: the attempt took its whole time.
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _AlarmRang:
        raise JobTimeoutError(timeout) from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def check_handler(handler: object, spec: str | None = None) -> Callable[[Job], object]:
    """``handler`` if a worker can call it with a job; :class:`InvalidHandlerError` if not."""
    name = spec if spec is not None else repr(handler)
    if not callable(handler):
        raise InvalidHandlerError(
            f"handler {name} is not callable (a {type(handler).__name__}): give a"
            " function that takes a job, like 'def handle(job): ...'",
            name,
        )
    if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
        raise InvalidHandlerError(
            f"handler {name} is a generator function (it has 'yield'), whose body a call"
            " would never run: return instead of yielding, or write 'async def' without"
            " 'yield'",
            name,
        )
    checked: Callable[[Job], object] = handler
    return checked


async def _within(awaitable: Awaitable[Any], timeout: float | None) -> Any:
    if timeout is None:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    # asyncio.wait, not wait_for: a TimeoutError the handler raises itself (a slow
    # database, say) is its own failure, not our time limit.
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise JobTimeoutError(timeout)
    return task.result()


class _LoopRunner:
    """asyncio.Runner's part we need, for Python 3.10 (which has no Runner)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        loop = self._loop
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class HandlerCaller:
    """Calls ``handler(job)``, and awaits what it returns if that is awaitable.

    ``timeout`` (seconds) limits how long an awaitable may run: past it the task is
    cancelled and :class:`JobTimeoutError` raised. A plain function's call is limited
    only with ``alarm``: SIGALRM then interrupts it, in the main thread (elsewhere
    :class:`UnenforceableTimeoutError`). Without it, the caller's supervisor kills
    the whole process instead (:func:`dirqueue.workers.run_workers`), which also stops
    a call blocked in C code that a signal does not interrupt.
    """

    def __init__(
        self,
        handler: Callable[[Job], object],
        timeout: float | None = None,
        *,
        alarm: bool = False,
    ) -> None:
        self.handler = handler
        self._alarm_allowed = alarm
        self.use_timeout(timeout)
        self._runner: Any = None

    def use_timeout(
        self, timeout: float | None, handler: Callable[[Job], object] | None = None
    ) -> None:
        """Limit the calls from now on to ``timeout`` (a job's own), calling ``handler``
        instead if one is given (a command with that time limit)."""
        if handler is not None:
            self.handler = handler
        self.timeout = timeout
        self.alarm = self._alarm_allowed and timeout is not None and not self.is_async

    def check_alarm(self) -> None:
        """Raise :class:`UnenforceableTimeoutError` if the alarm is needed in a thread
        that cannot have one: before a job is taken, so that none is taken in vain."""
        if self.alarm and threading.current_thread() is not threading.main_thread():
            raise UnenforceableTimeoutError(
                f"timeout={self.timeout:g} on {self.handler!r} cannot be kept in thread"
                f" {threading.current_thread().name!r}: a plain function is stopped by"
                " SIGALRM, which only the main thread receives. Run the worker in the"
                " main thread, under run_workers() (which kills an overdue worker), or"
                " make the handler 'async def'"
            )

    @property
    def is_async(self) -> bool:
        """True if the handler is a coroutine function (``async def``)."""
        handler = self.handler
        return inspect.iscoroutinefunction(handler) or (
            not inspect.isroutine(handler)
            and inspect.iscoroutinefunction(type(handler).__call__)
        )

    def __call__(self, job: Job) -> object:
        if self.alarm and self.timeout is not None:
            self.check_alarm()
            result = _call_with_alarm(self.handler, job, self.timeout)
        else:
            result = self.handler(job)
        if inspect.isawaitable(result):
            return self._loop_runner().run(_within(result, self.timeout))
        return result

    def _loop_runner(self) -> Any:
        if self._runner is None:
            runner_class = getattr(asyncio, "Runner", None)
            self._runner = runner_class() if runner_class is not None else _LoopRunner()
        return self._runner

    def close(self) -> None:
        """Close the event loop, if one was made (cancelling what still runs on it)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()


def load_handler(spec: str) -> Callable[[Job], object]:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted) and return the callable.

    ``MODULE`` is found on ``sys.path`` as it stands (the installed packages and
    ``PYTHONPATH``), never in the current directory unless the caller put it there: a
    server is often started from the queue directory, where another user of the queue
    could plant a ``tasks.py`` that would then run in its place, with the server's
    privileges (what Python's own ``-P`` guards against). A handler in a file is named
    by its path instead: ``./tasks.py:handle`` or ``/srv/jobs/tasks.py:handle``.
    """
    module_name, sep, attr = spec.rpartition(":")  # A file's path may hold a ":".
    if not sep or not module_name or not attr:
        raise ValueError(
            f"handler {spec!r} is not MODULE:FUNCTION: write it like 'mypkg.tasks:handle'"
        )
    obj: Any = _import_file(module_name) if _is_file(module_name) else _import(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"module {module_name!r} has no {attr!r}: check the function name"
            ) from None
    return check_handler(obj, repr(spec))


def _is_file(module_name: str) -> bool:
    """True if a handler's module is given as a file's path (``./tasks.py``)."""
    return module_name.endswith(".py") or "/" in module_name


def _import(module_name: str) -> Any:
    """Import ``module_name`` from ``sys.path`` as it stands."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import handler module {module_name!r} ({err}): check the name and"
            " that it is installed or on PYTHONPATH (the current directory is not"
            f" searched: for a file there, write ./{module_name.replace('.', '/')}.py:...)"
        ) from err


def _import_file(path: str) -> Any:
    """Load the handler module at ``path`` (the user named the file: it is theirs)."""
    name = os.path.splitext(os.path.basename(path))[0]
    if not path.endswith(".py") or not name.isidentifier():
        raise ValueError(
            f"handler file {path!r} is not a Python file: name a file like ./tasks.py"
        )
    known = sys.modules.get(name)
    if known is not None:
        if os.path.realpath(getattr(known, "__file__", None) or "") == os.path.realpath(path):
            return known  # This very file, loaded before.
        raise ValueError(
            f"handler file {path!r} would be module {name!r}, which is imported already:"
            " give the file another name"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ValueError(f"cannot import handler file {path!r}: no such file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # As an import does: dataclasses and pickle look there.
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
