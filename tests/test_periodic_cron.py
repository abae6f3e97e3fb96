"""Periodic jobs on a cron schedule (``@q.periodic(cron=...)``): the slots are the
cron expression's fire times (UTC), offered through the same slot key as ``every=``'s,
so each runs once whichever server offers it; without croniter installed, a clear
error names the extra to install."""

from __future__ import annotations

import calendar
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dirqueue import Worker
from dirqueue._layout import Layout
from dirqueue._results import read_result
from dirqueue.coord import PeriodicOfferer, slot_key, slot_of
from dirqueue.tasks import (
    CronSchedule,
    CronUnavailableError,
    InvalidCronError,
    TaskHandler,
    TaskQueue,
    periodic_tasks,
)

pytest.importorskip("croniter", reason="the cron extra: pip install 'dirqueue[cron]'")
pytestmark = pytest.mark.timeout(120)

#: 2026-12-08 00:10:00 UTC, a fire time of every cron expression below.
T = float(calendar.timegm((2026, 12, 8, 0, 10, 0)))


def test_a_cron_slot_starts_at_the_last_fire_time_at_or_before_now() -> None:
    every5 = CronSchedule("*/5 * * * *")
    assert every5.slot_of(T) == T
    assert every5.slot_of(T + 0.5) == T
    assert every5.slot_of(T + 299.9) == T
    assert every5.slot_of(T - 0.1) == T - 300
    assert every5.after(T) == T + 300
    assert every5.before(T) == T - 300
    # Uneven slots, and slot_of agrees with the plain period where both apply.
    office = CronSchedule("0 9,17 * * 1-5")  # 09:00 and 17:00 UTC on weekdays.
    tuesday_noon = T + 12 * 3600
    assert office.slot_of(tuesday_noon) == T - 10 * 60 + 9 * 3600
    assert office.after(office.slot_of(tuesday_noon)) == T - 10 * 60 + 17 * 3600
    assert slot_of(T + 61, every5) == slot_of(T + 61, 300.0) == T


def test_bad_schedules_are_refused(tmp_path: Path) -> None:
    q = TaskQueue(tmp_path / "q")
    with pytest.raises(InvalidCronError, match=r"cron='every five minutes'.*'\*/5 \* \* \* \*'"):
        q.periodic(cron="every five minutes")
    with pytest.raises(ValueError, match="not a cron expression"):  # Also a ValueError.
        q.periodic(cron="61 * * * *")
    with pytest.raises(TypeError, match=r"one of every= .* and cron="):
        q.periodic(every="5m", cron="*/5 * * * *")
    with pytest.raises(TypeError, match="one of every="):
        q.periodic()


def test_without_croniter_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "croniter", None)  # As if not installed.
    q = TaskQueue(tmp_path / "q")
    with pytest.raises(CronUnavailableError, match=r"pip install 'dirqueue\[cron\]'") as err:
        q.periodic(cron="*/5 * * * *")
    assert isinstance(err.value, ImportError)
    # every= needs nothing more.
    q.periodic(every="5m", name="cron-test.plain")(lambda: None)


def test_a_cron_slot_is_offered_through_the_slot_key_once(tmp_path: Path) -> None:
    q = TaskQueue(tmp_path / "q")
    q.create()
    made: Any = q.periodic(cron="0 0 1 1 *", name="cron-test.yearly")(lambda slot: slot)
    schedule = dict((task.name, every) for task, every in periodic_tasks())[made.name]
    assert isinstance(schedule, CronSchedule)
    first, second = PeriodicOfferer(q, [(made, schedule)]), PeriodicOfferer(q, [(made, schedule)])
    (jobid,) = first.tick()
    assert second.tick() == []
    slot = schedule.slot_of(time.time())
    assert os.path.exists(q.config.layout.key_path(Layout.key_name(slot_key(made.name, slot))))
    Worker(q, TaskHandler(q), until_empty=True).run()
    record = read_result(q.config, jobid)
    assert record is not None
    assert record.value == slot  # This year's New Year, UTC.
    assert PeriodicOfferer(q, [(made, schedule)]).tick() == []  # Ran; still taken.


MODULE = '''
import os
from dirqueue.tasks import TaskQueue

q = TaskQueue(os.environ["PERIODIC_Q"])

@q.periodic(cron="* * * * * *", name="cron-test.tick")  # Every second (6th field).
def tick(slot: float) -> float:
    return slot
'''


@pytest.mark.timeout(90)
def test_two_servers_on_a_cron_schedule_run_each_slot_once(tmp_path: Path) -> None:
    (tmp_path / "crontick.py").write_text(MODULE)
    q = TaskQueue(tmp_path / "q")
    q.create()
    env = {
        **os.environ,
        "PERIODIC_Q": str(q.dir),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "dirqueue", "server", "--dir", str(q.dir), "--periodic",
            "crontick", "-q", "--poll-interval", "0.1"]  # fmt: skip
    servers = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        results = Path(q.config.layout.results_dir)
        while not results.is_dir() or len(os.listdir(results)) < 4:
            assert time.monotonic() < deadline, [p.poll() for p in servers]
            time.sleep(0.2)
    finally:
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
    Worker(q, TaskHandler(q, ["crontick"]), until_empty=True).run()
    slots = sorted(
        record.value for name in os.listdir(q.config.layout.results_dir)
        if (record := read_result(q.config, name)) is not None
    )  # fmt: skip
    assert len(slots) == len(set(slots)), slots  # No slot twice ...
    assert slots == [float(s) for s in range(int(slots[0]), int(slots[-1]) + 1)]  # ... none missed.
