"""A consumer never makes a queue by mistake: a pickup, a wait or a Worker on a
directory that does not exist raises :class:`QueueNotFoundError` at once (a typo in a
path would otherwise make an empty queue there, and a worker would wait on it for ever
while the jobs pile up in the real one). Enqueueing still makes the queue, as the Perl
module does, and ``create=True`` or :meth:`DirQueue.create` makes it for a consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, DirQueueError, QueueNotFoundError, Worker, run_workers

pytestmark = pytest.mark.timeout(60)


def test_a_pickup_on_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "spool" / "qeue"
    q = DirQueue(typo)
    with pytest.raises(QueueNotFoundError) as info:
        q.pickup_queued_job()
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, DirQueueError)
    assert info.value.filename == str(typo)
    assert "create=True" in str(info.value)
    with pytest.raises(QueueNotFoundError):
        q.wait_for_queued_job(timeout=0.1, poll_interval=0.05)
    assert not (tmp_path / "spool").exists()


def test_a_worker_process_on_a_typo_fails_at_once(tmp_path: Path) -> None:
    # A real worker process, as a user starts one: it must exit with the error, not
    # wait for ever on a queue it made.
    code = (
        "import sys\n"
        "from dirqueue import DirQueue, Worker\n"
        "Worker(DirQueue(sys.argv[1]), print, poll_interval=0.05).run()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "qeue")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1
    assert "QueueNotFoundError: no queue at" in err
    assert not (tmp_path / "qeue").exists()


def test_run_workers_on_a_typo_raises_before_forking(tmp_path: Path) -> None:
    with pytest.raises(QueueNotFoundError):
        run_workers(DirQueue(tmp_path / "qeue"), print, 2, until_empty=True)
    assert not (tmp_path / "qeue").exists()


def test_asked_to_create_a_consumer_makes_the_queue(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "new" / "q", create=True)
    assert (tmp_path / "new" / "q" / "queue").is_dir()
    assert q.pickup_queued_job() is None
    other = DirQueue(tmp_path / "other")
    other.create()
    assert Worker(other, print, until_empty=True).run().stop_reason == "queue empty"


def test_an_enqueue_still_makes_the_queue_then_a_consumer_finds_it(tmp_path: Path) -> None:
    qdir = tmp_path / "made" / "by" / "enqueue"
    jobid = DirQueue(qdir).enqueue_string("x")
    job = DirQueue(qdir).pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()


def test_an_existing_empty_directory_is_a_queue_to_a_consumer(tmp_path: Path) -> None:
    # The directory an operator made (with its owner and modes) is the queue: its
    # subdirectories are made on first use, as before.
    qdir = tmp_path / "q"
    qdir.mkdir()
    assert DirQueue(qdir).pickup_queued_job() is None
    assert (qdir / "queue").is_dir()
