"""What an idle worker costs an NFS server, counted by the bed's NFS client.

A worker waiting on an empty queue polls it (``wait_for_queued_job`` calls a pickup
every ``poll_interval``, 1 s by default). Over NFS every call it makes may be a call to
the server, and a thousand idle workers make a thousand times that: docs/scaling.md
builds its model on this figure. The test mounts the bed's NFS export once more, as
host 1, through ``nfsfuse.py --stats`` (a mount of its own, so the counts are its
alone; tests/_multihost.py ``counting_mount``), and counts the calls of idle polls.

Measured with bench/nfs.py and here: about 1.5 calls per poll at 1 s, all of them
GETATTRs of ``queue/`` and ``active/`` that the client's attribute cache (3 s) did not
answer; before the clock's measure was made lazy, 2.8 to 3.2, with a file written and
removed in ``tmp/`` every 5 s. The bound is the design's: two ``stat()`` calls a poll,
never a listing, never a write.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from _multihost import counting_mount, missing
from dirqueue import DirQueue

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(180)]

POLLS = 12
POLL_INTERVAL = 1.0  # wait_for_queued_job's default.
#: The most calls an idle poll may send: the two stat() calls of queue/ and active/.
MAX_CALLS_PER_POLL = 2.0
#: Requests the bed's client answers without calling the server.
LOCAL = {"flush", "opendir", "releasedir", "access", "release", "init", "destroy", "ioctl"}


def _calls(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items()
            if k not in LOCAL and n != before.get(k, 0)}


def test_an_idle_worker_sends_at_most_two_stats_a_poll_and_never_lists_or_writes(
    tmp_path: Path,
) -> None:
    why = missing("nfs", (1,), perl=False)
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:8]
    mountpoint = f"/mnt/dq-test-calls-{tag}"
    with counting_mount(1, mountpoint, str(tmp_path / "stats.json")) as counts:
        qdir = f"{mountpoint}/dq-test-calls-{tag}"
        q = DirQueue(qdir, create=True)
        try:
            assert q.pickup_queued_job() is None  # Lists the new queue.
            # An idle queue is an old one: dirqueue trusts a directory's mtime (and so
            # skips the listing) once it is 2 s old by the server's clock; wait that
            # out, and let the pickup that follows list it once more.
            time.sleep(2.5)
            assert q.pickup_queued_job() is None
            before = counts()
            for _ in range(POLLS):
                assert q.pickup_queued_job() is None
                time.sleep(POLL_INTERVAL)
            calls = _calls(before, counts())
        finally:
            shutil.rmtree(qdir, ignore_errors=True)
    per_poll = sum(calls.values()) / POLLS
    # Nothing written or removed (the clock's measure file was, every 5 s), nothing listed.
    assert set(calls) <= {"getattr"}, calls
    assert per_poll <= MAX_CALLS_PER_POLL, (per_poll, calls)
