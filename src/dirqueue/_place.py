"""Where a job is, by its names alone: ``queue/`` (and its fan-out directories),
``active/``, ``deferred/`` and ``waiting/``.

The one look used by a result's status (``stats.job_place``), by a unique job's key
(is the job that holds it still there?) and by a dependant (are its parents done?).
A few ``lstat`` calls and no listing, so it costs the same in a queue of a million jobs.
"""

from __future__ import annotations

import os
from typing import Literal

from ._config import QueueConfig
from ._layout import Layout

__all__ = ["Place", "listed_jobs", "place_of"]

Place = Literal["queued", "active", "deferred", "waiting"]


def place_of(config: QueueConfig, jobid: str) -> Place | None:
    """Where job ``jobid`` is now, or None if it is in none of those directories
    (finished, failed, cancelled, or never was)."""
    layout = config.layout
    fanouts: tuple[str | None, ...] = (None, Layout.DIRQUEUE_ONLY)
    if config.queue_fanout:
        fanouts += tuple(Layout.FANOUT_DIGITS)

    def queued() -> Literal["queued", "active"] | None:
        for fanout in fanouts:
            if os.path.lexists(layout.queue_path(jobid, fanout)):
                return "active" if os.path.lexists(layout.active_path(jobid)) else "queued"
        return None

    def parked() -> Literal["deferred", "waiting"] | None:
        if os.path.lexists(layout.waiting_path(jobid)):
            return "waiting"
        if os.path.lexists(layout.deferred_path(jobid)):
            return "deferred"
        return None

    # A job moves only from waiting/ or deferred/ into queue/ (and back to deferred/
    # for a retry, while it is held), so looking at the parked ones, then queue/, then
    # the parked ones again sees a job that moves while we look in one of them.
    return parked() or queued() or parked()


def listed_jobs(config: QueueConfig) -> set[str]:
    """The names in ``waiting/``, ``deferred/`` and ``queue/`` (and its fan-out
    directories), by listing them: the confirmation of a job that :func:`place_of`
    found nowhere.

    A look by name can be answered from an NFS client's cache of misses (a negative
    lookup cache, for its attribute-cache time): a name looked up just before
    another host renamed the job there (two workers promoting one dependant) stays
    missing on this host for that long. A listing asks the server. Parked ones, then
    queue/, then the parked ones again, as :func:`place_of` looks.
    """
    layout = config.layout
    queue_dirs = [layout.queue_dir]
    if config.queue_fanout:
        queue_dirs += [os.path.join(layout.queue_dir, d) for d in Layout.FANOUT_DIGITS]
    names: set[str] = set()
    for directory in (
        layout.waiting_dir, layout.deferred_dir, *queue_dirs, layout.waiting_dir,
        layout.deferred_dir,
    ):  # fmt: skip
        try:
            names.update(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return names
