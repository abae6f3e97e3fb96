"""Jobs that are not valid (docs/format.md: no QDFN, or no data file) are skipped with a
warning, never handed out, and never crash a reader; stray files are ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import logs_warning
from dirqueue import DirQueue


def test_a_control_file_without_qdfn_is_skipped_with_a_warning(
    queue: DirQueue, qdir: Path
) -> None:
    bad = queue.enqueue_string("bad", priority=10)
    good = queue.enqueue_string("good", priority=20)
    control = qdir / "queue" / bad
    control.write_text("QDSB: 3\nQSTT: 1\nQSTM: 0\nQSHN: h\n")
    with logs_warning(f"corrupt job .*{bad}.*QDFN"):
        listed = [job.jobid for job in queue.jobs()]
    assert listed == [good]
    with logs_warning(f"corrupt job .*{bad}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    job.finish()
    assert os.listdir(qdir / "active") == []  # The corrupt job's lock was let go.
    # Moved aside with its reason, for a human (or repair) to look at; not deleted.
    assert not control.exists()
    aside = qdir / "corrupt" / bad
    assert aside.read_text() == "QDSB: 3\nQSTT: 1\nQSTM: 0\nQSHN: h\n"
    assert "QDFN" in (qdir / "corrupt" / f"{bad}.reason").read_text()
    assert (qdir / "corrupt" / f"{bad}.data").read_bytes() == b"bad"


def test_a_job_whose_data_file_is_missing_is_not_handed_out(queue: DirQueue, qdir: Path) -> None:
    lost = queue.enqueue_string("lost", priority=10)
    good = queue.enqueue_string("good", priority=20)
    os.unlink(qdir / "data" / lost[-2] / lost[-1] / lost[:-2])
    with logs_warning(f"corrupt job .*{lost}"):
        listed = [job.jobid for job in queue.jobs()]
    assert listed == [good]
    with logs_warning(f"corrupt job .*{lost}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    assert job.get_data() == b"good"
    job.finish()
    assert os.listdir(qdir / "active") == []


def test_qdfn_outside_the_queue_is_never_read_nor_deleted(
    queue: DirQueue, qdir: Path, tmp_path: Path
) -> None:
    """A control file can name any path in QDFN; the data is only ever taken from
    data/C1/C2/BASE, so a planted QDFN cannot make a worker read or delete other files."""
    jobid = queue.enqueue_string("moved")
    local = qdir / "data" / jobid[-2] / jobid[-1] / jobid[:-2]
    elsewhere = tmp_path / "precious.txt"
    os.rename(local, elsewhere)
    control = qdir / "queue" / jobid
    lines = control.read_text().splitlines(keepends=True)
    lines[0] = f"QDFN: {elsewhere}\n"
    control.write_text("".join(lines))
    with logs_warning(f"corrupt job .*{jobid}"):
        assert list(queue.jobs()) == []
    with logs_warning(f"corrupt job .*{jobid}"):
        assert queue.pickup_queued_job() is None
    assert elsewhere.read_bytes() == b"moved"
    assert os.listdir(qdir / "active") == []


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


@pytest.mark.timeout(10)  # A FIFO opened for reading without a writer blocks forever.
@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_a_non_file_under_a_job_name_in_queue_is_skipped_not_fatal(
    queue: DirQueue, qdir: Path, kind: str
) -> None:
    good = queue.enqueue_string("good", priority=20)
    odd = qdir / "queue" / "10.20000101000000000000.BM"
    if kind == "symlink":
        target = qdir / "elsewhere"
        target.write_text("QDFN: /etc/hostname\nQSTT: 1\n")
        odd.symlink_to(target)
    elif kind == "directory":
        odd.mkdir()
    else:
        os.mkfifo(odd)
    with logs_warning(f"corrupt job .*{odd.name}"):
        assert [job.jobid for job in queue.jobs()] == [good]
    with logs_warning(f"corrupt job .*{odd.name}"):
        job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    job.finish()
    assert os.listdir(qdir / "active") == []


@pytest.mark.usefixtures("judge_held_at_once")
@pytest.mark.timeout(10)  # A FIFO opened for reading without a writer blocks forever.
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_non_file_lock_in_active_does_not_crash_or_hang_readers(
    qdir: Path, kind: str
) -> None:
    queue = DirQueue(qdir, active_file_lifetime=1)
    jobid = queue.enqueue_string("x")
    odd = qdir / "active" / jobid
    if kind == "directory":
        odd.mkdir()
    else:
        os.mkfifo(odd)
    (listed,) = queue.jobs()
    assert (listed.active_host, listed.active_pid) == (None, None)
    assert queue.pickup_queued_job() is None  # Locked, and not old enough to break.
    if kind == "fifo":
        # Old, and naming no owner: broken like any stale lock, without blocking.
        os.utime(odd, (1, 1))
        with logs_warning("broke stale lock"):
            job = queue.pickup_queued_job()
        assert job is not None
        job.finish()
