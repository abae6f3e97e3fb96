"""Strict order across dequeuer processes on one host: a job given back, or a new job of
better priority, is the very next pickup of every dequeuer; and a pickup's cost does
not grow with the jobs other workers hold.

Each dequeuer is a real process driven line by line through a pipe, so the test knows
exactly what each one did before the next one picks up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dirqueue._index
from dirqueue import DirQueue, _lock
from dirqueue._fs import is_local_filesystem
from dirqueue._inotify import IN_Q_OVERFLOW, Event, Notifier, open_notifier

DEQUEUER = textwrap.dedent(
    """
    import sys
    from dirqueue import DirQueue

    queue = DirQueue(sys.argv[1])
    held = None
    for line in sys.stdin:
        command = line.strip()
        if command == "pick":
            held = queue.pickup_queued_job()
            print(held.jobid if held else "none", flush=True)
        elif command == "return":
            held.return_to_queue()
            print("ok", flush=True)
        elif command == "finish":
            held.finish()
            print("ok", flush=True)
    """
)


class Dequeuer:
    """A dequeuer process that does what it is told, one line at a time."""

    def __init__(self, qdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DEQUEUER, str(qdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def do(self, command: str) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"the dequeuer died on {command!r}"
        return answer

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def dequeuers(qdir: Path) -> Iterator[list[Dequeuer]]:
    notifier = open_notifier()
    if notifier is None:
        pytest.skip("no inotify here: other processes' changes are seen by polling")
    notifier.close()
    DirQueue(qdir).create()
    started = [Dequeuer(qdir) for _ in range(3)]
    try:
        yield started
    finally:
        for dequeuer in started:
            dequeuer.stop()


@pytest.mark.timeout(60)
def test_a_returned_job_is_the_next_pickup_of_every_dequeuer(
    qdir: Path, dequeuers: list[Dequeuer]
) -> None:
    queue = DirQueue(qdir)
    ids = [queue.enqueue_string(f"job {i}") for i in range(20)]
    a, b, c = dequeuers
    # Each takes one, in order, each seeing the others' locks.
    assert [a.do("pick"), b.do("pick"), c.do("pick")] == ids[:3]
    assert a.do("return") == "ok"
    # B and C each finish theirs: the returned head job is the next pickup of each.
    for dequeuer in (b, c):
        assert dequeuer.do("finish") == "ok"
        assert dequeuer.do("pick") == ids[0]
        assert dequeuer.do("return") == "ok"
    assert a.do("pick") == ids[0]
    assert a.do("finish") == "ok"
    # And on it goes in order.
    assert [b.do("pick"), c.do("pick"), a.do("pick")] == ids[3:6]


@pytest.mark.timeout(60)
def test_a_new_job_of_better_priority_is_the_next_pickup_of_every_dequeuer(
    qdir: Path, dequeuers: list[Dequeuer]
) -> None:
    queue = DirQueue(qdir)
    ids = [queue.enqueue_string(f"job {i}") for i in range(20)]
    a, b, c = dequeuers
    assert [a.do("pick"), b.do("pick"), c.do("pick")] == ids[:3]
    # Enqueued by yet another process while all three hold a job.
    urgent = DirQueue(qdir).enqueue_string("urgent", priority=0)
    for dequeuer in (a, b, c):
        assert dequeuer.do("finish") == "ok"
        assert dequeuer.do("pick") == urgent
        assert dequeuer.do("return") == "ok"
    assert a.do("pick") == urgent


@pytest.mark.timeout(60)
def test_in_one_process_a_returned_job_comes_straight_back(queue: DirQueue) -> None:
    ids = [queue.enqueue_string(f"job {i}") for i in range(5)]
    for _ in range(3):
        job = queue.pickup_queued_job()
        assert job is not None
        assert job.jobid == ids[0]
        job.return_to_queue()
    urgent = queue.enqueue_string("urgent", priority=3)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == urgent


@pytest.mark.timeout(60)
def test_jobs_from_another_host_are_seen_within_the_scan_interval(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no inotify event tells of them (another host of a network filesystem,
    played here by a dequeuer without inotify), new jobs are seen by the first pickup
    once SCAN_INTERVAL has passed."""
    monkeypatch.setattr(dirqueue._index, "open_notifier", lambda: None)
    queue = DirQueue(qdir)
    ids = [queue.enqueue_string(f"job {i}") for i in range(10)]
    first = queue.pickup_queued_job()
    assert first is not None
    assert first.jobid == ids[0]
    first.finish()
    urgent = DirQueue(qdir).enqueue_string("urgent", priority=0)
    time.sleep(dirqueue._index.SCAN_INTERVAL)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == urgent


