"""The dashboard's memory: one recent overview per queue, and the last hour of samples.

A queue keeps no history of its own (no daemon, nothing but its jobs' files), so the
throughput and backlog charts come from samples this ``dq web`` process takes while
it runs: a fresh dashboard starts with empty charts, and two dashboards each keep
their own. A sample is the overview's counts, and how many ids left ``queue/`` and
``deferred/`` since the one before (done, failed or cancelled: a queue cannot tell
them apart by names, and names are all a sample reads).

However many browsers poll, a queue is read at most once per ``max_age`` seconds:
every request within that time is answered from the last overview
(:class:`Snapshots`). That is what keeps twenty pollers from slowing a worker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ..errors import DirQueueError
from ..queue import DirQueue
from ._read import Overview, overview

__all__ = ["HISTORY_SECONDS", "Sample", "Snapshots", "chart"]

#: How far back the charts go.
HISTORY_SECONDS: Final = 3600.0


@dataclass(frozen=True)
class Sample:
    """One point of a queue's history."""

    at: float
    backlog: int
    #: Jobs that left ``queue/``/``deferred/`` per minute since the sample before.
    per_minute: float


class _Slot:
    """One queue's last overview (or why it could not be read) and its samples."""

    def __init__(self, keep: int) -> None:
        self.lock = threading.Lock()
        self.taken = float("-inf")
        self.value: Overview | None = None
        self.error: Exception | None = None
        self.samples: deque[Sample] = deque(maxlen=keep)
        self.last_sampled: Overview | None = None


class Snapshots:
    """Overviews of the dashboard's queues, each read at most once per ``max_age``."""

    def __init__(
        self,
        queues: Sequence[DirQueue],
        *,
        max_age: float = 1.0,
        sample_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queues = list(queues)
        self.max_age = max_age
        self.sample_interval = sample_interval
        self._clock = clock
        keep = int(HISTORY_SECONDS / sample_interval) + 1
        self._slots = [_Slot(keep) for _ in self.queues]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, index: int) -> Overview:
        """Queue ``index``'s overview, no older than ``max_age``; raises what reading it
        raised (a missing queue: :class:`~dirqueue.errors.QueueNotFoundError`)."""
        slot = self._slots[index]
        # One reader per queue at a time: the pollers that arrive while it reads wait
        # for its answer instead of each listing the directories again.
        with slot.lock:
            now = self._clock()
            if now - slot.taken >= self.max_age:
                try:
                    slot.value, slot.error = overview(self.queues[index]), None
                except (DirQueueError, OSError) as err:
                    slot.value, slot.error = None, err
                slot.taken = now
            if slot.value is None:
                raise slot.error or RuntimeError("no overview")
            return slot.value

    def samples(self, index: int) -> list[Sample]:
        """Queue ``index``'s samples, oldest first."""
        slot = self._slots[index]
        with slot.lock:
            return list(slot.samples)

    def sample_all(self) -> None:
        """Take one sample of every queue (the sampling thread's step)."""
        for index, slot in enumerate(self._slots):
            try:
                now_view = self.get(index)
            except (DirQueueError, OSError):
                continue  # The page says why; no point on the chart.
            with slot.lock:
                before = slot.last_sampled
                rate = 0.0
                if before is not None and now_view.taken_at > before.taken_at:
                    left = len(before.ids - now_view.ids)
                    rate = left * 60.0 / (now_view.taken_at - before.taken_at)
                if before is None or now_view.taken_at > before.taken_at:
                    slot.samples.append(Sample(now_view.taken_at, now_view.backlog, rate))
                    slot.last_sampled = now_view

    def start(self) -> None:
        """Sample every ``sample_interval`` seconds in a daemon thread until :meth:`stop`."""

        def run() -> None:
            while not self._stop.is_set():
                self.sample_all()
                self._stop.wait(self.sample_interval)

        self._thread = threading.Thread(target=run, name="dq-web-samples", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the sampling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# -- charts ----------------------------------------------------------------------------

_W: Final = 600
_H: Final = 120
_PAD_LEFT: Final = 44
_PAD_BOTTOM: Final = 18
_PAD_RIGHT: Final = 10


def _tidy(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def _ago(seconds: float) -> str:
    if seconds >= 120:
        return f"-{seconds / 60:.0f} min"
    return f"-{seconds:.0f} s"


def chart(
    points: Sequence[tuple[float, float]], *, now: float, title: str, css: str
) -> str:
    """An inline SVG line chart of ``(time, value)`` ending at ``now``: over the last
    hour, or since the first sample when the dashboard has run for less (ten seconds
    at least), so a fresh dashboard's points are not a sliver at the right edge.

    Only numbers (and the caller's fixed ``title``/``css``) go into the markup. Drawn by
    hand: a chart library would be a dependency for one polyline.
    """
    width = _W - _PAD_LEFT - _PAD_RIGHT
    height = _H - _PAD_BOTTOM
    kept = [(at, value) for at, value in points if now - at <= HISTORY_SECONDS]
    span = min(HISTORY_SECONDS, max(10.0, now - kept[0][0])) if kept else HISTORY_SECONDS
    top = max((value for _, value in kept), default=0.0)
    scale = top * 1.1 or 1.0
    coords = [
        (_PAD_LEFT + width * max(0.0, 1 - (now - at) / span), height - height * value / scale)
        for at, value in kept
    ]
    body = []
    if coords:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        area = f"{coords[0][0]:.1f},{height} {line} {coords[-1][0]:.1f},{height}"
        body.append(f'<polygon class="area" points="{area}"/>')
        body.append(f'<polyline class="line" points="{line}"/>')
        x, y = coords[-1]
        body.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"/>')
    else:
        body.append(
            f'<text class="empty" x="{_PAD_LEFT + width / 2}" y="{height / 2}"'
            ' text-anchor="middle">no samples yet: the dashboard samples while it runs</text>'
        )
    grid = "".join(
        f'<line class="grid" x1="{_PAD_LEFT}" x2="{_W - _PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        for y in (0.5, height / 2, height - 0.5)
    )
    labels = (
        f'<text class="axis" x="{_PAD_LEFT - 6}" y="10" text-anchor="end">{_tidy(scale)}</text>'
        f'<text class="axis" x="{_PAD_LEFT - 6}" y="{height}" text-anchor="end">0</text>'
        f'<text class="axis" x="{_PAD_LEFT}" y="{_H - 3}">{_ago(span)}</text>'
        f'<text class="axis" x="{_PAD_LEFT + width / 2}" y="{_H - 3}"'
        f' text-anchor="middle">{_ago(span / 2)}</text>'
        f'<text class="axis" x="{_W - _PAD_RIGHT}" y="{_H - 3}" text-anchor="end">now</text>'
    )
    return (
        f'<svg class="chart {css}" viewBox="0 0 {_W} {_H}" role="img"'
        f' aria-label="{title}"><title>{title}</title>'
        f"{grid}{''.join(body)}{labels}</svg>"
    )
