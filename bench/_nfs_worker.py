"""One process of bench/nfs.py, run inside a simulated host of the test bed.

    _nfs_worker.py fill QDIR N                 N jobs of 100 bytes, written by the floor
    _nfs_worker.py enqueue PEER QDIR N         N jobs of 100 bytes, one by one; print the seconds
    _nfs_worker.py drain PEER QDIR             take jobs until a pickup finds none; print
                                               the count and the wall-clock start and end
    _nfs_worker.py polls PEER QDIR COUNT GAP [SETTLE]
                                               on an empty queue: one pickup (and one
                                               more SETTLE s later), print "ready", wait
                                               for a line on stdin, then COUNT pickups
                                               GAP seconds apart, "done"

PEER is dirqueue (``durable=False``, as bench/peers.py runs it) or bare (the format's
floor, bench/_peer_queues.py). The Perl module's side is bench/_peers_perl.pl.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

# bench/ is on sys.path when a script here runs.
from _peer_queues import Bare, payload


def _putter(peer: str, qdir: str) -> Callable[[bytes], object]:
    if peer == "bare":
        return Bare(qdir).put
    from dirqueue import DirQueue  # noqa: PLC0415 - the floor's processes load none of it

    return DirQueue(qdir, durable=False, create=True).enqueue_string


def _taker(peer: str, qdir: str) -> Callable[[], bytes | None]:
    if peer == "bare":
        return Bare(qdir).take
    from dirqueue import DirQueue  # noqa: PLC0415 - the floor's processes load none of it

    queue = DirQueue(qdir, durable=False, create=True)

    def take() -> bytes | None:
        job = queue.pickup_queued_job()
        if job is None:
            return None
        data = job.get_data()
        job.finish()
        return data

    return take


def main(argv: list[str]) -> int:  # noqa: PLR0912 - one branch per mode the bench runs
    mode = argv[1]
    if mode == "fill":
        queue = Bare(argv[2])
        for number in range(int(argv[3])):
            queue.put(payload(number))
        print(json.dumps({"filled": int(argv[3])}))
        return 0
    peer, qdir = argv[2], argv[3]
    if mode == "enqueue":
        count = int(argv[4])
        put = _putter(peer, qdir)
        start = time.perf_counter()
        for number in range(count):
            put(payload(number))
        print(json.dumps({"seconds": time.perf_counter() - start, "count": count}))
        return 0
    take = _taker(peer, qdir)
    if mode == "drain":
        start, count, errors = time.time(), 0, 0
        began = os.times()
        while True:
            try:
                if take() is None:
                    break
            except OSError:
                # The floor checks nothing: over NFS a link() under contention can
                # fail outright (the call retried after the server did it). It moves
                # on to the next name, as a lost claim; counted.
                errors += 1
                if errors > 1000:
                    raise
                continue
            count += 1
        used = os.times()
        cpu = used.user + used.system - began.user - began.system
        print(json.dumps({"count": count, "start": start, "end": time.time(),
                          "errors": errors, "cpu": cpu}))
        return 0
    if mode == "polls":
        count, gap = int(argv[4]), float(argv[5])
        settle = float(argv[6]) if len(argv) > 6 else 0.0
        for wait in (settle, 0.0)[: 2 if settle else 1]:
            # With SETTLE: a first poll, then one SETTLE seconds later, uncounted.
            if take() is not None:
                raise SystemExit("the queue is not empty")
            time.sleep(wait)
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(count):
            if take() is not None:
                raise SystemExit("the queue is not empty")
            time.sleep(gap)
        print("done", flush=True)
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
