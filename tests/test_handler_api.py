"""What a handler can use from dirqueue itself: the attempt it is (``job.attempt``),
the errors a worker raises (importable from ``dirqueue``), and ``FailJob`` to fail a
job at once, without the retries left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import dirqueue
from dirqueue import DirQueue, FailedStore, FailJob, Outcome, Worker

pytestmark = pytest.mark.timeout(60)


def test_a_handler_reads_its_attempt_number(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    seen: list[int] = []

    def handle(job: dirqueue.Job) -> None:
        seen.append(job.attempt)
        if job.attempt < 3:
            raise RuntimeError("not yet")

    report = Worker(q, handle, max_attempts=5, until_empty=True).run()
    assert seen == [1, 2, 3]
    assert report.counts["finished"] == 1


def test_the_errors_a_worker_names_are_exported() -> None:
    for name in ("InvalidHandlerError", "JobTimeoutError", "UnenforceableTimeoutError",
                 "FailJob"):
        assert name in dirqueue.__all__
        assert issubclass(getattr(dirqueue, name), BaseException)
    with pytest.raises(dirqueue.InvalidHandlerError):
        Worker(DirQueue("/nonexistent"), "not callable")  # type: ignore[arg-type]


def test_fail_job_moves_the_job_to_failed_at_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("bad input")
    calls: list[int] = []

    def handle(job: dirqueue.Job) -> None:
        calls.append(job.attempt)
        raise FailJob("the input cannot be parsed")

    results: list[dirqueue.StepResult] = []
    Worker(q, handle, max_attempts=5, until_empty=True, on_result=results.append).run()
    assert calls == [1]
    ((result),) = results
    assert (result.outcome, result.attempt) == (Outcome.FAILED, 1)
    (failed,) = FailedStore(q).jobs()
    assert (failed.jobid, failed.attempts) == (jobid, 1)
    assert failed.error == "FailJob: the input cannot be parsed"


HANDLER = '''
from dirqueue import FailJob

def handle(job):
    raise FailJob("no such customer: " + job.get_data().decode())
'''


def test_dq_server_honours_fail_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("c42")
    (tmp_path / "permanent.py").write_text(HANDLER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dirqueue", "server", "--dir", str(q.dir), "--until-empty",
         "--json", "--handler", "./permanent.py:handle"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 4, err
    summary = json.loads(out)
    assert (summary["attempts"], summary["retried"], summary["failed"]) == (1, 0, 1)
    assert f"job {jobid} attempt 1/3 failed: FailJob: no such customer: c42; moved to" in err
    (failed,) = FailedStore(q).jobs()
    assert failed.attempts == 1
