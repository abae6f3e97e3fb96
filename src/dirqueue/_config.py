"""One queue's settings, shared by the modules that implement its protocols.

:class:`dirqueue.DirQueue` builds one :class:`QueueConfig` and hands it to the
enqueue, pickup, lock and job-file modules; none of them reaches back into the
``DirQueue`` object itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._layout import Layout

__all__ = ["QueueConfig"]


@dataclass
class QueueConfig:
    """The settings of one queue (see :class:`dirqueue.DirQueue` for each)."""

    layout: Layout
    hostname: str
    data_file_mode: int = 0o666
    queue_file_mode: int = 0o666
    ordered: bool = True
    queue_fanout: bool = False
    buf_size: int = 65536
    active_file_lifetime: float = 600
    durable: bool = True
    min_free_bytes: int = 0
    lock_heartbeat: bool = True

    @property
    def dir(self) -> str:
        """The queue directory, as given."""
        return self.layout.dir
