"""Fault injection at every filesystem call of enqueue, pickup, finish and return.

Each operation is first run once to count its filesystem calls (``os.open``,
``os.write``, ``os.fsync``, ``os.link`` ...). Then, for each of those calls in turn
and each errno a real filesystem gives (ENOSPC, EIO, EDQUOT, EACCES, ENOENT, ESTALE),
the operation runs again on a fresh queue with that one call failing. Calls that
change the filesystem are also failed *after* they took effect, as an NFS client
reports a retried request whose first reply was lost.

After every fault: the error is a DirQueueError (with a message saying what failed);
no half-written job is visible; the job's fate is whole (enqueued or not, finished or
still in the queue); retrying works; and after repair() nothing is left over.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import random
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _helpers import recorded_logs
from dirqueue import DirQueue, DirQueueError, Job, _dirfds, _lockfile
from dirqueue._format import attempts_of, parse_control
from dirqueue._identity import this_process
from durability_checks import assert_no_half_jobs, assert_no_orphans, deferred_jobs, files_under

pytestmark = pytest.mark.timeout(120)

ERRNOS = [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EACCES, errno.ENOENT, errno.ESTALE]
#: The os functions dirqueue's enqueue/pickup/finish/return go through.
PATCHED = [
    "open", "write", "fsync", "fstat", "close", "link", "unlink", "rename", "utime",
    "mkdir", "lstat", "stat", "scandir", "fdopen", "statvfs",
]
#: Calls that change the filesystem: these also fail after taking effect.
MUTATING = {"link", "unlink", "rename", "mkdir", "utime", "write", "fsync", "close"}


@pytest.fixture(autouse=True)
def _identity_known() -> None:
    # A process works out its identity (boot id, pid namespace) once, at its first
    # lock: outside the counted runs, or the first would make calls the others do not.
    this_process()


@pytest.fixture(autouse=True)
def _lock_file_touched_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # A queue object's lock file is given the time again only when its last mtime is
    # over FRESH_ENOUGH old: a pickup that links twice (a corrupt job moved aside with
    # fsyncs between) made the utime or not as the machine's load had it, and the armed
    # run's calls were not the counted run's. Touched at every link, as before the
    # window, each run makes the same calls, and a fault is injected at each utime too.
    monkeypatch.setattr(_lockfile, "FRESH_ENOUGH", 0.0)


@dataclass
class Injector:
    """Counts os calls while armed, and fails the ``fail_at``-th one."""

    fail_at: int | None = None
    err: int = errno.EIO
    after: bool = False
    calls: list[str] = field(default_factory=list)
    fired: str | None = None
    #: The thread the operation runs in: only its calls are counted and failed. Another
    #: thread's (a heartbeat that an earlier test's held job keeps going, a finished
    #: thread's kept directories closed) come when they come, and made the count differ
    #: between runs of one operation under load.
    thread: int | None = None

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self.thread:
                return real(*args, **kwargs)
            self.calls.append(name)
            if len(self.calls) != self.fail_at:
                return real(*args, **kwargs)
            self.fired = name
            if self.after or name == "close":  # close(2) frees the fd even when it fails
                real(*args, **kwargs)
            target = args[0] if args and isinstance(args[0], str) else None
            raise OSError(self.err, f"injected: {os.strerror(self.err)}", target)

        return wrapper

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        saved = {name: getattr(os, name) for name in PATCHED}
        self.thread = threading.get_ident()
        try:
            for name, real in saved.items():
                setattr(os, name, self._wrap(name, real))
            yield
        finally:
            for name, real in saved.items():
                setattr(os, name, real)


# -- the operations -------------------------------------------------------------------
# Each scenario sets up a queue (unarmed), runs one operation (armed), then checks and
# mends the outcome (unarmed). A bystander job sits in the queue throughout and must
# come through untouched.


class Scenario:
    name = ""

    def __init__(self, root: Path) -> None:
        # Each scenario starts with no kept directory descriptors: an earlier one's,
        # pushed out of this thread's cache in the armed run, would be closed there, a
        # call that is not the operation's (and not there when the calls were counted).
        _dirfds.clear()
        self.q = DirQueue(root / "q", active_file_lifetime=600)
        self.bystander = self.q.enqueue_string("bystander", {"role": "bystander"}, priority=90)

    def run(self) -> Any:
        raise NotImplementedError

    def settle(self, raised: BaseException | None, result: Any) -> None:
        """Check the job's fate after the fault, and finish what the fault left."""
        raise NotImplementedError


