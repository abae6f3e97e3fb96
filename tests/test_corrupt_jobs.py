"""Jobs that are not valid (FORMAT.md: no QDFN, or no data file where QDFN says nor
under our own data/) are skipped with a warning, never handed out, and never crash a
reader; stray files are ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue


def test_a_control_file_without_qdfn_is_skipped_with_a_warning(
    queue: DirQueue, qdir: Path
) -> None:
    bad = queue.enqueue_string("bad", priority=10)
    good = queue.enqueue_string("good", priority=20)
    control = qdir / "queue" / bad
    control.write_text("QDSB: 3\nQSTT: 1\nQSTM: 0\nQSHN: h\n")
    with pytest.warns(UserWarning, match=f"corrupt job .*{bad}.*QDFN"):
        listed = [job.jobid for job in queue.jobs()]
    assert listed == [good]
    with pytest.warns(UserWarning, match=f"corrupt job .*{bad}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    job.finish()
    assert os.listdir(qdir / "active") == []  # The corrupt job's lock was let go.
    assert control.exists()  # Left for a human (or repair) to look at.


def test_a_job_whose_data_file_is_missing_is_not_handed_out(queue: DirQueue, qdir: Path) -> None:
    lost = queue.enqueue_string("lost", priority=10)
    good = queue.enqueue_string("good", priority=20)
    os.unlink(qdir / "data" / lost[-2] / lost[-1] / lost[:-2])
    with pytest.warns(UserWarning, match=f"corrupt job .*{lost}"):
        listed = [job.jobid for job in queue.jobs()]
    assert listed == [good]
    with pytest.warns(UserWarning, match=f"corrupt job .*{lost}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    assert job.get_data() == b"good"
    job.finish()
    assert os.listdir(qdir / "active") == []


def test_data_is_read_where_qdfn_points_when_it_is_not_under_data(
    queue: DirQueue, qdir: Path, tmp_path: Path
) -> None:
    """Valid per FORMAT.md: QDFN names an existing file, though data/C1/C2/BASE is absent."""
    jobid = queue.enqueue_string("moved")
    local = qdir / "data" / jobid[-2] / jobid[-1] / jobid[:-2]
    elsewhere = tmp_path / "elsewhere.dat"
    os.rename(local, elsewhere)
    control = qdir / "queue" / jobid
    lines = control.read_text().splitlines(keepends=True)
    lines[0] = f"QDFN: {elsewhere}\n"
    control.write_text("".join(lines))
    (listed,) = queue.jobs()
    assert listed.get_data() == b"moved"
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.get_data_path() == str(elsewhere)
    assert job.get_data() == b"moved"
    job.finish()
    assert not elsewhere.exists()
    assert files_under(qdir) == []


def test_control_file_bytes_that_are_not_utf8_do_not_crash_a_reader(
    queue: DirQueue, qdir: Path
) -> None:
    jobid = queue.enqueue_string("x")
    control = qdir / "queue" / jobid
    control.write_bytes(control.read_bytes() + b"caf\xe9: cr\xe8me\n")
    (listed,) = queue.jobs()
    assert listed.metadata == {"caf\ufffd": "cr\ufffdme"}
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"x"
    job.finish()


def test_stray_files_in_tmp_and_active_do_not_disturb_the_queue(
    queue: DirQueue, qdir: Path
) -> None:
    jobid = queue.enqueue_string("x")
    (qdir / "tmp" / "50.20000101000000000000.BM.data").write_bytes(b"half-written")
    (qdir / "active" / "50.20000101000000000000.BM").write_text("otherhost\n1\n")
    assert [job.jobid for job in queue.jobs()] == [jobid]
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()
    assert queue.pickup_queued_job() is None
