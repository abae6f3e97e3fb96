"""The queue operations traced, each with what it promises once it has returned.

Each scenario runs in a forked child: a setup (not recorded), a ``sync()``, the snapshot
of the queue, then the one operation, recorded. The child exits: its pid is dead, as a
process's is after a power loss, so its locks are provably dead to the checker's repair.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dirqueue import DirQueue, FailedStore, Job, Worker, _deps, limits
from dirqueue._servers import Announcer
from dirqueue.tasks import TaskHandler, TaskQueue

from ._recorder import Event, Recorder, Snapshot


@dataclass
class Expect:
    """What a state must show after recovery."""

    #: Every job the scenario knows, with its data.
    data: dict[str, bytes] = field(default_factory=dict)
    #: Jobs that exist before the operation and that it does not end: never lost.
    kept: set[str] = field(default_factory=set)
    #: Jobs acknowledged by the operation's return (a durable enqueue): there after it.
    acked: set[str] = field(default_factory=set)
    #: Jobs whose finish returned: gone after it, never back.
    finished: set[str] = field(default_factory=set)
    #: Answers stored by the operation: readable after it.
    results: set[str] = field(default_factory=set)
    #: Jobs the operation copies elsewhere while it holds them (into failed/): a crash
    #: before it returned may leave them in both places, to be taken again (at least
    #: once, as a worker's death mid-job does). After it returned, never.
    moving: set[str] = field(default_factory=set)
    #: Jobs enqueued with ``dirqueue_only=True``: never in the plain ``queue/`` (nor its
    #: fan-out), where a Perl worker would take them.
    dirqueue_only: set[str] = field(default_factory=set)
    #: Group -> (its ``limits/GROUP`` before the operation, or None; after it): the
    #: file reads as one of the two before the operation returned, the second after.
    limits: dict[str, tuple[bytes | None, bytes | None]] = field(default_factory=dict)


@dataclass
class Trace:
    """One operation's recording."""

    name: str
    queue_options: dict[str, Any]
    promised: bool  # a durable queue: what breaks here is a violation
    start: Snapshot
    events: list[Event]
    modes: dict[int, int]
    calls: list[tuple[str, str]]
    expect: Expect
    task_queue: bool = False


@dataclass
class Scenario:
    """An operation to trace: ``setup`` then ``run``, each given the queue."""

    name: str
    setup: Callable[[DirQueue, Expect], Any]
    run: Callable[[DirQueue, Expect, Any], None]
    options: dict[str, Any] = field(default_factory=dict)
    task_queue: bool = False


def _enqueue(q: DirQueue, e: Expect, data: bytes, **kw: Any) -> str:
    jobid = q.enqueue_string(data, **kw)
    e.data[jobid] = data
    return jobid


def _held(q: DirQueue, e: Expect) -> Job:
    jobid = _enqueue(q, e, b"job held by the worker " * 3)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    return job


def _nothing(q: DirQueue, e: Expect) -> None:
    q.create()


def _one_before(q: DirQueue, e: Expect) -> None:
    e.kept.add(_enqueue(q, e, b"an earlier job"))


def _run_enqueue(q: DirQueue, e: Expect, _: Any) -> None:
    jobid = _enqueue(q, e, b"payload of the new job\n" * 4, metadata={"k": "v"})
    e.acked.add(jobid)


def _run_enqueue_many(n: int) -> Callable[[DirQueue, Expect, Any], None]:
    def run(q: DirQueue, e: Expect, _: Any) -> None:
        items = [f"batch item {i} ".encode() * 3 for i in range(n)]
        for jobid, data in zip(q.enqueue_many(items), items, strict=True):
            e.data[jobid] = data
            e.acked.add(jobid)
    return run


def _setup_held(q: DirQueue, e: Expect) -> Job:
    return _held(q, e)


def _run_pickup(q: DirQueue, e: Expect, _: Any) -> None:
    job = q.pickup_queued_job()
    assert job is not None


def _setup_queued(q: DirQueue, e: Expect) -> None:
    e.kept.add(_enqueue(q, e, b"waiting to be taken"))


