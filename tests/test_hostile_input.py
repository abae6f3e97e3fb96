"""Hostile and malformed input: symlinks, FIFOs, huge and binary control files.

A queue shared by several users is writable by all of them, so any file in it may
have been planted. Whatever is planted, dirqueue must not read, write or delete a
file outside the queue directory, must not hang, and must not fill memory.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import pytest

from _helpers import logs_warning, recorded_logs
from dirqueue import CorruptJobError, DirQueue, InvalidMetadataError, _dirfds, _fs
from dirqueue._format import CONTROL_FILE_MAX_BYTES, METADATA_MAX_BYTES
from durability_checks import assert_no_half_jobs

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the queue holding a file that must survive."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "precious").write_bytes(b"do not touch")
    return target


def _queue(tmp_path: Path) -> DirQueue:
    return DirQueue(tmp_path / "q")


@pytest.mark.parametrize("opened_before", [False, True], ids=["first-look", "kept-open"])
def test_finish_does_not_delete_through_symlinked_data_directory(
    tmp_path: Path, outside: Path, opened_before: bool
) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("payload")
    job = q.pickup_queued_job()
    assert job is not None
    # Replace data/C1 by a symlink to a directory that holds a file of the same name.
    c1, c2 = q.layout.data_subdirs(jobid)
    base = os.path.basename(q.layout.data_path(jobid))
    (outside / os.path.basename(c2)).mkdir()
    victim = outside / os.path.basename(c2) / base
    victim.write_bytes(b"precious too")
    moved = tmp_path / "moved"
    os.rename(c1, str(moved))
    os.symlink(outside, c1)
    if opened_before:
        # This thread kept the real data/C1/C2 open since the pickup: it reads and
        # removes the job's own data file there, wherever it was moved; never the victim.
        assert job.get_data() == b"payload"
        job.finish()
        assert not (moved / os.path.basename(c2) / base).exists()
    else:
        _dirfds.clear()  # A worker meeting data/C1 for the first time, as a symlink.
        with pytest.raises(CorruptJobError, match="symlink"):
            job.get_data()
        with logs_warning("symlink"):
            job.finish()
    assert victim.read_bytes() == b"precious too"
    assert not os.path.lexists(job.queue_path)


def test_finish_removes_a_symlink_at_the_data_name_not_its_target(
    tmp_path: Path, outside: Path
) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("payload")
    job = q.pickup_queued_job()
    assert job is not None
    data_path = q.layout.data_path(jobid)
    os.unlink(data_path)
    os.symlink(outside / "precious", data_path)
    with pytest.raises(CorruptJobError, match="symlink"):
        job.get_data()
    job.finish()
    assert (outside / "precious").read_bytes() == b"do not touch"
    assert not os.path.lexists(data_path)


def test_pickup_moves_aside_a_job_whose_data_is_a_symlink(tmp_path: Path, outside: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("payload")
    good = q.enqueue_string("good")
    data_path = q.layout.data_path(jobid)
    os.unlink(data_path)
    os.symlink(outside / "precious", data_path)
    with logs_warning("corrupt job .*moved aside"):
        job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    assert (outside / "precious").read_bytes() == b"do not touch"
    reason = Path(q.layout.corrupt_path(jobid) + ".reason").read_text()
    assert "symlink" in reason


def test_qdfn_pointing_outside_the_queue_is_never_used(tmp_path: Path, outside: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("real data")
    queue_path = q.layout.queue_path(jobid)
    text = Path(queue_path).read_text()
    for hostile in (str(outside / "precious"), "../../outside/precious", "/etc/passwd"):
        lines = [
            f"QDFN: {hostile}" if line.startswith("QDFN: ") else line
            for line in text.splitlines()
        ]
        Path(queue_path).write_text("\n".join(lines) + "\n")
        job = q.pickup_queued_job()
        assert job is not None
        assert job.get_data() == b"real data"
        assert job.get_data_path() == q.layout.data_path(jobid)
        job.return_to_queue()
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()
    assert (outside / "precious").read_bytes() == b"do not touch"


@pytest.mark.parametrize("name", ["../../outside/precious", "/etc/passwd", "50.x/../../y"])
def test_pickup_by_hostile_path_is_refused_or_stays_inside(tmp_path: Path, name: str) -> None:
    q = _queue(tmp_path)
    q.enqueue_string("x")
    with pytest.raises(CorruptJobError):
        q.pickup_queued_job(name)


def test_symlink_planted_at_a_tmp_name_is_not_followed(tmp_path: Path, outside: Path) -> None:
    q = _queue(tmp_path)
    q.enqueue_string("make the directories")
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()
    # Plant symlinks at every name the next enqueue could use in tmp/ (we cannot know
    # the exact name, so check the primitive: O_EXCL|O_NOFOLLOW creation).
    link = q.layout.tmp_path("planted.data")
    os.symlink(outside / "precious", link)
    with pytest.raises(FileExistsError):
        _fs.create_exclusive(link, 0o666)
    assert (outside / "precious").read_bytes() == b"do not touch"


def test_symlinked_active_lock_is_not_followed_or_taken(tmp_path: Path, outside: Path) -> None:
    q = DirQueue(tmp_path / "q", active_file_lifetime=0.01)
    jobid = q.enqueue_string("payload")
    os.symlink(outside / "precious", q.layout.active_path(jobid))
    # The job counts as locked (a symlink is not our lock); nothing outside changes.
    assert q.pickup_queued_job() is None
    assert (outside / "precious").read_bytes() == b"do not touch"
    report = q.repair(min_age=0)
    assert any(f.kind == "symlink" and f.fixed for f in report.findings)
    assert (outside / "precious").read_bytes() == b"do not touch"
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()


def test_enqueue_refuses_a_symlinked_data_directory(tmp_path: Path, outside: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("first")
    c1, _ = q.layout.data_subdirs(jobid)
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()
    os.rename(c1, str(tmp_path / "moved"))
    os.symlink(outside, c1)
    before = sorted(os.listdir(outside))
    with pytest.raises(OSError, match=r"linking|data"):
        q.enqueue_string("second")
    assert sorted(os.listdir(outside)) == before  # Nothing created, linked or written.
    assert assert_no_half_jobs(q) == {}


def test_symlinked_fanout_directory_is_not_scanned(tmp_path: Path, outside: Path) -> None:
    q = _queue(tmp_path)
    other = DirQueue(outside / "otherq")
    other.enqueue_string("not yours")
    q.enqueue_string("mine")
    os.symlink(other.layout.queue_dir, os.path.join(q.layout.queue_dir, "a"))
    job = q.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"mine"
    job.finish()
    assert q.pickup_queued_job() is None
    assert len(os.listdir(other.layout.queue_dir)) == 1


def test_fifo_in_queue_does_not_hang_pickup(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    good = q.enqueue_string("good")
    fifo = q.layout.queue_path("10.20200101000000000000.ABC")
    os.mkfifo(fifo)
    with logs_warning("corrupt job .*moved aside"):
        job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == good
    assert not os.path.lexists(fifo)


def test_huge_control_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("x")
    queue_path = q.layout.queue_path(jobid)
    with open(queue_path, "ab") as fh:
        fh.truncate(1 << 40)  # A sparse terabyte: reading it would exhaust memory.
    with logs_warning("over the"):
        assert q.pickup_queued_job() is None
    assert os.path.exists(q.layout.corrupt_path(jobid))


def test_binary_control_file_is_moved_aside_with_its_reason(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("x")
    Path(q.layout.queue_path(jobid)).write_bytes(bytes(range(256)) * 4)
    with logs_warning("corrupt job .*moved aside"):
        assert q.pickup_queued_job() is None
    corrupt = q.layout.corrupt_path(jobid)
    assert Path(corrupt).read_bytes() == bytes(range(256)) * 4
    assert Path(corrupt + ".data").read_bytes() == b"x"
    assert "NUL" in Path(corrupt + ".reason").read_text()


def test_non_utf8_control_file_is_read_not_crashed_on(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    jobid = q.enqueue_string("x", {"k": "v"})
    path = Path(q.layout.queue_path(jobid))
    path.write_bytes(path.read_bytes() + b"bad: \xff\xfe\n")
    job = q.pickup_queued_job()
    assert job is not None
    assert job.metadata["bad"] == "\ufffd\ufffd"
    job.finish()


def test_metadata_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    with pytest.raises(InvalidMetadataError, match="limit"):
        q.enqueue_string("x", {"big": "v" * METADATA_MAX_BYTES})
    with pytest.raises(InvalidMetadataError, match="limit"):
        q.enqueue_string("x", {f"k{i}": "v" * 1000 for i in range(METADATA_MAX_BYTES // 1000)})
    assert not os.path.exists(q.dir)  # Refused before even the directories were made.
    # Just under the limit still works, and reads back.
    big = {"big": "v" * (METADATA_MAX_BYTES - 10)}
    q.enqueue_string("x", big)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.metadata == big
    assert os.path.getsize(job.queue_path) <= CONTROL_FILE_MAX_BYTES
    job.finish()


def test_worker_never_spins_on_a_corrupt_job(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    for i in range(5):
        jobid = q.enqueue_string(f"bad {i}")
        Path(q.layout.queue_path(jobid)).write_text("no fields at all\n")
    with recorded_logs() as caught:
        assert q.pickup_queued_job() is None
        assert q.pickup_queued_job() is None
    assert len(caught) == 5  # Each met once, then gone from the queue.
    assert os.listdir(q.layout.queue_dir) == []
    assert len([n for n in os.listdir(q.layout.corrupt_dir) if n.endswith(".reason")]) == 5


def test_fifo_planted_as_a_lock_does_not_hang_listing_or_pickup(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", active_file_lifetime=0.01)
    jobid = q.enqueue_string("x")
    lock = q.layout.active_path(jobid)
    os.mkfifo(lock)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    listed = list(q.jobs())
    assert [job.active_pid for job in listed] == [None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # The unreadable lock is broken as stale.
        job = q.pickup_queued_job()
    assert job is not None
    job.finish()


def test_pickup_by_id_does_not_follow_a_symlinked_fanout_directory(
    tmp_path: Path, outside: Path
) -> None:
    q = _queue(tmp_path)
    other = DirQueue(outside / "otherq")
    jobid = other.enqueue_string("not yours")
    q.enqueue_string("make the directories")
    os.symlink(other.layout.queue_dir, os.path.join(q.layout.queue_dir, "a"))
    assert q.pickup_queued_job(jobid) is None
    assert os.path.exists(other.layout.queue_path(jobid))


@pytest.mark.parametrize("sub", ["tmp", "active", "queue", "data"])
def test_a_queue_subdirectory_swapped_for_a_symlink_is_refused(
    tmp_path: Path, outside: Path, sub: str
) -> None:
    DirQueue(tmp_path / "q").enqueue_string("make the directories")
    real = tmp_path / "q" / sub
    os.rename(real, tmp_path / "aside")
    os.symlink(outside, real)
    before = sorted(os.listdir(outside))
    q = DirQueue(tmp_path / "q")
    with pytest.raises(OSError, match="symlink"):
        q.enqueue_string("x")
    with pytest.raises(OSError, match="symlink"):
        q.pickup_queued_job()
    assert sorted(os.listdir(outside)) == before


@pytest.mark.timeout(60)
def test_racing_workers_move_each_corrupt_job_aside_once_and_lose_no_good_job(
    tmp_path: Path,
) -> None:
    q = _queue(tmp_path)
    good = set(q.enqueue_many([f"good {i}" for i in range(60)]))
    bad = set()
    for i in range(20):
        jobid = q.enqueue_string(f"bad {i}")
        Path(q.layout.queue_path(jobid)).write_bytes(b"garbage\n")
        bad.add(jobid)
    done_dir = tmp_path / "done"
    done_dir.mkdir()
    read_go, write_go = os.pipe()
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                warnings.simplefilter("ignore")
                os.read(read_go, 1)
                worker = DirQueue(q.dir)
                while (job := worker.pickup_queued_job()) is not None:
                    (done_dir / f"{job.jobid}.{os.getpid()}").write_bytes(job.get_data())
                    job.finish()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    try:
        os.write(write_go, b"xxx")
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for pid in pids:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
    processed = [name.rsplit(".", 1)[0] for name in os.listdir(done_dir)]
    assert sorted(processed) == sorted(good)  # Each good job exactly once.
    moved = sorted(os.listdir(q.layout.corrupt_dir))
    assert moved == sorted(
        f"{jobid}{suffix}" for jobid in bad for suffix in ("", ".data", ".reason")
    )  # Each bad job moved once, whole, with no second copy (NAME.1).
    assert q.repair(min_age=0).clean
