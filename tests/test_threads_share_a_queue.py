"""Threads sharing one queue object: every job done exactly once, no thread meets an
error, and nothing is left in tmp/, while another process enqueues and a third keeps
taking jobs and giving them back.

A queue object's index (:mod:`dirqueue._index`) and lock file (``LockFileKeeper``) are
shared by its threads: without a lock around them a pickup met ``IndexError`` in the
index's head, ``RuntimeError: dictionary changed size`` in its held jobs, and threads
making lock files at once left their names in tmp/.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import dirqueue._fs
import dirqueue._index
import dirqueue._judge
from dirqueue import DirQueue, _lock, _lockfile
from dirqueue._index import QueueIndex
from dirqueue._scanner import QueueEntry
from durability_checks import assert_no_orphans

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")

JOBS = 1500
THREADS = 16

#: Enqueues JOBS jobs (data: their number), then prints "done".
_PRODUCER = """
import sys
from dirqueue import DirQueue, _lock
q = DirQueue(sys.argv[1], durable=False)
for i in range(int(sys.argv[2])):
    q.enqueue_string(str(i))
print("done", flush=True)
"""

#: Takes whatever job it can and gives it back at once, until stdin closes; prints how
#: many it gave back.
_RETURNER = """
import os, select, sys
from dirqueue import DirQueue, _lock
q = DirQueue(sys.argv[1], durable=False)
returned = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    job = q.pickup_queued_job()
    if job is not None:
        job.return_to_queue()
        returned += 1
