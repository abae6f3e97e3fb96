"""Groups' concurrency and rate limits, kept by real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dirqueue import DirQueue, InvalidGroupError, QueueNotFoundError, limits
from dirqueue.limits import InvalidLimitError

pytestmark = pytest.mark.timeout(120)

WORKER = str(Path(__file__).parent / "_limits_worker.py")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _start(procs: list[subprocess.Popen[bytes]], qdir: Path, out: Path, name: str,
           *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, WORKER, str(qdir), str(out), name, *extra],
                            env=_env())
    procs.append(proc)
    return proc


def _go(procs: list[subprocess.Popen[bytes]], out: Path, *names: str) -> None:
    """The start barrier: wait for every worker named to be ready, then let them go."""
    deadline = time.monotonic() + 60
    while not all((out / f"{name}.ready").exists() for name in names):
        assert time.monotonic() < deadline
        assert all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (out / "go").touch()


def _events(out: Path) -> list[tuple[float, str, str, str]]:
    found = []
    for log in out.glob("*.log"):
        for line in log.read_text().splitlines():
            kind, jobid, group, when = line.split()
            found.append((float(when), kind, jobid, group))
    return sorted(found)


def _most_at_once(events: list[tuple[float, str, str, str]], group: str) -> int:
    running = most = 0
    for _, kind, _, g in events:
        if g != group:
            continue
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


def _wait_done(procs: list[subprocess.Popen[bytes]], out: Path) -> None:
    (out / "stop").touch()
    for proc in procs:
        if proc.poll() is None:
            try:
                assert proc.wait(timeout=60) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def test_limit_two_holds_across_five_workers_and_other_groups_run_meanwhile(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    qdir, out = tmp_path / "q", tmp_path / "out"
    out.mkdir()
    queue = DirQueue(qdir)
    gpu = [queue.enqueue_string(b"g", {"sleep": "0.2"}, group="gpu") for _ in range(12)]
    cpu = [queue.enqueue_string(b"c", {"sleep": "0.05"}, group="cpu") for _ in range(10)]
    plain = [queue.enqueue_string(b"p", {"sleep": "0.02"}) for _ in range(5)]
    limits.set_limit(queue, "gpu", 2)
    for i in range(5):
        _start(procs, qdir, out, f"w{i}")
    _go(procs, out, *(f"w{i}" for i in range(5)))
    _wait_done(procs, out)
    events = _events(out)
    started = [e[2] for e in events if e[1] == "start"]
    assert sorted(started) == sorted(gpu + cpu + plain)  # Every job once.
    assert _most_at_once(events, "gpu") == 2  # Never more; and two did run together.
    # A full gpu group held no other job back, though every gpu job comes first in the
    # queue's order: most cpu and plain jobs were done before the last gpu job began
    # (workers that waited for a gpu slot would have run none of them by then).
    ends = {e[2]: e[0] for e in events if e[1] == "end"}
    last_gpu = max(e[0] for e in events if e[1] == "start" and e[2] in set(gpu))
    assert sum(ends[j] < last_gpu for j in cpu + plain) >= len(cpu + plain) // 2
    # Order within the group is kept: the gpu jobs started in queue order, save that
    # a job locked by a worker that then found no slot is passed over in that moment
    # (docs/limits.md): with five workers, none starts five or more places late.
    order = [j for j in started if j in set(gpu)]
    assert all(order.index(j) - i < 5 for i, j in enumerate(sorted(gpu))), order
    assert os.listdir(qdir / "slots") == []  # Every slot given back.


def test_a_killed_holders_slot_frees_itself_and_others_run_meanwhile(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    qdir, out = tmp_path / "q", tmp_path / "out"
    out.mkdir()
    queue = DirQueue(qdir)
    first = queue.enqueue_string(b"g", group="gpu")
    limits.set_limit(queue, "gpu", 1)
    holder = _start(procs, qdir, out, "holder", "hold")
    _go(procs, out, "holder")
    deadline = time.monotonic() + 30
    while not (out / "holder.holding").exists():
        assert time.monotonic() < deadline
        assert holder.poll() is None
        time.sleep(0.01)
    others = [queue.enqueue_string(b"g", group="gpu") for _ in range(3)]
    cpu = [queue.enqueue_string(b"c", group="cpu") for _ in range(3)]
    worker = _start(procs, qdir, out, "w")
    # The group is full: the worker runs the cpu jobs, and no gpu job.
    deadline = time.monotonic() + 30
    while sum(1 for e in _events(out) if e[1] == "end" and e[3] == "cpu") < 3:
        assert time.monotonic() < deadline
        assert worker.poll() is None
        time.sleep(0.01)
    time.sleep(0.3)  # Long enough for a worker that ignored the limit to start one.
    assert [e[2] for e in _events(out) if e[3] == "gpu"] == [first]
    status = limits.group_status(queue, "gpu")
    assert [h.owner for h in status.holders] == [f"{os.uname().nodename}:{holder.pid}"]
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    deadline = time.monotonic() + 30
    while sum(1 for e in _events(out) if e[1] == "end") < 7:
        assert time.monotonic() < deadline
        assert worker.poll() is None
        time.sleep(0.01)
    _wait_done(procs[1:], out)
    events = _events(out)
    done = [e[2] for e in events if e[1] == "end"]
    # The dead holder's job (its lock broken, as its slot was) and the others.
    assert sorted(done) == sorted([first, *others, *cpu])
    assert limits.group_status(queue, "gpu").holders == []


def test_limits_are_checked(tmp_path: Path) -> None:
    queue = DirQueue(tmp_path / "q")
    queue.enqueue_string(b"x")
    with pytest.raises(InvalidGroupError, match="group name"):
        queue.enqueue_string(b"x", group="a/b")
    with pytest.raises(InvalidLimitError, match="100/min"):
        limits.set_limit(queue, "mail", rate="often")
    with pytest.raises(InvalidLimitError, match="whole number"):
        limits.set_limit(queue, "gpu", 0)
    assert limits.set_limit(queue, "mail", rate="20/2s").rate == (20, 2.0)
    limits.set_limit(queue, "gpu", 2)
    assert [lim.describe() for lim in limits.list_limits(queue)] == [
        "2 at a time", "20 per 2s"
    ]
    assert limits.clear_limit(queue, "gpu")
    assert [lim.group for lim in limits.list_limits(queue)] == ["mail"]


def test_a_limit_on_a_queue_that_does_not_exist_says_so(tmp_path: Path) -> None:
    # A mistyped path: the error names it and how to make the queue, and makes nothing.
    queue = DirQueue(tmp_path / "typo")
    with pytest.raises(QueueNotFoundError, match=r"no queue at .*typo.*create=True"):
        limits.set_limit(queue, "gpu", 2)
    assert not (tmp_path / "typo").exists()
    assert limits.list_limits(queue) == []
    assert not limits.clear_limit(queue, "gpu")


def test_a_rate_holds_across_workers_and_puts_jobs_off_uncounted(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    qdir, out = tmp_path / "q", tmp_path / "out"
    out.mkdir()
    queue = DirQueue(qdir)
    queue.enqueue_string(b"x")
    assert queue.pickup_queued_job() is not None  # (Its lock is dropped with the object.)
    limits.set_limit(queue, "mail", rate="4/1s")
    mail = [queue.enqueue_string(b"m", group="mail") for _ in range(12)]
    names = ["r0", "r1", "r2"]
    for name in names:
        _start(procs, qdir, out, name)
    _go(procs, out, *names)
    deadline = time.monotonic() + 60
    while sum(1 for e in _events(out) if e[1] == "end") < len(mail):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    _wait_done(procs, out)
    starts = sorted(e[0] for e in _events(out) if e[1] == "start")
    assert len(starts) == len(mail)
    # No second holds more than four starts, across the three workers; and twelve
    # jobs took at least two whole periods (not merely a slow run).
    assert max(sum(1 for t in starts[i:] if t < s + 1.0) for i, s in enumerate(starts)) <= 4
    assert starts[-1] - starts[0] >= 2.0
    # Jobs were put off (deferred/ was used), and not one put off was counted as an
    # attempt: each ran as its first.
    assert (qdir / "deferred").is_dir()
    attempts = [line.split()[1] for f in out.glob("*.attempts")
                for line in f.read_text().splitlines()]
    assert attempts == ["1"] * len(mail)


def _dq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dirqueue", *args], capture_output=True,
                          text=True, env=_env(), timeout=60, check=False)


def test_dq_limit_and_submit_group_and_stats(tmp_path: Path) -> None:
    qdir = str(tmp_path / "q")
    data = tmp_path / "job.txt"
    data.write_text("x")
    assert _dq("submit", "--dir", qdir, str(data)).returncode == 0
    done = _dq("limit", "--dir", qdir, "set", "gpu", "1")
    assert done.returncode == 0
    assert "group gpu: 1 at a time" in done.stderr
    assert _dq("limit", "--dir", qdir, "set", "mail", "--rate", "100/min").returncode == 0
    assert _dq("limit", "--dir", qdir, "list").stdout.splitlines() == [
        "gpu   1 at a time", "mail  100 per 60s"
    ]
    jobid = _dq("submit", "--dir", qdir, "--group", "gpu", str(data)).stdout.strip()
    queue = DirQueue(qdir)
    job = queue.pickup_queued_job(jobid)
    assert job is not None
    stats = _dq("stats", "--dir", qdir).stdout
    assert f"group gpu  1 at a time; 1 running: {os.uname().nodename}:{os.getpid()} (held)" in stats
    assert "meta dq.group" in _dq("show", "--dir", qdir, jobid).stdout
    job.finish()
    bad = _dq("limit", "--dir", qdir, "set", "gpu", "--rate", "often")
    assert bad.returncode == 2
    assert "write it like 100/min" in bad.stderr
    assert _dq("limit", "--dir", qdir, "clear", "gpu").returncode == 0
    assert _dq("limit", "--dir", qdir, "clear", "gpu").returncode == 1
