"""What an idle worker, and a racing one, cost an NFS server, counted by the bed's NFS
client.

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

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from _multihost import counting_mount, host_cmd, missing
from dirqueue import DirQueue

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(300)]

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


#: Consumers racing on 3 hosts, and the jobs they drain.
RACERS, RACE_JOBS = 3, 150
#: A job taken is 2 READs (its control file and its data), and racing consumers read
#: nothing more: a young lock of another host is not read. Measured with 3 consumers:
#: 2.00 to 2.01 READs a job; before, 2.5 to 3.1 (each job held by another host that a
#: consumer met, and each claim it lost, made it read that lock).
MAX_READS_A_JOB = 2.2

_CONSUMER = """
import json, sys
from dirqueue import DirQueue
q = DirQueue(sys.argv[1], durable=False)
taken = []
while (job := q.pickup_queued_job()) is not None:
    job.get_data()
    taken.append(job.jobid)
    job.finish()
print(json.dumps(taken))
"""


def test_racing_consumers_on_three_hosts_read_no_lock_of_another_host(
    tmp_path: Path,
) -> None:
    why = missing("nfs", (1, 2, 3), perl=False)
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:8]
    mounts = [f"/mnt/dq-test-race-{tag}-h{n}" for n in (1, 2, 3)]
    with contextlib.ExitStack() as stack:
        counters = [
            stack.enter_context(counting_mount(n, mounts[n - 1], str(tmp_path / f"{n}.json")))
            for n in (1, 2, 3)
        ]
        name = f"dq-test-race-{tag}"
        q = DirQueue(f"{mounts[0]}/{name}", create=True, durable=False)
        procs: list[subprocess.Popen[str]] = []
        try:
            ids = {q.enqueue_string(f"job {i}") for i in range(RACE_JOBS)}
            before = [read() for read in counters]
            procs = [
                subprocess.Popen(
                    host_cmd(n, sys.executable, "-c", _CONSUMER, f"{mounts[n - 1]}/{name}"),
                    stdout=subprocess.PIPE, text=True, start_new_session=True,
                )
                for n in (1, 2, 3)[:RACERS]
            ]
            taken: list[str] = []
            for proc in procs:
                out, _ = proc.communicate(timeout=150)
                assert proc.returncode == 0
                taken += json.loads(out)
            calls: dict[str, int] = collections.Counter()
            for read, was in zip(counters, before, strict=True):
                calls.update(_calls(was, read()))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            shutil.rmtree(f"{mounts[0]}/{name}", ignore_errors=True)
    assert sorted(taken) == sorted(ids)  # Every job once.
    per_job = {kind: round(n / RACE_JOBS, 2) for kind, n in calls.items()}
    assert per_job.get("read", 0) <= MAX_READS_A_JOB, per_job