@pytest.mark.timeout(120)
def test_an_idle_pickup_does_not_retry_every_job_others_hold(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 300 jobs held by another worker, a pickup that finds nothing judges a few of
    their locks, not all 300, and does not re-read queue/."""
    holder = DirQueue(qdir)
    for i in range(300):
        holder.enqueue_string(f"job {i}")
    held = [holder.pickup_queued_job() for _ in range(300)]
    assert all(job is not None for job in held)
    tries: list[str] = []
    real_take = _lock.take

    def counting_take(config: object, jobid: str, queue_path: str, **kwargs: bool) -> object:
        tries.append(jobid)
        return real_take(config, jobid, queue_path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "take", counting_take)
    monkeypatch.setattr(dirqueue._index, "HELD_RECHECK", 3600.0)
    idle = DirQueue(qdir)
    for _ in range(50):
        assert idle.pickup_queued_job() is None
    assert len(tries) <= dirqueue._index.HELD_BATCH
    if idle._picker.index.exact:
        assert idle._picker.index.scans == 1
    for job in held:
        assert job is not None
        job.finish()


@pytest.mark.timeout(60)
def test_events_lost_to_an_overflowing_inotify_queue_cost_nothing(
    queue: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More jobs arrive than the kernel queues events for (played here by dropping the
    events and reporting an overflow, as the kernel does): the index re-reads queue/,
    and every job is still taken, in order."""
    if open_notifier() is None:
        pytest.skip("no inotify here")
    first = queue.enqueue_string("first")
    job = queue.pickup_queued_job()  # The index is built and watching.
    assert job is not None
    assert job.jobid == first
    job.finish()
    real_events = Notifier.events

    def overflowed(self: Notifier) -> list[Event]:
        real_events(self)  # Dropped: the kernel's queue was full.
        return [(-1, IN_Q_OVERFLOW, "")]

    monkeypatch.setattr(Notifier, "events", overflowed)
    ids = queue.enqueue_many([f"job {i}" for i in range(50)])
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == ids[0]
    job.finish()
    monkeypatch.undo()
    taken = []
    while (job := queue.pickup_queued_job()) is not None:
        taken.append(job.jobid)
        job.finish()
    assert taken == ids[1:]


def test_the_index_can_tell_local_from_network_filesystems(tmp_path: Path) -> None:
    if open_notifier() is None:
        pytest.skip("no inotify here")
    assert is_local_filesystem(str(tmp_path)) == (_mount_type(tmp_path) in {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "tmpfs",
        "overlay",
        "f2fs",
        "zfs",
    })


def _mount_type(path: Path) -> str:
    """The filesystem type of the mount holding ``path``, from /proc/self/mounts."""
    best, kind = "", ""
    real = os.path.realpath(path)
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


@pytest.mark.usefixtures("judge_held_at_once")
def test_a_dead_workers_job_taken_back_keeps_its_place_in_the_order(
    qdir: Path, dead_pid: int
) -> None:
    """A job whose worker died is taken back when the pickups reach it, not before a
    waiting job of better priority."""
    queue = DirQueue(qdir, active_file_lifetime=1)
    orphan = queue.enqueue_string("its worker died", priority=50)
    lock = Path(queue.layout.active_path(orphan))
    lock.write_text(f"{socket.gethostname()}\n{dead_pid}\n")
    os.utime(lock, (time.time() - 10, time.time() - 10))  # Stale: past the lifetime.
    urgent = queue.enqueue_string("urgent", priority=10)
    fresh = DirQueue(qdir, active_file_lifetime=1)
    taken = []
    while (job := fresh.pickup_queued_job()) is not None:
        taken.append(job.jobid)
        job.finish()
    assert taken == [urgent, orphan]


@pytest.mark.timeout(60)
def test_without_inotify_a_waiter_does_not_reread_the_queue_at_every_poll(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dirqueue._index, "open_notifier", lambda: None)
    queue = DirQueue(qdir)
    queue.enqueue_string("warm up")
    job = queue.pickup_queued_job()
    assert job is not None
    job.finish()
    time.sleep(2.5)  # Past the window in which a fresh mtime proves nothing.
    assert queue.wait_for_queued_job(timeout=1.0, poll_interval=0.05) is None
    # Twenty polls, and queue/ unchanged: re-read once at most (its mtime moved when the
    # warm-up job was finished).
    assert queue._picker.index.scans <= 2
