"""A frozen worker that wakes up must not finish a job another worker now holds
(issue 8, finding 3).

A worker stopped (SIGSTOP, a VM paused, swapped out) for longer than the lifetime
stops its heartbeat; its lock is broken as stale and the job taken by another worker.
When it wakes and calls ``finish()``, removing the job would destroy the new holder's
work: it must get :class:`dirqueue.JobLostError` and remove nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import files_under, logs_warning
from _job_holder import Holder
from dirqueue import DirQueue


@pytest.fixture
def holder(qdir: Path) -> Iterator[Holder]:
    DirQueue(qdir).enqueue_string("precious", {"k": "v"})
    child = Holder(qdir, LIFETIME, heartbeat=True)
    try:
        yield child
    finally:
        child.kill()


LIFETIME = 1.0
#: The longest grace a pickup adds to the lifetime before breaking a lock.
MAX_GRACE = LIFETIME / 2


@pytest.mark.timeout(60)
def test_a_frozen_workers_finish_leaves_the_job_to_its_new_holder(
    qdir: Path, holder: Holder
) -> None:
    jobid = holder.wait_ready()
    lock = qdir / "active" / jobid
    holder.stop()
    frozen_lock = lock.stat()
    # Wait until the quiet lock is past the lifetime and any grace.
    while time.time() - lock.stat().st_mtime <= LIFETIME + MAX_GRACE + 0.1:
        time.sleep(0.05)
    assert lock.stat().st_mtime_ns == frozen_lock.st_mtime_ns  # Frozen: no heartbeat.

    rescuer = DirQueue(qdir, active_file_lifetime=LIFETIME)
    with logs_warning(rf"broke stale lock on {jobid}"):
        job = rescuer.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    ours = lock.stat()
    # (Not compared by inode: the broken lock's inode number may be reused at once.)
    assert lock.read_text().split("\n")[:2] == [rescuer.hostname, str(os.getpid())]

    holder.resume()
    holder.send("finish")
    answer = holder.read_line(timeout=30)
    assert answer.startswith("error JobLostError "), answer
    # It removed nothing: the job, its data and our lock are all still there.
    assert [j.jobid for j in DirQueue(qdir).jobs()] == [jobid]
    assert lock.stat().st_ino == ours.st_ino
    assert lock.read_text().split("\n")[:2] == [rescuer.hostname, str(os.getpid())]

    assert job.get_data() == b"precious"
    assert job.metadata == {"k": "v"}
    job.finish()
    assert files_under(qdir) == []