class Enqueue(Scenario):
    name = "enqueue"

    def run(self) -> Any:
        return self.q.enqueue_string(b"payload", {"k": "v"})

    def settle(self, raised: BaseException | None, result: Any) -> None:
        jobs = assert_no_half_jobs(self.q)
        if raised is None:
            assert jobs == {self.bystander: b"bystander", result: b"payload"}
            _finish(self.q, [result])
        else:
            assert jobs == {self.bystander: b"bystander"}, "a failed enqueue left a job"


class EnqueueFanout(Enqueue):
    name = "enqueue_fanout"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.q = DirQueue(self.q.dir, queue_fanout=True)
        random.seed(4)  # The fan-out digit: a new one makes the queue/X directory.


class EnqueueMany(Scenario):
    name = "enqueue_many"

    def run(self) -> Any:
        return self.q.enqueue_many([b"one", (b"two", {"n": "2"}), "three"])

    def settle(self, raised: BaseException | None, result: Any) -> None:
        jobs = assert_no_half_jobs(self.q)
        if raised is None:
            assert [jobs[jobid] for jobid in result] == [b"one", b"two", b"three"]
            assert len(jobs) == 4
            _finish(self.q, result)
        else:
            assert jobs == {self.bystander: b"bystander"}, "a failed batch left jobs"


class Pickup(Scenario):
    name = "pickup"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jobid = self.q.enqueue_string("work", priority=10)
        self.q = DirQueue(self.q.dir)  # A fresh reader: no cached listing.

    def run(self) -> Any:
        return self.q.pickup_queued_job()

    def settle(self, raised: BaseException | None, result: Any) -> None:
        assert set(assert_no_half_jobs(self.q)) == {self.bystander, self.jobid}
        if isinstance(result, Job) and result.jobid == self.jobid:
            assert result.get_data() == b"work"
            result.finish()
            return
        if isinstance(result, Job):
            # The fault made the pickup pass the job by (it looked gone); it took the
            # next one, whole.
            assert result.jobid == self.bystander
            assert result.get_data() == b"bystander"
            result.return_to_queue()
        # Not taken: the job must be free for the next pickup, not locked by us.
        job = DirQueue(self.q.dir).pickup_queued_job()
        assert job is not None, "a failed pickup left the job locked"
        assert job.jobid == self.jobid
        job.finish()


class Finish(Scenario):
    name = "finish"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jobid = self.q.enqueue_string("work", priority=10)
        job = self.q.pickup_queued_job()
        assert job is not None
        self.job = job

    def run(self) -> Any:
        return self.job.finish()

    def settle(self, raised: BaseException | None, result: Any) -> None:
        jobs = assert_no_half_jobs(self.q)
        if raised is None:
            assert set(jobs) == {self.bystander}
            return
        assert self.job.is_active, "finish failed but the job says it is done"
        self.job.finish()  # Retrying works.
        assert set(assert_no_half_jobs(self.q)) == {self.bystander}


class Return(Scenario):
    name = "return"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jobid = self.q.enqueue_string("work", priority=10)
        job = self.q.pickup_queued_job()
        assert job is not None
        self.job = job

    def run(self) -> Any:
        return self.job.return_to_queue()

    def settle(self, raised: BaseException | None, result: Any) -> None:
        assert set(assert_no_half_jobs(self.q)) == {self.bystander, self.jobid}
        if raised is not None:
            assert self.job.is_active
            self.job.return_to_queue()
        job = DirQueue(self.q.dir).pickup_queued_job()
        assert job is not None, "a returned job cannot be picked up again"
        assert job.jobid == self.jobid
        job.finish()


def _finish(q: DirQueue, jobids: list[str]) -> None:
    for jobid in jobids:
        job = q.pickup_queued_job(jobid)
        assert job is not None
        job.finish()