def _run_finish(q: DirQueue, e: Expect, job: Job) -> None:
    job.finish()
    e.finished.add(job.jobid)


def _kept_held(q: DirQueue, e: Expect) -> Job:
    job = _held(q, e)
    e.kept.add(job.jobid)
    return job


def _run_return(q: DirQueue, e: Expect, job: Job) -> None:
    job.return_to_queue()


def _run_retry(q: DirQueue, e: Expect, job: Job) -> None:
    job.retry_later(3600, error="try again later")


def _setup_due(q: DirQueue, e: Expect) -> None:
    job = _kept_held(q, e)
    job.retry_later(3600)
    past = 1_000_000_000  # long due
    os.utime(os.path.join(q.dir, "deferred", job.jobid), (past, past))


def _run_promote(q: DirQueue, e: Expect, _: Any) -> None:
    # A queue object of its own: the one that deferred the job looked in deferred/ a
    # moment ago, and looks again only after PROMOTE_INTERVAL.
    job = DirQueue(q.dir).pickup_queued_job()
    assert job is not None


def _run_fail(q: DirQueue, e: Expect, job: Job) -> None:
    e.moving.add(job.jobid)
    FailedStore(q).add(job, "it broke", attempts=3)


def _setup_corrupt(q: DirQueue, e: Expect) -> None:
    # A job whose data is not the size its control file records: the pickup moves it
    # to corrupt/. (Its bytes are not in e.data: no check expects them whole.)
    jobid = q.enqueue_string(b"the whole data of a job")
    with open(q.layout.data_path(jobid), "r+b") as fh:
        fh.truncate(4)
    e.kept.add(_enqueue(q, e, b"a good job after it"))


def _setup_failed(q: DirQueue, e: Expect) -> str:
    job = _kept_held(q, e)
    FailedStore(q).add(job, "it broke", attempts=1)
    return job.jobid


def _run_requeue(q: DirQueue, e: Expect, jobid: str) -> None:
    FailedStore(q).requeue(jobid)


def _setup_debris(q: DirQueue, e: Expect) -> None:
    e.kept.add(_enqueue(q, e, b"held by a worker that died"))
    e.kept.add(_enqueue(q, e, b"another job"))
    pid = os.fork()
    if pid == 0:  # A worker that dies holding a job, its lock file left in tmp/.
        code = 1
        try:
            child = DirQueue(q.dir)
            if child.pickup_queued_job() is not None:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _run_repair(q: DirQueue, e: Expect, _: Any) -> None:
    q.repair(min_age=0)


def _run_unique(q: DirQueue, e: Expect, _: Any) -> None:
    e.acked.add(_enqueue(q, e, b"only one of these", unique_key="nightly-report"))


def _setup_unique_held(q: DirQueue, e: Expect) -> Job:
    jobid = _enqueue(q, e, b"unique and held", unique_key="nightly-report")
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    return job


def _setup_parent(q: DirQueue, e: Expect) -> str:
    parent = _enqueue(q, e, b"the parent")
    e.kept.add(parent)
    return parent


def _run_dependant(q: DirQueue, e: Expect, parent: str) -> None:
    e.acked.add(_enqueue(q, e, b"the dependant", depends_on=[parent]))


def _setup_family(q: DirQueue, e: Expect) -> Job:
    parent = _enqueue(q, e, b"the parent")
    e.kept.add(_enqueue(q, e, b"the dependant", depends_on=[parent]))
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == parent
    return job


def _run_finish_parent(q: DirQueue, e: Expect, job: Job) -> None:
    job.finish()
    e.finished.add(job.jobid)
    _deps.settle(q.config, job.jobid)


def _setup_task(q: DirQueue, e: Expect) -> str:
    assert isinstance(q, TaskQueue)

    @q.task(name="crashcheck.add")
    def add(a: int, b: int) -> int:
        return a + b

    jobid = add.submit(2, 3).jobid
    with open(q.layout.data_path(jobid), "rb") as fh:
        e.data[jobid] = fh.read()
    return jobid


