"""A job is free when its worker's processes are gone, and only then: a zombie owner
is dead, a killed worker's command dies with it (and keeps the job meanwhile), and a
``dq`` that is PID 1 reaps what its commands leave."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _job_holder import Holder, _state
from dirqueue import DirQueue


def _wait_state(pid: int, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _state(pid) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never reached state {wanted}")
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_a_zombie_owners_job_is_recovered_at_once(qdir: Path) -> None:
    queue = DirQueue(qdir, active_file_lifetime=600)
    jobid = queue.enqueue_string("held by a worker that exits unreaped")
    holder = Holder(qdir, 600, heartbeat=True)
    try:
        assert holder.wait_ready() == jobid
        holder.send("exit")
        # We are its parent and do not reap it: it stays a zombie, whose pid kill(0)
        # still finds.
        _wait_state(holder.pid, "Z")
        job = queue.pickup_queued_job()
        assert job is not None, "a zombie's job waited for its parent to reap it"
        assert job.jobid == jobid
        assert _state(holder.pid) == "Z"  # Judged dead as a zombie, not once reaped.
        job.finish()
    finally:
        holder.kill()
