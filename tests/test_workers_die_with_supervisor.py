"""Workers do not outlive their supervisor, however it ends.

Issue 8.6: each worker runs in its own process group with no parent-death signal, so a
SIGKILL or SIGHUP to ``dq server --workers N`` left them running, still taking jobs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import descendants_of, process_alive, wait_for
from dirqueue import DirQueue, Job, Worker, run_workers
from dirqueue.worker import StopReason

pytestmark = pytest.mark.timeout(60)

#: prctl(2) option: which signal this process gets when its parent dies.
PR_GET_PDEATHSIG = 2
DQ = str(Path(sys.executable).parent / "dq")
# Marks its start, runs for a while, marks its end: the data path comes last ($1).
SLOW_JOB = 'touch "$MARKS/$DQ_JOBID.started"; sleep 2; touch "$MARKS/$DQ_JOBID.done"'




@contextlib.contextmanager
def hang_ups_by_default() -> Iterator[None]:
    """Processes started within get SIGHUP at its default, as under a terminal. (Run
    under nohup, the test would start a server that ignores hang-ups, as it should.)"""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def started(marks: Path) -> list[str]:
    return sorted(p.name.removesuffix(".started") for p in marks.glob("*.started"))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_workers_stop_when_the_supervisor_is_killed_or_hung_up(
    tmp_path: Path, signum: signal.Signals
) -> None:
    q = DirQueue(tmp_path / "q")
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = [q.enqueue_string(str(i)) for i in range(6)]
    with hang_ups_by_default():
        proc = subprocess.Popen(
            [DQ, "server", "--dir", str(tmp_path / "q"), "--workers", "2", "--poll-interval",
             "0.2", "--", "sh", "-c", SLOW_JOB, "sh"],
            env={**os.environ, "MARKS": str(marks)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
    everyone: list[int] = []
    try:
        assert wait_for(lambda: len(started(marks)) == 2, timeout=15)
        everyone = descendants_of(proc.pid)
        workers = descendants_of(proc.pid, children_only=True)
        assert len(workers) == 2
        proc.send_signal(signum)
        # Each worker finishes the job in hand (2 s) and takes no other.
        assert wait_for(lambda: not any(process_alive(w) for w in workers), timeout=10), (
            "a worker outlived its supervisor"
        )
        proc.communicate(timeout=10)
        if signum == signal.SIGHUP:
            assert proc.returncode == 0  # Like SIGTERM: a clean stop.
        taken = started(marks)
        assert len(taken) == 2
        assert all((marks / f"{jobid}.done").exists() for jobid in taken)
        assert sorted(j.jobid for j in q.jobs()) == sorted(set(ids) - set(taken))
        assert os.listdir(q.layout.active_dir) == []  # Nothing left locked.
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def test_a_worker_whose_parent_changed_takes_no_job(tmp_path: Path, dead_pid: int) -> None:
    # The portable half of the fix: a worker started by a supervisor that has since
    # died (its parent is now someone else) stops instead of taking a job.
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    worker = Worker(q, lambda job: None, parent_pid=dead_pid)
    report = worker.run()
    assert report.stop_reason is StopReason.PARENT_GONE
    assert report.jobs == 0
    assert len(list(q.jobs())) == 1
    assert Worker(q, lambda job: None, parent_pid=os.getppid(), njobs=1).run().jobs == 1



@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_each_worker_asks_the_kernel_for_sigterm_when_its_supervisor_dies(
    tmp_path: Path,
) -> None:
    # An idle worker looks at its parent only between waits (every poll interval), and
    # a job can run for hours: the kernel's parent-death signal reaches it at once.
    q = DirQueue(tmp_path / "q")
    for i in range(4):
        q.enqueue_string(str(i))
    seen = tmp_path / "seen"
    seen.mkdir()

    def handle(job: Job) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        signum = ctypes.c_int(0)
        assert libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(signum), 0, 0, 0) == 0
        (seen / f"{os.getpid()}.{job.jobid}").write_text(str(signum.value))

    reports = run_workers(q, handle, 2, until_empty=True)
    assert sum(r.counts["finished"] for r in reports) == 4
    assert [p.read_text() for p in seen.iterdir()] == [str(int(signal.SIGTERM))] * 4
