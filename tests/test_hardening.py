"""What an attacker sharing the queue, or an unlucky operator, can do to it (issue 8).

Each test plants what a member of the queue's group could plant, or arranges what a
crash or a slow client leaves, and checks what a user would: nothing outside the queue
is read, written or deleted; no job is lost, doubled or leaked; nothing crashes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import logs_warning
from dirqueue import CorruptJobError, DirQueue, FailedStore, JobLostError
from dirqueue._config import QueueConfig
from dirqueue._lock import HeldLock, take, touch
from dirqueue.repair import FindingKind

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the queue, full of old files that must survive."""
    target = tmp_path / "outside"
    target.mkdir()
    old = time.time() - 10 * 86400
    for name in ("precious", "50.20200101000000000000.ZZ", "50.20200101000000000000.ZZ.data"):
        (target / name).write_bytes(b"do not touch")
        os.utime(target / name, (old, old))
    return target


def _survived(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == [
        "50.20200101000000000000.ZZ",
        "50.20200101000000000000.ZZ.data",
        "precious",
    ]
    for path in outside.iterdir():
        assert path.read_bytes() == b"do not touch"


def _swap_for_symlink(directory: str, target: Path) -> None:
    """What any member of the queue's group can do: mv DIR DIR.old; ln -s TARGET DIR."""
    os.rename(directory, directory + ".old")
    os.symlink(target, directory)


# -- 1. repair never works through a symlinked directory ---------------------------------


@pytest.mark.parametrize("subdir", ["tmp", "active", "queue", "data"])
def test_repair_never_deletes_through_a_symlinked_queue_directory(
    tmp_path: Path, outside: Path, subdir: str
) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a job")
    _swap_for_symlink(os.path.join(q.dir, subdir), outside)
    report = q.repair(min_age=0)
    _survived(outside)
    symlinks = [f for f in report.findings if f.kind is FindingKind.SYMLINK]
    assert [f.path for f in symlinks] == [os.path.join(q.dir, subdir)]
    if subdir in ("tmp", "active"):
        # Transient contents only: the symlink itself goes, and the queue recreates
        # the directory on its next use.
        assert symlinks[0].fixed
        assert not os.path.lexists(os.path.join(q.dir, subdir))
    else:
        assert not symlinks[0].fixed  # The jobs live there: the operator decides.
        assert not report.ok


def test_repair_never_deletes_through_a_symlinked_data_subdirectory(
    tmp_path: Path, outside: Path
) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a job")
    c1, _ = q.layout.data_subdirs(jobid)
    _swap_for_symlink(c1, outside)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.repair(min_age=0)
    _survived(outside)


# -- 2. the failed store never copies a file the data name points at ----------------------


def test_a_failed_job_whose_data_became_a_symlink_keeps_no_private_file(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.write_bytes(b"user A's secret")
    private.chmod(0o600)
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("job data")
    job = q.pickup_queued_job()
    assert job is not None
    # User B swaps the running job's data file for a symlink to A's private file.
    data = Path(job.get_data_path())
    data.unlink()
    data.symlink_to(private)
    failed = FailedStore(q).add(job, "boom", attempts=3)
    kept = Path(q.layout.failed_file(jobid, "data"))
    assert not kept.is_symlink()
    assert b"secret" not in kept.read_bytes()
    assert failed.get_data() == b""
    assert private.read_bytes() == b"user A's secret"


# -- 3. a worker whose lock was broken and re-taken must not finish the job --------------


def test_finish_after_the_lock_was_taken_over_removes_nothing(tmp_path: Path) -> None:
    frozen = DirQueue(tmp_path / "q", active_file_lifetime=1)
    rescuer = DirQueue(tmp_path / "q", active_file_lifetime=1)
    jobid = frozen.enqueue_string("once")
    job = frozen.pickup_queued_job()
    assert job is not None
    job._stop_heartbeat()  # As if SIGSTOPped: the heartbeat goes quiet too.
    old = time.time() - 60
    os.utime(frozen.layout.active_path(jobid), (old, old))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        taken = rescuer.pickup_queued_job()
    assert taken is not None
    assert taken.jobid == jobid
    with pytest.raises(JobLostError, match="taken over by") as lost:
        job.finish()
    assert lost.value.taken_by == f"{rescuer.hostname}:{os.getpid()}"
    assert not job.is_active
    assert taken.get_data() == b"once"  # Still whole for its new holder.
    with pytest.raises(JobLostError):
        job.return_to_queue()  # lost jobs cannot be returned either
    taken.finish()
    assert list(rescuer.jobs()) == []


# -- 7. sockets, FIFOs and directories where files should be -----------------------------


def _bind_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    return sock


def test_a_unix_socket_at_a_job_name_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    good = q.enqueue_string("good")
    planted = "00.20200101000000000000.ZZ"
    sock = _bind_socket(os.path.join(q.layout.queue_dir, planted))
    try:
        with logs_warning("not a regular file"):
            assert [job.jobid for job in q.jobs()] == [good]
        report = q.fsck(min_age=0)
        assert [f.kind for f in report.problems] == [FindingKind.CORRUPT_CONTROL]
        with logs_warning("corrupt"):
            job = q.pickup_queued_job()
        assert job is not None
        assert job.jobid == good
        job.finish()
        assert os.path.lexists(q.layout.corrupt_path(planted))
        assert q.fsck(min_age=0).clean
    finally:
        sock.close()


@pytest.mark.usefixtures("judge_held_at_once")
def test_a_directory_at_a_lock_name_is_set_aside_once_old(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q", active_file_lifetime=1)
    jobid = q.enqueue_string("blocked")
    lock = q.layout.active_path(jobid)
    os.mkdir(lock)
    assert q.pickup_queued_job() is None  # Young: treated as held.
    old = time.time() - 60
    os.utime(lock, (old, old))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.finish()
    assert os.path.isdir(q.layout.corrupt_path(jobid + ".lock"))


def test_repair_moves_a_directory_at_a_lock_name_aside(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("blocked")
    os.mkdir(q.layout.active_path(jobid))
    report = q.repair(min_age=0)
    assert [(f.kind, f.fixed) for f in report.problems] == [(FindingKind.NOT_A_FILE, True)]
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()


# -- 9. reads are bounded by the size the control file records ---------------------------


def test_a_huge_sparse_data_file_is_never_read(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("small")
    good = q.enqueue_string("fine")
    with open(q.layout.data_path(jobid), "r+b") as fh:
        fh.truncate(64 << 30)  # 64 GiB of holes: no disk, but a read would fill memory.
    started = time.monotonic()
    with logs_warning("QDSB"):
        job = q.pickup_queued_job()
    assert time.monotonic() - started < 5
    assert job is not None
    assert job.jobid == good
    job.finish()
    assert os.path.getsize(q.layout.corrupt_path(jobid + ".data")) == 64 << 30


def test_get_data_refuses_a_data_file_that_grew_after_pickup(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("four")
    job = q.pickup_queued_job()
    assert job is not None
    with open(job.get_data_path(), "ab") as fh:
        fh.write(b"x" * 100_000)
    with pytest.raises(CorruptJobError, match="QDSB"):
        job.get_data()
    job.return_to_queue()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("replacement", ["fifo", "directory", "shorter", "empty"])
def test_get_data_refuses_a_data_file_replaced_after_pickup(
    tmp_path: Path, replacement: str
) -> None:
    """get_data trusts the size checked at pickup instead of asking the file again: a
    file put in its place since is refused with a clear error, never blocked on."""
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("the real data")
    job = q.pickup_queued_job()
    assert job is not None
    path = job.get_data_path()
    os.unlink(path)
    if replacement == "fifo":
        os.mkfifo(path)
        expected = "not a regular file"
    elif replacement == "directory":
        os.mkdir(path)
        expected = "not a regular file"
    else:
        Path(path).write_bytes(b"short" if replacement == "shorter" else b"")
        expected = "holds [0-9]+ bytes, not the 13 its control file records"
    with pytest.raises(CorruptJobError, match=expected):
        job.get_data()
    job.return_to_queue()


# -- 10. a slow stream keeps its tmp file fresh ------------------------------------------


def test_a_slow_streaming_enqueue_survives_a_repair(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    min_age = 2.0
    stop = threading.Event()
    findings: list[str] = []

    def repairer() -> None:
        while not stop.is_set():
            report = DirQueue(q.dir).repair(min_age=min_age)
            findings.extend(f.path for f in report.findings)
            stop.wait(0.2)

    def slow_chunks() -> Iterator[bytes]:
        end = time.monotonic() + 3 * min_age
        while time.monotonic() < end:
            yield b"x" * 100
            time.sleep(0.1)

    thread = threading.Thread(target=repairer, daemon=True)
    thread.start()
    try:
        jobid = q.enqueue_iter(slow_chunks())
    finally:
        stop.set()
        thread.join(10)
    assert findings == []
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data_size_bytes() == len(job.get_data()) > 0
    job.finish()


# -- 11. the heartbeat never follows a symlink planted at the lock -------------------------


def test_the_heartbeat_does_not_touch_through_a_symlink_at_the_lock(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"x")
    old = time.time() - 86400
    os.utime(victim, (old, old))
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("job")
    config: QueueConfig = q.config
    held = take(config, jobid, q.layout.queue_path(jobid))
    assert isinstance(held, HeldLock)
    lock = q.layout.active_path(jobid)
    os.unlink(lock)
    os.symlink(victim, lock)
    assert touch(config, held) is False  # Not our lock any more: left alone.
    assert victim.stat().st_mtime == pytest.approx(old, abs=1)
    with contextlib.suppress(OSError):
        os.unlink(lock)


def test_a_worker_whose_job_was_taken_over_counts_it_lost_and_goes_on(tmp_path: Path) -> None:
    from dirqueue import Outcome, Worker  # noqa: PLC0415 - the worker's own test

    q = DirQueue(tmp_path / "q", active_file_lifetime=1)
    rescuer = DirQueue(tmp_path / "q", active_file_lifetime=1)
    first = q.enqueue_string("stalls")
    second = q.enqueue_string("fine")
    taken: list[str] = []

    def handle(job: object) -> None:
        if not taken:
            # The worker stalls past the lifetime (its heartbeat quiet too), and a
            # worker elsewhere breaks the lock and takes the job.
            job._stop_heartbeat()  # type: ignore[attr-defined]
            old = time.time() - 60
            os.utime(q.layout.active_path(first), (old, old))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rescued = rescuer.pickup_queued_job()
            assert rescued is not None
            taken.append(rescued.jobid)
            rescued.finish()

    report = Worker(q, handle, until_empty=True).run()
    assert taken == [first]
    assert report.counts[Outcome.LOST.value] == 1
    assert report.counts[Outcome.FINISHED.value] == 1
    assert report.stop_reason == "queue empty"
    assert list(q.jobs()) == []
    assert second not in taken


def test_a_command_is_never_handed_a_data_name_swapped_for_a_symlink(tmp_path: Path) -> None:
    from dirqueue import CommandHandler  # noqa: PLC0415 - the handler's own test

    private = tmp_path / "private"
    private.write_bytes(b"user A's secret")
    out = tmp_path / "out"
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("job data")
    job = q.pickup_queued_job()
    assert job is not None
    data = Path(job.get_data_path())
    data.unlink()
    data.symlink_to(private)
    handler = CommandHandler(["sh", "-c", f'cat "$0" > {out}'])
    with pytest.raises(CorruptJobError, match="symlink"):
        handler(job)
    assert not out.exists()  # The command never ran.
    job.return_to_queue()


def test_a_failing_job_on_a_full_disk_goes_back_uncounted_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno  # noqa: PLC0415

    from dirqueue import Outcome, Worker  # noqa: PLC0415 - the worker's own test

    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("fails")

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dirqueue.job.create_control", no_space)

    def handle(job: object) -> None:
        raise RuntimeError("transient")

    worker = Worker(q, handle, max_attempts=3)
    result = worker.run_once(timeout=0)
    assert result.outcome is Outcome.RETRIED
    assert result.error is not None
    assert "attempt not counted" in result.error
    monkeypatch.undo()
    (listed,) = q.jobs()
    assert listed.jobid == jobid
    assert listed.active_pid is None  # Back in the queue, unlocked.
