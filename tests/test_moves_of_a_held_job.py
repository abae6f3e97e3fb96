"""A held job is moved (to ``deferred/``) only while its lock is still ours, and a
holder never calls a job done whose control file another moved away (issue 19, item 3);
an attempt recorded just before its worker died is counted once (item 5).

Worker A, stopped inside ``retry_later`` after its lock check and before its move, had
its quiet lock broken; B took the job; A resumed and moved B's job to ``deferred/``;
B's ``finish()`` reported success; the job came back when due, its data gone, and
landed in ``corrupt/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import files_under, wait_for
from dirqueue import DirQueue, FailedStore, Job, JobLostError, Outcome, Worker
from dirqueue.failed import attempts_of

GATED = str(Path(__file__).parent / "_gated_worker.py")
LIFETIME = 1.0


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "T"


@pytest.mark.timeout(60)
def test_a_stalled_retry_later_does_not_move_the_job_its_new_holder_finishes(
    qdir: Path,
) -> None:
    jobid = DirQueue(qdir).enqueue_string("precious")
    a = subprocess.Popen(
        [sys.executable, GATED, str(qdir), str(LIFETIME), "STOP", "retry_later"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert a.stdin is not None
        assert a.stdout is not None
        assert a.stdout.readline().split() == ["ready", jobid]
        a.stdin.write("go\n")
        a.stdin.flush()
        # A counted its attempt, checked its lock, and stopped before the move.
        assert wait_for(lambda: _stopped(a.pid), 10)
        b = DirQueue(qdir, active_file_lifetime=LIFETIME)
        deadline = time.monotonic() + 10
        job = None
        while job is None and time.monotonic() < deadline:  # Once A's lock is stale.
            job = b.pickup_queued_job()
            time.sleep(0.05)
        assert job is not None
        assert job.jobid == jobid
        os.kill(a.pid, signal.SIGCONT)
        assert a.stdout.readline().strip() == "lost"
        assert a.wait(timeout=10) == 0
        job.finish()  # B's: the job is done, once.
    finally:
        if a.poll() is None:
            a.kill()
        a.communicate()  # Reaps it, and closes the pipes.
    assert files_under(qdir / "deferred") == []
    assert files_under(qdir / "queue") == []
    assert files_under(qdir / "data") == []
    assert b.pickup_queued_job() is None


def test_finish_does_not_call_a_job_moved_out_of_the_queue_done(qdir: Path) -> None:
    queue = DirQueue(qdir)
    jobid = queue.enqueue_string("moved under our feet")
    job = queue.pickup_queued_job()
    assert job is not None
    # Another process's move (a stalled holder's retry_later, resumed).
    (qdir / "deferred").mkdir()
    os.rename(job.queue_path, qdir / "deferred" / jobid)
    with pytest.raises(JobLostError, match="moved out of the queue"):
        job.finish()
    assert files_under(qdir / "deferred") == [jobid]
    assert os.path.exists(job.get_data_path())  # Data kept.
    assert files_under(qdir / "active") == []  # Not left locked for when it comes back.


@pytest.mark.parametrize("fanout", [False, True], ids=["queue", "fan-out"])
def test_a_deferral_that_crashed_between_link_and_unlink_is_not_promoted(
    qdir: Path, fanout: bool
) -> None:
    """The job is queued under its own name; the second name left in ``deferred/``
    must not bring it back once it is done (nor list it twice meanwhile)."""
    queue = DirQueue(qdir, queue_fanout=fanout)
    jobid = queue.enqueue_string("linked twice")
    (qdir / "deferred").mkdir()
    (queued,) = [path for path in (qdir / "queue").rglob(jobid)]
    os.link(queued, qdir / "deferred" / jobid)
    past = time.time() - 10
    os.utime(qdir / "deferred" / jobid, (past, past))
    job = queue.pickup_queued_job()  # Promotes due jobs first.
    assert job is not None
    assert files_under(qdir / "deferred") == []
    job.finish()
    # A new queue object looks in deferred/ at once.
    assert DirQueue(qdir, queue_fanout=fanout).pickup_queued_job() is None
    assert files_under(qdir / "queue") == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("retry_delay", [0, 5], ids=["returned-at-once", "retry_later"])
def test_a_worker_killed_after_recording_its_attempt_is_not_counted_twice(
    qdir: Path, retry_delay: int
) -> None:
    """Issue 19 item 5: killed after its failed attempt was recorded and before it let
    go of the job (or inside retry_later, before the move), the worker's attempt was
    counted again by the dequeuer that broke its lock: with ``max_attempts=2`` the job
    went to ``failed/`` after one real failure, its handler never run again."""
    jobid = DirQueue(qdir).enqueue_string("fails once, then its worker dies")
    first = subprocess.run(
        [sys.executable, GATED, str(qdir), str(LIFETIME), "KILL", f"fail-retry-{retry_delay}"],
        capture_output=True, timeout=30, check=False,
    )
    assert first.returncode == -signal.SIGKILL
    assert (qdir / "active" / jobid).exists()  # It died holding the job.
    runs: list[int] = []

    def handler(job: Job) -> None:
        runs.append(attempts_of(job.control))
        raise RuntimeError("the second real failure")

    queue = DirQueue(qdir, active_file_lifetime=LIFETIME)
    result = Worker(queue, handler, max_attempts=2, until_empty=True).run_once()
    assert result.jobid == jobid
    assert runs == [1]  # Run again, with one attempt counted.
    assert result.outcome is Outcome.FAILED
    assert result.attempt == 2
    assert FailedStore(queue).get(jobid).attempts == 2


@pytest.mark.timeout(60)
def test_a_stalled_update_does_not_bring_back_a_job_its_new_holder_finished(
    qdir: Path,
) -> None:
    """Stopped inside update_control after its last lock check, A must not put its
    control file back in queue/ once B has finished the job meanwhile."""
    jobid = DirQueue(qdir).enqueue_string("finished once")
    a = subprocess.Popen(
        [sys.executable, GATED, str(qdir), str(LIFETIME), "STOP", "retry_later", "in-update"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert a.stdin is not None
        assert a.stdout is not None
        assert a.stdout.readline().split() == ["ready", jobid]
        a.stdin.write("go\n")
        a.stdin.flush()
        assert wait_for(lambda: _stopped(a.pid), 10)
        b = DirQueue(qdir, active_file_lifetime=LIFETIME)
        deadline = time.monotonic() + 10
        job = None
        while job is None and time.monotonic() < deadline:  # Once A's lock is stale.
            job = b.pickup_queued_job()
            time.sleep(0.05)
        assert job is not None
        job.finish()
        os.kill(a.pid, signal.SIGCONT)
        a.communicate(timeout=10)  # A JobStateError (the job is gone): not our business.
    finally:
        if a.poll() is None:
            a.kill()
        a.communicate()
    assert files_under(qdir / "queue") == []
    assert files_under(qdir / "deferred") == []
    assert files_under(qdir / "data") == []
    assert not (qdir / "corrupt").exists() or files_under(qdir / "corrupt") == []


@pytest.mark.timeout(60)
def test_a_crashed_deferrals_twin_not_yet_due_does_not_bring_back_a_finished_job(
    qdir: Path,
) -> None:
    """The second name left in ``deferred/`` comes due only after the queued job was
    taken and finished: then the job's data is gone, and the name must go, not come
    back as a job without data (it landed in ``corrupt/``, once in a kill storm)."""
    queue = DirQueue(qdir)
    jobid = queue.enqueue_string("linked twice")
    (qdir / "deferred").mkdir()
    os.link(qdir / "queue" / jobid, qdir / "deferred" / jobid)
    soon = time.time() + 1.0
    os.utime(qdir / "deferred" / jobid, (soon, soon))
    job = queue.pickup_queued_job()
    assert job is not None
    job.finish()
    time.sleep(1.2)
    assert DirQueue(qdir).pickup_queued_job() is None
    assert files_under(qdir / "deferred") == []
    assert not (qdir / "corrupt").exists()


@pytest.mark.timeout(60)
def test_the_worker_that_breaks_a_dead_deferrers_lock_drops_its_twin(qdir: Path) -> None:
    """A worker killed inside ``retry_later`` between its link into ``deferred/`` and
    its unlink from ``queue/`` leaves the job in both: the next worker, taking it by
    breaking the dead worker's lock, removes the name in ``deferred/`` at once."""
    queue = DirQueue(qdir)
    jobid = queue.enqueue_string("deferred by a worker that died")
    (qdir / "deferred").mkdir()
    pid = os.fork()
    if pid == 0:  # The dying worker: holds the job, links the twin, dies.
        code = 1
        try:
            held = DirQueue(qdir).pickup_queued_job()
            if held is not None:
                os.link(qdir / "queue" / jobid, qdir / "deferred" / jobid)
                later = time.time() + 3600
                os.utime(qdir / "deferred" / jobid, (later, later))
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    job = queue.pickup_queued_job()  # Its owner is provably dead: broken at once.
    assert job is not None
    assert job.jobid == jobid
    assert files_under(qdir / "deferred") == []
    job.finish()
