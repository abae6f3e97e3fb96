"""What one poll of a waiting worker costs as queue/ grows deep.

A worker in wait_for_queued_job() on a host whose peers' enqueues raise no inotify
event calls pickup once per poll_interval. This fills a queue with DEPTH jobs, each
locked by a live Perl worker on another host (so no poll can take one: the deep queue
a waiting worker meets when every job is busy), lets the queue settle, and times
POLLS pickups POLL seconds apart, counting the listings of queue/ (scan()) and the
jobs tried (each a stat of the control file, an lstat and a read of the lock). Depth 0
is the idle queue. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/poll_cost.py [--dir PARENT] [--depths 0,1000,10000] [--polls 8]

--dir puts the queue on a network filesystem (e.g. /mnt/fsp-nfs-h1); the default is
a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

from dirqueue import DirQueue, _index, _pickup

_counts = {"scans": 0, "tried": 0}
_scan = _index.scan
_try = _pickup.Picker.try_pickup


def _counting_scan(*args: Any, **kwargs: Any) -> Any:
    _counts["scans"] += 1
    return _scan(*args, **kwargs)


def _counting_try(self: _pickup.Picker, entry: Any) -> Any:
    _counts["tried"] += 1
    return _try(self, entry)


_index.scan = _counting_scan  # type: ignore[assignment]  # counting, not changing
_pickup.Picker.try_pickup = _counting_try  # type: ignore[method-assign]  # counting


def measure(parent: str, depth: int, polls: int, poll: float) -> dict[str, Any]:
    qdir = tempfile.mkdtemp(prefix="dq-poll-", dir=parent)
    try:
        q = DirQueue(qdir, durable=False)
        q.create()
        active = os.path.join(qdir, "active")
        for i in range(depth):
            jobid = q.enqueue_string(f"job-{i}")
            with open(os.path.join(active, jobid), "w") as fh:
                fh.write("otherhost\n4242\n")  # A Perl worker's lock, from elsewhere.
        time.sleep(2.5)  # Past the listing cache's mtime-trust window.
        waiter = DirQueue(qdir)
        times = []
        _counts.update(scans=0, tried=0)
        for _ in range(polls):
            began = time.perf_counter()
            assert waiter.pickup_queued_job() is None
            times.append(time.perf_counter() - began)
            time.sleep(poll)
        return {
            "depth": depth,
            "polls": polls,
            "scans_per_poll": _counts["scans"] / polls,
            "tried_per_poll": _counts["tried"] / polls,
            "first_poll_ms": round(times[0] * 1000, 2),
            "later_poll_ms": round(sorted(times[1:])[len(times[1:]) // 2] * 1000, 2),
        }
    finally:
        shutil.rmtree(qdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to make the queue")
    ap.add_argument("--depths", default="0,1000,10000")
    ap.add_argument("--polls", type=int, default=8)
    ap.add_argument("--poll-interval", type=float, default=0.5)
    args = ap.parse_args()
    parent = args.dir or tempfile.gettempdir()
    rows = [measure(parent, int(d), args.polls, args.poll_interval)
            for d in args.depths.split(",")]
    m = machine(parent)
    print(describe(m))
    headers = ["depth", "listings/poll", "jobs tried/poll", "first poll ms", "later poll ms"]
    print_table(headers, [[r["depth"], r["scans_per_poll"], r["tried_per_poll"],
                           r["first_poll_ms"], r["later_poll_ms"]] for r in rows])
    print(write_results("poll_cost", {"machine": m, "rows": rows}))


if __name__ == "__main__":
    main()
