"""The task API in one process: what submit checks and writes, per-task options as the
worker honours them, call-time overrides, pickle only when opted in, a task's time
limit, and an answered job never run twice."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from dirqueue import FailedStore, Worker
from dirqueue._results import read_result, success_record, write_result
from dirqueue.failed import record_attempts
from dirqueue.tasks import (
    TaskArgumentError,
    TaskFailed,
    TaskHandler,
    TaskQueue,
    TaskResult,
)

pytestmark = pytest.mark.timeout(60)
_names = itertools.count()


def _name(base: str) -> str:
    """A task name no other test registered (the registry is per process)."""
    return f"{base}_{next(_names)}"


@pytest.fixture
def q(tmp_path: Path) -> TaskQueue:
    return TaskQueue(tmp_path / "q")


def _drain(q: TaskQueue, **options: Any) -> None:
    with Worker(q, TaskHandler(q), until_empty=True, **options) as worker:
        worker.run()


def test_submit_writes_an_ordinary_job_naming_its_task(q: TaskQueue) -> None:
    @q.task(name=_name("resize"), retries=3, retry_delay=10, timeout=60, priority=20)
    def resize(path: str, size: int = 128) -> dict[str, Any]:
        return {"path": path, "size": size}

    result = resize.submit("a.jpg", size=64)
    (job,) = q.jobs()
    assert job.jobid == result.jobid
    assert job.priority == 20
    assert job.get_data() == b'{"args": ["a.jpg"], "kwargs": {"size": 64}}'
    assert job.metadata == {
        "task": resize.name, "task_encoding": "json", "dq.result_ttl": "604800",
        "dq.max_attempts": "4", "dq.retry_delay": "10", "dq.timeout": "60",
    }
    assert result.status == "queued"
    _drain(q)
    assert result.get(timeout=5) == {"path": "a.jpg", "size": 64}
    assert resize("b", 1) == {"path": "b", "size": 1}  # Called directly: runs here.


@pytest.mark.parametrize(
    ("args", "kwargs", "argument", "why"),
    [
        (({1, 2},), {}, "x", "not JSON serializable"),
        (((1, 2),), {}, "x", "would arrive as list"),
        ((1,), {"y": {1: "a"}}, "y", "would arrive as dict"),
        ((float("nan"),), {}, "x", "Out of range float"),
        ((Path("p"),), {}, "x", "not JSON serializable"),
    ],
)
def test_what_json_cannot_carry_is_refused_at_submit_naming_the_argument(
    q: TaskQueue, args: tuple[Any, ...], kwargs: dict[str, Any], argument: str, why: str
) -> None:
    @q.task(name=_name("f"))
    def f(x: Any, y: Any = None) -> None: ...

    with pytest.raises(TaskArgumentError, match=why) as caught:
        f.submit(*args, **kwargs)
    assert caught.value.argument == argument
    assert f"argument {argument!r}" in str(caught.value)
    assert list(q.jobs()) == []


def test_arguments_that_do_not_fit_are_refused_at_submit(q: TaskQueue) -> None:
    @q.task(name=_name("g"))
    def g(a: int) -> int:
        return a

    with pytest.raises(TaskArgumentError, match="missing a required argument: 'a'"):
        g.submit()
    with pytest.raises(TypeError, match="unexpected keyword argument 'b'"):
        g.submit(1, b=2)
    assert list(q.jobs()) == []


def test_options_override_one_submission_and_leave_the_task_alone(q: TaskQueue) -> None:
    @q.task(name=_name("h"), priority=30)
    def h() -> str:
        return "ok"

    later = h.options(priority=5, delay=3600, result_ttl=60).submit()
    now = h.submit()
    assert later.status == "deferred"
    assert now.status == "queued"
    jobs = {job.jobid: job for job in q.jobs()}
    assert jobs[now.jobid].priority == 30
    assert jobs[later.jobid].metadata["dq.result_ttl"] == "60"
    with pytest.raises(ValueError, match="priority must be a whole number from 0 to 99"):
        h.options(priority=100)
    with pytest.raises(ValueError, match="retries must be a whole number"):
        q.task(retries=-1)


def test_a_tasks_retries_and_retry_delay_override_the_workers(q: TaskQueue) -> None:
    calls: list[float] = []

    @q.task(name=_name("flaky"), retries=1)
    def flaky() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("down")

    result = flaky.submit()
    _drain(q, max_attempts=5)
    assert len(calls) == 2  # Its own two attempts, not the worker's five.
    with pytest.raises(TaskFailed, match="RuntimeError: down"):
        result.get(timeout=5)
    assert FailedStore(q).get(result.jobid).attempts == 2

    @q.task(name=_name("later"), retries=1, retry_delay=3600)
    def later() -> None:
        raise RuntimeError("not yet")

    waiting = later.submit()
    with Worker(q, TaskHandler(q), max_attempts=5) as worker:
        worker.run_once(timeout=0)
    assert waiting.status == "deferred"  # Its back-off, not the worker's 0.


def test_a_tasks_timeout_stops_it_and_is_its_failure(q: TaskQueue) -> None:
    @q.task(name=_name("slow"), timeout=0.2, retries=0)
    def slow() -> None:
        time.sleep(30)

    result = slow.submit()
    started = time.monotonic()
    _drain(q)
    assert time.monotonic() - started < 10
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=5)
    assert caught.value.error_type == "JobTimeoutError"
    assert caught.value.message == "timed out after 0.2 s"


def test_pickle_only_when_the_queues_owner_opts_in(tmp_path: Path) -> None:
    trusted = TaskQueue(tmp_path / "q", pickle=True)

    @trusted.task(name=_name("union"))
    def union(a: set[int], b: set[int]) -> set[int]:
        return a | b

    result = union.submit({1}, {2})
    (job,) = trusted.jobs()
    assert job.metadata["task_encoding"] == "pickle"
    _drain(trusted)
    assert result.get(timeout=5) == {1, 2}
    plain_reader: TaskResult[Any] = TaskResult(TaskQueue(tmp_path / "q"), result.jobid)
    with pytest.raises(Exception, match="answer is pickled"):
        plain_reader.get(timeout=5)


def test_a_pickled_call_fails_on_a_worker_whose_task_does_not_allow_it(q: TaskQueue) -> None:
    name = _name("strict")

    @q.task(name=name)
    def strict(x: int) -> int:
        return x

    jobid = q.enqueue_string(b"\x80\x04N.", {"task": name, "task_encoding": "pickle",
                                             "dq.result_ttl": "60"})
    _drain(q)
    with pytest.raises(TaskFailed, match="does not load pickle") as caught:
        TaskResult(q, jobid).get(timeout=5)
    assert caught.value.error_type == "BadCallError"


def test_a_job_already_answered_is_not_run_again(q: TaskQueue) -> None:
    ran: list[int] = []

    @q.task(name=_name("once"))
    def once(x: int) -> int:
        ran.append(x)
        return x * 2

    result = once.submit(21)
    # As if an earlier attempt answered and its worker died before finishing the job:
    # the pickup that broke its lock counted that attempt.
    job = q.pickup_queued_job()
    assert job is not None
    record_attempts(job, 1)
    job.return_to_queue()
    write_result(q.config, success_record(q.config, result.jobid, 42, 1, 60))
    _drain(q)
    assert ran == []
    assert result.get(timeout=5) == 42
    record = read_result(q.config, result.jobid)
    assert record is not None
    assert record.attempt == 1


def test_a_bare_decorator_makes_a_task_named_for_its_function(q: TaskQueue) -> None:
    @q.task
    def bare(x: int) -> int:
        return x + 1

    here = test_a_bare_decorator_makes_a_task_named_for_its_function.__name__
    assert bare.name == f"{__name__}.{here}.<locals>.bare"
    result = bare.submit(1)
    _drain(q)
    assert result.get(timeout=5) == 2


@pytest.mark.parametrize("jobid", ["../queue/x", "", "50.2026.x/y", "nonsense"])
def test_a_handle_takes_only_a_job_id_never_a_path(q: TaskQueue, jobid: str) -> None:
    with pytest.raises(ValueError, match="is not a job id"):
        TaskResult(q, jobid)
    with pytest.raises(ValueError, match="is not a job id"):
        read_result(q.config, jobid)


def test_a_unique_task_queues_one_job_per_call(q: TaskQueue) -> None:
    @q.task(name=_name("thumb"), unique=True)
    def thumb(path: str, size: int = 128, crop: bool = False) -> str:
        return f"{path}@{size}"

    first = thumb.submit("a.jpg", size=64, crop=True)
    same = thumb.submit("a.jpg", crop=True, size=64)  # The same call, another order.
    other = thumb.submit("b.jpg", size=64)
    assert same.jobid == first.jobid
    assert other.jobid != first.jobid
    assert len(list(q.jobs())) == 2
    _drain(q)
    assert same.get(timeout=5) == "a.jpg@64"
    again = thumb.submit("a.jpg", size=64, crop=True)
    assert again.jobid != first.jobid  # Ended: the call may be queued again.


def test_a_task_waits_for_the_tasks_it_depends_on(q: TaskQueue) -> None:
    order: list[str] = []

    @q.task(name=_name("step"))
    def step(label: str) -> str:
        order.append(label)
        return label

    last = step.options(depends_on=(step.submit("one"), step.submit("two"))).submit("last")
    assert last.status == "waiting"
    _drain(q)
    assert last.get(timeout=5) == "last"
    assert order[-1] == "last"
