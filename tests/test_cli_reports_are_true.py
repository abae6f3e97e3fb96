"""What dq deque and dq server say happened is what happened: a job not run is not
reported as run, a summary counts jobs and attempts apart, progress follows jobs that
arrive during a drain, and a failure's detail is the job's, never dirqueue's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, FailedStore

pytestmark = pytest.mark.timeout(90)

DQ = [sys.executable, "-m", "dirqueue"]


def run_dq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``dq ARGS`` as a real process in its own group, killed with it on a timeout."""
    proc = subprocess.Popen(
        [*DQ, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_job_whose_attempts_are_used_up_is_not_reported_as_run(tmp_path: Path) -> None:
    qdir = str(tmp_path / "q")
    jobid = DirQueue(qdir).enqueue_string("x")
    first = run_dq("deque", "--dir", qdir, "--", "false")
    assert first.returncode == 1
    assert "attempt 1 of 3" in first.stderr
    # --max-attempts 1: the one attempt is spent, so the command must not run, and
    # dq must not say it ran and failed.
    ran = tmp_path / "ran"
    second = run_dq("deque", "--dir", qdir, "--max-attempts", "1", "--",
                    "sh", "-c", f"touch {ran}; exit 1", "sh")
    assert second.returncode == 1
    assert not ran.exists()
    assert "attempt 1 of 1" not in second.stderr, second.stderr
    assert f"job {jobid} not run: its 1 failed attempt already reaches --max-attempts 1" in (
        second.stderr
    ), second.stderr
    assert "(last error: command false " in second.stderr
    (failed,) = FailedStore(DirQueue(qdir)).jobs()
    assert failed.attempts == 1


def test_a_timed_out_command_with_nothing_on_stderr_keeps_no_traceback(
    tmp_path: Path,
) -> None:
    qdir = str(tmp_path / "q")
    DirQueue(qdir).enqueue_string("x")
    done = run_dq("deque", "--dir", qdir, "--max-attempts", "1", "--timeout", "0.5",
                  "--", "sh", "-c", "exec sleep 30", "sh")
    assert done.returncode == 1
    assert "timed out after 0.5 s" in done.stderr
    (failed,) = FailedStore(DirQueue(qdir)).jobs()
    # The command said nothing: its detail is empty, not dirqueue's own traceback.
    assert "Traceback" not in failed.detail
    assert failed.detail == ""
