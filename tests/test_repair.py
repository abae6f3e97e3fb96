"""fsck and repair: what killed processes leave behind is found, reported and fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue
from dirqueue.repair import FindingKind, RepairReport
from durability_checks import assert_no_half_jobs, assert_no_orphans

pytestmark = pytest.mark.timeout(30)


def _age(path: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _kinds(report: RepairReport) -> list[str]:
    return sorted(f.kind for f in report.findings)


def test_clean_queue_reports_nothing(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    q.enqueue_string("b")
    report = q.fsck()
    assert report.clean
    assert report.ok
    assert report.jobs_checked == 2
    assert report.to_dict() == {
        "directory": q.dir, "dry_run": True, "jobs_checked": 2, "ok": True, "findings": []
    }


def test_old_tmp_leftovers_are_removed_young_ones_kept(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    old = q.layout.tmp_path("50.20200101000000000000.ABC.data")
    young = q.layout.tmp_path("50.20200101000000000001.ABC.ctrl")
    Path(old).write_bytes(b"half")
    Path(young).write_bytes(b"in progress")
    _age(old, 7200)
    report = q.fsck()
    assert _kinds(report) == [FindingKind.TMP_LEFTOVER]
    assert not report.ok
    assert os.path.exists(old)  # fsck changes nothing
    report = q.repair()
    assert report.ok
    assert report.findings[0].fixed
    assert not os.path.exists(old)
    assert os.path.exists(young)


def test_tmp_lock_of_dead_pickup_is_removed_at_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    name = f"50.20200101000000000000.ABC.{time.time_ns()}.{q.hostname}.{_dead_pid()}.active"
    Path(q.layout.tmp_path(name)).write_bytes(b"x")
    report = q.repair()
    assert _kinds(report) == [FindingKind.TMP_LEFTOVER]
    assert files_under(q.layout.tmp_dir) == []


def test_data_file_without_control_file_is_removed_once_old(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a")
    os.unlink(q.layout.queue_path(jobid))
    data = q.layout.data_path(jobid)
    assert q.repair().clean  # Too young: an enqueue may be linking its control file.
    _age(data, 7200)
    # ctime is not settable; min_age=0 stands in for "an hour later".
    report = q.repair(min_age=0)
    assert _kinds(report) == [FindingKind.ORPHAN_DATA]
    assert not os.path.exists(data)
    assert_no_orphans(q)


def test_control_file_without_data_is_moved_aside_with_reason(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a", {"who": "me"})
    keep = q.enqueue_string("b")
    os.unlink(q.layout.data_path(jobid))
    report = q.repair()
    assert _kinds(report) == [FindingKind.MISSING_DATA]
    finding = report.findings[0]
    assert finding.fixed
    assert "corrupt" in finding.action
    corrupt = q.layout.corrupt_path(jobid)
    assert "who: me" in Path(corrupt).read_text()
    assert "no data file" in Path(corrupt + ".reason").read_text()
    assert list(assert_no_half_jobs(q)) == [keep]


def test_corrupt_control_file_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a")
    Path(q.layout.queue_path(jobid)).write_bytes(b"QDSB: twelve\n")
    report = q.repair()
    assert _kinds(report) == [FindingKind.CORRUPT_CONTROL]
    assert Path(q.layout.corrupt_path(jobid)).read_bytes() == b"QDSB: twelve\n"
    assert Path(q.layout.corrupt_path(jobid) + ".data").read_bytes() == b"a"
    assert "QDSB" in Path(q.layout.corrupt_path(jobid) + ".reason").read_text()
    # A second corrupt job of the same name does not overwrite the first.
    jobid2 = q.enqueue_string("b")
    Path(q.layout.queue_path(jobid2)).write_bytes(b"junk")
    os.rename(q.layout.queue_path(jobid2), q.layout.queue_path(jobid))
    os.rename(q.layout.data_path(jobid2), q.layout.data_path(jobid))
    q.repair()
    assert Path(q.layout.corrupt_path(jobid + ".1")).read_bytes() == b"junk"
    assert Path(q.layout.corrupt_path(jobid)).read_bytes() == b"QDSB: twelve\n"


def test_corrupt_job_held_by_a_live_worker_is_left_alone(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    job = q.pickup_queued_job()
    assert job is not None
    Path(job.queue_path).write_bytes(b"junk")
    report = q.repair()
    assert [f.action for f in report.findings] == ["left: a worker holds it"]
    assert not report.ok
    job.finish()
    assert q.repair().clean


def test_dead_workers_lock_is_removed_and_job_freed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a")
    Path(q.layout.active_path(jobid)).write_text(f"{q.hostname}\n{_dead_pid()}\n")
    assert q.pickup_queued_job() is None  # Locked, and not yet stale by lifetime.
    report = q.repair()
    assert _kinds(report) == [FindingKind.DEAD_LOCK]
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()
    assert_no_orphans(q)


def test_live_and_remote_locks_are_kept(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    a = q.enqueue_string("a")
    b = q.enqueue_string("b")
    Path(q.layout.active_path(a)).write_text(f"{q.hostname}\n{os.getppid()}\n")
    Path(q.layout.active_path(b)).write_text("some-other-host\n1\n")
    assert q.repair(min_age=0).clean


def test_orphan_lock_is_removed_once_old(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    lock = q.layout.active_path("50.20200101000000000000.ABC")
    Path(lock).write_text(f"{q.hostname}\n{os.getppid()}\n")
    assert q.repair().clean
    report = q.repair(min_age=0)
    assert _kinds(report) == [FindingKind.ORPHAN_LOCK]
    assert not os.path.exists(lock)


def test_strays_are_reported_not_touched(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a")
    stray = os.path.join(q.layout.queue_dir, "README")
    Path(stray).write_text("notes")
    report = q.repair(min_age=0)
    assert _kinds(report) == [FindingKind.STRAY]
    assert report.ok
    assert report.clean
    assert os.path.exists(stray)


def test_report_is_json_serialisable_and_printable(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a")
    os.unlink(q.layout.data_path(jobid))
    report = q.fsck()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["findings"][0]["kind"] == "missing-data"
    assert data["findings"][0]["action"] == "would move to corrupt/"
    assert "missing-data" in str(report)
    assert "1 problems found" in str(report)


def test_remote_heartbeat_lock_gone_quiet_is_removed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", active_file_lifetime=60)
    quiet = q.enqueue_string("quiet")
    beating = q.enqueue_string("beating")
    for jobid in (quiet, beating):
        Path(q.layout.active_path(jobid)).write_text("other-host\n4242\nheartbeat\n")
    _age(q.layout.active_path(quiet), 120)  # Untouched for two lifetimes.
    report = q.repair()
    assert [(f.kind, f.path) for f in report.findings] == [
        (FindingKind.DEAD_LOCK, q.layout.active_path(quiet))
    ]
    assert "heartbeat" in report.findings[0].detail
    assert os.path.exists(q.layout.active_path(beating))


def test_data_left_behind_by_a_half_done_move_aside_is_reunited(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("evidence")
    Path(q.layout.queue_path(jobid)).write_bytes(b"junk")
    # As if a worker moved the control file aside and died before moving the data.
    os.makedirs(q.layout.corrupt_dir)
    os.rename(q.layout.queue_path(jobid), q.layout.corrupt_path(jobid))
    Path(q.layout.corrupt_path(jobid) + ".reason").write_text("reason: junk\n")
    report = q.repair(min_age=0)
    assert [(f.kind, f.fixed) for f in report.findings] == [(FindingKind.ORPHAN_DATA, True)]
    assert "moved to" in report.findings[0].action
    assert Path(q.layout.corrupt_path(jobid) + ".data").read_bytes() == b"evidence"
    assert_no_orphans(q)


def test_fanout_queue_symlinks_and_strays_everywhere(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    q = DirQueue(tmp_path / "q", queue_fanout=True)
    good = q.enqueue_string("good")
    bad = q.enqueue_string("bad")
    (bad_path,) = [p for p in Path(q.layout.queue_dir).rglob(bad)]
    bad_path.write_bytes(b"junk")
    links = [
        os.path.join(q.layout.tmp_dir, "link"),
        os.path.join(q.layout.data_dir, "z"),
        os.path.join(os.path.dirname(q.layout.data_path(good)), "zz"),
        os.path.join(q.layout.queue_dir, "link"),
    ]
    for link in links:
        os.symlink(outside, link)
    Path(q.layout.data_dir, "file-not-dir").write_text("x")
    Path(q.layout.active_dir, "notes").write_text("x")
    dry = q.fsck(min_age=0)
    assert sorted(f.kind for f in dry.problems) == sorted(
        [FindingKind.SYMLINK] * 4 + [FindingKind.CORRUPT_CONTROL]
    )
    assert all(os.path.islink(link) for link in links)  # A dry run changes nothing.
    report = q.repair(min_age=0)
    assert report.ok
    assert sorted(f.kind for f in report.findings if f.fixed) == sorted(
        [FindingKind.SYMLINK] * 4 + [FindingKind.CORRUPT_CONTROL]
    )
    assert not any(os.path.lexists(link) for link in links)
    assert (outside / "keep").read_text() == "keep"  # Symlinks removed, never followed.
    assert Path(q.layout.corrupt_path(bad)).read_bytes() == b"junk"
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    job.finish()
    assert q.fsck(min_age=0).clean
