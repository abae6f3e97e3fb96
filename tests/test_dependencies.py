"""Dependants: a job with ``depends_on`` waits in waiting/ (out of every worker's sight,
the Perl module's included) until its parents have ended; whoever ends a parent
promotes it, a pickup promotes what a crash left, and a failed parent sends it to
failed/ unless it allows failure."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from _perl import PERL_DRAIN, needs_perl, run_perl
from dirqueue import DirQueue, FailedStore, Job, Worker
from dirqueue import failed as failed_module
from dirqueue._deps import scan_waiting
from dirqueue._place import place_of
from dirqueue.cli import main as cli_main
from durability_checks import assert_no_orphans

pytestmark = pytest.mark.timeout(120)

_ctx = multiprocessing.get_context("fork")


def _drain(q: DirQueue, handler: object, **kwargs: object) -> None:
    Worker(q, handler, until_empty=True, poll_interval=0.05, **kwargs).run()  # type: ignore[arg-type]


def test_a_diamond_runs_in_dependency_order(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])
    c = q.enqueue_string("C", depends_on=[a], priority=10)
    d = q.enqueue_string("D", depends_on=[b, c], priority=0)
    assert set(scan_waiting(q.config)) == {b, c, d}
    assert place_of(q.config, d) == "waiting"
    # Not taken early, whatever its priority.
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == a
    assert q.pickup_queued_job() is None
    job.return_to_queue()
    order: list[str] = []
    _drain(q, lambda job: order.append(job.get_data().decode()))
    assert order == ["A", "C", "B", "D"]  # C before B: its priority, once both wait.
    assert scan_waiting(q.config) == []
    assert_no_orphans(q)


def test_parents_already_done_promote_at_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()
    b = q.enqueue_string("B", depends_on=[a])
    assert place_of(q.config, b) == "queued"


def test_a_failed_parent_fails_its_dependants_unless_allowed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])
    q.enqueue_string("C", depends_on=[a], allow_failure=True)
    e = q.enqueue_string("E", depends_on=[b])
    ran: list[str] = []

    def handler(job: Job) -> None:
        ran.append(job.get_data().decode())
        if job.jobid == a:
            raise RuntimeError("A broke")

    _drain(q, handler, max_attempts=1)
    assert ran == ["A", "C"]
    store = FailedStore(q)
    failed_b = store.get(b)
    assert f"parent job {a} failed" in failed_b.error
    assert failed_b.get_data() == b"B"
    assert f"parent job {b} failed" in store.get(e).error  # Down the chain.
    assert scan_waiting(q.config) == []
    assert_no_orphans(q)
    # A failed dependant can be requeued like any failed job: it runs now.
    store.requeue(b)
    _drain(q, lambda job: ran.append(job.get_data().decode()))
    assert ran[-1] == "B"


def test_a_perl_dequeuer_never_takes_a_dependant(tmp_path: Path) -> None:
    needs_perl()
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A", priority=90)
    b = q.enqueue_string("B", depends_on=[a], priority=1)
    # Perl takes and finishes the parent, but never the child (it never reads waiting/),
    # nor does it promote it: the next dirqueue pickup does.
    assert run_perl(PERL_DRAIN, q.dir).split() == [a]
    assert run_perl(PERL_DRAIN, q.dir).split() == []
    assert scan_waiting(q.config) == [b]
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == b
    job.finish()


def test_bad_parents_are_refused(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(ValueError, match="not a job id"):
        q.enqueue_string("x", depends_on=["../queue/x"])
    assert list(q.jobs()) == []


def _fan_in_worker(directory: str, log: str, fail: str, die: str) -> None:
    q = DirQueue(directory, active_file_lifetime=5)

    def handler(job: Job) -> None:
        with open(log, "a") as fh:
            fh.write(f"start {job.jobid} {time.time():.6f}\n")
        if job.jobid == die and not os.path.exists(log + ".died"):
            Path(log + ".died").touch()
            os.kill(os.getpid(), signal.SIGKILL)  # Mid-job: its lock is left.
        if job.jobid == fail:
            raise RuntimeError("parent broke")
        with open(log, "a") as fh:
            fh.write(f"end {job.jobid} {time.time():.6f}\n")

    Worker(q, handler, max_attempts=1, poll_interval=0.05, idle_timeout=3).run()


@pytest.mark.timeout(240)
def test_a_fan_in_of_200_with_a_failing_parent_and_a_killed_worker(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", active_file_lifetime=5)
    parents = q.enqueue_many([f"p{i}" for i in range(200)])
    strict = q.enqueue_string("strict", depends_on=parents, priority=0)
    lenient = q.enqueue_string("lenient", depends_on=parents, allow_failure=True, priority=0)
    after_one = q.enqueue_string("one", depends_on=[parents[5]], priority=0)
    log = str(tmp_path / "log")
    procs = [
        _ctx.Process(target=_fan_in_worker, args=(q.dir, log, parents[17], parents[50]))
        for _ in range(3)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(200)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert sorted(p.exitcode for p in procs) == [-signal.SIGKILL, 0, 0]
    events = [line.split() for line in Path(log).read_text().splitlines()]
    started = {jobid: float(t) for kind, jobid, t in events if kind == "start"}
    ended = {jobid: float(t) for kind, jobid, t in events if kind == "end"}
    # Every parent ran (the killed one again, by another worker), the strict child not.
    assert set(parents) <= set(started)
    assert strict not in started
    assert f"parent job {parents[17]} failed" in FailedStore(q).get(strict).error
    # The lenient child ran after every parent that ended well.
    assert started[lenient] >= max(ended[p] for p in parents if p in ended)
    assert started[after_one] >= ended[parents[5]]
    assert set(ended) - set(parents) == {lenient, after_one}
    assert list(q.jobs()) == []
    assert scan_waiting(q.config) == []


def test_repair_keeps_a_waiting_dependants_data(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])
    report = q.repair(min_age=0)
    assert report.clean, report.findings
    assert os.path.exists(q.layout.data_path(b))
    _drain(q, lambda job: None)
    assert list(q.jobs()) == []


def test_dq_list_show_and_stats_name_dependants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])

    def dq(*args: str) -> str:
        capsys.readouterr()
        assert cli_main([*args, "--dir", q.dir]) == 0
        return capsys.readouterr().out

    listing = dq("list")
    assert f"{b}  waiting" in listing
    assert f"note: {b}: after 1 of 1 parents: {a}" in listing
    assert "1 queued, 0 active, 0 stale, 1 waiting" in listing
    assert re.search(rf"^before +{b}$", dq("show", a), re.MULTILINE)
    assert re.search(rf"^after +{a}$", dq("show", b), re.MULTILINE)
    assert re.search(r"^waiting +1$", dq("stats"), re.MULTILINE)


def test_waiting_dependants_can_be_cancelled_and_emptied(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])
    c = q.enqueue_string("C", depends_on=[a])
    q.cancel(b)
    assert scan_waiting(q.config) == [c]
    assert sorted(q.empty()) == sorted([a, c])
    assert list(q.jobs()) == []
    assert_no_orphans(q)


def _fail_and_die_moving_the_dependant(directory: str) -> None:
    real_claim = failed_module._deps.claim_waiting

    def claim_then_die(*args: Any) -> str | None:
        real_claim(*args)
        os.kill(os.getpid(), signal.SIGKILL)  # Claimed for failed/, not there yet.
        return None

    failed_module._deps.claim_waiting = claim_then_die  # type: ignore[assignment]

    def boom(job: Job) -> None:
        raise RuntimeError("A broke")

    Worker(DirQueue(directory), boom, max_attempts=1).run_once()


def test_a_dependant_whose_mover_died_is_put_back_by_repair_and_failed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("A")
    b = q.enqueue_string("B", depends_on=[a])
    child = _ctx.Process(target=_fail_and_die_moving_the_dependant, args=(q.dir,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert scan_waiting(q.config) == []  # Neither waiting nor failed: in tmp/.
    report = q.repair(min_age=0)
    assert "put back in waiting/" in [f.action for f in report.findings]
    assert scan_waiting(q.config) == [b]
    _drain(q, lambda job: None)
    assert f"parent job {a} failed" in FailedStore(q).get(b).error
    assert_no_orphans(q)


def test_a_dependant_that_cannot_be_failed_is_put_back_in_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move to failed/ that breaks half-way renames the claimed dependant back from
    tmp/ into waiting/ (through the directories' descriptors): it is failed by the
    next settle, and tmp/ keeps nothing of it; a move that works leaves nothing in tmp/."""
    q = DirQueue(tmp_path / "q")
    parent = q.enqueue_string("P")
    child = q.enqueue_string("C", depends_on=[parent])
    store = FailedStore(q)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FailedStore, "_fill_entry", broken)
    with pytest.raises(OSError, match="No space left"):
        store.fail_waiting(child, "parent failed")
    assert scan_waiting(q.config) == [child]
    assert os.listdir(q.layout.tmp_dir) == []
    monkeypatch.undo()
    assert store.fail_waiting(child, "parent failed")
    assert scan_waiting(q.config) == []
    assert os.listdir(q.layout.tmp_dir) == []
    assert store.get(child).error == "parent failed"


def test_a_parent_missed_by_a_cached_lookup_is_not_taken_for_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on the three-host NFS bed: two workers promoted the same dependant (B) at
    once; the loser's rename looked up queue/B before the winner's rename was there,
    and its NFS client kept that miss (3 s there). Settling B's own dependant (D), it
    then found B in no directory, took it for ended, and D ran before B had even
    started. A parent seen gone is now confirmed by listing the directories (which
    no lookup cache answers) before its dependants move.

    The client's kept miss is played by a ``place_of`` that misses B."""
    from dirqueue import _deps  # noqa: PLC0415  # the module whose look is faked

    q = DirQueue(tmp_path / "q")
    b = q.enqueue_string("B")
    real_place_of = _deps.place_of
    monkeypatch.setattr(
        _deps, "place_of", lambda config, job: None if job == b else real_place_of(config, job)
    )
    d = q.enqueue_string("D", depends_on=[b])
    assert scan_waiting(q.config) == [d]  # Still waiting: B is in queue/.
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == b  # D was not promoted beside it.
    monkeypatch.undo()
    job.finish()
    Worker(q, lambda job: None, until_empty=True).run()
    assert scan_waiting(q.config) == []
    assert list(q.jobs()) == []
