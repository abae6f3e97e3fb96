"""What ``dq`` says on the first stop signal: one line, so nobody presses Ctrl-C twice.

A worker takes the first SIGINT or SIGTERM as "stop taking jobs" and lets the job in
hand run to its end, which may take a while; with nothing on the screen people press
Ctrl-C again and interrupt the job. :class:`StopAnnouncer` wraps whatever handler the
library has put up for these signals (the worker's, or the supervisor's) with one that
first prints a line saying so. It never replaces the library's handler: the wrapped one
runs right after, and is put back when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Final

__all__ = ["StopAnnouncer"]

#: The first signal's note, per signal.
_NOTES: Final[dict[int, str]] = {
    signal.SIGINT: "stopping after the current job; press Ctrl-C again to interrupt it",
    signal.SIGTERM: "stopping after the current job (SIGTERM); a second SIGTERM interrupts it",
}

_Handler = Callable[[int, FrameType | None], Any]


class StopAnnouncer:
    """Prints one note (through ``say``) on the first SIGINT or SIGTERM, then no more."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self.announced = False

    def announce(self, signum: int) -> None:
        """Print the note for ``signum``, if no note was printed yet."""
        if not self.announced:
            self.announced = True
            # A signal handler runs between two bytecodes of the main thread, which may
            # itself be writing to the same stream: a note lost is better than an
            # exception raised in the middle of the worker's loop.
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                self._say(_NOTES.get(signum, "stopping after the current job"))

    def wrap_installed(self) -> dict[int, Any]:
        """Wrap the Python handlers now installed for SIGINT and SIGTERM (once each).

        Returns the handlers replaced, to put back (:meth:`wrapping` does).
        """
        replaced: dict[int, Any] = {}
        for signum in _NOTES:
            current = signal.getsignal(signum)
            if callable(current) and not isinstance(current, _Announcing):
                replaced[signum] = signal.signal(signum, _Announcing(self, current))
        return replaced

    @contextlib.contextmanager
    def wrapping(self) -> Iterator[None]:
        """Within the block, the installed handlers announce the first signal."""
        replaced = self.wrap_installed()
        try:
            yield
        finally:
            for signum, handler in replaced.items():
                signal.signal(signum, handler)


class _Announcing:
    """A signal handler: the announcer's note, then the handler it wraps."""

    def __init__(self, announcer: StopAnnouncer, inner: _Handler) -> None:
        self.announcer = announcer
        self.inner = inner

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        self.announcer.announce(signum)
        return self.inner(signum, frame)