class RetryLater(Scenario):
    """A failed job deferred for its retry: at every step it is either queued or
    deferred, never both, never neither, and its attempt is counted when deferred."""

    name = "retry_later"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jobid = self.q.enqueue_string("work", priority=10)
        job = self.q.pickup_queued_job()
        assert job is not None
        self.job = job

    def run(self) -> Any:
        return self.job.retry_later(3600, error="boom")

    def settle(self, raised: BaseException | None, result: Any) -> None:
        queued = assert_no_half_jobs(self.q)
        deferred = deferred_jobs(self.q)
        assert (self.jobid in queued) != (self.jobid in deferred), "lost or doubled"
        if raised is None:
            assert self.jobid in deferred
            assert not self.job.is_active
        elif self.job.is_active:
            self.job.return_to_queue()  # What a caller does after a failed retry_later.
        if self.jobid in deferred:
            path = self.q.layout.deferred_path(self.jobid)
            with open(path, "rb") as fh:
                assert attempts_of(parse_control(fh.read())) == 1
            os.utime(path, (1, 1))  # Due now: the next pickup brings it back.
        job = DirQueue(self.q.dir).pickup_queued_job()
        assert job is not None, "the job is neither queued nor coming back"
        assert job.jobid == self.jobid
        assert job.get_data() == b"work"
        job.finish()


SCENARIOS: list[type[Scenario]] = [
    Enqueue, EnqueueFanout, EnqueueMany, Pickup, Finish, Return, RetryLater
]


def _run_once(scenario: Scenario, injector: Injector) -> tuple[BaseException | None, Any]:
    with recorded_logs() as caught:
        raised: BaseException | None = None
        result: Any = None
        # Queue objects of earlier runs, collected inside the armed run, would close
        # their files there: calls that are not the operation's.
        gc.collect()
        with injector.armed():
            try:
                result = scenario.run()
            except Exception as err:
                raised = err
    for message in caught:
        # A fault may make a pickup skip a job; it must never send one to corrupt/.
        assert "moved aside" not in message, f"fault moved a good job aside: {message}"
    return raised, result


def _check_after(scenario: Scenario, injector: Injector, raised: BaseException | None,
                 result: Any) -> None:
    where = f"{scenario.name}: {os.strerror(injector.err)} at call {injector.fail_at}" \
            f" ({injector.fired}, {'after' if injector.after else 'before'} it took effect)"
    if raised is not None:
        assert isinstance(raised, DirQueueError), f"{where}: raised {raised!r}"
        assert str(raised), where
    try:
        scenario.settle(raised, result)
        q = scenario.q
        q.repair(min_age=0)
        assert_no_orphans(q)
        assert q.fsck(min_age=0).clean
        assert not os.path.exists(q.layout.corrupt_dir), "a job was moved aside"
        # The bystander is untouched and the queue works.
        jobid = q.enqueue_string("next")
        fresh = DirQueue(q.dir)
        taken = []
        while (job := fresh.pickup_queued_job()) is not None:
            taken.append((job.jobid, job.get_data()))
            job.finish()
        assert taken == [(jobid, b"next"), (scenario.bystander, b"bystander")]
        assert_no_orphans(q)
        assert files_under(q.layout.queue_dir) == []
    except AssertionError as err:
        raise AssertionError(f"{where}: {err}") from err


