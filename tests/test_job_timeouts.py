"""``--timeout``: an attempt that runs too long fails with "timed out after N s".

A command is stopped with its whole process group (what it started in the background
too); a Python handler's worker process is killed and replaced by the supervisor, which
counts the attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _helpers import process_alive, processes_in_group
from dirqueue import DirQueue, FailedStore, Worker
from dirqueue.worker import UnenforceableTimeoutError

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
]

DQ = str(Path(sys.executable).parent / "dq")

#: The engine change of issue 11 (a lock whose owner is provably dead is broken at
#: once, by the next pickup, instead of after active_file_lifetime). Without it the
#: supervisor cannot take back the job of the worker it killed: the job stays locked.

# Records its process group, then leaves a sleep in the background and waits on another.
TWO_SLEEPS = 'echo $(ps -o pgid= -p $$) >> "$MARKS/pgids"; sleep 1000 & sleep 1000'

HANGING_HANDLER = '''
import os, time

def handle(job):
    marks = os.environ["MARKS"]
    with open(os.path.join(marks, "pids"), "a") as f:
        f.write("%d %s\\n" % (os.getpid(), job.get_data().decode()))
    if job.get_data() == b"hang":
        time.sleep(1000)
    open(os.path.join(marks, job.jobid + ".done"), "w").close()
'''






def run(argv: list[str], marks: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, "MARKS": str(marks)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def kill_groups(pgids: list[int]) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def test_a_timed_out_command_is_killed_with_its_process_group_retried_then_failed(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    marks = tmp_path / "marks"
    marks.mkdir()
    pgids: list[int] = []
    try:
        started = time.monotonic()
        done = run(
            [DQ, "server", "--dir", str(q.dir), "--until-empty", "--timeout", "1",
             "--max-attempts", "2", "--json", "--", "sh", "-c", TWO_SLEEPS, "sh"],
            marks,
        )
        elapsed = time.monotonic() - started
        pgids = [int(line) for line in (marks / "pgids").read_text().split()]
        assert len(pgids) == 2  # Retried once, then failed.
        for pgid in pgids:
            assert processes_in_group(pgid) == [], "a sleep outlived its timed-out command"
        summary = json.loads(done.stdout)
        assert (summary["retried"], summary["failed"]) == (1, 1)
        (failed,) = FailedStore(q).jobs()
        assert (failed.jobid, failed.attempts) == (jobid, 2)
        assert failed.error == "timed out after 1 s"
        assert list(q.jobs()) == []
        assert elapsed < 20  # Neither attempt waited for the sleeps.
    finally:
        kill_groups(pgids)


def test_deque_timeout_fails_the_attempt_and_says_so(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    marks = tmp_path / "marks"
    marks.mkdir()
    pgids: list[int] = []
    try:
        done = run(
            [DQ, "deque", "--dir", str(q.dir), "--timeout", "0.5", "--", "sh", "-c",
             TWO_SLEEPS, "sh"],
            marks,
        )
        pgids = [int(line) for line in (marks / "pgids").read_text().split()]
        assert done.returncode == 1
        assert f"job {jobid} failed (attempt 1 of 3): timed out after 0.5 s" in done.stderr
        assert processes_in_group(pgids[0]) == []
        (job,) = q.jobs()
        assert job.active_pid is None  # Back in the queue, its attempt counted.
        assert job.control.extra_system["QATT"] == "1"
    finally:
        kill_groups(pgids)


def test_a_python_handler_past_its_timeout_has_its_worker_replaced(tmp_path: Path) -> None:
    # One worker: --timeout with --handler runs it under the supervisor all the same.
    q = DirQueue(tmp_path / "q")
    hung = q.enqueue_string("hang", priority=10)  # Taken first.
    others = [q.enqueue_string(f"ok {i}") for i in range(3)]
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "hanging.py").write_text(HANGING_HANDLER)
    pids: list[int] = []
    try:
        done = run(
            [DQ, "server", "--dir", str(q.dir), "--until-empty", "--timeout", "1",
             "--max-attempts", "2", "--json", "--handler", "./hanging.py:handle"],
            marks, cwd=tmp_path,
        )
        runs = [line.split(" ", 1) for line in (marks / "pids").read_text().splitlines()]
        pids = [int(pid) for pid, _ in runs]
        hanging = [int(pid) for pid, data in runs if data == "hang"]
        # The hung attempt is not left running: its worker process is gone.
        assert hanging
        assert not [pid for pid in hanging if process_alive(pid)]
        summary = json.loads(done.stdout)
        (worker,) = summary["workers"]
        assert worker["restarts"] == len(hanging)  # Each hung worker was replaced...
        assert worker["pid"] not in hanging
        assert all((marks / f"{jobid}.done").exists() for jobid in others)  # ...and went on.
        assert f"job {hung} timed out after 1 s; restarting" in done.stderr
        # The killed worker's lock is broken at once (its owner is proven dead) and the
        # attempt counted: retried once, then failed.
        assert len(hanging) == 2
        (failed,) = FailedStore(q).jobs()
        assert (failed.jobid, failed.attempts) == (hung, 2)
        assert failed.error == "timed out after 1 s"
        assert list(q.jobs()) == []
        assert done.returncode == 4, done.stderr  # EXIT_JOBS_FAILED: a job went to failed/
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_python_handler_past_its_timeout_waits_its_retry_delay(tmp_path: Path) -> None:
    # --retry-delay held for commands and async handlers; a plain function's timed-out
    # attempt (its worker killed by the supervisor) came back at once instead, said so
    # in other words than every other failure, with two more warnings besides.
    q = DirQueue(tmp_path / "q")
    hung = q.enqueue_string("hang")
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "hanging.py").write_text(HANGING_HANDLER)
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(q.dir), "--timeout", "1", "--retry-delay", "60",
         "--poll-interval", "0.1", "--handler", "./hanging.py:handle"],
        cwd=tmp_path, env={**os.environ, "MARKS": str(marks)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "q" / "deferred" / hung).exists():
            assert proc.poll() is None
            assert time.monotonic() < deadline, "the timed-out job was never deferred"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        pids = [int(line.split()[0]) for line in (marks / "pids").read_text().splitlines()]
        assert len(pids) == 1  # Not run again at once.
        (job,) = q.jobs()
        assert job.deferred_until is not None
        assert job.deferred_until - time.time() > 60 * 0.75 - 10
        assert job.control.extra_system["QATT"] == "1"
        lines = err.splitlines()
        assert any(f"job {hung} timed out after 1 s; restarting" in line for line in lines)
        assert any(
            f"job {hung} attempt 1/3 failed: timed out after 1 s; retried in" in line
            for line in lines
        ), err
        assert not [line for line in lines if "broke stale lock" in line], err
        assert not [line for line in lines if "returned to the queue" in line], err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


SLEEPY_WORKER = '''
import sys, time
from dirqueue import DirQueue, Worker

def handle(job):
    try:
        time.sleep(1000)
    except Exception:
        pass  # A broad except must not swallow the time limit.
    time.sleep(1000)

report = Worker(DirQueue(sys.argv[1]), handle, timeout=0.5, max_attempts=1,
                until_empty=True).run()
print(report.counts["failed"], report.stop_reason)
'''


def test_a_worker_run_alone_keeps_a_plain_functions_timeout(tmp_path: Path) -> None:
    # Worker(..., timeout=...).run() without run_workers' supervisor did not limit a
    # plain function at all, and said nothing.
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPY_WORKER, str(q.dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.split() == ["1", "queue", "empty"]
    (failed,) = FailedStore(q).jobs()
    assert (failed.jobid, failed.error) == (jobid, "timed out after 0.5 s")


def test_a_worker_in_a_thread_refuses_a_timeout_it_cannot_keep(tmp_path: Path) -> None:
    # SIGALRM reaches only the main thread: a worker elsewhere says so before it
    # takes a job, rather than run the handler unlimited.
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            Worker(q, lambda job: None, timeout=1, until_empty=True).run()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=work, name="side")
    thread.start()
    thread.join(timeout=30)
    (err,) = errors
    assert isinstance(err, UnenforceableTimeoutError)
    assert isinstance(err, RuntimeError)
    assert "'side'" in str(err)
    assert "run_workers()" in str(err)
    assert [job.jobid for job in q.jobs()] == [jobid]  # Not taken.
    assert [j.active_pid for j in q.jobs()] == [None]
    # Under a supervisor, or for a command or an async handler, it is kept elsewhere.
    thread = threading.Thread(target=lambda: Worker(q, lambda job: None, timeout=1,
                                                    watched=True, until_empty=True).run())
    thread.start()
    thread.join(timeout=30)
    assert list(q.jobs()) == []
