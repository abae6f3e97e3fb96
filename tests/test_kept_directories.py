"""Directories kept open between jobs (dirqueue._dirfds): a queue removed and made again,
a tmp name left by a killed enqueue, many threads and many data directories."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import dirqueue._enqueue
from _helpers import files_under
from dirqueue import DirQueue, _dirfds
from dirqueue._format import make_job_id

pytestmark = pytest.mark.timeout(60)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))



def test_a_queue_removed_and_made_again_is_used_afresh(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    q = DirQueue(qdir, durable=False)
    q.enqueue_string("before")
    shutil.rmtree(qdir)  # The directories this thread had open are gone.
    q = DirQueue(qdir, durable=False)
    jobid = q.enqueue_string("after")
    # The job's files are in the new directory, not in the removed one.
    assert os.path.exists(q.layout.data_path(jobid))
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b"after"
    job.finish()
    assert files_under(qdir) == []


def test_a_tmp_name_left_by_a_killed_enqueue_gives_the_job_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = DirQueue(tmp_path / "q", durable=False)
    q.enqueue_string("warm up")
    q.pickup_queued_job().finish()  # type: ignore[union-attr]
    frozen_ns = time.time_ns()
    real = make_job_id

    def frozen(*args: object, **kwargs: object) -> tuple[str, int, int]:
        if kwargs.get("collision_suffix") is None:
            kwargs["now_ns"] = frozen_ns
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dirqueue._enqueue, "make_job_id", frozen)
    taken = frozen(50, socket.gethostname(), os.getpid())[0]
    # A killed enqueue's control file, under the name the next enqueue will make.
    Path(q.layout.tmp_path(q.layout.tmp_control_name(taken))).write_text("half")
    jobid = q.enqueue_string("payload")
    assert jobid != taken
    assert f".{os.getpid()}." in jobid  # the .PID.RAND suffix
    # The data moved with the job: none is left under the name it gave up.
    assert not os.path.exists(q.layout.data_path(taken))
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b"payload"
    job.finish()
    assert files_under(tmp_path / "q") == [f"tmp/{taken}.ctrl"]


def test_one_thread_keeps_a_bounded_number_of_directories(tmp_path: Path) -> None:
    _dirfds.clear()
    before = _open_fds()
    queues = [DirQueue(tmp_path / f"q{i}", durable=False) for i in range(_dirfds.PER_THREAD + 8)]
    for q in queues:
        q.enqueue_string("x")
    for q in queues:
        job = q.pickup_queued_job()
        assert job is not None
        job.finish()
    del queues, q, job
    gc.collect()  # Each queue's inotify descriptor goes with it.
    # Two directories a queue (data/C1/C2 and queue/), but never more than the bound.
    assert _open_fds() - before <= _dirfds.PER_THREAD
    _dirfds.clear()
    assert _open_fds() <= before


def test_threads_use_their_own_directories_and_close_them_when_they_end(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q", durable=False)
    q.enqueue_string("warm up")
    before = _open_fds()
    jobs_per_thread, threads = 200, 4
    errors: list[BaseException] = []

    def produce_and_consume() -> None:
        try:
            mine = DirQueue(tmp_path / "q", durable=False)
            for n in range(jobs_per_thread):
                mine.enqueue_string(f"{n}")
        except BaseException as err:
            errors.append(err)

    workers = [threading.Thread(target=produce_and_consume) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not errors
    seen = 0
    while (job := q.pickup_queued_job()) is not None:
        job.finish()
        seen += 1
    assert seen == jobs_per_thread * threads + 1
    del workers
    gc.collect()
    # The threads' own descriptors closed with them; this thread keeps its two or three.
    assert _open_fds() - before <= 3


def test_many_threads_together_keep_a_bounded_number_of_directories(tmp_path: Path) -> None:
    threads, queues_each = 40, 8
    queues = [DirQueue(tmp_path / f"q{i}", durable=False) for i in range(queues_each)]
    for q in queues:
        q.enqueue_string("make the directories")
    gc.collect()
    before = _open_fds()
    done = threading.Barrier(threads + 1, timeout=30)
    errors: list[BaseException] = []

    def enqueue_everywhere() -> None:
        try:
            for q in queues:  # Two directories a queue: 16 a thread if nothing bounds it.
                q.enqueue_string("x")
        except BaseException as err:
            errors.append(err)
        done.wait()  # Stay alive (with the descriptors kept) until counted.
        done.wait()

    workers = [threading.Thread(target=enqueue_everywhere) for _ in range(threads)]
    for t in workers:
        t.start()
    done.wait()
    kept = _open_fds() - before
    done.wait()
    for t in workers:
        t.join(30)
    assert not errors
    assert kept <= _dirfds.PER_PROCESS + threads * _dirfds.FEW
    assert kept < threads * queues_each * 2
    assert sum(len(list(q.jobs())) for q in queues) == queues_each * (threads + 1)


@pytest.mark.parametrize("fanout", [False, True])
def test_a_directory_in_use_is_not_closed_when_another_pushes_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fanout: bool
) -> None:
    # A control file is linked from tmp/ into queue/ with both descriptors at once;
    # opening queue/ with a full cache pushes tmp/'s out, which must stay open until
    # the link is done (it was closed under it: EBADF, seen in the kill test).
    monkeypatch.setattr(_dirfds, "PER_THREAD", 1)
    _dirfds.clear()
    q = DirQueue(tmp_path / "q", queue_fanout=fanout)
    jobs = [q.enqueue_string(f"job {i}") for i in range(20)]
    for _ in jobs:
        job = q.pickup_queued_job()
        assert job is not None
        job.update_control(job.control)
        job.finish()
    assert files_under(tmp_path / "q") == []
    _dirfds.clear()


def test_a_relative_queue_path_after_chdir_is_the_queue_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue objects made with the same relative path in two directories each write to
    their own queue: a directory kept for "q" in the first is not used for "q" in the
    second (it was, and the second queue's data went into the first's data/)."""
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    DirQueue("q").enqueue_string("first")
    monkeypatch.chdir(second)
    jobid = DirQueue("q").enqueue_string("second")
    job = DirQueue("q").pickup_queued_job()
    assert job is not None
    assert (job.jobid, job.get_data()) == (jobid, b"second")
    job.finish()
    monkeypatch.chdir(first)
    left = DirQueue("q").pickup_queued_job()
    assert left is not None
    assert left.get_data() == b"first"
    left.finish()
