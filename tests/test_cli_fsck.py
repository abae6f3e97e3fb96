"""`dq fsck`: reports what dead processes left behind, changes nothing unless asked,
and with --repair leaves a healthy queue (corrupt jobs moved aside, never deleted)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue
from dirqueue.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from test_cli import dq

pytestmark = pytest.mark.timeout(60)

#: Everything in the damaged queue counts as old enough to repair.
OLD = ("--min-age", "0")


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → content): what a check must not change."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def damaged(tmp_path: Path, dead_pid: int) -> tuple[Path, dict[str, str]]:
    """A queue with one of each kind of debris; returns it and the ids involved."""
    qdir = tmp_path / "q"
    q = DirQueue(qdir, active_file_lifetime=1)
    good = q.enqueue_string("good", priority=10)
    corrupt = q.enqueue_string("corrupt")
    locked = q.enqueue_string("locked")
    (qdir / "queue" / corrupt).write_text("this is not a control file\n")
    leftover = qdir / "tmp" / "killed-enqueue.data"
    leftover.write_text("half a job")
    age(leftover, 7200)
    orphan_id = q.enqueue_string("orphan")
    os.unlink(qdir / "queue" / orphan_id)  # As if killed before the control file.
    orphan = qdir / "data" / orphan_id[-2] / orphan_id[-1] / orphan_id[:-2]
    # repair() judges a data file by its ctime too (set when it was linked), which
    # cannot be put back: the tests below pass --min-age 0 to count it as old.
    age(orphan, 7200)
    lock = qdir / "active" / locked
    lock.write_text(f"{socket.gethostname()}\n{dead_pid}\n")
    age(lock, 7200)
    return qdir, {"good": good, "corrupt": corrupt, "locked": locked, "orphan": orphan_id}


def test_fsck_reports_every_problem_and_changes_nothing(
    damaged: tuple[Path, dict[str, str]],
) -> None:
    qdir, ids = damaged
    before = snapshot(qdir)
    code, out, err = dq("fsck", "--dir", str(qdir), *OLD)
    assert code == EXIT_FAILURE
    assert snapshot(qdir) == before
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == {"tmp-leftover", "orphan-data", "corrupt-control", "dead-lock"}
    assert "tmp/killed-enqueue.data" in rows["tmp-leftover"]
    assert ids["corrupt"] in rows["corrupt-control"]
    assert ids["locked"] in rows["dead-lock"]
    assert all("would" in row for row in rows.values())
    assert out.splitlines()[-1] == "3 jobs checked, 4 problems found, nothing changed"
    assert "dq fsck --repair" in err


def test_fsck_json_is_the_report(damaged: tuple[Path, dict[str, str]]) -> None:
    qdir, ids = damaged
    code, out, _ = dq("fsck", "--dir", str(qdir), *OLD, "--json")
    assert code == EXIT_FAILURE
    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["ok"] is False
    assert report["jobs_checked"] == 3
    found = {f["kind"]: f["path"] for f in report["findings"]}
    assert sorted(found) == ["corrupt-control", "dead-lock", "orphan-data", "tmp-leftover"]
    assert found["corrupt-control"] == str(qdir / "queue" / ids["corrupt"])
    assert found["dead-lock"] == str(qdir / "active" / ids["locked"])
    assert not any(f["fixed"] for f in report["findings"])


def test_fsck_repair_fixes_it_and_a_second_check_is_clean(
    damaged: tuple[Path, dict[str, str]],
) -> None:
    qdir, ids = damaged
    code, out, err = dq("fsck", "--dir", str(qdir), *OLD, "--repair")
    assert code == EXIT_OK, err
    assert out.splitlines()[-1] == "3 jobs checked, 4 problems found, 4 fixed"
    assert not (qdir / "tmp" / "killed-enqueue.data").exists()
    assert not (qdir / "active" / ids["locked"]).exists()
    # The corrupt job was moved aside with its reason and its data, not deleted.
    assert (qdir / "corrupt" / ids["corrupt"]).read_text() == "this is not a control file\n"
    assert (qdir / "corrupt" / f"{ids['corrupt']}.data").read_text() == "corrupt"
    assert (qdir / "corrupt" / f"{ids['corrupt']}.reason").exists()

    code, out, _ = dq("fsck", "--dir", str(qdir))
    assert (code, out) == (EXIT_OK, "2 jobs checked, 0 problems found\n")
    # The two good jobs are whole and can be taken, the one that was locked included.
    q = DirQueue(qdir)
    taken = []
    while (job := q.pickup_queued_job()) is not None:
        taken.append((job.jobid, job.get_data()))
        job.finish()
    assert taken == [(ids["good"], b"good"), (ids["locked"], b"locked")]


def test_fsck_leaves_young_debris_alone(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    DirQueue(qdir).enqueue_string("x")
    young = qdir / "tmp" / "in-progress.data"
    young.write_text("being written")
    code, out, _ = dq("fsck", "--dir", str(qdir), "--repair")
    assert (code, out) == (EXIT_OK, "1 job checked, 0 problems found\n")
    assert young.exists()
    code, out, _ = dq("fsck", "--dir", str(qdir), "--repair", "--min-age", "0")
    assert code == EXIT_OK
    assert "tmp-leftover" in out
    assert not young.exists()


def test_fsck_of_a_missing_queue_or_bad_age_is_an_error(tmp_path: Path) -> None:
    code, _, err = dq("fsck", "--dir", str(tmp_path / "nope"))
    assert code == EXIT_FAILURE
    assert "no queue at" in err
    code, _, err = dq("fsck", "--dir", str(tmp_path), "--min-age", "soon")
    assert code == EXIT_USAGE
    assert "--min-age" in err


def test_dq_fsck_as_a_real_process(damaged: tuple[Path, dict[str, str]]) -> None:
    qdir, _ = damaged
    dq_bin = Path(sys.executable).parent / "dq"
    checked = subprocess.run(
        [str(dq_bin), "fsck", "--dir", str(qdir), "--json", *OLD],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert checked.returncode == EXIT_FAILURE
    assert len(json.loads(checked.stdout)["findings"]) == 4
    repaired = subprocess.run(
        [str(dq_bin), "fsck", "--dir", str(qdir), "--repair", *OLD],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert repaired.returncode == EXIT_OK, repaired.stderr
    assert repaired.stdout.splitlines()[-1].endswith("4 fixed")