print(returned, flush=True)
"""


class _Gate:
    """Stops the thread that calls :meth:`stop_here` first, until :meth:`open`."""

    def __init__(self) -> None:
        self.paused = threading.Event()
        self._open = threading.Event()
        self._thread: int | None = None

    def stop_here(self) -> None:
        if self._thread is None:
            self._thread = threading.get_ident()
            self.paused.set()
            assert self._open.wait(30)

    def open(self) -> None:
        self._open.set()


class _GatedSet(set[str]):
    def __init__(self, names: set[str], gate: _Gate) -> None:
        super().__init__(names)
        self.gate = gate

    def __contains__(self, name: object) -> bool:
        self.gate.stop_here()
        return super().__contains__(name)


class _GatedDict(dict[str, str]):
    def __init__(self, gate: _Gate) -> None:
        super().__init__()
        self.gate = gate

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.gate.stop_here()
        return super().get(name, default)


def _interleave(first: threading.Thread, second: threading.Thread, gate: _Gate) -> None:
    """Run ``first`` until it stops at ``gate``, then ``second`` (to its end, or, when
    the index makes it wait for ``first``, for a second), then let ``first`` go on."""
    first.start()
    assert gate.paused.wait(30)
    second.start()
    second.join(1.0)  # Without a lock around the index it runs to its end meanwhile.
    gate.open()
    first.join(30)
    second.join(30)


def _in_thread(call: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            call()
        except BaseException as err:  # Reported by the test.
            errors.append(err)

    return threading.Thread(target=run, daemon=True)


@pytest.mark.parametrize("seen", ["arrived", "listed"])
def test_two_threads_trimming_the_pending_list_lose_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: str
) -> None:
    # One thread trimmed the names passed while another walked the list from a place
    # that no longer existed: the waiting job was skipped (or the walk ran past the
    # list's end: IndexError). The names that arrived since the last re-read are in a
    # list; those of the re-read, packed, with the names passed dropped from a set.
    monkeypatch.setattr(dirqueue._index, "_COMPACT_AT", 1)
    q = DirQueue(tmp_path / "q", durable=False)
    index = QueueIndex(q.config)
    if seen == "arrived":
        q.create()
        index.refresh()  # Read (empty) and watched: the jobs arrive as events.
    names = [q.enqueue_string(str(i)) for i in range(8)]
    index.refresh()
    gate = _Gate()
    if seen == "arrived":
        for name in names[:6]:
            index.taken(name)
        head = index.head()
        assert head is not None
        assert head.name == names[6]
        index.taken(names[6])
        assert index._waiting
        index._waiting = _GatedSet(index._waiting, gate)  # The gate.
    else:
        # Taken last first: all but the first are set aside in ``out`` until passed.
        for name in reversed(names[:7]):
            index.taken(name)
        assert index._listing.out
        index._listing.out = _GatedSet(index._listing.out, gate)
    errors: list[BaseException] = []
    _interleave(_in_thread(index.head, errors), _in_thread(index.head, errors), gate)
    assert errors == []
    head = index.head()
    assert head is not None
    assert head.name == names[7]


def test_a_job_marked_held_while_another_thread_walks_the_held_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RuntimeError: dictionary changed size during iteration, in held_due.
    monkeypatch.setattr(dirqueue._index, "HELD_RECHECK", 0.0)
    q = DirQueue(tmp_path / "q", durable=False)
    index = QueueIndex(q.config)
    for name in ("50.1", "50.2", "50.3"):
        index.held(name)
    gate = _Gate()
    index._fanout = _GatedDict(gate)  # The gate.
    errors: list[BaseException] = []
    due: list[QueueEntry] = []
    _interleave(_in_thread(lambda: due.extend(index.held_due(None)), errors),
                _in_thread(lambda: index.held("50.4"), errors), gate)
    assert errors == []
    assert [entry.name for entry in due] == ["50.1", "50.2", "50.3"]


def test_two_threads_read_the_filesystems_clock_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both wrote tmp/clock.HOST.PID: one removed the file the other was about to read
    # back, and that one took "no offset" (ENOENT) for the next five seconds, whatever
    # the file server's clock said.
    q = DirQueue(tmp_path / "q", durable=False)
    q.create()
    gate = _Gate()
    misses: list[str] = []
    real_lstat = os.lstat

    def lstat(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if isinstance(path, str) and path.startswith("clock."):
            gate.stop_here()
            try:
                return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]
            except FileNotFoundError:
                misses.append(path)
                raise
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dirqueue._judge.os, "lstat", lstat)
    errors: list[BaseException] = []
    measure = functools.partial(dirqueue._judge._measure_offset, q.config)
    _interleave(_in_thread(measure, errors), _in_thread(measure, errors), gate)
    assert errors == []
    assert misses == []
    assert os.listdir(q.layout.tmp_dir) == []


def _gated(gate: _Gate, call: Callable[..., T], *, after: bool = False) -> Callable[..., T]:
    """``call``, stopped at ``gate`` (before it runs, or after with ``after``)."""

    def gated(*args: object, **kwargs: object) -> T:
        if not after:
            gate.stop_here()
        result = call(*args, **kwargs)
        if after:
            gate.stop_here()
        return result

    return gated


def test_a_job_being_released_by_one_thread_is_not_taken_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Releasing, a thread dropped the job from its lock file's holders before removing
    # its lock; a second thread, linking the same lock file there, met EEXIST, found
    # its own inode at active/NAME and took the job for its own. The first then
    # removed the lock under it: a stray ENOENT, or a job held by nobody.
    q = DirQueue(tmp_path / "q", durable=False)
    jobid = q.enqueue_string("x")
    path = q.layout.queue_path(jobid)
    keeper = _lockfile.LockFileKeeper(q.config)
    held = _lock.take(q.config, jobid, path, seen_free=True, keeper=keeper)
    assert isinstance(held, _lock.HeldLock)
    gate = _Gate()
    monkeypatch.setattr(_lock, "_lstat_twice", _gated(gate, _lock._lstat_twice))
    errors: list[BaseException] = []
    second: list[object] = []
    _interleave(
        _in_thread(lambda: _lock.release(q.config, held), errors),
        _in_thread(lambda: second.append(
            _lock.take(q.config, jobid, path, seen_free=True, keeper=keeper)), errors),
        gate,
    )
    assert errors == []
    assert second == [_lock.Refused.LOST]
    assert not os.path.lexists(q.layout.active_path(jobid))
    keeper.let_go()


def test_a_lock_confirmed_late_does_not_turn_back_the_shared_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A link that reported EEXIST for itself (a retry) is confirmed by the inode found;
    # that lstat's mtime was taken as the shared lock file's, though another thread had
    # freshened the file since: every lock of the queue object then looked newer than
    # ours, taken over (JobLostError "taken over by" our own pid).
    q = DirQueue(tmp_path / "q", durable=False)
    first, other = q.enqueue_string("1"), q.enqueue_string("2")
    keeper = _lockfile.LockFileKeeper(q.config)
    real_link = dirqueue._fs.link_open_file

    def link_then_say_exists(fd: int, name: str, dir_fd: int) -> None:
        real_link(fd, name, dir_fd)
        if name == first:
            raise FileExistsError(17, "File exists")

    monkeypatch.setattr(dirqueue._fs, "link_open_file", link_then_say_exists)
    gate = _Gate()
    monkeypatch.setattr(_lock, "_lstat_twice", _gated(gate, _lock._lstat_twice, after=True))
    errors: list[BaseException] = []
    taken: dict[str, object] = {}

    def take(jobid: str) -> None:
        taken[jobid] = _lock.take(q.config, jobid, q.layout.queue_path(jobid), seen_free=True,
                                  keeper=keeper)

    _interleave(_in_thread(lambda: take(first), errors), _in_thread(lambda: take(other), errors),
                gate)
    assert errors == []
    for jobid in (first, other):
        held = taken[jobid]
        assert isinstance(held, _lock.HeldLock)
        assert _lock.standing(q.config, held) is _lock.Standing.OURS
        assert _lock.release(q.config, held)
    keeper.let_go()


def test_a_child_forked_while_a_thread_is_inside_the_queue_object_can_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index's lock and the lock file keeper's, held by a thread of the parent at the
    # fork, would be held for ever in the child (where that thread does not exist).
    q = DirQueue(tmp_path / "q", durable=False)
    jobid = q.enqueue_string("x")
    index_gate, keeper_gate = _Gate(), _Gate()
    picker = q._picker
    picker.index.refresh()
    # The gate: the job, read from queue/, is in the packed listing.
    picker.index._listing.out = _GatedSet(picker.index._listing.out, index_gate)
    monkeypatch.setattr(_lockfile, "write_lock", _gated(keeper_gate, _lockfile.write_lock))
    errors: list[BaseException] = []
    in_index = _in_thread(picker.index.head, errors)
    in_keeper = _in_thread(picker.lock_file.get, errors)
    in_index.start()
    in_keeper.start()
    assert index_gate.paused.wait(30)
    assert keeper_gate.paused.wait(30)
    pid = os.fork()
    if pid == 0:  # The child: take the job, or hang (the parent kills it).
        code = 1
        try:
            picker.index._listing.out = set(picker.index._listing.out)
            job = q.pickup_queued_job()
            code = 0 if job is not None and job.jobid == jobid else 2
        finally:
            os._exit(code)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on a lock held by a thread of its parent")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        index_gate.open()
        keeper_gate.open()
        in_index.join(30)
        in_keeper.join(30)
    assert errors == []


def test_a_lock_that_comes_and_goes_between_two_looks_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where a job is taken and given back in a tight loop (another thread, or another
    # process), its lock can be gone, back (the second look says "there") and gone
    # again (the third says ENOENT): that was a stray ENOENT out of a pickup.
    q = DirQueue(tmp_path / "q", durable=False)
    jobid = q.enqueue_string("x")
    held = _lock.take(q.config, jobid, q.layout.queue_path(jobid))
    assert isinstance(held, _lock.HeldLock)
    os.unlink(q.layout.active_path(jobid))  # Broken, say: gone.
    real_look = _lock._look_in_active
    looks: list[str] = []

    def look(config: object, name: str) -> os.stat_result:
        # Each look through active/'s descriptor: gone, then there (another worker's
        # lock at this very moment: the real lock file's stat stands in), then gone.
        looks.append(name)
        if len(looks) == 2:
            return os.stat(q.layout.queue_path(jobid))
        return real_look(config, name)  # type: ignore[arg-type]

    monkeypatch.setattr(_lock, "_look_in_active", look)
    assert _lock.standing(q.config, held) is _lock.Standing.TAKEN
    looks.clear()
    monkeypatch.setattr(_lock, "_look_in_active", lambda c, n: looks.append(n) or real_look(c, n))
    assert _lock.standing(q.config, held) is _lock.Standing.GONE  # No stray ENOENT.
    assert len(looks) == 2  # Looked twice before concluding nothing is there.


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_sixteen_threads_share_one_queue_object(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", durable=False)
    q.create()
    done: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    all_done = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def work() -> None:
        try:
            start.wait()
            while not all_done.is_set():
                job = q.pickup_queued_job()
                if job is None:
                    time.sleep(0.001)  # Polling: the producer is still at work.
                    continue
                done.append((job.jobid, job.get_data()))
                job.finish()
                if len(done) >= JOBS:
                    all_done.set()
        except BaseException as err:
            errors.append(err)
            all_done.set()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    producer = _start(_PRODUCER, q.dir, str(JOBS))
    returner = _start(_RETURNER, q.dir)
    try:
        start.wait(timeout=30)
        all_done.wait(timeout=150)
        for thread in threads:
            thread.join(timeout=30)
        out, err = producer.communicate(timeout=30)
        assert out.split() == ["done"], err
        out, err = returner.communicate(input="stop\n", timeout=30)
        assert out.strip().isdigit(), err
        returned = int(out)
    finally:
        all_done.set()
        _kill(producer)
        _kill(returner)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    counts = Counter(jobid for jobid, _ in done)
    assert [jobid for jobid, n in counts.items() if n > 1] == []
    assert sorted(int(data) for _, data in done) == list(range(JOBS))
    assert q.pickup_queued_job() is None  # Idle: the lock file's name goes.
    assert os.listdir(q.layout.tmp_dir) == []
    assert_no_orphans(q)
    assert returned > 0  # The returner did take jobs while the threads worked.
