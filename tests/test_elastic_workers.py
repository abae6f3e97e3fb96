"""Elastic workers (issue 23): ``dq server --workers LEAST:MOST`` grows while every
worker is busy and jobs wait, lets idle workers go, and SIGTTIN/SIGTTOU add or remove
one; a worker let go ends its job first, and none outlives the supervisor.

The first tests drive :class:`dirqueue._elastic.Scaler` with made-up times; the others
run ``dq server`` with real workers and commands, each with a hard timeout and its
processes killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import descendants_of, handles_signal, process_alive, wait_for
from dirqueue import DirQueue
from dirqueue._elastic import JobTimes, Live, Scaler, Scaling, parse_workers
from dirqueue._servers import read_servers
from dirqueue.errors import InvalidNumberError

pytestmark = pytest.mark.timeout(90)

DQ = str(Path(sys.executable).parent / "dq")
#: A job that marks its start and end (one line per run: a job run twice shows two).
SLOW_JOB = (
    'echo $PPID >> "$MARKS/$DQ_JOBID.started"; sleep "$SECONDS_EACH";'
    ' echo $PPID >> "$MARKS/$DQ_JOBID.done"'
)


# -- the rules, with made-up times ------------------------------------------------------


class Fleet:
    """Job times per worker, as the workers would write them in shared memory."""

    def __init__(self) -> None:
        self.times: dict[int, tuple[float, ...]] = {}
        self.waiting = True
        self.asked = 0

    def job_times(self, index: int) -> JobTimes:
        return JobTimes(*self.times.get(index, ()))

    def jobs_waiting(self) -> bool:
        self.asked += 1
        return self.waiting


def scaler(fleet: Fleet, least: int = 1, most: int = 4) -> Scaler:
    return Scaler(Scaling(least, most, 30.0, 1.0), fleet.job_times, fleet.jobs_waiting)


def test_one_worker_more_per_interval_while_all_are_busy_and_jobs_wait() -> None:
    fleet = Fleet()
    s = scaler(fleet)
    live = [Live(0, 0.0)]
    fleet.times[0] = (5.0, 0.0)  # In a job since t=5.
    assert s.decide(10.0, live, []).start == 1
    live.append(Live(1, 10.0))
    fleet.times[1] = (10.1, 0.0)
    # Not again before the interval has passed, however busy.
    assert s.decide(10.5, live, []).start == 0
    assert s.decide(11.0, live, []).start == 1
    # One idle worker: no growth, and the queue is not even asked.
    live.append(Live(2, 11.0))
    asked = fleet.asked
    assert s.decide(13.0, live, []).start == 0
    assert fleet.asked == asked
    # All busy, nothing waiting: no growth.
    fleet.times[2] = (11.2, 0.0)
    fleet.waiting = False
    assert s.decide(14.0, live, []).start == 0
    assert fleet.asked == asked + 1


def test_a_worker_between_two_jobs_counts_busy_until_a_pickup_finds_nothing() -> None:
    fleet = Fleet()
    s = scaler(fleet)
    worker = Live(0, 0.0)
    fleet.times[0] = (9.0, 9.5)  # Ended a job, taking its next (slowly: NFS).
    assert s.busy(worker, 20.0)
    fleet.times[0] = (9.0, 9.5, 9.6)  # Its next pickup found nothing.
    assert not s.busy(worker, 20.0)
    assert s.idle_for(worker, 20.0) == 10.5
    assert not s.busy(Live(1, 10.0), 10.0)  # Started, no job yet.
    # A row left by the slot's previous worker (let go) says nothing of this one.
    fleet.times[2] = (5.0, 0.0)
    assert not s.busy(Live(2, 8.0), 10.0)


def test_idle_workers_go_down_to_the_floor_the_newest_first() -> None:
    fleet = Fleet()
    s = scaler(fleet, least=2)
    live = [Live(i, 0.0) for i in range(4)]
    for i in range(4):
        fleet.times[i] = (1.0, 2.0, 2.1)  # Ended a job at 2, then found nothing.
    assert s.decide(31.0, live, []).let_go == ()
    assert s.decide(32.5, live, []).let_go == (3, 2)
    fleet.times[3] = (32.0, 2.0, 2.1)  # Busy: never let go for being idle.
    assert s.decide(33.0, live, []).let_go == (2, 1)
    fleet.times[2] = (1.0, 3.0)  # Between two jobs: not idle, though long ago.
    assert s.decide(34.0, live, []).let_go == (1, 0)


def test_ttin_and_ttou_move_the_count_and_the_floor_within_one_and_the_most() -> None:
    fleet = Fleet()
    fleet.waiting = False
    s = scaler(fleet, least=1, most=2)
    one = [Live(0, 0.0)]
    decision = s.decide(1.0, one, [1])
    assert decision.start == 1
    assert s.floor == 2  # Kept when idle: a worker added by hand stays.
    two = [Live(0, 0.0), Live(1, 1.0)]
    decision = s.decide(2.0, two, [1])
    assert decision.start == 0
    assert decision.notes == ("SIGTTIN ignored: already at the most, 2",)
    assert s.decide(100.0, two, []).let_go == ()
    fleet.times[0] = (99.0, 0.0)  # Busy; the other idle: that one goes.
    decision = s.decide(101.0, two, [-1])
    assert decision.let_go == (1,)
    assert s.floor == 1
    decision = s.decide(102.0, one, [-1])
    assert decision.let_go == ()
    assert decision.notes == ("SIGTTOU ignored: already at the least, 1",)


def test_ttou_takes_back_a_worker_not_started_yet() -> None:
    fleet = Fleet()
    s = scaler(fleet, least=1, most=3)
    live = [Live(0, 0.0), Live(1, 0.0)]
    decision = s.decide(1.0, live, [-1], owed=1)
    assert (decision.start, decision.let_go) == (-1, ())


@pytest.mark.parametrize(
    ("text", "pair"), [("4", (4, 4)), ("1:8", (1, 8)), (" 2:2 ", (2, 2))]
)
def test_workers_option_values(text: str, pair: tuple[int, int]) -> None:
    assert parse_workers(text) == pair


@pytest.mark.parametrize("text", ["0", "8:1", "1:", "a:b", "0:4", "1:100000", "1.5"])
def test_bad_workers_option_values_say_what_is_allowed(text: str) -> None:
    with pytest.raises(InvalidNumberError, match="LEAST:MOST"):
        parse_workers(text)


# -- real servers ----------------------------------------------------------------------


@contextlib.contextmanager
def server(
    tmp_path: Path, workers: str, *options: str, seconds_each: float = 0.3
) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    """``dq server --workers WORKERS`` running SLOW_JOB; yields it, the marks
    directory and its stderr's file. Every process it started is killed at the end."""
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    err_path = tmp_path / "server.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [DQ, "server", "--dir", str(tmp_path / "q"), "--workers", workers,
             "--poll-interval", "0.2", *options, "--", "sh", "-c", SLOW_JOB, "sh"],
            env={**os.environ, "MARKS": str(marks), "SECONDS_EACH": str(seconds_each)},
            stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True,
        )
    everyone: set[int] = set()
    try:
        assert wait_for(lambda: handles_signal(proc.pid, signal.SIGTTIN), timeout=20)
        yield proc, marks, err_path
    finally:
        everyone.update(descendants_of(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def workers_of(proc: subprocess.Popen[str]) -> list[int]:
    """The live worker processes of a server (its children; commands are below them)."""
    return [p for p in descendants_of(proc.pid, children_only=True) if process_alive(p)]


def runs(marks: Path, suffix: str) -> dict[str, int]:
    """How many times each job started (or ended)."""
    return {
        p.name.removesuffix(suffix): len(p.read_text().split())
        for p in marks.glob(f"*{suffix}")
    }


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_burst_grows_the_pool_to_its_most_and_the_quiet_shrinks_it_back(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(60)]
    with server(tmp_path, "1:6", "--grow-interval", "0.2", "--shrink-after", "1") as (
        proc, marks, err_path,
    ):
        began = time.monotonic()
        peak = 0

        def at_six() -> bool:
            nonlocal peak
            peak = max(peak, len(workers_of(proc)))
            return peak == 6

        def said() -> list[int]:  # What dq stats reads: servers/.
            return [entry.workers for entry in read_servers(q.config)]

        assert wait_for(at_six, timeout=10), f"at most {peak} workers"
        grew_in = time.monotonic() - began
        assert wait_for(lambda: said() == [6], timeout=5)
        assert wait_for(lambda: len(runs(marks, ".done")) == 60, timeout=30)
        assert wait_for(lambda: len(workers_of(proc)) == 1, timeout=15)
        assert wait_for(lambda: said() == [1], timeout=5)
        assert stop(proc) == 0
        text = err_path.read_text()
    assert said() == []
    # Each grown once, from 1, every 0.2 s at most: 5 steps, within seconds.
    assert grew_in < 8
    assert text.count("+1: jobs wait") == 5
    assert text.count("-1: a worker idle") == 5
    assert "workers 1 to 6: at most 6 at once" in text
    assert runs(marks, ".started") == dict.fromkeys(ids, 1)
    assert runs(marks, ".done") == dict.fromkeys(ids, 1)
    assert list(q.jobs()) == []
    assert os.listdir(q.layout.active_dir) == []


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("workers", ["1:3", "3"])
def test_ttin_and_ttou_add_and_remove_one_worker_within_one_and_the_most(
    tmp_path: Path, workers: str
) -> None:
    DirQueue(tmp_path / "q").create()
    start = int(workers.partition(":")[0])
    with server(tmp_path, workers, "--shrink-after", "1h") as (proc, _marks, err_path):
        assert wait_for(lambda: len(workers_of(proc)) == start, timeout=15)
        count = start

        def send(signum: signal.Signals, expect: int, line: str) -> None:
            lines = err_path.read_text().count(line)
            proc.send_signal(signum)
            # One at a time: two of a signal sent together arrive as one.
            assert wait_for(lambda: err_path.read_text().count(line) == lines + 1, timeout=15)
            assert wait_for(lambda: len(workers_of(proc)) == expect, timeout=15), (
                f"{len(workers_of(proc))} workers, not {expect}"
            )

        while count < 3:
            count += 1
            send(signal.SIGTTIN, count, "+1 (SIGTTIN)")
        send(signal.SIGTTIN, 3, "SIGTTIN ignored: already at the most, 3")
        while count > 1:
            count -= 1
            send(signal.SIGTTOU, count, "-1 (SIGTTOU)")
        send(signal.SIGTTOU, 1, "SIGTTOU ignored: already at the least, 1")
        send(signal.SIGTTIN, 2, "+1 (SIGTTIN)")
        time.sleep(0.5)  # Idle, and kept: a worker added by hand raises the floor.
        assert len(workers_of(proc)) == 2
        assert stop(proc) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_worker_let_go_ends_its_job_even_when_a_stop_follows(tmp_path: Path) -> None:
    # SIGTTOU with every worker busy lets one go in the middle of its job: it must end
    # it (not return it, not leave it locked); a Ctrl-C that follows is the first stop
    # for the others, and must not be that worker's second (which interrupts a job).
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(2)]
    with server(tmp_path, "2", seconds_each=2.0) as (proc, marks, err_path):
        assert wait_for(lambda: len(runs(marks, ".started")) == 2, timeout=15)
        workers = workers_of(proc)
        proc.send_signal(signal.SIGTTOU)
        assert wait_for(lambda: "-1 (SIGTTOU)" in err_path.read_text(), timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        text = err_path.read_text()
    assert runs(marks, ".started") == dict.fromkeys(ids, 1)
    assert runs(marks, ".done") == dict.fromkeys(ids, 1)
    assert sorted(int(p.read_text()) for p in marks.glob("*.done")) == sorted(workers)
    assert "let go" in text
    assert list(q.jobs()) == []
    assert os.listdir(q.layout.active_dir) == []


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_grown_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(8)]
    with server(tmp_path, "1:4", "--grow-interval", "0.1", seconds_each=2.0) as (
        proc, marks, _err,
    ):
        assert wait_for(lambda: len(workers_of(proc)) == 4, timeout=15)
        workers = workers_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Each ends the job in hand (2 s) and takes no other.
        assert wait_for(lambda: not any(process_alive(w) for w in workers), timeout=15), (
            "a grown worker outlived its supervisor"
        )
    taken = runs(marks, ".started")
    assert set(taken.values()) == {1}
    assert runs(marks, ".done") == taken
    assert sorted(j.jobid for j in q.jobs()) == sorted(set(ids) - set(taken))