def _run_task(q: DirQueue, e: Expect, jobid: str) -> None:
    assert isinstance(q, TaskQueue)
    with Worker(q, TaskHandler(q), until_empty=True) as worker:
        worker.run_once(timeout=0)
    e.finished.add(jobid)
    e.results.add(jobid)


# -- groups' limits, queue/dq/ and servers/ (the layers merged after the checker) ----

_GROUP = "gpu"


def _limit_bytes(q: DirQueue, group: str) -> bytes | None:
    try:
        with open(os.path.join(q.layout.limits_dir, group), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _run_enqueue_group(q: DirQueue, e: Expect, _: Any) -> None:
    e.acked.add(_enqueue(q, e, b"a job of a group\n" * 4, group=_GROUP))


def _run_enqueue_dq(q: DirQueue, e: Expect, _: Any) -> None:
    jobid = _enqueue(q, e, b"for dirqueue workers only\n" * 4, group=_GROUP,
                     dirqueue_only=True)
    e.acked.add(jobid)
    e.dirqueue_only.add(jobid)


def _setup_limited_queued(q: DirQueue, e: Expect) -> None:
    # One slot: a slot a crash leaves held (by a dead worker) blocks the group until
    # the stale-lock rule frees it.
    q.create()
    limits.set_limit(q, _GROUP, 1)
    e.kept.add(_enqueue(q, e, b"a job of a limited group", group=_GROUP))
    e.kept.add(_enqueue(q, e, b"its next of kin", group=_GROUP))


def _setup_limited_held(q: DirQueue, e: Expect) -> Job:
    q.create()
    limits.set_limit(q, _GROUP, 1)
    jobid = _enqueue(q, e, b"a limited job, held", group=_GROUP)
    e.kept.add(_enqueue(q, e, b"the next of its group", group=_GROUP))
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    return job


def _setup_rate_queued(q: DirQueue, e: Expect) -> None:
    # A rate the drain never reaches: the start token is what is traced.
    q.create()
    limits.set_limit(q, "api", rate="100/min")
    e.kept.add(_enqueue(q, e, b"a rate-limited job", group="api"))


def _setup_limit_old(q: DirQueue, e: Expect) -> None:
    q.create()
    limits.set_limit(q, _GROUP, 3, rate="10/min")
    e.kept.add(_enqueue(q, e, b"a job of the group", group=_GROUP))


def _run_limit_set(q: DirQueue, e: Expect, _: Any) -> None:
    # What ``dq limit set gpu 2 --rate 50/h`` calls (dirqueue.cli._limits).
    old = _limit_bytes(q, _GROUP)
    limits.set_limit(q, _GROUP, 2, rate="50/h")
    e.limits[_GROUP] = (old, _limit_bytes(q, _GROUP))


def _run_limit_clear(q: DirQueue, e: Expect, _: Any) -> None:
    # What ``dq limit clear gpu`` calls.
    old = _limit_bytes(q, _GROUP)
    assert limits.clear_limit(q, _GROUP)
    e.limits[_GROUP] = (old, None)


def _setup_dq_held(q: DirQueue, e: Expect) -> Job:
    jobid = _enqueue(q, e, b"dirqueue only, held", dirqueue_only=True)
    e.kept.add(jobid)
    e.dirqueue_only.add(jobid)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    return job


def _setup_dq_due(q: DirQueue, e: Expect) -> None:
    job = _setup_dq_held(q, e)
    job.retry_later(3600)
    past = 1_000_000_000  # long due
    os.utime(os.path.join(q.dir, "deferred", job.jobid), (past, past))


def _run_announce(q: DirQueue, e: Expect, _: Any) -> None:
    # A supervisor's first word (run_workers does this as it starts, and sweeps).
    Announcer(q.config, 4).update(2)


SCENARIOS: list[Scenario] = [
    Scenario("enqueue, new queue", _nothing, _run_enqueue),
    Scenario("enqueue", _one_before, _run_enqueue),
    Scenario("enqueue, fan-out", _one_before, _run_enqueue, {"queue_fanout": True}),
    Scenario("enqueue, durable=False", _one_before, _run_enqueue, {"durable": False}),
    Scenario("enqueue_many of 3", _one_before, _run_enqueue_many(3)),
    Scenario("enqueue_many of 8 (syncfs)", _nothing, _run_enqueue_many(8)),
    Scenario("pickup", _setup_queued, _run_pickup),
    Scenario("finish", _setup_held, _run_finish),
    Scenario("return to queue", _kept_held, _run_return),
    Scenario("retry into deferred/", _kept_held, _run_retry),
    Scenario("promotion of a deferred job", _setup_due, _run_promote),
    Scenario("move to failed/", _kept_held, _run_fail),
    Scenario("requeue from failed/", _setup_failed, _run_requeue),
    Scenario("corrupt job moved to corrupt/", _setup_corrupt, _run_promote),
    Scenario("repair", _setup_debris, _run_repair),
    Scenario("unique enqueue (keys/)", _nothing, _run_unique),
    Scenario("finish of a unique job", _setup_unique_held, _run_finish),
    Scenario("dependant enqueue (waiting/)", _setup_parent, _run_dependant),
    Scenario("parent finish, dependant promoted", _setup_family, _run_finish_parent),
    Scenario("task run, answer in results/", _setup_task, _run_task, task_queue=True),
    Scenario("enqueue with group=", _one_before, _run_enqueue_group),
    Scenario("enqueue, dirqueue_only (queue/dq/)", _one_before, _run_enqueue_dq),
    Scenario("pickup, limited group (slots/)", _setup_limited_queued, _run_pickup),
    Scenario("finish, limited group (slot freed)", _setup_limited_held, _run_finish),
    Scenario("pickup, rate-limited (starts/)", _setup_rate_queued, _run_pickup),
    Scenario("dq limit set (limits/), new", _one_before, _run_limit_set),
    Scenario("dq limit set (limits/), replaced", _setup_limit_old, _run_limit_set),
    Scenario("dq limit clear (limits/)", _setup_limit_old, _run_limit_clear),
    Scenario("retry of a dirqueue_only job", _setup_dq_held, _run_retry),
    Scenario("promotion, dirqueue_only job", _setup_dq_due, _run_promote),
    Scenario("servers/ entry of a supervisor", _one_before, _run_announce),
]


def make_queue(directory: str, options: dict[str, Any], task_queue: bool) -> DirQueue:
    """The queue object a scenario and its checks use."""
    if task_queue:
        return TaskQueue(directory, **options)
    return DirQueue(directory, **options)


def _marker(path: str) -> None:
    with contextlib.suppress(OSError):
        os.stat(path)


def record_here(scenario: Scenario, directory: str) -> Trace:
    """Record ``scenario`` in this process (:func:`trace` forks first)."""
    return _trace_here(scenario, directory)


def _trace_here(scenario: Scenario, directory: str) -> Trace:
    q = make_queue(directory, scenario.options, scenario.task_queue)
    expect = Expect()
    state = scenario.setup(q, expect)
    os.sync()
    recorder = Recorder(directory)
    start = recorder.snapshot()
    _marker("/crashcheck-begin")  # For strace: the recorded calls come between these.
    with recorder.recording():
        scenario.run(q, expect, state)
    _marker("/crashcheck-end")
    return Trace(scenario.name, scenario.options, scenario.options.get("durable", True),
                 start, recorder.events, recorder.modes, recorder.calls, expect,
                 scenario.task_queue)


def trace(scenario: Scenario, directory: str, timeout: float = 60) -> Trace:
    """Record ``scenario`` in a forked child (which then exits) in ``directory``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            signal.alarm(int(timeout))
            payload = pickle.dumps(_trace_here(scenario, directory))
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            code = 0
        except BaseException as err:
            print(f"crashcheck: scenario {scenario.name!r} failed: {err!r}", file=sys.stderr)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as inp:
            payload = inp.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not payload:
        raise RuntimeError(f"scenario {scenario.name!r} could not be traced")
    trace_: Trace = pickle.loads(payload)  # noqa: S301 - our own child's
    return trace_
