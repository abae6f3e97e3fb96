"""The lines ``dq stats``, ``dq show`` and ``dq limit list --json`` print about groups'
limits (:mod:`dirqueue.limits`): each group's limits and who holds its slots now.
"""

from __future__ import annotations

from typing import IO, Any

from .. import limits
from ..queue import DirQueue
from ._output import escape_controls

__all__ = ["group_lines", "groups_json", "print_group_lines"]


def groups_json(queue: DirQueue) -> list[dict[str, Any]]:
    """Every limited group: its limits, its slots' holders, its recent starts."""
    found = []
    for limit in limits.list_limits(queue):
        status = limits.group_status(queue, limit.group)
        found.append({
            "group": limit.group,
            "concurrency": limit.concurrency,
            "rate": None if limit.rate is None else
            {"count": limit.rate[0], "seconds": limit.rate[1]},
            "holders": [
                {"slot": h.slot, "owner": h.owner, "age": round(h.age, 3),
                 "verdict": h.verdict}
                for h in status.holders
            ],
            "recent_starts": status.recent_starts,
        })
    return found


def group_lines(queue: DirQueue, only: str | None = None) -> list[tuple[str, str]]:
    """``(label, text)`` rows for each limited group (or group ``only``): its limits,
    and who holds its slots now."""
    rows = []
    for limit in limits.list_limits(queue):
        if only is not None and limit.group != only:
            continue
        status = limits.group_status(queue, limit.group)
        text = limit.describe()
        if limit.concurrency is not None:
            held = ", ".join(f"{h.owner} ({h.verdict})" for h in status.holders)
            text += f"; {len(status.holders)} running" + (f": {held}" if held else "")
        if status.recent_starts is not None and limit.rate is not None:
            text += f"; {status.recent_starts} started in the last {limit.rate[1]:g}s"
        rows.append((f"group {limit.group}", text))
    return rows


def print_group_lines(queue: DirQueue, out: IO[str]) -> None:
    """The group rows, for ``dq stats``'s table."""
    for label, text in group_lines(queue):
        out.write(escape_controls(f"{label}  {text}") + "\n")
