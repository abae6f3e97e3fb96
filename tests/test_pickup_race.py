"""Pickups racing for one job, with the interleavings forced rather than hoped for.

``os.link`` and ``os.unlink`` as seen by ``dirqueue.queue`` are patched with gates
(barriers and events) so that two dequeuers, each in its own thread with its own
DirQueue, reach the critical steps in a chosen order.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dirqueue._fs
from _helpers import files_under, recorded_logs
from dirqueue import DirQueue, Job

GATE_TIMEOUT = 5.0
REAL_LINK = os.link
REAL_LINK_OPEN = dirqueue._fs.link_open_file


def named(name: Any, dir_fd: int | None) -> str:
    """The path of ``name``, in directory ``dir_fd`` if given (dirqueue makes and removes
    names in tmp/ and active/ through their descriptors)."""
    if dir_fd is None:
        return os.fspath(name)
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(name))

#: ``install(gate)``: from now on the step that lands a lock in active/ runs as
#: ``gate(step)``, where ``step()`` does it.
GateInstaller = Callable[[Callable[[Callable[[], Any]], Any]], None]


@pytest.fixture(params=["link", "lock-file"], ids=["link-as-over-nfs", "process-lock-file"])
def lock_step(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, qdir: Path
) -> GateInstaller:
    """Both ways a lock lands: a tmp lock linked into active/ (as over NFS, where the
    inode decides), and the process's one lock file linked in active/ (a local
    filesystem whose index inotify keeps exact)."""
    if request.param == "link":
        monkeypatch.setattr(dirqueue._fs, "is_local_filesystem", lambda path: False)

        def install_link(gate: Callable[[Callable[[], Any]], Any]) -> None:
            def link(src: str, dst: str, **kwargs: Any) -> None:
                if "/active/" not in named(dst, kwargs.get("dst_dir_fd")):
                    REAL_LINK(src, dst, **kwargs)
                    return
                gate(lambda: REAL_LINK(src, dst, **kwargs))

            monkeypatch.setattr("dirqueue._lock.os.link", link)

        return install_link
    qdir.mkdir(exist_ok=True)
    if not dirqueue._fs.is_local_filesystem(str(qdir)):
        pytest.skip("a process's lock file is used only on a local filesystem")

    def install_lock_file(gate: Callable[[Callable[[], Any]], Any]) -> None:
        def link_open(fd: int, jobid: str, dir_fd: int) -> None:
            gate(lambda: REAL_LINK_OPEN(fd, jobid, dir_fd))

        monkeypatch.setattr(dirqueue._fs, "link_open_file", link_open)

    return install_lock_file


def run_threads(targets: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run each target in a thread named by its key; return results, re-raise failures."""
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, target: Callable[[], Any]) -> None:
        try:
            results[name] = target()
        except BaseException as err:
            errors[name] = err

    threads = [
        threading.Thread(target=run, args=(name, target), name=name, daemon=True)
        for name, target in targets.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    for err in errors.values():
        raise err
    return results


def me() -> str:
    return threading.current_thread().name


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(GATE_TIMEOUT), f"{me()} waited in vain for {what}"


class FirstCalls:
    """Tells whether this is the calling thread's first call through a gate.

    A racer may legitimately link again (a breaker that finds the token already gone
    retries, a pickup moves on to the next job); a gate that waits for a partner on
    every call would then wait for one that never comes. Gates hold only each racer's
    first call and let retries through.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first(self) -> bool:
        with self._lock:
            new = me() not in self._seen
            self._seen.add(me())
            return new


def holders(results: dict[str, Any]) -> list[Job]:
    jobs = [r for r in results.values() if r is not None]
    assert all(isinstance(job, Job) for job in jobs)
    return jobs


def assert_held_by(qdir: Path, job: Job) -> None:
    """The one lock in active/ is ``job``'s, and nothing is left in tmp/."""
    assert os.listdir(qdir / "active") == [job.jobid]
    lock = os.lstat(qdir / "active" / job.jobid)
    assert job._held is not None
    assert (lock.st_ino, lock.st_dev) == (job._held.stat.st_ino, job._held.stat.st_dev)
    assert files_under(qdir / "tmp") == []


# -- two pickups at the lock-link step ---------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("first", ["A", "B"])
def test_two_pickups_linking_the_same_lock_exactly_one_wins(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, first: str, lock_step: GateInstaller
) -> None:
    queues = {"A": DirQueue(qdir), "B": DirQueue(qdir)}
    jobid = queues["A"].enqueue_string("contested")
    both_ready = threading.Barrier(2, timeout=GATE_TIMEOUT)
    first_linked = threading.Event()
    both_linked = threading.Barrier(2, timeout=GATE_TIMEOUT)
    calls = FirstCalls()

    def gate(step: Callable[[], Any]) -> Any:
        if not calls.first():
            return step()
        # Both have written a lock and seen the job still queued ...
        both_ready.wait()
        if me() != first:
            wait(first_linked, "the first link")
        try:
            return step()
        finally:
            first_linked.set()
            # ... and both have linked before either checks what it got.
            both_linked.wait()

    lock_step(gate)
    results = run_threads({name: q.pickup_queued_job for name, q in queues.items()})
    monkeypatch.undo()

    (winner,) = holders(results)
    assert results[first] is winner  # The first link took it; the second found it taken.
    assert winner.jobid == jobid
    assert_held_by(qdir, winner)
    assert winner.get_data() == b"contested"
    winner.finish()
    assert files_under(qdir) == []


@pytest.mark.timeout(30)
def test_many_pickups_at_once_one_job_each(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, lock_step: GateInstaller
) -> None:
    """Eight dequeuers start together on five jobs: five win one each, three get none."""
    seed = DirQueue(qdir)
    jobids = {seed.enqueue_string(f"job {i}") for i in range(5)}
    racers = 8
    start = threading.Barrier(racers, timeout=GATE_TIMEOUT)
    first_link = threading.Barrier(racers, timeout=GATE_TIMEOUT)
    calls = FirstCalls()

    def gate(step: Callable[[], Any]) -> Any:
        if calls.first():
            first_link.wait()  # Every racer lands its first lock at the same moment.
        return step()

    def racer(queue: DirQueue) -> Job | None:
        start.wait()
        return queue.pickup_queued_job()

    lock_step(gate)
    queues = {f"R{i}": DirQueue(qdir) for i in range(racers)}
    results = run_threads({name: functools.partial(racer, q) for name, q in queues.items()})
    monkeypatch.undo()

    won = holders(results)
    assert sorted(job.jobid for job in won) == sorted(jobids)
    assert sorted(os.listdir(qdir / "active")) == sorted(jobids)
    assert files_under(qdir / "tmp") == []
    for job in won:
        job.finish()
    assert files_under(qdir) == []


@pytest.mark.timeout(30)
def test_a_pickup_that_loses_to_finish_takes_nothing(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, lock_step: GateInstaller
) -> None:
    """B saw the job queued, but A finishes it before B's lock lands: B must not
    return a finished job, nor leave its lock behind."""
    worker_a = DirQueue(qdir)
    worker_b = DirQueue(qdir)
    worker_a.enqueue_string("only once")
    job_a = worker_a.pickup_queued_job()
    assert job_a is not None
    job_a.return_to_queue()
    job_a = worker_a.pickup_queued_job()
    assert job_a is not None
    job_a.return_to_queue()
    b_is_landing = False

    def finish_first(step: Callable[[], Any]) -> Any:
        nonlocal job_a, b_is_landing
        if not b_is_landing:
            b_is_landing = True
            # Between B's look at the job and B's lock landing, A takes and finishes
            # the job (A's own lock lands through here unhindered).
            job_a = worker_a.pickup_queued_job()
            assert job_a is not None
            job_a.finish()
        return step()

    lock_step(finish_first)
    assert worker_b.pickup_queued_job() is None
    monkeypatch.undo()
    assert job_a is not None
    assert not job_a.is_active
    assert files_under(qdir) == []


# -- two dequeuers breaking the same stale lock ------------------------------------------


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_job(qdir: Path, dead_pid: int) -> tuple[dict[str, DirQueue], str]:
    """A job whose lock belongs to a dead local worker and is long past its lifetime."""
    queues = {name: DirQueue(qdir, active_file_lifetime=1) for name in ("A", "B")}
    jobid = queues["A"].enqueue_string("abandoned")
    lock = qdir / "active" / jobid
    lock.write_text(f"{socket.gethostname()}\n{dead_pid}\n")
    os.utime(lock, (time.time() - 3600,) * 2)
    return queues, jobid


def run_breakers(queues: dict[str, DirQueue], a_done: threading.Event) -> dict[str, Any]:
    def pickup_a() -> Job | None:
        try:
            return queues["A"].pickup_queued_job()
        finally:
            a_done.set()

    with recorded_logs() as caught:
        results = run_threads({"A": pickup_a, "B": queues["B"].pickup_queued_job})
    broke = [message for message in caught if "broke stale lock" in message]
    assert len(broke) == 1, caught
    return results


def is_token(dst: str) -> bool:
    return dst.endswith(".breaking")


def plant_token(qdir: Path, jobid: str, age: float) -> Path:
    token = qdir / "tmp" / f"{jobid}.breaking"
    token.write_text("a breaker\n")
    os.utime(token, (time.time() - age,) * 2)
    return token


@pytest.mark.timeout(30)
def test_stale_lock_race_late_breaker_finds_a_fresh_lock(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """Both judge the lock stale; A breaks it and takes the job; only then does B take
    the breaker's token and look again: the lock is A's fresh one, which B leaves."""
    queues, jobid = stale_job(qdir, dead_pid)
    both_judged = threading.Barrier(2, timeout=GATE_TIMEOUT)
    a_done = threading.Event()
    calls = FirstCalls()

    def gated_link(src: str, dst: str, **kwargs: Any) -> None:
        if is_token(dst) and calls.first():
            both_judged.wait()
            if me() == "B":
                wait(a_done, "A's pickup")
        REAL_LINK(src, dst, **kwargs)

    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)
    monkeypatch.setattr("dirqueue._lock.os.link", gated_link)
    results = run_breakers(queues, a_done)
    monkeypatch.undo()

    assert results["B"] is None
    (holder,) = holders(results)
    assert results["A"] is holder
    assert holder.jobid == jobid
    assert_held_by(qdir, holder)
    holder.finish()
    assert files_under(qdir) == []


@pytest.mark.timeout(30)
def test_stale_lock_race_both_break_at_once(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """A and B reach for the breaker's token at the same moment: one gets it and takes
    the job, the other finds the token held and leaves the job alone."""
    queues, jobid = stale_job(qdir, dead_pid)
    both_linking = threading.Barrier(2, timeout=GATE_TIMEOUT)
    both_tried = threading.Barrier(2, timeout=GATE_TIMEOUT)
    calls = FirstCalls()

    def gated_link(src: str, dst: str, **kwargs: Any) -> None:
        if not is_token(dst) or not calls.first():
            # A loser that finds the winner's token already dropped links again: that
            # retry goes straight through (it then sees the winner's fresh lock).
            REAL_LINK(src, dst, **kwargs)
            return
        both_linking.wait()
        try:
            REAL_LINK(src, dst, **kwargs)
        finally:
            both_tried.wait()  # Neither lets go of the token before both have tried.

    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)
    monkeypatch.setattr("dirqueue._lock.os.link", gated_link)
    results = run_breakers(queues, threading.Event())
    monkeypatch.undo()

    (holder,) = holders(results)
    assert holder.jobid == jobid
    assert_held_by(qdir, holder)
    holder.finish()
    assert files_under(qdir) == []


@pytest.mark.timeout(30)
def test_stale_lock_race_third_dequeuer_in_the_breakers_window(
    qdir: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    """A holds the token, has checked the stale lock and is about to unlink it, when C
    comes for the job; then, after A's unlink, C tries again while A is locking it.
    There is never a moment when the job looks free to C but is someone else's: one
    of them holds it, and the other holds nothing."""
    queue_a = DirQueue(qdir, active_file_lifetime=1)
    queue_c = DirQueue(qdir, active_file_lifetime=1)
    jobid = queue_a.enqueue_string("abandoned")
    lock = qdir / "active" / jobid
    lock.write_text(f"{socket.gethostname()}\n{dead_pid}\n")
    os.utime(lock, (time.time() - 3600,) * 2)
    active_path = os.path.realpath(lock)
    c_results: list[Job | None] = []
    real_unlink = os.unlink

    def gated_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        where = named(path, kwargs.get("dir_fd"))
        if me() == "A" and where == active_path and not c_results:
            c_results.append(queue_c.pickup_queued_job())  # In A's window: held token.
            real_unlink(path, *args, **kwargs)
            c_results.append(queue_c.pickup_queued_job())  # Unlocked: a fair race.
            return
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)
    monkeypatch.setattr("dirqueue._lock.os.unlink", gated_unlink)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_threads({"A": queue_a.pickup_queued_job})
    monkeypatch.undo()

    assert c_results[0] is None  # The token was A's: C left the stale lock alone.
    held = holders({"A": results["A"], "C": c_results[1]})
    assert len(held) == 1, f"{len(held)} dequeuers hold job {jobid}"
    (holder,) = held
    assert_held_by(qdir, holder)
    holder.finish()
    assert files_under(qdir) == []


def test_a_fresh_breaker_token_makes_others_leave_the_stale_lock(
    qdir: Path, dead_pid: int
) -> None:
    queues, jobid = stale_job(qdir, dead_pid)
    token = plant_token(qdir, jobid, age=0)
    assert queues["A"].pickup_queued_job() is None
    assert (qdir / "active" / jobid).exists()
    assert token.exists()  # Someone else's: not ours to remove.


def test_a_dead_breakers_token_does_not_block_recovery(qdir: Path, dead_pid: int) -> None:
    queues, jobid = stale_job(qdir, dead_pid)
    plant_token(qdir, jobid, age=120)  # Its breaker died mid-break, long ago.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = queues["A"].pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert_held_by(qdir, job)  # The old token was cleared, and ours let go.
    job.finish()
    assert files_under(qdir) == []


def test_where_no_lock_file_can_be_kept_each_lock_is_linked_from_tmp(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without /proc/self/fd (no open file can be linked): each lock lands the way it
    does over NFS."""
    queue = DirQueue(qdir)
    jobid = queue.enqueue_string("work")
    monkeypatch.setattr(dirqueue._fs, "CAN_LINK_OPEN_FILES", False)
    linked: list[str] = []

    def link(src: str, dst: str, **kwargs: Any) -> None:
        linked.append(named(dst, kwargs.get("dst_dir_fd")))
        REAL_LINK(src, dst, **kwargs)

    monkeypatch.setattr("dirqueue._lock.os.link", link)
    job = queue.pickup_queued_job()
    monkeypatch.undo()
    assert job is not None
    assert job.jobid == jobid
    assert linked == [os.path.realpath(qdir / "active" / jobid)]
    assert_held_by(qdir, job)
    job.finish()
    assert files_under(qdir) == []
