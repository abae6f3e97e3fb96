"""Keeping active jobs' locks fresh from one background thread per process.

A lock that says ``heartbeat`` promises that its owner touches it well inside the
lock lifetime for as long as the owner lives. That promise is what lets a dequeuer on
*another* host, which cannot ask the kernel whether the owner's process exists, tell a
dead owner from a busy one: a heartbeat lock that has gone quiet for a whole lifetime
belongs to a dead process (or a dead host).

One thread serves every job the process holds. A thread per job would cost a thread
start and join on each pickup and finish, which is most of the time of a pickup on a
local disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["Heartbeat"]

#: The shortest interval between two touches of one lock.
_MIN_INTERVAL = 0.05


class Heartbeat:
    """Calls ``touch()`` every ``interval`` seconds until stopped or ``touch`` returns
    False (the lock is gone, or no longer ours: never touch someone else's)."""

    __slots__ = ("interval", "next_due", "touch")

    def __init__(self, touch: Callable[[], bool], interval: float) -> None:
        self.touch = touch
        self.interval = interval = max(_MIN_INTERVAL, interval)
        self.next_due = time.monotonic() + interval
        # Made and stopped once per job taken: the beater looked up without a call.
        (_state.get("beater") or _beater()).add(self)

    def stop(self) -> None:
        """Stop touching the lock. Once this returns, no touch of it is under way."""
        (_state.get("beater") or _beater()).remove(self)


class _Beater:
    """The thread that touches every registered lock when it is due."""

    def __init__(self) -> None:
        # Touches happen with the lock held, so remove() waits out one under way.
        # add() and remove() (once per job) take the plain lock: the same lock as the
        # condition's, without the Condition's own Python-level __enter__ and __exit__.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._beats: set[Heartbeat] = set()
        self._thread: threading.Thread | None = None
        #: Set by the thread as it ends (Thread.is_alive() costs several calls a job).
        self._running = False
        #: When the thread will next look on its own (inf: when woken).
        self._wake_at = float("inf")

    def add(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.add(beat)
            if not self._running:
                self._thread = threading.Thread(
                    target=self._run, name="dirqueue-heartbeat", daemon=True
                )
                self._running = True
                try:
                    self._thread.start()
                except BaseException:
                    self._running = False
                    raise
            elif beat.next_due < self._wake_at:
                # Most jobs are added after the thread's next look is due anyway: no
                # need to wake it (a context switch on every pickup).
                self._cond.notify()

    def remove(self, beat: Heartbeat) -> None:
        with self._lock:
            self._beats.discard(beat)

    def _run(self) -> None:
        try:
            self._beat()
        finally:
            self._running = False  # Only if touch() raised what it must not: start anew.

    def _beat(self) -> None:
        with self._cond:
            while True:
                if not self._beats:
                    self._wake_at = float("inf")
                    self._cond.wait()
                    continue
                now = time.monotonic()
                first = min(beat.next_due for beat in self._beats)
                if first > now:
                    self._wake_at = first
                    self._cond.wait(first - now)
                    continue
                for beat in [b for b in self._beats if b.next_due <= now]:
                    beat.next_due = now + beat.interval
                    try:
                        if not beat.touch():
                            # The lock was removed (finished, returned, or broken as
                            # stale and perhaps re-taken by another worker).
                            self._beats.discard(beat)
                    except OSError:
                        pass  # A passing network-filesystem error: try again next beat.


_state: dict[str, _Beater] = {}


def _beater() -> _Beater:
    beater = _state.get("beater")
    if beater is None:
        beater = _state.setdefault("beater", _Beater())
    return beater


def _forget_after_fork() -> None:
    # A child holds none of its parent's jobs, and the parent's thread (and perhaps
    # its lock, if the fork came mid-touch) did not come along.
    _state.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
