"""Which job comes next: priorities, submission order, fan-out, pickup by name, listing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from dirqueue import CorruptJobError, DirQueue, InvalidPriorityError, Job, QueueNotFoundError


class Taken:
    """What a worker saw of a job it took and finished."""

    def __init__(self, job: Job) -> None:
        self.jobid = job.jobid
        self.priority = job.priority
        self.queue_path = job.queue_path
        self.data = job.get_data()


def drain(queue: DirQueue) -> list[Taken]:
    """Pick up and finish every job, returning them in the order they came."""
    taken: list[Taken] = []
    while (job := queue.pickup_queued_job()) is not None:
        taken.append(Taken(job))
        job.finish()
    return taken


def test_lower_priority_number_runs_first_then_submission_order(queue: DirQueue) -> None:
    submitted = [
        (queue.enqueue_string(f"p{pri}-{i}", priority=pri), pri, i)
        for i in range(3)
        for pri in (50, 99, 0, 10, 50)
    ]
    expected = [jobid for jobid, _pri, _i in sorted(submitted, key=lambda s: (s[1], s[0]))]
    taken = drain(queue)
    assert [job.jobid for job in taken] == expected
    assert [job.priority for job in taken] == sorted(job.priority for job in taken)
    # Within one priority, submission order (the ids embed the time, so sort == submit).
    fifties = [job.data for job in taken if job.priority == 50]
    assert fifties == [b"p50-0", b"p50-0", b"p50-1", b"p50-1", b"p50-2", b"p50-2"]


def test_default_priority_is_50(queue: DirQueue) -> None:
    jobid = queue.enqueue_string("x")
    assert jobid.startswith("50.")
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.priority == 50
    job.finish()


def test_a_new_urgent_job_overtakes_waiting_ones(queue: DirQueue, qdir: Path) -> None:
    for i in range(3):
        queue.enqueue_string(f"normal {i}")
    first = queue.pickup_queued_job()
    assert first is not None
    assert first.get_data() == b"normal 0"
    first.finish()
    queue.enqueue_string("urgent", priority=1)
    # A worker that starts now sees it first.
    newcomer = DirQueue(qdir).pickup_queued_job()
    assert newcomer is not None
    assert newcomer.get_data() == b"urgent"
    newcomer.return_to_queue()
    # A running worker sees it next too, at once.
    assert [job.data for job in drain(queue)] == [b"urgent", b"normal 1", b"normal 2"]


@pytest.mark.parametrize("bad", [-1, 100, 1000, 5.0, "5", None, True])
def test_priority_out_of_range_or_not_int_is_refused(queue: DirQueue, bad: object) -> None:
    with pytest.raises(InvalidPriorityError) as info:
        queue.enqueue_string("x", priority=bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert info.value.priority == bad
    assert not os.path.exists(queue.dir) or list(queue.jobs()) == []


@pytest.mark.parametrize("priority", [0, 1, 9, 10, 98, 99])
def test_priorities_at_the_edges_are_accepted(queue: DirQueue, priority: int) -> None:
    jobid = queue.enqueue_string("x", priority=priority)
    assert jobid.startswith(f"{priority:02d}.")
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.priority == priority
    job.finish()


def test_unordered_queue_still_delivers_every_job_once(qdir: Path) -> None:
    queue = DirQueue(qdir, ordered=False)
    submitted = {queue.enqueue_string(f"job {i}", priority=i % 7 * 10) for i in range(60)}
    taken = [job.jobid for job in drain(queue)]
    assert sorted(taken) == sorted(submitted)
    assert len(set(taken)) == len(taken)


def test_fanout_puts_control_files_one_level_down(qdir: Path) -> None:
    queue = DirQueue(qdir, queue_fanout=True)
    jobids = [queue.enqueue_string(f"fan {i}", priority=90 - i) for i in range(40)]
    top = sorted(os.listdir(qdir / "queue"))
    assert top, "nothing written"
    assert all(len(name) == 1 and name in "0123456789abcdef" for name in top)
    found = {}
    for digit in top:
        for name in os.listdir(qdir / "queue" / digit):
            found[name] = digit
    assert sorted(found) == sorted(jobids)
    # 40 jobs over 16 random digits: all in one digit would mean no fan-out at all.
    assert len(set(found.values())) > 1
    # Still taken in priority order across the subdirectories.
    taken = drain(queue)
    assert [job.jobid for job in taken] == sorted(jobids)
    assert all(job.queue_path.endswith(f"queue/{found[job.jobid]}/{job.jobid}") for job in taken)


def test_fanout_and_plain_writers_share_one_queue(qdir: Path) -> None:
    plain = DirQueue(qdir)
    fanned = DirQueue(qdir, queue_fanout=True)
    a = plain.enqueue_string("plain", priority=20)
    b = fanned.enqueue_string("fanned", priority=10)
    assert [job.jobid for job in drain(plain)] == [b, a]
    c = plain.enqueue_string("plain again")
    d = fanned.enqueue_string("fanned again")
    assert sorted(job.jobid for job in drain(fanned)) == sorted([c, d])


def test_pickup_by_job_id_and_by_queue_path(queue: DirQueue) -> None:
    first = queue.enqueue_string("first", priority=1)
    middle = queue.enqueue_string("middle", priority=50)
    last = queue.enqueue_string("last", priority=99)
    listed = {job.jobid: job for job in queue.jobs()}

    job = queue.pickup_queued_job(last)
    assert job is not None
    assert job.jobid == last
    assert job.get_data() == b"last"
    job.finish()

    job = queue.pickup_queued_job(listed[middle].queue_path)
    assert job is not None
    assert job.jobid == middle
    # While held, the same job cannot be taken again by name.
    assert queue.pickup_queued_job(middle) is None
    job.finish()
    # Once finished, it is gone.
    assert queue.pickup_queued_job(middle) is None
    assert [job.jobid for job in drain(queue)] == [first]


def test_pickup_by_id_finds_fanned_out_jobs(qdir: Path) -> None:
    queue = DirQueue(qdir, queue_fanout=True)
    jobids = [queue.enqueue_string(f"{i}") for i in range(5)]
    for jobid in reversed(jobids):
        job = queue.pickup_queued_job(jobid)
        assert job is not None
        assert job.jobid == jobid
        job.finish()
    assert list(queue.jobs()) == []


def test_pickup_by_a_name_that_is_no_job_id_is_an_error(queue: DirQueue) -> None:
    with pytest.raises(CorruptJobError):
        queue.pickup_queued_job("not-a-job")


def test_pickup_of_a_missing_job_id_returns_none(queue: DirQueue) -> None:
    queue.enqueue_string("x")
    assert queue.pickup_queued_job("50.20000101000000000000.BM") is None


def test_listing_shows_waiting_and_active_jobs_with_their_owner(queue: DirQueue) -> None:
    waiting = queue.enqueue_string("waiting", {"state": "waiting"}, priority=60)
    active = queue.enqueue_string("active", {"state": "active"}, priority=40)
    held = queue.pickup_queued_job()
    assert held is not None
    assert held.jobid == active

    listed = list(queue.jobs())
    assert [job.jobid for job in listed] == [active, waiting]
    by_id = {job.jobid: job for job in listed}
    assert by_id[active].active_host == socket.gethostname()
    assert by_id[active].active_pid == os.getpid()
    assert by_id[active].metadata == {"state": "active"}
    assert by_id[waiting].active_host is None
    assert by_id[waiting].active_pid is None
    assert by_id[waiting].get_data() == b"waiting"
    assert not by_id[waiting].is_active

    # Listing takes nothing: the waiting job can still be picked up.
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == waiting
    job.return_to_queue()
    held.finish()
    assert [job.jobid for job in queue.jobs()] == [waiting]


def test_visit_all_jobs_calls_the_visitor_with_the_context(queue: DirQueue) -> None:
    ids = [queue.enqueue_string(str(i), {"i": str(i)}, priority=i) for i in range(5)]
    held = queue.pickup_queued_job()
    assert held is not None
    seen: list[tuple[str, str, int | None]] = []
    context = {"calls": 0}

    def visitor(ctx: dict[str, int], job: Job) -> None:
        ctx["calls"] += 1
        seen.append((job.jobid, job.metadata["i"], job.active_pid))

    queue.visit_all_jobs(visitor, context)
    assert context["calls"] == 5
    assert seen == [(jobid, str(i), os.getpid() if i == 0 else None) for i, jobid in enumerate(ids)]
    held.finish()


def test_listing_an_empty_or_missing_queue(tmp_path: Path) -> None:
    queue = DirQueue(tmp_path / "never-created")
    assert list(queue.jobs()) == []
    # A pickup makes no queue (a mistyped path must not become one): it says so.
    with pytest.raises(QueueNotFoundError):
        queue.pickup_queued_job()
    assert not (tmp_path / "never-created").exists()
    queue.create()
    assert queue.pickup_queued_job() is None


def test_entries_in_queue_that_are_not_jobs_are_ignored(queue: DirQueue, qdir: Path) -> None:
    jobid = queue.enqueue_string("real")
    (qdir / "queue" / "README").write_text("not a job")
    (qdir / "queue" / ".hidden").write_text("not a job")
    assert [job.jobid for job in queue.jobs()] == [jobid]
    assert [job.jobid for job in drain(queue)] == [jobid]


def test_pickup_finds_a_new_job_while_the_ones_it_listed_are_held(qdir: Path) -> None:
    """None from pickup_queued_job means no job can be taken: it must not stop at the
    end of a listing it reused while new jobs arrived."""
    worker_1 = DirQueue(qdir)
    worker_2 = DirQueue(qdir)
    worker_1.enqueue_string("a")
    worker_1.enqueue_string("b")
    a = worker_1.pickup_queued_job()
    b = worker_2.pickup_queued_job()
    assert a is not None
    assert b is not None
    assert (a.get_data(), b.get_data()) == (b"a", b"b")
    late = worker_2.enqueue_string("c")
    c = worker_1.pickup_queued_job()
    assert c is not None, "a waiting job was not seen"
    assert c.jobid == late
    for job in (a, b, c):
        job.finish()


def test_drain_loop_gets_every_job_while_another_worker_enqueues(qdir: Path) -> None:
    worker = DirQueue(qdir)
    producer = DirQueue(qdir)
    held = []
    for i in range(5):
        producer.enqueue_string(f"first {i}")
    first = worker.pickup_queued_job()
    assert first is not None
    held.append(first)
    # Another worker holds the rest of what our listing saw ...
    other = DirQueue(qdir)
    while (job := other.pickup_queued_job()) is not None:
        held.append(job)
    # ... and more arrive: we must take them, not report an empty queue.
    for i in range(3):
        producer.enqueue_string(f"second {i}")
    got = []
    while (job := worker.pickup_queued_job()) is not None:
        got.append(job.get_data())
        job.finish()
    assert got == [b"second 0", b"second 1", b"second 2"]
    for job in held:
        job.finish()


def test_a_job_finished_while_the_queue_is_listed_is_skipped_quietly(qdir: Path) -> None:
    lister = DirQueue(qdir)
    worker = DirQueue(qdir)
    ids = [lister.enqueue_string(str(i), priority=10 + i) for i in range(3)]
    listing = lister.jobs()
    first = next(listing)
    assert first.jobid == ids[0]
    # The second job is finished after the scan but before the listing reaches it.
    job = worker.pickup_queued_job(ids[1])
    assert job is not None
    job.finish()
    rest = [job.jobid for job in listing]  # Warnings are errors: none may be raised.
    assert rest == [ids[2]]


@pytest.mark.parametrize("buf_size", [0, -1])
def test_buf_size_must_be_positive(qdir: Path, buf_size: int) -> None:
    with pytest.raises(ValueError, match="buf_size"):
        DirQueue(qdir, buf_size=buf_size)


def test_an_empty_directory_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        DirQueue("")
