"""Handlers are checked when given, and an ``async def`` handler is awaited.

Issue 11: ``dq server --handler mod:handle`` with ``async def handle(job)`` called it,
dropped the coroutine unawaited, and finished (deleted) the job: a job lost without a
trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, Job, Outcome, Worker
from dirqueue.worker import InvalidHandlerError, load_handler

pytestmark = pytest.mark.timeout(60)

DQ = str(Path(sys.executable).parent / "dq")

ASYNC_HANDLER = '''
import asyncio, os

async def handle(job):
    await asyncio.sleep(0.01)
    loop = id(asyncio.get_running_loop())
    # O_EXCL: a job done twice fails loudly here and shows in the counts.
    fd = os.open(os.path.join(os.environ["RESULTS"], job.jobid),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, b"%d %d %s" % (os.getpid(), loop, job.get_data()))
    os.close(fd)

NOT_A_FUNCTION = 42
'''


@pytest.mark.parametrize("workers", ["1", "2"])
def test_server_awaits_an_async_handler_once_per_job_on_one_loop_per_worker(
    tmp_path: Path, workers: str
) -> None:
    q = DirQueue(tmp_path / "q")
    jobs = {q.enqueue_string(f"data {i}"): f"data {i}" for i in range(20)}
    results = tmp_path / "results"
    results.mkdir()
    (tmp_path / "async_tasks.py").write_text(ASYNC_HANDLER)
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(q.dir), "--workers", workers, "--until-empty",
         "--json", "--handler", "./async_tasks.py:handle"],
        cwd=tmp_path, env={**os.environ, "RESULTS": str(results), "PYTHONWARNINGS": "always"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert "never awaited" not in err
    assert "RuntimeWarning" not in err
    assert json.loads(out)["finished"] == 20
    written = {p.name: p.read_text().split(" ", 2) for p in results.iterdir()}
    assert {jobid: data for jobid, (_, _, data) in written.items()} == jobs
    loops_per_pid: dict[str, set[str]] = {}
    for pid, loop, _ in written.values():
        loops_per_pid.setdefault(pid, set()).add(loop)
    assert all(len(loops) == 1 for loops in loops_per_pid.values())  # Kept across jobs.
    assert list(q.jobs()) == []


def test_a_handler_that_returns_an_awaitable_is_awaited_and_the_loop_closed(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(3):
        q.enqueue_string(str(i))
    done: list[bytes] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def work(job: Job) -> None:
        loops.append(asyncio.get_running_loop())
        done.append(job.get_data())

    def handle(job: Job) -> object:
        return work(job)  # Not a coroutine function: returns one.

    report = Worker(q, handle, until_empty=True).run()
    assert report.counts["finished"] == 3
    assert sorted(done) == [b"0", b"1", b"2"]
    assert len(set(map(id, loops))) == 1
    assert loops[0].is_closed()  # Closed when the worker stopped.


def test_an_async_handler_that_raises_follows_the_failure_policy(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")

    async def handle(job: Job) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("database restarting")

    with Worker(q, handle, until_empty=True, max_attempts=2) as worker:
        first = worker.run_once()
        assert (first.outcome, first.error) == (
            Outcome.RETRIED, "RuntimeError: database restarting"
        )


def test_an_async_handler_past_its_timeout_is_cancelled_and_fails(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    cancelled: list[bool] = []

    async def handle(job: Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with Worker(q, handle, timeout=0.2, max_attempts=1) as worker:
        result = worker.run_once()
    assert (result.outcome, result.error) == (Outcome.FAILED, "timed out after 0.2 s")
    assert cancelled == [True]
    (failed,) = worker.failed.jobs()
    assert failed.error == "timed out after 0.2 s"


@pytest.mark.parametrize("handler", [42, "mod:handle", None])
def test_worker_refuses_what_is_not_callable(tmp_path: Path, handler: object) -> None:
    with pytest.raises(InvalidHandlerError, match="is not callable"):
        Worker(DirQueue(tmp_path / "q"), handler)  # type: ignore[arg-type]


def test_a_generator_function_is_refused(tmp_path: Path) -> None:
    def handle(job: Job) -> object:
        yield job

    with pytest.raises(InvalidHandlerError, match="generator function"):
        Worker(DirQueue(tmp_path / "q"), handle)


def test_load_handler_refuses_a_constant_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "async_tasks.py").write_text(ASYNC_HANDLER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidHandlerError) as caught:
        load_handler("async_tasks:NOT_A_FUNCTION")
    assert isinstance(caught.value, ValueError)
    assert caught.value.spec == "'async_tasks:NOT_A_FUNCTION'"
    assert "\n" not in str(caught.value)
    proc = subprocess.run(
        [DQ, "server", "--dir", str(tmp_path / "q"), "--until-empty",
         "--handler", "./async_tasks.py:NOT_A_FUNCTION"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1
    assert "is not callable (a int)" in proc.stderr
