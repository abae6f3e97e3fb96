"""A queue object's one lock file: on a local filesystem every job it takes is a hard
link to ``tmp/lock.TIME.HOST.PID.active``, and the name goes when it is not needed."""

from __future__ import annotations

import gc
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import lock_without_owner_line
from dirqueue import DirQueue, _lockfile
from dirqueue._fs import is_local_filesystem
from dirqueue._layout import TmpLockName
from dirqueue.repair import FindingKind

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    queue = DirQueue(tmp_path / "q", durable=False)
    if not is_local_filesystem(str(tmp_path)):
        pytest.skip("a queue object keeps a lock file only on a local filesystem")
    return queue


def lock_files(q: DirQueue) -> list[str]:
    return sorted(name for name in os.listdir(q.layout.tmp_dir) if TmpLockName.is_lock_file(name))


def test_jobs_held_together_are_links_to_one_lock_file_that_goes_when_idle(q: DirQueue) -> None:
    first, second = q.enqueue_string("one"), q.enqueue_string("two")
    a, b = q.pickup_queued_job(), q.pickup_queued_job()
    assert a is not None
    assert b is not None
    assert {a.jobid, b.jobid} == {first, second}
    [name] = lock_files(q)
    assert TmpLockName.owner(name, socket.gethostname()) == os.getpid()
    lock_file = os.lstat(q.layout.tmp_path(name))
    for jobid in (first, second):
        lock = os.lstat(q.layout.active_path(jobid))
        assert (lock.st_dev, lock.st_ino) == (lock_file.st_dev, lock_file.st_ino)
        # What the Perl module reads of a lock: our host and pid, and the promise.
        text = Path(q.layout.active_path(jobid)).read_text()
        assert lock_without_owner_line(text) == f"{q.hostname}\n{os.getpid()}\nheartbeat\n"
    assert lock_file.st_nlink == 3
    a.finish()
    b.return_to_queue()
    assert not os.path.exists(q.layout.active_path(second))
    assert os.path.exists(q.layout.queue_path(second))
    again = q.pickup_queued_job()
    assert again is not None
    assert again.jobid == second
    again.finish()
    assert lock_files(q) == [name]  # Still working: kept.
    assert q.pickup_queued_job() is None  # Idle: let go.
    assert lock_files(q) == []
    assert os.listdir(q.layout.active_dir) == []


def test_a_collected_queue_object_leaves_no_lock_file(q: DirQueue) -> None:
    q.enqueue_string("one")
    q.enqueue_string("two")
    other = DirQueue(q.dir, durable=False)  # Not the fixture's: nothing else holds it.
    job = other.pickup_queued_job()
    assert job is not None
    job.finish()
    assert len(lock_files(q)) == 1
    del other, job
    gc.collect()
    assert lock_files(q) == []


def test_a_removed_lock_file_name_is_made_again(q: DirQueue) -> None:
    jobs = [q.enqueue_string(str(i)) for i in range(3)]
    held = q.pickup_queued_job()
    assert held is not None
    assert held.jobid == jobs[0]
    [name] = lock_files(q)
    os.unlink(q.layout.tmp_path(name))  # As repair on another host may do.
    # A job still linked to the file keeps it linkable.
    second = q.pickup_queued_job()
    assert second is not None
    assert second.jobid == jobs[1]
    assert os.path.samefile(q.layout.active_path(jobs[0]), q.layout.active_path(jobs[1]))
    held.finish()
    second.finish()
    # No name and no job left: the next pickup makes a new file.
    third = q.pickup_queued_job()
    assert third is not None
    assert third.jobid == jobs[2]
    assert len(lock_files(q)) == 1
    assert third.get_data() == b"2"
    third.finish()


def test_repair_leaves_a_working_queue_objects_lock_file(q: DirQueue) -> None:
    q.enqueue_string("one")
    job = q.pickup_queued_job()
    assert job is not None
    report = q.repair(min_age=0)
    assert FindingKind.TMP_LEFTOVER not in [finding.kind for finding in report.findings]
    assert len(lock_files(q)) == 1
    job.finish()


#: Queue objects a child keeps to the end (never collected before it exits).
_kept: list[DirQueue] = []


