"""Job states and queue counts, as dq list and dq stats report them."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue, QueueNotFoundError, list_jobs, queue_stats
from dirqueue.stats import require_queue, waiting_job_ids


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def plant_lock(q: DirQueue, jobid: str, pid: int, age: float = 0.0) -> None:
    path = q.layout.active_path(jobid)
    Path(path).write_text(f"{socket.gethostname()}\n{pid}\n")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def test_states_queued_active_and_stale(tmp_path: Path) -> None:
    # "stale" means exactly what the next pickup breaks (tests/test_lock_views_agree.py
    # checks every kind of lock); the others say in their note why not yet.
    q = DirQueue(tmp_path / "q", active_file_lifetime=60)
    queued, live, dead, dead_old, slow = (q.enqueue_string(str(i)) for i in range(5))
    plant_lock(q, live, os.getpid())
    plant_lock(q, dead, dead_pid())  # Dead, but the lifetime has not passed.
    plant_lock(q, dead_old, dead_pid(), age=120)
    plant_lock(q, slow, os.getpid(), age=120)  # Alive, not refreshed: the Perl rule keeps it.
    infos = {info.job.jobid: info for info in list_jobs(q)}
    states = {jobid: info.state for jobid, info in infos.items()}
    assert states == {
        queued: "queued", live: "active", dead: "active", dead_old: "stale", slow: "active"
    }
    assert "dead" in infos[dead].note
    assert "next worker" in infos[dead_old].note
    stats = queue_stats(q)
    assert (stats.queued, stats.active, stats.stale, stats.failed) == (1, 3, 1, 0)
    assert stats.total == 5
    assert waiting_job_ids(q) == [queued]


def test_oldest_waiting_age_counts_only_waiting_jobs(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    assert queue_stats(q).oldest_waiting_age is None
    first = q.enqueue_string("a")
    q.enqueue_string("b")
    plant_lock(q, first, os.getpid())
    now = time.time() + 100
    age = queue_stats(q, now=now).oldest_waiting_age
    assert age is not None
    assert 99 <= age <= 102


def test_a_missing_queue_is_an_error_not_an_empty_queue(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "missing")
    with pytest.raises(QueueNotFoundError, match="no queue at") as info:
        require_queue(q)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.filename == str(tmp_path / "missing")
