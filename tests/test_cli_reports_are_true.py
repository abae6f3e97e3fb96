"""What dq deque and dq server say happened is what happened: a job not run is not
reported as run, a summary counts jobs and attempts apart, progress follows jobs that
arrive during a drain, and a failure's detail is the job's, never dirqueue's own."""

from __future__ import annotations

import json
import os
import re
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


def test_the_summary_counts_a_job_once_and_its_attempts_apart(tmp_path: Path) -> None:
    # One job failing three times was "3 jobs".
    qdir = str(tmp_path / "q")
    DirQueue(qdir).enqueue_string("x")
    done = run_dq("server", "--dir", qdir, "--until-empty", "--max-attempts", "3", "--json",
                  "--", "false")
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["jobs"], summary["attempts"]) == (1, 3)
    assert (summary["retried"], summary["failed"]) == (2, 1)
    (worker,) = summary["workers"]
    assert (worker["jobs"], worker["attempts"]) == (1, 3)
    text = run_dq("server", "--dir", qdir, "--until-empty", "--", "false")
    assert re.search(r"^0 jobs in ", text.stderr, re.M), text.stderr
    DirQueue(qdir).enqueue_string("y")
    text = run_dq("server", "--dir", qdir, "--until-empty", "--max-attempts", "2", "--",
                  "false")
    assert re.search(r"^1 job \(2 attempts\) in [0-9.]+s \(", text.stderr, re.M), text.stderr
    assert re.search(r"^worker +pid +attempts +finished", text.stderr, re.M), text.stderr


def test_progress_counts_jobs_submitted_during_the_drain(tmp_path: Path) -> None:
    # The total was read once, at the start: 30/30, then nothing for the 30 more.
    qdir = str(tmp_path / "q")
    q = DirQueue(qdir)
    q.enqueue_string("spawn", priority=10)  # Taken first.
    for i in range(29):
        q.enqueue_string(f"job {i}")
    spawn = tmp_path / "spawn"
    spawn.mkdir()
    for i in range(30):
        (spawn / f"more{i:02d}").write_text(str(i))
    command = (
        'if grep -q spawn "$1"; then'
        f' "{sys.executable}" -m dirqueue submit -q --dir {qdir} {spawn}/*; fi'
    )
    done = run_dq("server", "--dir", qdir, "--until-empty", "--", "sh", "-c", command, "sh")
    assert done.returncode == 0, done.stderr
    progress = re.findall(r": (\d+)/(\d+) \((\d+)%\)$", done.stderr, re.M)
    assert progress, done.stderr
    assert progress[-1] == ("60", "60", "100"), done.stderr
    assert ("30", "30", "100") not in progress, done.stderr
    assert list(q.jobs()) == []
