"""The failure policy with real processes: retries that wait their back-off, a job that
keeps killing its workers, and failures that are seen."""

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

from dirqueue import DirQueue, FailedStore, list_jobs
from dirqueue.worker import retry_backoff

DQ = str(Path(sys.executable).parent / "dq")
pytestmark = pytest.mark.timeout(90)


def _dq(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [DQ, *args], cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    low = [retry_backoff(n, 2.0, 60.0, jitter=lambda: 0.0) for n in range(1, 7)]
    high = [retry_backoff(n, 2.0, 60.0, jitter=lambda: 1.0) for n in range(1, 7)]
    assert low == [1.5, 3.0, 6.0, 12.0, 24.0, 48.0]
    assert high == [2.5, 5.0, 10.0, 20.0, 40.0, 60.0]
    assert retry_backoff(3, 0.0, 60.0) == 0.0
    assert retry_backoff(100, 1.0, 3600.0) == 3600.0


def test_a_retry_waits_its_back_off_and_the_failure_is_printed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("flaky")
    # Fails the first time (a database restarting, say), works the second.
    script = tmp_path / "flaky.sh"
    script.write_text(
        '#!/bin/sh\nif [ -e "$0.ran" ]; then date +%s.%N >> "$0.ok"; exit 0; fi\n'
        'date +%s.%N > "$0.ran"; echo "db restarting" >&2; exit 75\n'
    )
    script.chmod(0o755)
    done = _dq("server", "--dir", "q", "--until-empty", "--retry-delay", "1",
               "--", str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = float((tmp_path / "flaky.sh.ran").read_text())
    second = float((tmp_path / "flaky.sh.ok").read_text())
    assert second - first >= 0.75  # Not before its back-off (1 s, -25% at most).
    (line,) = [ln for ln in done.stderr.splitlines() if jobid in ln and "failed" in ln]
    assert "attempt 1/3 failed" in line
    assert "exited 75" in line
    assert "retried in" in line
    assert list(q.jobs()) == []


def test_a_job_that_kills_its_workers_ends_in_failed(tmp_path: Path) -> None:
    (tmp_path / "poison.py").write_text(
        "import os, signal\n"
        "def handle(job):\n"
        "    if job.get_data() == b'poison':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    with open(os.environ['DONE'], 'a') as fh:\n"
        "        fh.write(job.jobid + '\\n')\n"
    )
    q = DirQueue(tmp_path / "q")
    poison = q.enqueue_string("poison", priority=10)
    good = [q.enqueue_string(f"good {i}") for i in range(4)]
    os.environ["DONE"] = str(tmp_path / "done")
    try:
        done = _dq("server", "--dir", "q", "--workers", "2", "--until-empty",
                   "--max-attempts", "3", "--json", "--handler", "./poison.py:handle", cwd=tmp_path)
    finally:
        del os.environ["DONE"]
    assert done.returncode == 4, done.stderr  # It ended, and moved a job to failed/.
    assert sorted((tmp_path / "done").read_text().split()) == sorted(good)
    (failed,) = FailedStore(q).jobs()
    assert failed.jobid == poison
    assert failed.attempts == 3
    assert failed.error.startswith("worker died")
    summary = json.loads(done.stdout)
    assert summary["restarts"] == 3  # Each death replaced its worker.
    assert list(q.jobs()) == []


def test_submit_delay_is_listed_as_deferred_and_runs_later(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    sub = _dq("submit", "--dir", "q", "--delay", "1", "a.txt", cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    jobid = sub.stdout.strip()
    listed = _dq("list", "--dir", "q", cwd=tmp_path)
    assert "deferred" in listed.stdout
    assert "due at" in listed.stdout
    (info,) = list_jobs(DirQueue(tmp_path / "q"))
    assert (info.job.jobid, info.state) == (jobid, "deferred")
    shown = _dq("show", "--dir", "q", "--json", jobid, cwd=tmp_path)
    assert json.loads(shown.stdout)["state"] == "deferred"
    started = time.monotonic()
    served = _dq("server", "--dir", "q", "--until-empty", "--", "cat", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert served.stdout == "hello\n"  # It waited for the deferred job, then ran it.
    assert time.monotonic() - started < 10
    at = _dq("submit", "--dir", "q", "--at", "2099-01-01T00:00", "a.txt", cwd=tmp_path)
    assert at.returncode == 0, at.stderr
    (later,) = list_jobs(DirQueue(tmp_path / "q"))
    assert later.state == "deferred"
    assert later.job.deferred_until is not None
    assert later.job.deferred_until > time.time() + 365 * 86400