@pytest.mark.parametrize("scenario_type", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
def test_fault_at_every_call_leaves_queue_consistent(
    tmp_path: Path, scenario_type: type[Scenario], err: int
) -> None:
    counter = Injector()
    _, result = _run_once(scenario_type(tmp_path / "count"), counter)
    if isinstance(result, Job):
        result.return_to_queue()  # Ends its lock's heartbeat thread.
    calls = list(counter.calls)
    assert calls, "the operation made no filesystem call"
    cases = 0
    for index, name in enumerate(calls, start=1):
        for after in (False, True) if name in MUTATING else (False,):
            root = tmp_path / f"{index}-{int(after)}"
            scenario = scenario_type(root)
            injector = Injector(fail_at=index, err=err, after=after)
            raised, result = _run_once(scenario, injector)
            assert injector.fired == name, f"call {index} was {injector.fired}, not {name}:" \
                " the operation is not deterministic"
            _check_after(scenario, injector, raised, result)
            cases += 1
    print(f"{scenario_type.name} {errno.errorcode[err]}: {len(calls)} calls, {cases} faults")


def test_disk_nearly_full_refuses_enqueue_cleanly(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", min_free_bytes=1 << 62)
    with pytest.raises(DirQueueError, match="min_free_bytes") as info:
        q.enqueue_string("x")
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(DirQueueError, match="min_free_bytes"):
        q.enqueue_many(["a", "b"])
    assert assert_no_half_jobs(q) == {}
    assert_no_orphans(q)
    roomy = DirQueue(tmp_path / "q", min_free_bytes=1)
    jobid = roomy.enqueue_string("x")
    assert list(assert_no_half_jobs(roomy)) == [jobid]


def test_disk_full_while_writing_leaves_no_partial_job(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    q = DirQueue(tmp_path / "q")
    real_write = os.write
    written = [0]

    def write(fd: int, data: bytes) -> int:
        # The disk fills after 100 kB.
        if written[0] + len(data) > 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(DirQueueError, match="writing the job's data"):
        q.enqueue_iter(b"x" * 65536 for _ in range(4))
    monkeypatch.undo()
    assert assert_no_half_jobs(q) == {}
    assert_no_orphans(q)


class PickupCorrupt(Scenario):
    """A pickup that meets a corrupt job and moves it aside, failing at each step."""

    name = "pickup_corrupt"
    CONTROL = b"QDSB: not a number\n"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jobid = self.q.enqueue_string("evidence", priority=10)
        Path(self.q.layout.queue_path(self.jobid)).write_bytes(self.CONTROL)
        self.q = DirQueue(self.q.dir)

    def run(self) -> Any:
        return self.q.pickup_queued_job()


def _corrupt_copies(q: DirQueue, jobid: str) -> dict[str, bytes]:
    found = {}
    if os.path.isdir(q.layout.corrupt_dir):
        for name in os.listdir(q.layout.corrupt_dir):
            if name.startswith(jobid):
                found[name[len(jobid):]] = Path(q.layout.corrupt_dir, name).read_bytes()
    return found


@pytest.mark.parametrize("err", ERRNOS, ids=errno.errorcode.get)
def test_fault_while_moving_a_corrupt_job_aside_loses_nothing(tmp_path: Path, err: int) -> None:
    counter = Injector()
    counting = PickupCorrupt(tmp_path / "count")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
        with counter.armed():
            counting.run()
    calls = list(counter.calls)
    cases = 0
    for index, name in enumerate(calls, start=1):
        for after in (False, True) if name in MUTATING else (False,):
            cases += 1
            scenario = PickupCorrupt(tmp_path / f"{index}-{int(after)}")
            injector = Injector(fail_at=index, err=err, after=after)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raised: BaseException | None = None
                gc.collect()  # As in _run_once: no earlier queue's finalizer in the run.
                with injector.armed():
                    try:
                        result = scenario.run()
                    except Exception as exc:
                        raised, result = exc, None
            q = scenario.q
            where = f"{os.strerror(err)} at call {index} ({name}, after={after})"
            assert injector.fired == name, f"{where}: the operation is not deterministic"
            assert raised is None or isinstance(raised, DirQueueError), where
            # Whatever happened, the bystander is whole and nothing corrupt is served.
            assert result is None or result.jobid == scenario.bystander, where
            if isinstance(result, Job):
                result.return_to_queue()
            # Workers that come next finish moving it aside; repair collects the rest.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fresh = DirQueue(q.dir)
                job = fresh.pickup_queued_job()
                assert job is not None, where
                assert job.jobid == scenario.bystander, where
                job.return_to_queue()
                q.repair(min_age=0)
            copies = _corrupt_copies(q, scenario.jobid)
            assert copies.get("") == scenario.CONTROL, f"{where}: control file lost: {copies}"
            assert b"QDSB" in copies.get(".reason", b""), f"{where}: no reason: {copies}"
            assert copies.get(".data") == b"evidence", f"{where}: data lost: {sorted(copies)}"
            assert set(assert_no_half_jobs(q)) == {scenario.bystander}, where
            assert_no_orphans(q)
    print(f"pickup_corrupt {errno.errorcode[err]}: {len(calls)} calls, {cases} faults")
