"""A supervised worker that dies is replaced, said at once, backed off, and counted.

Issue 11: with ``dq server --workers N`` a worker that died was not restarted; the server
ran on with fewer workers and said so only at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import descendants_of, process_alive, wait_for
from dirqueue import DirQueue, FailedStore, Outcome
from dirqueue._supervisor import Backoff, ChildContext, ChildDeath, supervise
from dirqueue._timeouts import count_timed_out

pytestmark = pytest.mark.timeout(90)

DQ = str(Path(sys.executable).parent / "dq")
#: See tests/test_job_timeouts.py: a dead owner's lock broken at once by a pickup.
SLOW_JOB = 'touch "$MARKS/$DQ_JOBID.started"; sleep 0.5; touch "$MARKS/$DQ_JOBID.done"'




@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_killed_worker_is_replaced_and_the_queue_drains(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(12)]
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(q.dir), "--workers", "2", "--until-empty", "--json",
         "--poll-interval", "0.2", "--", "sh", "-c", SLOW_JOB, "sh"],
        env={**os.environ, "MARKS": str(marks)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    everyone: list[int] = []
    try:
        assert wait_for(lambda: len(list(marks.glob("*.started"))) >= 2, timeout=15)
        workers = descendants_of(proc.pid, children_only=True)
        assert len(workers) == 2
        victim = workers[1]
        os.kill(victim, signal.SIGKILL)
        # A new worker process appears within seconds.
        assert wait_for(
            lambda: len(set(descendants_of(proc.pid, children_only=True)) - set(workers)) == 1,
            timeout=5,
        )
        everyone = descendants_of(proc.pid)
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        assert f"(pid {victim}) died: signal 9 (SIGKILL); restarting" in err
        summary = json.loads(out)
        assert summary["restarts"] == 1
        assert sorted(w["restarts"] for w in summary["workers"]) == [0, 1]
        assert not process_alive(victim)
        done = {p.name.removesuffix(".done") for p in marks.glob("*.done")}
        left = [job.jobid for job in q.jobs()]
        assert left == []  # The killed worker's job was taken again at once.
        assert done == set(ids)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def _crash_three_times(tmp_path: Path) -> Callable[[ChildContext], None]:
    def main(child: ChildContext) -> None:
        child.signals_ready()
        runs = tmp_path / f"runs.{child.index}"
        with runs.open("a") as f:
            f.write("x")
        if len(runs.read_text()) <= 3:
            os._exit(7)  # Dies at once, three times in a row.

    return main


def test_a_worker_that_keeps_dying_is_restarted_with_growing_waits(tmp_path: Path) -> None:
    deaths: list[ChildDeath] = []
    started = time.monotonic()
    results = supervise(
        1,
        _crash_three_times(tmp_path),
        restart=True,
        backoff=Backoff(first=0.2, cap=0.4),
        on_death=deaths.append,
        interval=0.05,
    )
    elapsed = time.monotonic() - started
    assert [d.restart_in for d in deaths] == [0.2, 0.4, 0.4]  # Doubling, capped.
    assert [d.cause for d in deaths] == ["exit code 7"] * 3
    assert elapsed >= 1.0
    (result,) = results
    assert (result.exit_code, result.restarts) == (0, 3)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(0, 9)] == [
        0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0
    ]
    assert backoff.delay(10_000) == 30.0


def test_without_restart_a_dead_child_stays_dead(tmp_path: Path) -> None:
    deaths: list[ChildDeath] = []
    (result,) = supervise(1, _crash_three_times(tmp_path), on_death=deaths.append)
    assert (result.exit_code, result.restarts) == (7, 0)
    assert [d.restart_in for d in deaths] == [None]


SUPERVISOR = """
import os, signal, sys, time
from dirqueue import DirQueue, run_workers
signal.alarm(60)  # However the test ends, this process does not outlive it.

def handle(job):
    time.sleep(0.3)

reports = run_workers(DirQueue(sys.argv[1]), handle, 2, poll_interval=0.1)
print(sum(r.restarts for r in reports), [r.exit_code for r in reports])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_stop_signal_never_leads_to_a_restart(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(20):
        q.enqueue_string(str(i))
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(q.dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert wait_for(lambda: len(descendants_of(proc.pid, children_only=True)) == 2, 15)
        workers = descendants_of(proc.pid, children_only=True)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        # A worker killed while the server stops is not replaced.
        with contextlib.suppress(ProcessLookupError):
            os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "; restarting" not in err
        assert f"(pid {workers[0]}) died: signal 9 (SIGKILL); not restarting: stopping" in err
        restarts, _ = out.split(" ", 1)
        assert restarts == "0"
        assert set(descendants_of(proc.pid, children_only=True)) <= set(workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.parametrize(("attempt", "in_failed"), [(1, False), (3, True)])
def test_the_supervisor_counts_a_timed_out_attempt(
    tmp_path: Path, attempt: int, in_failed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # What run_workers does once the killed worker's job can be taken (its lock broken,
    # as the engine change does at once; here, simply a job nobody holds).
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    with caplog.at_level(logging.WARNING, logger="dirqueue"):
        result = count_timed_out(q, jobid, attempt, "timed out after 1 s", 3)
    # Told as a worker tells its own failures (run_workers hands it to on_result, or
    # logs it), not logged here.
    assert result is not None
    assert result.outcome is (Outcome.FAILED if in_failed else Outcome.RETRIED)
    assert (result.jobid, result.attempt, result.max_attempts, result.error) == (
        jobid, attempt, 3, "timed out after 1 s"
    )
    assert caplog.text == ""
    if in_failed:
        (failed,) = FailedStore(q).jobs()
        assert (failed.jobid, failed.attempts, failed.error) == (
            jobid, 3, "timed out after 1 s"
        )
        assert list(q.jobs()) == []
    else:
        (job,) = q.jobs()
        assert job.active_pid is None
        assert job.control.extra_system["QATT"] == "1"
        assert job.control.extra_system["QERR"] == "timed out after 1 s"
