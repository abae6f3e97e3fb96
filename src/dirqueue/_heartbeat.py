"""Keeping an active job's lock fresh from a background thread.

A lock that says ``heartbeat`` promises that its owner touches it well inside the
lock lifetime for as long as the owner lives. That promise is what lets a dequeuer on
*another* host, which cannot ask the kernel whether the owner's process exists, tell a
dead owner from a busy one: a heartbeat lock that has gone quiet for a whole lifetime
belongs to a dead process (or a dead host).
"""

from __future__ import annotations

import os
import threading

__all__ = ["Heartbeat"]


class Heartbeat:
    """Touches ``path`` every ``interval`` seconds until stopped or the file is gone."""

    def __init__(self, path: str, interval: float) -> None:
        self._path = path
        self._interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dirqueue-heartbeat {os.path.basename(path)}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                os.utime(self._path)
            except FileNotFoundError:
                return  # The lock was removed (finished, returned, or broken).
            except OSError:
                continue  # A passing network-filesystem error: try again next beat.

    def stop(self) -> None:
        """Stop touching the lock; returns once the thread has ended."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
