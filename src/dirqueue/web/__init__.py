"""``dq web``: a dashboard of queues in a browser (the optional ``web`` extra).

A layer above the engine: it reads queues through the engine's listings and judge,
and writes only through :class:`~dirqueue.failed.FailedStore` (requeue, purge) and
:meth:`~dirqueue.queue.DirQueue.cancel`. Built on the standard library alone (see
docs/design.md for why); docs/web.md shows it.
"""

from __future__ import annotations

from ._command import EPILOG, add_arguments, run

__all__ = ["EPILOG", "add_arguments", "run"]
