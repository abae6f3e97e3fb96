"""``dq cancel`` and ``dq empty``: delete waiting jobs without running them.

Each is one library call (:meth:`DirQueue.cancel` per job, :meth:`DirQueue.empty`),
which takes a job's lock as a pickup does: a job a live worker holds is never deleted.
The ids deleted go to standard output, one a line, as ``dq purge`` prints them.
"""

from __future__ import annotations

from ..errors import JobStateError, NoSuchJobError
from ..stats import queue_stats, require_queue
from ._commands import EXIT_FAILURE, EXIT_OK, Context

__all__ = ["cmd_cancel", "cmd_empty"]


def _jobs(count: int) -> str:
    return f"{count} job{'' if count == 1 else 's'}"


def cmd_cancel(ctx: Context) -> int:
    """``dq cancel JOBID...``: :meth:`DirQueue.cancel` each; exit 1 if one could not be.

    Every id is tried, like ``rm`` with several files: one that is running or gone does
    not keep the others from being cancelled.
    """
    queue = ctx.queue()
    require_queue(queue)
    done = 0
    refused = 0
    for jobid in dict.fromkeys(ctx.args.jobids):
        try:
            queue.cancel(jobid)
        except (JobStateError, NoSuchJobError) as err:
            ctx.say(str(err))
            refused += 1
            continue
        ctx.line(jobid)
        ctx.out.flush()
        done += 1
    if done:
        # (Nothing cancelled: the errors said it all, one line each.)
        ctx.say(f"cancelled {_jobs(done)}" + (f", {refused} not" if refused else ""))
    return EXIT_FAILURE if refused else EXIT_OK


def cmd_empty(ctx: Context) -> int:
    """``dq empty``: :meth:`DirQueue.empty`; the jobs left to their workers are named."""
    queue = ctx.queue()
    require_queue(queue)
    done = queue.empty()
    for jobid in done:
        ctx.line(jobid)
    held = queue_stats(queue).active
    left = f"; {_jobs(held)} held by workers left to finish" if held else ""
    ctx.say(f"cancelled {_jobs(len(done))}{left}")
    return EXIT_OK
