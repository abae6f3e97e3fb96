"""The worker's single step, driven directly: success, the failure policy, limits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue, FailedStore, Job, Outcome, Worker
from dirqueue.failed import ATTEMPTS_KEY, attempts_of
from dirqueue.worker import JobInterrupted


class FakeClock:
    """A monotonic clock that only moves when the worker sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def boom(job: Job) -> None:
    raise ValueError(f"cannot handle {job.get_data()!r}")


def test_success_finishes_the_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("hello")
    seen: list[bytes] = []
    worker = Worker(q, lambda job: seen.append(job.get_data()))
    result = worker.run_once()
    assert result.outcome is Outcome.FINISHED
    assert result.jobid == jobid
    assert result.attempt == 1
    assert seen == [b"hello"]
    assert list(q.jobs()) == []
    assert os.listdir(q.layout.active_dir) == []


def test_failure_returns_the_job_with_its_attempt_counted(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x", {"owner": "alice"})
    worker = Worker(q, boom, max_attempts=3)
    result = worker.run_once()
    assert result.outcome is Outcome.RETRIED
    assert result.error == "ValueError: cannot handle b'x'"
    (job,) = q.jobs()
    assert job.jobid == jobid
    assert job.active_pid is None  # Not locked: back in the queue.
    assert attempts_of(job.control) == 1
    # Metadata is untouched; the count is a system-style line the Perl module reads
    # as one more metadata item.
    assert job.metadata == {"owner": "alice"}
    raw = Path(job.queue_path).read_text()
    assert f"\n{ATTEMPTS_KEY}: 1\n" in raw
    assert raw.endswith("owner: alice\n")


def test_always_failing_handler_ends_in_failed_after_max_attempts(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("payload", {"k": "v"})
    worker = Worker(q, boom, max_attempts=3, until_empty=True)
    outcomes = []
    for _ in range(3):
        outcomes.append(worker.run_once().outcome)
    assert outcomes == [Outcome.RETRIED, Outcome.RETRIED, Outcome.FAILED]
    assert list(q.jobs()) == []
    assert os.listdir(q.layout.active_dir) == []
    (failed,) = FailedStore(q).jobs()
    assert failed.jobid == jobid
    assert failed.attempts == 3
    assert failed.error == "ValueError: cannot handle b'payload'"
    assert "Traceback" in failed.detail
    assert failed.get_data() == b"payload"
    assert failed.metadata == {"k": "v"}
    assert failed.pid == os.getpid()


def test_attempts_are_counted_across_workers(tmp_path: Path) -> None:
    # Two workers (as on two hosts) share the count through the control file.
    q1 = DirQueue(tmp_path / "q")
    q2 = DirQueue(tmp_path / "q")
    q1.enqueue_string("x")
    w1 = Worker(q1, boom, max_attempts=2)
    w2 = Worker(q2, boom, max_attempts=2)
    assert w1.run_once().outcome is Outcome.RETRIED
    result = w2.run_once()
    assert result.outcome is Outcome.FAILED
    assert result.attempt == 2


def test_run_until_empty_takes_every_job_then_stops(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(5):
        q.enqueue_string(str(i))
    done: list[str] = []
    report = Worker(q, lambda job: done.append(job.get_data().decode()), until_empty=True).run()
    assert sorted(done) == ["0", "1", "2", "3", "4"]
    assert report.counts["finished"] == 5
    assert report.stop_reason == "queue empty"


def test_njobs_limits_the_jobs_taken(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(5):
        q.enqueue_string(str(i))
    report = Worker(q, lambda job: None, njobs=2).run()
    assert report.jobs == 2
    assert report.stop_reason == "njobs reached"
    assert len(list(q.jobs())) == 3


def test_idle_timeout_stops_a_waiting_worker(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", create=True)
    clock = FakeClock()
    worker = Worker(
        q, lambda job: None, idle_timeout=5, poll_interval=1, clock=clock, sleep=clock.sleep
    )
    report = worker.run()
    assert report.stop_reason == "idle timeout"
    assert 5 <= clock.now - 1000.0 <= 6
    assert report.jobs == 0


def test_handler_that_ends_the_job_itself_is_respected(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    result = Worker(q, lambda job: job.return_to_queue()).run_once()
    assert result.outcome is Outcome.FINISHED  # The handler's choice stands.
    (job,) = q.jobs()
    assert job.active_pid is None


def test_keyboard_interrupt_in_handler_returns_the_job_and_propagates(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")

    def interrupted(job: Job) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Worker(q, interrupted).run_once()
    (job,) = q.jobs()
    assert job.active_pid is None
    assert attempts_of(job.control) == 0


@pytest.mark.parametrize("promise", [True, False], ids=["heartbeat-lock", "plain-lock"])
def test_heartbeat_keeps_a_long_jobs_lock_fresh(tmp_path: Path, promise: bool) -> None:
    # With lock_heartbeat=False the lock makes no promise, but the worker still keeps
    # it fresh: a long job must not look like a dead worker's to anyone.
    q = DirQueue(tmp_path / "q", active_file_lifetime=0.4, lock_heartbeat=promise)
    q.enqueue_string("x")
    mtimes: list[float] = []
    rivals: list[Job | None] = []

    def slow(job: Job) -> None:
        lock = q.layout.active_path(job.jobid)
        for _ in range(6):
            time.sleep(0.1)
            mtimes.append(os.stat(lock).st_mtime)
        # Well past the lifetime, a worker on another host (which cannot see our pid,
        # and goes by the heartbeat alone) must not take it.
        rival = DirQueue(tmp_path / "q", active_file_lifetime=0.4)
        rival.hostname = "another-host.example"
        rivals.append(rival.pickup_queued_job())

    assert Worker(q, slow).run_once().outcome is Outcome.FINISHED
    # The lock (lifetime 0.4 s, beat every 0.1 s) was touched while the job ran.
    assert len(set(mtimes)) >= 3
    assert max(mtimes) - min(mtimes) >= 0.2
    assert rivals == [None]
    assert os.listdir(tmp_path / "q" / "active") == []


def test_first_signal_lets_the_job_finish_then_stops(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    q.enqueue_string("b")

    def handler(job: Job) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # Still running after the signal.

    report = Worker(q, handler).run()
    assert report.counts["finished"] == 1
    assert report.stop_reason == "signal SIGTERM"
    assert len(list(q.jobs())) == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_second_signal_returns_the_job_at_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a")
    reached_end = []

    def handler(job: Job) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        reached_end.append(True)

    started = time.monotonic()
    report = Worker(q, handler).run()
    assert time.monotonic() - started < 3
    assert reached_end == []
    assert report.counts["returned"] == 1
    (job,) = q.jobs()
    assert job.jobid == jobid
    assert job.active_pid is None
    assert attempts_of(job.control) == 0  # An interruption is not a failed attempt.


def test_job_interrupted_is_not_caught_by_except_exception() -> None:
    assert not issubclass(JobInterrupted, Exception)


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(ValueError, match="max_attempts"):
        Worker(q, boom, max_attempts=0)
    with pytest.raises(ValueError, match="poll_interval"):
        Worker(q, boom, poll_interval=0)


@pytest.mark.filterwarnings("ignore:dirqueue. skipping corrupt job")
def test_until_empty_moves_a_corrupt_job_aside_and_stops(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    (job,) = q.jobs()
    Path(job.queue_path).write_text("not a control file\n")
    clock = FakeClock()
    report = Worker(q, boom, until_empty=True, clock=clock, sleep=clock.sleep).run()
    assert report.stop_reason == "queue empty"
    assert clock.now - 1000.0 < 1  # No waiting on a job nobody can take.
    assert report.jobs == 0
    assert (tmp_path / "q" / "corrupt" / jobid).read_text() == "not a control file\n"


def test_until_empty_gives_up_on_a_job_that_no_pickup_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job this user cannot read (a shared queue with wrong modes) stays in queue/
    # for an operator; the worker must not wait for it forever.
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    monkeypatch.setattr(q, "pickup_queued_job", lambda path=None: None)
    clock = FakeClock()
    report = Worker(q, boom, until_empty=True, clock=clock, sleep=clock.sleep).run()
    assert report.stop_reason == "queue empty"
    assert 3 <= clock.now - 1000.0 <= 4
    assert report.jobs == 0
