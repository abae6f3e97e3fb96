"""Real processes sharing one queue: every job done exactly once, and a worker killed
mid-job does not lose its job."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import files_under, lock_without_owner_line, logs_warning
from dirqueue import DirQueue
from dirqueue._format import attempts_of, last_error_of

WORKER = Path(__file__).with_name("_mp_worker.py")


class Children:
    """Worker processes, each in its own process group, killed at the end come what may."""

    def __init__(self, qdir: Path, sync: Path) -> None:
        self.qdir = qdir
        self.sync = sync
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), role, str(self.qdir), str(self.sync), name, *args],
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def wait_for_files(self, names: list[str], deadline: float) -> None:
        while not all((self.sync / n).exists() for n in names):
            for name, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode != 0:
                    pytest.fail(f"{name} died early: {self.stderr(proc)}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {names}")
            time.sleep(0.01)

    def wait(self, names: list[str], deadline: float) -> None:
        for name in names:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not finish in time")
            assert proc.returncode == 0, f"{name} failed: {self.stderr(proc)}"

    @staticmethod
    def stderr(proc: subprocess.Popen[bytes]) -> str:
        assert proc.stderr is not None
        return proc.stderr.read().decode(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    sync = tmp_path / "sync"
    sync.mkdir()
    kids = Children(tmp_path / "q", sync)
    DirQueue(kids.qdir).create()  # Consumers may look before the first enqueue.
    try:
        yield kids
    finally:
        kids.kill_all()


@pytest.mark.timeout(90)
def test_three_producers_three_consumers_every_job_exactly_once(children: Children) -> None:
    producers = [f"producer{i}" for i in range(3)]
    consumers = [f"consumer{i}" for i in range(3)]
    per_producer = 300
    deadline = time.monotonic() + 60  # Hard limit for the whole exchange.
    for name in producers:
        children.start("producer", name, str(per_producer))
    for name in consumers:
        children.start("consumer", name)
    children.wait_for_files([f"ready.{n}" for n in producers + consumers], deadline)
    (children.sync / "go").touch()  # The start barrier: everyone at once.
    children.wait(producers, deadline)
    (children.sync / "producers-done").touch()
    children.wait(consumers, deadline)

    done: collections.Counter[str] = collections.Counter()
    per_consumer = {}
    for name in consumers:
        lines = (children.sync / f"{name}.out").read_text().splitlines()
        per_consumer[name] = len(lines)
        done.update(lines)
    expected = collections.Counter(f"{p}:{i}" for p in producers for i in range(per_producer))
    assert sum(done.values()) == 900
    assert done == expected  # Nothing lost, nothing done twice, nothing made up.
    # The queue is empty, with nothing left in tmp/ or active/.
    assert files_under(children.qdir) == []


@pytest.mark.timeout(60)
def test_a_job_of_a_worker_killed_mid_job_is_recovered_intact(children: Children) -> None:
    queue = DirQueue(children.qdir, active_file_lifetime=1)
    payload = os.urandom(300_000)
    jobid = queue.enqueue_string(payload, {"kind": "precious"})
    other = queue.enqueue_string("a bystander", priority=99)

    holder = children.start("holder", "holder")
    (children.sync / "go").touch()
    children.wait_for_files(["holder.holding"], time.monotonic() + 30)
    assert (children.sync / "holder.holding").read_text() == jobid
    lock = children.qdir / "active" / jobid
    assert lock.read_text().split("\n")[1] == str(holder.pid)

    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()  # Reaped: its pid no longer answers kill(pid, 0).
    killed_at = time.monotonic()

    # On this host the dead worker is proven dead (same boot and pid namespace, its
    # pid gone): the next pickup breaks its lock at once, without waiting for the
    # lifetime, and counts the attempt that died with it.
    rescuer = DirQueue(children.qdir, active_file_lifetime=600)
    with logs_warning(rf"broke stale lock on {jobid}.*{holder.pid}"):
        recovered = rescuer.pickup_queued_job()
    took = time.monotonic() - killed_at
    assert recovered is not None, "the dead worker's job was not recovered at once"
    assert took < 5
    assert recovered.jobid == jobid
    assert attempts_of(recovered.control) == 1
    assert last_error_of(recovered.control).startswith("worker died")
    assert recovered.metadata == {"kind": "precious"}
    assert hashlib.sha256(recovered.get_data()).digest() == hashlib.sha256(payload).digest()
    assert recovered.get_data_size_bytes() == len(payload)
    assert lock_without_owner_line(lock.read_text()) == (
        f"{rescuer.hostname}\n{os.getpid()}\nheartbeat\n"
    )
    recovered.finish()
    bystander = rescuer.pickup_queued_job()
    assert bystander is not None
    assert bystander.jobid == other
    bystander.finish()
    assert files_under(children.qdir) == []
