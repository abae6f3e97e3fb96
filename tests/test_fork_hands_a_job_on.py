"""A job picked up before a fork can be finished by the child (issue 19, item 2).

The pre-fork pattern: a parent picks up a job, forks a child to do it, and picks up
the next. The lock was recognised by the mtime each process last gave it, and the
parent's pickups and heartbeat move the mtime of the one lock file all its jobs are
linked to: three children of four got ``JobLostError`` ("taken over by" the parent),
and their jobs stayed locked until the parent exited. A child's job must also not be
judged dead while the child lives, the parent gone or not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import files_under, process_alive
from dirqueue import DirQueue
from dirqueue.failed import attempts_of

PREFORK = str(Path(__file__).parent / "_prefork.py")
LIFETIME = 1.0


@pytest.mark.timeout(60)
def test_each_forked_child_finishes_the_job_its_parent_took(qdir: Path) -> None:
    queue = DirQueue(qdir)
    for n in range(4):
        queue.enqueue_string(f"job {n}")
    done = subprocess.run(
        [sys.executable, PREFORK, str(qdir), str(LIFETIME), "finish", "4"],
        capture_output=True, text=True, timeout=30, check=False, start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert [line.split()[1] for line in lines] == ["finished"] * 4, lines
    assert files_under(qdir / "queue") == []
    assert files_under(qdir / "active") == []
    assert files_under(qdir / "data") == []


@pytest.mark.timeout(60)
def test_a_childs_job_is_held_while_the_child_lives_after_its_parent_exits(
    qdir: Path,
) -> None:
    jobid = DirQueue(qdir).enqueue_string("the child's")
    parent = subprocess.Popen(
        [sys.executable, PREFORK, str(qdir), str(LIFETIME), "orphan"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        words = parent.stdout.readline().split()
        assert words[0] == "child"
        child = int(words[1])
        assert parent.wait(timeout=10) == 0
        rescuer = DirQueue(qdir, active_file_lifetime=LIFETIME)
        # The parent named in the lock is dead; the child works on: the job is held.
        deadline = time.monotonic() + 2 * LIFETIME
        while time.monotonic() < deadline:
            assert rescuer.pickup_queued_job() is None
            time.sleep(0.1)
        assert process_alive(child)
        os.kill(child, signal.SIGKILL)
        # Its lock goes quiet with it. (Not proven dead at once: the orphan stays a
        # zombie, which only its new parent can reap, and a zombie counts as alive.)
        died = time.monotonic()
        job = None
        while job is None and time.monotonic() - died < 2 * LIFETIME + 1:
            job = rescuer.pickup_queued_job()
            time.sleep(0.05)
        assert job is not None
        assert job.jobid == jobid
        assert attempts_of(job.control) == 1  # The child's attempt, counted once.
        job.finish()
    finally:
        if child and process_alive(child):
            os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.communicate()


@pytest.mark.timeout(60)
def test_the_parent_and_a_sibling_are_told_a_child_took_the_job_over(qdir: Path) -> None:
    DirQueue(qdir).enqueue_string("one holder")
    done = subprocess.run(
        [sys.executable, PREFORK, str(qdir), str(LIFETIME), "late"],
        capture_output=True, text=True, timeout=30, check=False, start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["parent lost True", "sibling 0", "first 0"]
    assert files_under(qdir / "queue") == []
    assert files_under(qdir / "active") == []
