"""``dq limit``: groups' limits in a queue (set, list, clear).

Each action is one library call (:mod:`dirqueue.limits`).
"""

from __future__ import annotations

from .. import limits
from ..stats import require_queue
from ._commands import EXIT_FAILURE, EXIT_OK, Context, UsageError
from ._groups import groups_json
from ._output import print_json

__all__ = ["cmd_limit"]


def cmd_limit(ctx: Context) -> int:
    """``dq limit set GROUP [N] [--rate M/UNIT]``, ``dq limit list``, ``dq limit clear
    GROUP``."""
    args = ctx.args
    queue = ctx.queue()
    require_queue(queue)
    if args.action == "list":
        if args.group is not None or args.count is not None or args.rate is not None:
            raise UsageError("dq limit list takes no GROUP, N or --rate")
        found = limits.list_limits(queue)
        if args.json:
            print_json(groups_json(queue), ctx.out)
        else:
            width = max((len(limit.group) for limit in found), default=0)
            for limit in found:
                ctx.line(f"{limit.group.ljust(width)}  {limit.describe()}")
        return EXIT_OK
    if args.group is None:
        raise UsageError(f"dq limit {args.action} needs a GROUP, e.g. dq limit {args.action} gpu")
    if args.action == "clear":
        if args.count is not None or args.rate is not None:
            raise UsageError("dq limit clear takes only a GROUP")
        if not limits.clear_limit(queue, args.group):
            ctx.say(f"group {args.group} has no limits")
            return EXIT_FAILURE
        return EXIT_OK
    if args.count is None and args.rate is None:
        raise UsageError("dq limit set needs N (at a time), --rate M/UNIT, or both")
    limit = limits.set_limit(queue, args.group, args.count, rate=args.rate)
    ctx.say(f"group {limit.group}: {limit.describe()}")
    return EXIT_OK
