"""A job's life: its accessors, the context manager, and what its state allows."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue, DirQueueError, Job, JobStateError


def pick(queue: DirQueue) -> Job:
    job = queue.pickup_queued_job()
    assert job is not None
    return job


def test_accessors_of_a_picked_up_job(queue: DirQueue, qdir: Path) -> None:
    before = time.time()
    jobid = queue.enqueue_string("some data ✓", {"a": "1"}, priority=33)
    after = time.time()
    job = pick(queue)
    assert job.jobid == jobid
    assert job.priority == 33
    assert job.metadata == {"a": "1"}
    assert job.get_data() == "some data ✓".encode()
    assert job.get_data_size_bytes() == len("some data ✓".encode())
    data_path = Path(job.get_data_path())
    assert data_path.is_file()
    assert data_path.read_bytes() == job.get_data()
    assert data_path.resolve().is_relative_to((qdir / "data").resolve())
    submitted = job.get_time_submitted_secs() + job.get_time_submitted_usecs() / 1e6
    assert before - 0.001 <= submitted <= after + 0.001
    assert 0 <= job.get_time_submitted_usecs() <= 999_999
    assert job.get_hostname_submitted() == socket.gethostname()
    assert job.queue_path == str(qdir / "queue" / jobid)
    assert job.active_host == socket.gethostname()
    assert job.active_pid == os.getpid()
    assert job.is_active
    assert jobid in repr(job)
    job.finish()
    assert not job.is_active


def test_context_manager_finishes_on_normal_exit(queue: DirQueue, qdir: Path) -> None:
    queue.enqueue_string("x")
    with pick(queue) as job:
        assert job.get_data() == b"x"
        assert job.is_active
    assert not job.is_active
    assert files_under(qdir) == []
    assert queue.pickup_queued_job() is None


def test_context_manager_returns_the_job_on_exception_and_propagates(
    queue: DirQueue, qdir: Path
) -> None:
    jobid = queue.enqueue_string("x", {"k": "v"})
    before = files_under(qdir)

    class WorkFailed(Exception):
        pass

    with pytest.raises(WorkFailed), pick(queue) as job:
        raise WorkFailed
    assert not job.is_active
    assert files_under(qdir) == before  # Back in the queue, lock gone.
    again = pick(queue)
    assert again.jobid == jobid
    assert again.get_data() == b"x"
    assert again.metadata == {"k": "v"}
    again.finish()


def test_context_manager_returns_the_job_on_keyboard_interrupt(queue: DirQueue) -> None:
    queue.enqueue_string("x")
    with pytest.raises(KeyboardInterrupt), pick(queue):
        raise KeyboardInterrupt
    pick(queue).finish()


def test_finishing_or_returning_inside_the_block_is_respected(queue: DirQueue) -> None:
    queue.enqueue_string("returned")
    with pick(queue) as job:
        job.return_to_queue()
    returned = pick(queue)
    assert returned.get_data() == b"returned"
    with returned:
        returned.finish()
    assert queue.pickup_queued_job() is None


def test_finishing_twice_raises(queue: DirQueue) -> None:
    queue.enqueue_string("x")
    job = pick(queue)
    job.finish()
    with pytest.raises(JobStateError) as info:
        job.finish()
    assert isinstance(info.value, DirQueueError)
    assert info.value.jobid == job.jobid
    assert "finished" in str(info.value)
    with pytest.raises(JobStateError):
        job.return_to_queue()
    with pytest.raises(JobStateError):
        job.touch_active_lock()


def test_returning_then_finishing_raises(queue: DirQueue) -> None:
    queue.enqueue_string("x")
    job = pick(queue)
    job.return_to_queue()
    with pytest.raises(JobStateError, match="returned"):
        job.finish()
    with pytest.raises(JobStateError):
        job.return_to_queue()
    # The queue still holds the job for whoever comes next.
    pick(queue).finish()


def test_a_listed_job_cannot_be_finished_returned_or_used(queue: DirQueue, qdir: Path) -> None:
    queue.enqueue_string("x")
    before = files_under(qdir)
    (listed,) = queue.jobs()
    assert not listed.is_active
    assert listed.get_data() == b"x"
    for action in (listed.finish, listed.return_to_queue, listed.touch_active_lock):
        with pytest.raises(DirQueueError) as info:
            action()
        assert isinstance(info.value, JobStateError)
        assert "pickup_queued_job" in str(info.value)
    with pytest.raises(JobStateError), listed:
        pass
    assert files_under(qdir) == before


def test_a_listed_copy_of_a_held_job_cannot_finish_it(queue: DirQueue, qdir: Path) -> None:
    queue.enqueue_string("x")
    held = pick(queue)
    (listed,) = queue.jobs()
    with pytest.raises(JobStateError):
        listed.finish()
    assert (qdir / "active" / held.jobid).exists()
    held.finish()


def test_touch_active_lock_refreshes_the_lock_mtime(queue: DirQueue, qdir: Path) -> None:
    queue.enqueue_string("x")
    job = pick(queue)
    lock = qdir / "active" / job.jobid
    os.utime(lock, (1_000_000_000, 1_000_000_000))
    job.touch_active_lock()
    assert abs(lock.stat().st_mtime - time.time()) < 5
    job.finish()


def test_size_comes_from_the_control_file(queue: DirQueue, qdir: Path) -> None:
    jobid = queue.enqueue_string("12345")
    (listed,) = queue.jobs()
    assert listed.get_data_size_bytes() == 5
    # Without a QDSB line the size is the data file's.
    control = qdir / "queue" / jobid
    lines = control.read_text().splitlines(keepends=True)
    control.write_text("".join(line for line in lines if not line.startswith("QDSB")))
    (listed,) = queue.jobs()
    assert listed.get_data_size_bytes() == 5