def _take_one_and_return(qdir: str) -> None:
    _kept.append(DirQueue(qdir, durable=False))
    job = _kept[0].pickup_queued_job()
    assert job is not None
    job.finish()  # The queue is not empty: the lock file is still kept here.


def test_a_multiprocessing_worker_leaves_no_lock_file(q: DirQueue) -> None:
    q.enqueue_string("one")
    q.enqueue_string("two")
    child = multiprocessing.get_context("fork").Process(target=_take_one_and_return,
                                                        args=(q.dir,))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert os.listdir(q.layout.tmp_dir) == []
    assert len(os.listdir(q.layout.queue_dir)) == 1


def test_an_idle_pickup_keeps_the_lock_file_that_a_held_job_keeps_linkable(q: DirQueue) -> None:
    q.enqueue_string("held")
    kept = q.pickup_queued_job()
    assert kept is not None
    lock_file = os.lstat(q.layout.active_path(kept.jobid))
    for i in range(5):
        jobid = q.enqueue_string(str(i))
        job = q.pickup_queued_job()
        assert job is not None
        assert job.jobid == jobid
        # The file a held job is linked to can still be linked: no new file for this one.
        assert os.path.samefile(q.layout.active_path(jobid), q.layout.active_path(kept.jobid))
        job.finish()
        assert q.pickup_queued_job() is None  # Idle: the name goes, the file stays ours.
        assert lock_files(q) == []
    assert os.lstat(q.layout.active_path(kept.jobid)).st_ino == lock_file.st_ino
    kept.finish()


#: Takes 600 jobs one by one (every other one returned and taken again first), going
#: idle after each, and keeps every Job (as a caller collecting results does), with 256
#: descriptors allowed.
_FEW_DESCRIPTORS = """
import resource, sys
from dirqueue import DirQueue
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
q = DirQueue(sys.argv[1], durable=False)
kept = []
for i in range(600):
    jobid = q.enqueue_string(str(i))
    job = q.pickup_queued_job()
    assert job is not None and job.jobid == jobid
    if i % 2:
        job.return_to_queue()
        kept.append(job)
        job = q.pickup_queued_job()
        assert job is not None and job.jobid == jobid
    job.finish()
    kept.append(job)
    assert q.pickup_queued_job() is None
print(len(kept))
"""


def test_finished_jobs_and_idle_pickups_hold_no_descriptors(q: DirQueue) -> None:
    # Each finished Job kept its lock file open, and each pickup after an idle one made
    # a new lock file: EMFILE at job 246 of 256 descriptors.
    done = subprocess.run([sys.executable, "-c", _FEW_DESCRIPTORS, q.dir], capture_output=True,
                          text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["900"]
    assert os.listdir(q.layout.tmp_dir) == []


def test_a_lock_linked_a_moment_after_the_last_is_not_touched_again(q: DirQueue) -> None:
    # Every lock must look fresh when linked; one whose file was given its mtime less
    # than FRESH_ENOUGH ago does, and a drain spares an utimensat per job. Past the
    # window the file is given the time now again.
    jobids = [q.enqueue_string(str(n)) for n in range(3)]
    first = q.pickup_queued_job()
    second = q.pickup_queued_job()
    assert first is not None
    assert second is not None
    lock = Path(q.layout.active_path(jobids[0]))
    stamped = lock.stat().st_mtime_ns
    assert Path(q.layout.active_path(jobids[1])).stat().st_mtime_ns == stamped
    time.sleep(_lockfile.FRESH_ENOUGH * 1.5)  # The window has passed.
    third = q.pickup_queued_job()
    assert third is not None
    assert lock.stat().st_mtime_ns > stamped  # One file: every lock of ours is fresh.
    assert time.time_ns() - lock.stat().st_mtime_ns < _lockfile.FRESH_ENOUGH * 1e9
    for job in (first, second, third):
        job.finish()


def test_the_window_is_a_thousandth_of_a_short_lifetime() -> None:
    assert _lockfile.fresh_enough_ns(600) == int(_lockfile.FRESH_ENOUGH * 1e9)
    assert _lockfile.fresh_enough_ns(1) == 1_000_000
