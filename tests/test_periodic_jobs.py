"""Periodic jobs: each time slot's job is enqueued by exactly one of the processes that
offer it, whatever their clocks say, with workers killed and restarted; missed slots
are skipped (only the current slot is ever offered)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dirqueue import Worker
from dirqueue._keys import KEY_META
from dirqueue._results import read_result
from dirqueue.coord import PeriodicOfferer, slot_of
from dirqueue.tasks import Task, TaskHandler, TaskQueue

pytestmark = pytest.mark.timeout(120)

DQ = str(Path(sys.executable).parent / "dq")
FAKETIME = shutil.which("faketime")

MODULE = '''
import os
from dirqueue.tasks import TaskQueue

q = TaskQueue(os.environ["PERIODIC_Q"])

@q.periodic(every=1, name="tick")
def tick(slot: float) -> list:
    return [slot, os.environ.get("SKEWED", "")]
'''


def _ticker(q: TaskQueue, every: float = 3600) -> Task[Any, Any]:
    calls: list[float] = []

    def tick(slot: float) -> float:
        calls.append(slot)
        return slot

    made: Task[Any, Any] = q.periodic(every=every, name=f"tick{id(calls)}")(tick)
    return made


def test_two_offerers_of_one_slot_enqueue_one_job_and_never_again(tmp_path: Path) -> None:
    q = TaskQueue(tmp_path / "q")
    q.create()
    tick = _ticker(q)
    first = PeriodicOfferer(q, [(tick, 3600)])
    second = PeriodicOfferer(q, [(tick, 3600)])
    enqueued = first.tick()
    assert len(enqueued) == 1
    assert second.tick() == []  # The slot's key: held by the queued job.
    (job,) = q.jobs()
    assert KEY_META not in job.metadata  # Kept past the job's end: nobody releases it.
    Worker(q, TaskHandler(q), until_empty=True).run()
    assert read_result(q.config, enqueued[0]) is not None
    # The job has run and gone; a late offerer (started after it) still finds the slot
    # taken: it runs once.
    assert PeriodicOfferer(q, [(tick, 3600)]).tick() == []
    assert list(q.jobs()) == []


def test_only_the_current_slot_is_offered(tmp_path: Path) -> None:
    # No offerer ran for the slots before this one: they are skipped, not caught up.
    q = TaskQueue(tmp_path / "q")
    q.create()
    tick = _ticker(q, every=1)
    offerer = PeriodicOfferer(q, [(tick, 1)])
    (jobid,) = offerer.tick()
    assert offerer.tick() == []  # This process offers each slot once.
    Worker(q, TaskHandler(q), until_empty=True).run()
    record = read_result(q.config, jobid)
    assert record is not None
    assert abs(record.value - slot_of(time.time(), 1)) <= 1


def _server(env: dict[str, str], cwd: Path, *, skew: str | None = None) -> subprocess.Popen[str]:
    command = [DQ, "server", "--dir", "q", "--periodic", "ticker", "-q", "--poll-interval", "0.2"]
    if skew is not None:
        assert FAKETIME is not None
        command = [FAKETIME, "-f", skew, sys.executable, "-m", "dirqueue", *command[1:]]
    return subprocess.Popen(
        command, cwd=cwd, env={**env, "SKEWED": skew or ""}, text=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.timeout(180)
def test_three_servers_one_skewed_and_one_killed_run_each_slot_once(tmp_path: Path) -> None:
    (tmp_path / "ticker.py").write_text(MODULE)
    q = TaskQueue(tmp_path / "q")
    q.create()
    env = {
        **os.environ,
        "PERIODIC_Q": str(tmp_path / "q"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    skews: list[str | None] = [None, None, "+5m" if FAKETIME else None]
    servers = [_server(env, tmp_path, skew=skew) for skew in skews]
    started = time.time()
    try:
        time.sleep(3)
        # One server killed outright (its job, if it held one, is taken over), and
        # started again a moment later; the others run on meanwhile.
        _stop(servers[0], signal.SIGKILL)
        time.sleep(1.5)
        servers[0] = _server(env, tmp_path)
        time.sleep(4)
        _stop(servers[1])  # Stopped (SIGTERM) and started again at once.
        servers[1] = _server(env, tmp_path)
        time.sleep(3)
    finally:
        for proc in servers:
            _stop(proc)
    ran_for = time.time() - started
    # What is left queued (a slot offered just before the stop) runs now.
    Worker(TaskQueue(tmp_path / "q"), _no_offer_handler(tmp_path), until_empty=True).run()
    slots: list[float] = []
    skews: set[str] = set()
    for name in os.listdir(tmp_path / "q" / "results"):
        record = read_result(q.config, name)
        assert record is not None, name
        assert record.status == "done", name
        slots.append(record.value[0])
        skews.add(record.value[1])
    assert len(slots) == len(set(slots)), sorted(slots)  # No slot ran twice...
    # ... and none was missed while servers ran (at least two ran at every moment).
    assert sorted(slots) == [float(s) for s in range(int(min(slots)), int(max(slots)) + 1)]
    # Enough slots to show it (on a loaded machine a server's start, imports and all,
    # can take seconds, so the count is not held to the run's length).
    assert len(slots) >= 4, (sorted(slots), ran_for)
    if FAKETIME:
        # The server 5 minutes fast took part: it ran jobs of the same slots.
        assert "+5m" in skews


def _no_offer_handler(tmp_path: Path) -> TaskHandler:
    sys.path.insert(0, str(tmp_path))
    os.environ["PERIODIC_Q"] = str(tmp_path / "q")
    sys.modules.pop("ticker", None)
    return TaskHandler(TaskQueue(tmp_path / "q"), ["ticker"])
