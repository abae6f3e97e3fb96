"""Coordination without a server: periodic jobs (unique jobs and dependencies are the
engine's, as ``enqueue_*(unique_key=..., depends_on=...)``).

A layer above the engine: it reaches a queue only through the tasks it is given
(``Task.submit``, a unique enqueue) and the engine's key files (:mod:`dirqueue._keys`).
See ``docs/coordination.md``.

    q = TaskQueue("spool/q")

    @q.periodic(every="5m")
    def cleanup(slot: float) -> None: ...

Workers: ``dq server --dir spool/q --periodic myapp.jobs``, or
``Worker(q, TaskHandler(q, ["myapp.jobs"]),
on_step=PeriodicOfferer(q, periodic_tasks()).tick).run()``.
"""

from ._periodic import PeriodicOfferer, PeriodicTask, slot_key, slot_of

PeriodicOfferer.__module__ = __name__

__all__ = ["PeriodicOfferer", "PeriodicTask", "slot_key", "slot_of"]
