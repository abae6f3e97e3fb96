"""Power loss, enumerated: the crash states of single operations, checked (crashcheck).

Each test records one operation's file-system calls, generates the states a power loss
could leave (both persistence models of ``crashcheck._states``, a few states per crash
point) and checks each with repair, fsck and a drain. The full run is ``make
crashcheck``; these keep the fixes it led to, and show that the checker bites.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from crashcheck._check import Tally, Violation, check_trace
from crashcheck._scenarios import SCENARIOS, trace
from dirqueue import DirQueue, FailedStore, _deferred, _enqueue
from dirqueue.limits import _slots

pytestmark = pytest.mark.timeout(120)


def _violations(name: str, tmp_path: Path, limit: int = 6) -> tuple[Tally, list[Violation]]:
    scenario = next(s for s in SCENARIOS if s.name == name)
    recorded = trace(scenario, str(tmp_path / "q"))
    tally = Tally()
    check_trace(recorded, tally, limit, random.Random(25))
    return tally, tally.violations + tally.unpromised


@pytest.mark.parametrize(
    "name",
    [
        # Before the fixes: a finished job came back (finish did not fsync queue/), or
        # in the weak model its data went before its control file; a retry_later lost
        # the job (queue/'s unlink on disk before deferred/'s link); a requeue lost the
        # job (its claim in failed/ never put back) or left it in failed/ too.
        "finish",
        "finish of a unique job",
        "parent finish, dependant promoted",
        "task run, answer in results/",
        "retry into deferred/",
        "requeue from failed/",
        # Before the fix: failed/, made by the move, was not fsynced into the queue
        # directory, and in the weak model the job's unlink from queue/ outlived it.
        "move to failed/",
        # Before the fix: dq limit set made limits/ and fsynced it, not the queue
        # directory that names it: in the weak model a set that had returned was lost.
        "dq limit set (limits/), new",
        # The groups' layer and queue/dq/: slots taken and freed, a start token, a
        # replaced limits file, dirqueue-only jobs deferred and promoted.
        "pickup, limited group (slots/)",
        "finish, limited group (slot freed)",
        "pickup, rate-limited (starts/)",
        "dq limit set (limits/), replaced",
        "enqueue, dirqueue_only (queue/dq/)",
        "retry of a dirqueue_only job",
        "promotion, dirqueue_only job",
    ],
)
def test_no_crash_state_breaks_a_promise(name: str, tmp_path: Path) -> None:
    tally, found = _violations(name, tmp_path)
    assert tally.checked >= 5
    assert not found, "\n".join(v.problems[0] for v in found)


def test_a_durable_enqueue_survives_every_crash_state(tmp_path: Path) -> None:
    tally, found = _violations("enqueue", tmp_path)
    assert tally.checked > 5
    assert not found


def test_checker_catches_a_job_linked_before_its_data_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deliberately broken ordering: the job's files are closed, not fsynced, before
    # its control file is linked into queue/ (the traced child inherits the patch).
    real = _enqueue._sync_files

    def close_only(staged: list[_enqueue._Staged], *, close_only: bool = False) -> None:
        real(staged, close_only=True)

    monkeypatch.setattr(_enqueue, "_sync_files", close_only)
    _, found = _violations("enqueue", tmp_path)
    problems = [p for v in found for p in v.problems]
    assert any("visible without its whole data" in p for p in problems), problems


def test_repair_puts_back_a_failed_job_whose_requeue_died_after_claiming_it(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q", create=True)
    jobid = q.enqueue_string(b"to fail")
    job = q.pickup_queued_job()
    assert job is not None
    store = FailedStore(q)
    store.add(job, "it broke", attempts=1)
    # A requeue's first step (failed/NAME renamed to its claim), then its process died.
    claimed = store._claim(jobid, "requeue")
    assert os.path.isdir(claimed)
    assert [f.jobid for f in store.jobs()] == []
    report = q.repair(min_age=0)
    assert any("put back" in f.action for f in report.findings), str(report)
    assert [f.jobid for f in store.jobs()] == [jobid]
    assert store.requeue(jobid) == jobid
    assert q.fsck(min_age=0).ok


def test_repair_removes_the_claim_of_a_requeue_that_reached_the_queue(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", create=True)
    jobid = q.enqueue_string(b"to fail")
    job = q.pickup_queued_job()
    assert job is not None
    store = FailedStore(q)
    store.add(job, "it broke", attempts=1)
    claimed = store._claim(jobid, "requeue")
    # The requeue linked the job back into queue/, then died before removing its claim.
    os.link(os.path.join(claimed, "control"), q.layout.queue_path(jobid))
    os.link(os.path.join(claimed, "data"), q.layout.data_path(jobid))
    q.repair(min_age=0)
    assert not os.path.exists(claimed)
    assert [f.jobid for f in store.jobs()] == []
    assert jobid in [j.jobid for j in q.jobs()]


def test_checker_catches_a_dirqueue_only_job_promoted_where_perl_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deliberately broken: promotion forgets that a deferred job is for dirqueue only,
    # and puts it back into the plain queue/ (the traced child inherits the patch).
    monkeypatch.setattr(_deferred, "is_dirqueue_only", lambda control: False)
    _, found = _violations("promotion, dirqueue_only job", tmp_path)
    problems = [p for v in found for p in v.problems]
    assert any("Perl would take it" in p for p in problems), problems


def test_checker_catches_a_slot_that_is_never_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deliberately broken: a dead worker's slot is never judged and broken, so a
    # crash between the slot's link and the pickup's end blocks the group (one slot)
    # for good: its jobs stay queued.
    monkeypatch.setattr(_slots, "free_stale", lambda config, group, limit: 0)
    _, found = _violations("pickup, limited group (slots/)", tmp_path)
    problems = [p for v in found for p in v.problems]
    assert any("still queued after the drain" in p for p in problems), problems


def test_a_cleared_limit_stays_cleared(tmp_path: Path) -> None:
    # Before the fix: dq limit clear did not fsync limits/, so a power loss after it
    # returned could bring the group's limits back (a one-event operation: few states).
    tally, found = _violations("dq limit clear (limits/)", tmp_path)
    assert tally.checked >= 2
    assert not found, "\n".join(v.problems[0] for v in found)
