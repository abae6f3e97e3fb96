"""A job's own time limit, attempts and retry back-off (``dq.timeout``,
``dq.max_attempts``, ``dq.retry_delay`` in its metadata, built by ``job_settings``)
are honoured by every kind of worker: a Worker alone, ``dq server`` with a handler
under its supervisor, and a command run by ``dq deque``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirqueue import (
    DirQueue,
    FailedStore,
    InvalidJobSettingError,
    Outcome,
    StepResult,
    Worker,
    job_settings,
)

pytestmark = pytest.mark.timeout(90)

SLEEPY = '''
import time

def handle(job):
    if job.get_data() == b"slow":
        time.sleep(1000)
'''


def run_dq(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dirqueue", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # What the workers left, if anything.
        if proc.poll() is None:
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_job_settings_builds_checked_metadata() -> None:
    assert job_settings(timeout=30, max_attempts=5, retry_delay=0) == {
        "dq.timeout": "30.0", "dq.max_attempts": "5", "dq.retry_delay": "0.0",
    }
    assert job_settings() == {}
    for bad in ({"timeout": 0}, {"timeout": -1}, {"max_attempts": 0},
                {"retry_delay": float("nan")}):
        with pytest.raises(InvalidJobSettingError) as info:
            job_settings(**bad)  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_jobs_own_timeout_stops_a_python_handler(tmp_path: Path, workers: str) -> None:
    # No --timeout: only the job has one. One worker keeps it with an alarm, two
    # under the supervisor, which kills the overdue worker.
    q = DirQueue(tmp_path / "q")
    slow = q.enqueue_string("slow", job_settings(timeout=1, max_attempts=1))
    fast = q.enqueue_string("fast")
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    started = time.monotonic()
    done = run_dq(["server", "--dir", "q", "--until-empty", "--json", "--workers", workers,
                   "--handler", "./sleepy.py:handle"], tmp_path)
    assert time.monotonic() - started < 40
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["finished"], summary["failed"]) == (1, 1)
    (failed,) = FailedStore(q).jobs()
    assert (failed.jobid, failed.error, failed.attempts) == (slow, "timed out after 1 s", 1)
    assert fast != slow
    assert f"job {slow} attempt 1/1 failed: timed out after 1 s; moved to failed/" in (
        done.stderr
    )


def test_a_jobs_own_timeout_stops_a_command(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x", job_settings(timeout=0.5))
    done = run_dq(["deque", "--dir", "q", "--", "sh", "-c", "exec sleep 30", "sh"], tmp_path)
    assert done.returncode == 1
    assert f"job {jobid} failed (attempt 1 of 3): timed out after 0.5 s" in done.stderr


def test_a_jobs_own_attempts_and_retry_delay(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    once = q.enqueue_string("once", job_settings(max_attempts=1), priority=10)
    later = q.enqueue_string("later", job_settings(retry_delay=600), priority=20)

    def boom(job: object) -> None:
        raise RuntimeError("no")

    results: list[StepResult] = []
    worker = Worker(q, boom, max_attempts=3, on_result=results.append)
    worker.run_once(timeout=0)
    worker.run_once(timeout=0)
    assert [(r.jobid, r.outcome, r.max_attempts) for r in results] == [
        (once, Outcome.FAILED, 1), (later, Outcome.RETRIED, 3),
    ]
    assert 600 * 0.75 <= results[1].retry_in <= 600 * 1.25
    (deferred,) = q.jobs()
    assert deferred.jobid == later
    assert deferred.deferred_until is not None


def test_a_bad_setting_fails_the_job_at_once_saying_why(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x", {"dq.timeout": "soon"})
    ran: list[str] = []
    result = Worker(q, lambda job: ran.append(job.jobid)).run_once(timeout=0)
    assert ran == []
    assert (result.outcome, result.jobid) == (Outcome.FAILED, jobid)
    (failed,) = FailedStore(q).jobs()
    assert "job setting dq.timeout='soon' is not a number of seconds" in failed.error
