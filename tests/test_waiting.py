"""wait_for_queued_job: gives up at the timeout, wakes promptly for new jobs, and can be
driven by a fake clock without real waiting."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue
from dirqueue._inotify import open_notifier


@pytest.fixture
def queue(qdir: Path) -> DirQueue:
    """A queue made before anyone waits on it: a waiter makes none (see
    test_consumers_do_not_create_queues.py)."""
    return DirQueue(qdir, create=True)


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_a_waiting_job_at_once(queue: DirQueue) -> None:
    jobid = queue.enqueue_string("ready")
    fake = FakeTime()
    job = queue.wait_for_queued_job(timeout=10, sleep=fake.sleep, clock=fake.clock)
    assert job is not None
    assert job.jobid == jobid
    assert fake.sleeps == []
    job.finish()


@pytest.mark.timeout(10)
def test_returns_none_at_the_timeout(queue: DirQueue) -> None:
    start = time.monotonic()
    assert queue.wait_for_queued_job(timeout=0.6, poll_interval=0.25) is None
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 0.6 + 0.75


@pytest.mark.timeout(10)
def test_timeout_zero_tries_once(queue: DirQueue) -> None:
    start = time.monotonic()
    assert queue.wait_for_queued_job(timeout=0) is None
    assert time.monotonic() - start < 0.5
    queue.enqueue_string("x")
    job = queue.wait_for_queued_job(timeout=0)
    assert job is not None
    job.finish()


def test_a_fake_clock_drives_the_wait_without_real_time(queue: DirQueue) -> None:
    fake = FakeTime()
    start = time.monotonic()
    result = queue.wait_for_queued_job(
        timeout=3600, poll_interval=7, sleep=fake.sleep, clock=fake.clock
    )
    assert result is None
    assert time.monotonic() - start < 5  # An hour of fake waiting, in no real time.
    assert fake.now == pytest.approx(1000.0 + 3600)
    assert sum(fake.sleeps) == pytest.approx(3600)
    assert all(s <= 7 for s in fake.sleeps)
    assert len(fake.sleeps) == 515  # 514 full polls of 7 s and a last one of 2 s.
    assert fake.sleeps[-1] == pytest.approx(2)


def test_a_job_arriving_between_polls_is_taken_at_the_next_poll(queue: DirQueue) -> None:
    fake = FakeTime()
    jobids: list[str] = []

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 3:
            # As if another host had enqueued it: no wake-up call, only the poll finds it.
            jobids.append(queue.enqueue_string("late"))

    job = queue.wait_for_queued_job(timeout=100, poll_interval=2, sleep=sleep, clock=fake.clock)
    assert job is not None
    assert [job.jobid] == jobids
    assert fake.sleeps == [2, 2, 2]
    job.finish()


def test_waiting_forever_with_no_timeout(queue: DirQueue) -> None:
    fake = FakeTime()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 1000:
            queue.enqueue_string("finally")

    job = queue.wait_for_queued_job(timeout=None, poll_interval=60, sleep=sleep, clock=fake.clock)
    assert job is not None
    assert job.get_data() == b"finally"
    assert len(fake.sleeps) == 1000
    job.finish()


@pytest.mark.parametrize("poll_interval", [0, -1])
def test_poll_interval_must_be_positive(queue: DirQueue, poll_interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        queue.wait_for_queued_job(timeout=1, poll_interval=poll_interval)


ENQUEUER = textwrap.dedent(
    """
    import sys, time
    from dirqueue import DirQueue
    queue = DirQueue(sys.argv[1])
    time.sleep(float(sys.argv[2]))
    queue.enqueue_string("from another process")
    print(time.time(), flush=True)
    """
)


def skip_without_inotify() -> None:
    notifier = open_notifier()
    if notifier is None:
        pytest.skip("no inotify here: a waiter on this platform only polls")
    notifier.close()


@pytest.mark.timeout(30)
def test_wakes_promptly_when_another_process_enqueues(qdir: Path) -> None:
    queue = DirQueue(qdir)
    queue.enqueue_string("warm up")  # Create the directories the waiter watches.
    warm = queue.pickup_queued_job()
    assert warm is not None
    warm.finish()
    skip_without_inotify()
    child = subprocess.Popen(
        [sys.executable, "-c", ENQUEUER, str(qdir), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        job = queue.wait_for_queued_job(timeout=20, poll_interval=10)
        woke = time.time()
        out, _ = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert job is not None
    assert job.get_data() == b"from another process"
    enqueued = float(out.strip())
    # Well within one poll interval (10 s) of the enqueue.
    assert woke - enqueued < 1.0
    job.finish()


@pytest.mark.timeout(30)
def test_wakes_promptly_when_a_job_is_returned(qdir: Path) -> None:
    queue = DirQueue(qdir)
    queue.enqueue_string("bounced")
    held = queue.pickup_queued_job()
    assert held is not None
    waiter = DirQueue(qdir)
    skip_without_inotify()
    returner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; time.sleep(1.0);"
            " os.unlink(sys.argv[1]); os.utime(sys.argv[2]); print(time.time(), flush=True)",
            str(qdir / "active" / held.jobid),
            str(qdir / "queue"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job = waiter.wait_for_queued_job(timeout=20, poll_interval=10)
        woke = time.time()
        out, _ = returner.communicate(timeout=20)
    finally:
        if returner.poll() is None:
            returner.kill()
            returner.wait()
    assert job is not None
    assert job.get_data() == b"bounced"
    assert woke - float(out.strip()) < 1.0
    job.finish()


@pytest.mark.timeout(30)
def test_waiting_works_in_a_process_with_many_open_files(qdir: Path) -> None:
    """A long-running worker may hold more than FD_SETSIZE (1024) descriptors; the
    waiter's own descriptor is then past what select() can watch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"cannot open {wanted} files here (hard limit {hard})")
    queue = DirQueue(qdir)
    queue.enqueue_string("warm up")
    warm = queue.pickup_queued_job()
    assert warm is not None
    warm.finish()
    fds: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        while len(fds) < 1100:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        assert queue.wait_for_queued_job(timeout=0.3, poll_interval=0.1) is None
        child = subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, str(qdir), "0.5"], stdout=subprocess.PIPE, text=True
        )
        try:
            job = queue.wait_for_queued_job(timeout=20, poll_interval=10)
            woke = time.time()
            out, _ = child.communicate(timeout=20)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert job is not None
        assert job.get_data() == b"from another process"
        assert woke - float(out.strip()) < 1.0
        job.finish()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(60)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_waiter_keeps_one_watch_open_across_waits_and_forks(qdir: Path) -> None:
    """Closing an inotify descriptor costs the kernel ~10 ms, so a worker waiting job
    after job keeps one open; a forked child makes its own and still wakes at once."""
    queue = DirQueue(qdir, create=True)
    assert queue.wait_for_queued_job(timeout=0.01) is None
    before = open_fds()
    for _ in range(20):
        assert queue.wait_for_queued_job(timeout=0.01) is None
    assert open_fds() == before  # One descriptor, reused, not one per wait.

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # The child: wait for a job the parent enqueues, report the delay.
        code = 1
        try:
            os.close(read_end)
            job = queue.wait_for_queued_job(timeout=20, poll_interval=10)
            got = time.time()
            if job is not None and job.get_data() == b"for the child":
                job.finish()
                os.write(write_end, f"{got}\n".encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    status = None
    try:
        time.sleep(0.5)  # Let the child settle into waiting.
        sent = time.time()
        DirQueue(qdir).enqueue_string("for the child")
        with os.fdopen(read_end) as pipe:
            reported = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # Something failed first: never leave the child behind.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert float(reported) - sent < 1.0  # inotify, not the 10 s poll.
    # The parent's own watcher still works after the child has come and gone.
    DirQueue(qdir).enqueue_string("for the parent")
    job = queue.wait_for_queued_job(timeout=5, poll_interval=10)
    assert job is not None
    assert job.get_data() == b"for the parent"
    job.finish()
