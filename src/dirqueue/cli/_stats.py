"""``dq stats`` beyond one table: a live view (``--watch``) and Prometheus' text format.

:func:`snapshot` reads a queue once (the counts of :func:`dirqueue.queue_stats` and who
holds the active jobs); :func:`prometheus_text` writes it in the text exposition format
that node_exporter's textfile collector reads; :class:`Watcher` turns successive
snapshots into the lines of ``dq stats --watch``, with rates.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .._servers import read_servers
from ..stats import STATES, QueueStats, list_jobs, tally
from ._output import escape_controls, format_age

if TYPE_CHECKING:
    from ..queue import DirQueue

__all__ = ["Snapshot", "Watcher", "prometheus_text", "snapshot"]

#: What ``dq stats`` counts, in the order it shows them.
COUNTED: Final = (*STATES, "failed")


@dataclass(frozen=True)
class Snapshot:
    """A queue read once: counts by state, active jobs by the host holding them, and
    the workers of supervising servers by host (idle ones too: from ``servers/``)."""

    directory: str
    taken_at: float
    stats: QueueStats
    active_by_host: dict[str, int] = field(default_factory=dict)
    workers_by_host: dict[str, int] = field(default_factory=dict)

    def count(self, state: str) -> int:
        """Jobs in ``state`` (``queued``, ``active``, ``stale`` or ``failed``)."""
        value: int = getattr(self.stats, state)
        return value

    def as_dict(self) -> dict[str, Any]:
        """``dq stats --json``'s object, with ``"active_by_host"`` and
        ``"workers_by_host"`` added."""
        return {
            **self.stats.as_dict(),
            "active_by_host": dict(self.active_by_host),
            "workers_by_host": dict(self.workers_by_host),
        }


def snapshot(queue: DirQueue, *, now: float | None = None) -> Snapshot:
    """Read ``queue`` once: one pass over ``queue/`` and ``active/`` (as ``queue_stats``)."""
    when = time.time() if now is None else now
    infos = list(list_jobs(queue, now=when))
    stats = tally(queue, infos, now=when)
    hosts = Counter(i.job.active_host or "?" for i in infos if i.state == "active")
    workers: Counter[str] = Counter()
    for server in read_servers(queue.config):
        workers[server.host] += server.workers
    return Snapshot(
        os.path.abspath(queue.dir), when, stats, dict(sorted(hosts.items())),
        dict(sorted(workers.items())),
    )


# -- Prometheus ----------------------------------------------------------------------


def _label(value: str) -> str:
    # The exposition format's escapes for a label value: backslash, quote, newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snap: Snapshot) -> str:
    """``snap`` in Prometheus' text exposition format (version 0.0.4), with HELP/TYPE.

    For node_exporter's textfile collector: write it to a temporary file and rename it
    into the collector's directory, so that it never reads half of one.
    """
    queue = f'queue="{_label(snap.directory)}"'
    lines = [
        "# HELP dirqueue_jobs Jobs in the queue directory, by state.",
        "# TYPE dirqueue_jobs gauge",
    ]
    lines += [f'dirqueue_jobs{{{queue},state="{s}"}} {snap.count(s)}' for s in COUNTED]
    oldest = snap.stats.oldest_waiting_age
    lines += [
        "# HELP dirqueue_oldest_waiting_seconds How long the oldest waiting job has waited"
        " (0 when none waits).",
        "# TYPE dirqueue_oldest_waiting_seconds gauge",
        f"dirqueue_oldest_waiting_seconds{{{queue}}} {0.0 if oldest is None else oldest:.3f}",
        "# HELP dirqueue_results Answers kept in results/ (done or failed, not expired).",
        "# TYPE dirqueue_results gauge",
        f"dirqueue_results{{{queue}}} {snap.stats.results}",
        "# HELP dirqueue_active_jobs Jobs held by a worker, by the worker's host.",
        "# TYPE dirqueue_active_jobs gauge",
    ]
    lines += [
        f'dirqueue_active_jobs{{{queue},host="{_label(host)}"}} {n}'
        for host, n in snap.active_by_host.items()
    ]
    lines += [
        "# HELP dirqueue_workers Workers of the servers at work on the queue, busy or idle,"
        " by host.",
        "# TYPE dirqueue_workers gauge",
    ]
    lines += [
        f'dirqueue_workers{{{queue},host="{_label(host)}"}} {n}'
        for host, n in snap.workers_by_host.items()
    ]
    return "\n".join(lines) + "\n"


# -- dq stats --watch ----------------------------------------------------------------


class Watcher:
    """Lines of ``dq stats --watch``: counts, their change per second, who holds jobs."""

    def __init__(self) -> None:
        self._previous: Snapshot | None = None

    def _rates(self, snap: Snapshot) -> dict[str, float] | None:
        before = self._previous
        if before is None or snap.taken_at <= before.taken_at:
            return None
        elapsed = snap.taken_at - before.taken_at
        return {s: (snap.count(s) - before.count(s)) / elapsed for s in COUNTED}

    def table(self, snap: Snapshot) -> list[str]:
        """The refreshed block, for a terminal: one row per count, with its rate."""
        rates = self._rates(snap)
        self._previous = snap
        width = max(len(s) for s in (*COUNTED, "oldest waiting", "workers by host"))
        rows = []
        for state in COUNTED:
            rate = "" if rates is None else f"  {rates[state]:+8.1f}/s"
            rows.append(f"{state.ljust(width)}  {snap.count(state):>8}{rate}")
        oldest = format_age(snap.stats.oldest_waiting_age)
        rows.append(f"{'oldest waiting'.ljust(width)}  {oldest:>8}")
        workers = ", ".join(f"{h} {n}" for h, n in snap.active_by_host.items()) or "-"
        rows.append(f"{'held by host'.ljust(width)}  {escape_controls(workers)}")
        running = ", ".join(f"{h} {n}" for h, n in snap.workers_by_host.items()) or "-"
        rows.append(f"{'workers by host'.ljust(width)}  {escape_controls(running)}")
        return rows

    def plain(self, snap: Snapshot) -> str:
        """One line per refresh, for a pipe or a log file."""
        rates = self._rates(snap)
        self._previous = snap
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(snap.taken_at))
        parts = [stamp]
        for state in COUNTED:
            rate = "" if rates is None else f" ({rates[state]:+.1f}/s)"
            parts.append(f"{state}={snap.count(state)}{rate}")
        parts.append(f"oldest={format_age(snap.stats.oldest_waiting_age).replace(' ', '')}")
        held = ",".join(f"{h}:{n}" for h, n in snap.active_by_host.items()) or "-"
        parts.append(f"held_by={escape_controls(held)}")
        running = ",".join(f"{h}:{n}" for h, n in snap.workers_by_host.items()) or "-"
        parts.append(f"workers={escape_controls(running)}")
        return " ".join(parts)
