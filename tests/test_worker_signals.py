"""SIGTERM and SIGINT sent to a real ``dq server``: no job is lost or left locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dirqueue import DirQueue

pytestmark = pytest.mark.timeout(60)

DQ = str(Path(sys.executable).parent / "dq")
# Marks its start, runs for a while, marks its end: the data path comes last ($1).
SLOW_JOB = 'touch "$MARKS/$DQ_JOBID.started"; sleep 2; touch "$MARKS/$DQ_JOBID.done"'


@contextmanager
def server(qdir: Path, marks: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "MARKS": str(marks)}
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(qdir), "--poll-interval", "0.2", *extra,
         "--", "sh", "-c", SLOW_JOB, "sh"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def started(marks: Path) -> list[str]:
    return [p.name.removesuffix(".started") for p in marks.glob("*.started")]


def test_sigterm_during_a_job_lets_it_finish_and_exits_zero(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    marks = tmp_path / "marks"
    marks.mkdir()
    first = q.enqueue_string("one")
    second = q.enqueue_string("two")
    with server(tmp_path / "q", marks) as proc:
        wait_for(lambda: started(marks))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert started(marks) == [first]
    assert (marks / f"{first}.done").exists()
    assert [j.jobid for j in q.jobs()] == [second]  # Finished one, took no more.
    assert os.listdir(q.layout.active_dir) == []
    assert "signal SIGTERM" in err  # The summary is dq's: on stderr.


def test_second_signal_returns_the_job_at_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    marks = tmp_path / "marks"
    marks.mkdir()
    jobid = q.enqueue_string("one")
    with server(tmp_path / "q", marks) as proc:
        wait_for(lambda: started(marks))
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    assert not (marks / f"{jobid}.done").exists()  # The command was stopped.
    (job,) = q.jobs()
    assert job.jobid == jobid
    assert job.active_pid is None  # Back in the queue, unlocked.
    assert job.control.extra_system == {}  # Not counted as a failed attempt.


def test_sigterm_to_many_workers_finishes_every_job_in_hand(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = [q.enqueue_string(str(i)) for i in range(4)]
    with server(tmp_path / "q", marks, "--workers", "2") as proc:
        wait_for(lambda: len(started(marks)) == 2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    taken = sorted(started(marks))
    assert len(taken) == 2
    assert all((marks / f"{j}.done").exists() for j in taken)
    left = sorted(j.jobid for j in q.jobs())
    assert sorted(taken + left) == sorted(ids)  # Every job done or still queued.
    assert os.listdir(q.layout.active_dir) == []
    assert "total" in err
