"""DirQueue.cancel and DirQueue.empty: a waiting job is deleted unrun through the
pickup's lock (never one a live worker holds), a deferred one by a claim no promotion
can also win; stale jobs are taken over; failed jobs and unknown ids are refused."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from _job_holder import Holder
from dirqueue import DirQueue, FailedStore, JobStateError, NoSuchJobError, Worker, _deferred
from dirqueue._deferred import promote_due
from dirqueue.job import Job

pytestmark = pytest.mark.timeout(60)


def files_left(q: DirQueue) -> list[str]:
    """Every file under the queue's queue/, data/, active/, deferred/ and tmp/."""
    found = []
    for sub in ("queue", "data", "active", "deferred", "tmp"):
        for root, _, names in os.walk(os.path.join(q.dir, sub)):
            found += [os.path.relpath(os.path.join(root, n), q.dir) for n in names]
    # A queue object's own lock file (tmp/lock.*, a live holder's) is no job's.
    return sorted(f for f in found if not f.startswith("tmp/lock."))


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    return DirQueue(tmp_path / "q")


@pytest.fixture
def holder(q: DirQueue) -> Iterator[Holder]:
    """A live worker in another process, holding the queue's only job (so far)."""
    q.enqueue_string("running", {"k": "v"})
    child = Holder(Path(q.dir), 600, heartbeat=True)
    try:
        yield child
    finally:
        child.kill()


def test_cancel_deletes_a_queued_job_and_its_data(q: DirQueue) -> None:
    jobid = q.enqueue_string("never run")
    kept = q.enqueue_string("keep me")
    q.cancel(jobid)
    assert [j.jobid for j in q.jobs()] == [kept]
    assert not os.path.exists(q.layout.data_path(jobid))
    assert not os.listdir(q.layout.active_dir)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"keep me"


def test_cancel_deletes_a_deferred_job_and_no_promotion_brings_it_back(q: DirQueue) -> None:
    jobid = q.enqueue_string("later", delay=3600)
    q.cancel(jobid)
    assert list(q.jobs()) == []
    assert promote_due(q.config, now=1e12) == (0, None)
    assert files_left(q) == []


def test_a_job_a_live_worker_holds_is_refused_and_left_whole(
    q: DirQueue, holder: Holder
) -> None:
    jobid = holder.wait_ready()
    with pytest.raises(JobStateError, match=r"a worker is running it \(held by .* pid \d+\)"):
        q.cancel(jobid)
    # The worker finishes it as if nothing had happened.
    holder.send("finish")
    assert holder.read_line(30) == "finished"
    assert files_left(q) == []


def test_a_stale_job_is_taken_over_and_cancelled(q: DirQueue, holder: Holder) -> None:
    jobid = holder.wait_ready()
    holder.send("exit")  # Dies holding the lock: provably dead, on this host.
    holder.proc.wait(timeout=30)
    q.cancel(jobid)
    assert files_left(q) == []


def test_a_failed_job_is_not_cancelled_the_error_says_purge(q: DirQueue) -> None:
    jobid = q.enqueue_string("bad")

    def boom(job: Job) -> None:
        raise ValueError("no")

    Worker(q, boom, max_attempts=1).run_once()
    with pytest.raises(NoSuchJobError, match=f"has failed.*dq purge --failed {jobid}"):
        q.cancel(jobid)
    assert FailedStore(q).count() == 1


def test_an_unknown_or_malformed_id_is_no_such_job(q: DirQueue) -> None:
    q.create()
    with pytest.raises(NoSuchJobError, match=r"no job 50\.20261128192616291083\.DMzg5 waiting"):
        q.cancel("50.20261128192616291083.DMzg5")
    with pytest.raises(LookupError, match="not a job id"):
        q.cancel("../../etc")


def test_of_a_cancel_and_a_pickup_racing_exactly_one_gets_the_job(q: DirQueue) -> None:
    # The cancel is stopped after its deferred/ look, right before it takes the lock; a
    # worker takes the job meanwhile. The cancel must then refuse, not delete.
    jobid = q.enqueue_string("x")
    canceller = DirQueue(q.dir)
    gate, go = threading.Event(), threading.Event()
    real = canceller._picker.pickup_named

    def gated(name: str) -> Job | None:
        gate.set()
        assert go.wait(10)
        return real(name)

    canceller._picker.pickup_named = gated  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            canceller.cancel(jobid)
        except BaseException as err:  # Judged below.
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert gate.wait(10)
        job = q.pickup_queued_job()
        assert job is not None
    finally:
        go.set()
        thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], JobStateError)
    assert job.get_data() == b"x"
    job.finish()


def test_empty_cancels_queued_and_deferred_and_leaves_held_and_failed(
    q: DirQueue, holder: Holder
) -> None:
    held = holder.wait_ready()
    queued = [q.enqueue_string(f"q{i}") for i in range(3)]
    deferred = q.enqueue_string("d", delay=3600)
    fan = DirQueue(q.dir, queue_fanout=True)
    fanned = fan.enqueue_string("fanned out")
    failing = q.enqueue_string("f", priority=0)

    def boom(job: Job) -> None:
        raise ValueError("no")

    Worker(q, boom, max_attempts=1).run_once()  # Takes priority 0 first.
    assert sorted(q.empty()) == sorted([*queued, deferred, fanned])
    assert [j.jobid for j in q.jobs()] == [held]
    assert [f.jobid for f in FailedStore(q).jobs()] == [failing]
    assert q.empty() == []
    holder.send("finish")
    assert holder.read_line(30) == "finished"


def test_a_promotion_that_listed_the_job_before_the_cancel_moves_nothing(
    q: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The promoter read deferred/ (the job due) just before the cancel claimed the job:
    # its rename then finds nothing, and the job does not come back to queue/.
    jobid = q.enqueue_string("later", delay=3600)
    seen = _deferred.scan_deferred(q.config)
    q.cancel(jobid)
    monkeypatch.setattr(_deferred, "scan_deferred", lambda config: seen)
    assert promote_due(q.config, now=1e12) == (0, None)
    assert list(q.jobs()) == []
    assert files_left(q) == []


def test_a_job_promoted_just_before_the_cancel_is_cancelled_from_the_queue(
    q: DirQueue,
) -> None:
    jobid = q.enqueue_string("later", delay=3600)
    assert promote_due(q.config, now=1e12)[0] == 1
    q.cancel(jobid)
    assert files_left(q) == []
