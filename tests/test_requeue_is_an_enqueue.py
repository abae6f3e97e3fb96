"""A requeued job is as durable and as symlink-safe as a fresh one (issue 9).

``FailedStore.requeue`` goes through the one way into the queue
(:mod:`dirqueue._enqueue`): what a user checks is that a requeue fsyncs the same files
and directories, in the same order relative to the job becoming visible, as an
enqueue of the same shape; that a symlink planted in ``data/`` or ``queue/`` never leads
it out of the queue; and that the job comes back whole: same id, priority, metadata and
data, its attempts reset.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue, DirQueueError, FailedStore, _fs, list_jobs
from dirqueue._format import data_location
from dirqueue._layout import Layout
from dirqueue.failed import ATTEMPTS_KEY, attempts_of
from durability_checks import assert_no_half_jobs, queued_jobs

pytestmark = pytest.mark.timeout(30)

PAYLOAD = b"the job's bytes\n" * 100
META = {"k": "v", "owner": "bob"}
PRIORITY = 30

#: One fsync seen while an operation ran: ``("file", (dev, ino), visible)`` or
#: ``("dir", path relative to the queue, visible)``; ``visible`` says whether a job was
#: in queue/ at that moment.
Event = tuple[str, object, bool]


@contextmanager
def recording_fsyncs(q: DirQueue, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Event]]:
    """Record every file and directory fsync made while the block runs."""
    events: list[Event] = []
    real_fsync = os.fsync
    real_fsync_dir = _fs.fsync_dir
    root = os.path.realpath(q.dir)

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):  # Directories are recorded by fsync_dir.
            events.append(("file", (st.st_dev, st.st_ino), bool(queued_jobs(q))))
        real_fsync(fd)

    def fsync_dir(path: str) -> None:
        rel = os.path.relpath(os.path.realpath(path), root)
        events.append(("dir", rel, bool(queued_jobs(q))))
        real_fsync_dir(path)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        patch.setattr("dirqueue._fs.fsync_dir", fsync_dir)
        yield events


def _roles(q: DirQueue, jobid: str, events: list[Event]) -> set[tuple[str, str, bool]]:
    """The events with files named by role and job-specific directories by shape."""
    c1, c2, _ = data_location(jobid)
    data = os.lstat(q.layout.data_path(jobid))
    control = os.lstat(queued_jobs(q)[jobid])
    files: dict[object, str] = {
        (data.st_dev, data.st_ino): "data file",
        (control.st_dev, control.st_ino): "control file",
    }
    roles: set[tuple[str, str, bool]] = set()
    for kind, what, visible in events:
        if kind == "file":
            name = files.get(what, f"another file {what}")
        else:
            parts = str(what).split(os.sep)
            if parts[0] == Layout.DATA:
                shape = [Layout.DATA, "C1", "C2"]
                assert parts == [Layout.DATA, c1, c2][: len(parts)], parts
                parts = shape[: len(parts)]
            elif parts[0] == Layout.QUEUE and len(parts) > 1:
                parts[1] = "X"
            name = "/".join(parts)
        roles.add((kind, name, visible))
    return roles


def _fail(q: DirQueue) -> str:
    """Enqueue a job, pick it up and move it to failed/ after its third attempt."""
    jobid = q.enqueue_string(PAYLOAD, META, priority=PRIORITY)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    failed = FailedStore(q).add(job, "boom", attempts=3)
    assert failed.attempts == 3
    assert failed.control.extra_system[ATTEMPTS_KEY] == "3"
    assert queued_jobs(q) == {}
    return jobid


def _drop_data_dirs(q: DirQueue, jobid: str) -> None:
    """Remove the (empty) data/C1/C2 and data/C1 of ``jobid``: a requeue makes them anew."""
    c1, c2, _ = data_location(jobid)
    os.rmdir(os.path.join(q.layout.data_dir, c1, c2))
    os.rmdir(os.path.join(q.layout.data_dir, c1))


@pytest.mark.parametrize("fanout", [False, True], ids=["flat", "fanout"])
@pytest.mark.parametrize("new_dirs", [False, True], ids=["dirs-exist", "dirs-made"])
def test_a_requeue_fsyncs_what_an_enqueue_of_the_same_shape_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_dirs: bool, fanout: bool
) -> None:
    if fanout:
        # Every job to queue/0, so that "queue/X exists already" means the same for both.
        monkeypatch.setattr("dirqueue._enqueue.random.choice", lambda seq: seq[0])
    # The reference: an enqueue into a queue that exists (with its data directories,
    # unless new_dirs: a previous job of this process made them).
    ref = DirQueue(tmp_path / "ref", queue_fanout=fanout)
    ref.create()
    if not new_dirs:
        job = ref.pickup_queued_job(ref.enqueue_string(b"x"))
        assert job is not None
        job.finish()
    with recording_fsyncs(ref, monkeypatch) as enqueued:
        ref_id = ref.enqueue_string(PAYLOAD, META, priority=PRIORITY)
    enqueue_roles = _roles(ref, ref_id, enqueued)

    q = DirQueue(tmp_path / "q", queue_fanout=fanout)
    jobid = _fail(q)
    if new_dirs:
        _drop_data_dirs(q, jobid)
        for digit in Layout.FANOUT_DIGITS:
            # queue/X made anew as well: as the fresh enqueue made it.
            if os.path.isdir(os.path.join(q.layout.queue_dir, digit)):
                os.rmdir(os.path.join(q.layout.queue_dir, digit))
    with recording_fsyncs(q, monkeypatch) as requeued:
        assert FailedStore(q).requeue(jobid) == jobid
    requeue_roles = _roles(q, jobid, requeued)

    # What must be on disk before the job is visible, and after.
    must = {
        ("file", "data file", False),
        ("file", "control file", False),
        ("dir", "data/C1/C2", False),
        ("dir", "queue/X" if fanout else "queue", True),
    }
    assert must <= enqueue_roles
    # And one more: the claim in failed/ is on disk before the job is linked back into
    # queue/, so that a power loss cannot leave it in both (found by crashcheck).
    assert requeue_roles == enqueue_roles | {("dir", Layout.FAILED, False)}


def test_a_requeued_job_comes_back_whole_and_leaves_nothing_behind(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    original = q.pickup_queued_job(q.enqueue_string(PAYLOAD, META, priority=PRIORITY))
    assert original is not None
    jobid = original.jobid
    submitted = (original.get_time_submitted_secs(), original.get_time_submitted_usecs())
    FailedStore(q).add(original, "boom", attempts=3)
    assert [f.attempts for f in FailedStore(q).jobs()] == [3]

    assert FailedStore(q).requeue(jobid) == jobid
    assert FailedStore(q).count() == 0
    (info,) = list_jobs(q)
    assert (info.job.jobid, info.state, info.attempts) == (jobid, "queued", 0)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.priority == PRIORITY
    assert job.metadata == META
    assert job.get_data() == PAYLOAD
    assert (job.get_time_submitted_secs(), job.get_time_submitted_usecs()) == submitted
    assert ATTEMPTS_KEY not in job.control.extra_system
    assert attempts_of(job.control) == 0
    job.finish()
    assert files_under(q.dir) == []


def _data_c1_is_a_symlink(q: DirQueue, jobid: str, outside: Path) -> None:
    c1, c2, _ = data_location(jobid)
    (outside / c2).mkdir(parents=True)
    c1_dir = os.path.join(q.layout.data_dir, c1)
    os.rmdir(os.path.join(c1_dir, c2))
    os.rmdir(c1_dir)
    os.symlink(outside, c1_dir)


def _queue_fanout_dirs_are_symlinks(q: DirQueue, jobid: str, outside: Path) -> None:
    for digit in Layout.FANOUT_DIGITS:
        path = os.path.join(q.layout.queue_dir, digit)
        if os.path.isdir(path):
            os.rmdir(path)
        (outside / digit).mkdir(parents=True)
        os.symlink(outside / digit, path)


def _tree(directory: Path) -> list[tuple[str, int]]:
    """Every name under ``directory`` and its size: a change anywhere shows."""
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            found.append((os.path.relpath(path, directory), os.lstat(path).st_size))
    return sorted(found)


@pytest.mark.parametrize(
    ("fanout", "plant"),
    [(False, _data_c1_is_a_symlink), (True, _queue_fanout_dirs_are_symlinks)],
    ids=["data-C1-symlink", "queue-X-symlink"],
)
def test_a_requeue_never_writes_through_a_symlink_in_the_queue(
    tmp_path: Path, fanout: bool, plant: Callable[[DirQueue, str, Path], None]
) -> None:
    q = DirQueue(tmp_path / "q", queue_fanout=fanout)
    jobid = _fail(q)
    outside = tmp_path / "outside"
    plant(q, jobid, outside)
    untouched = _tree(outside)

    try:
        FailedStore(q).requeue(jobid)
    except DirQueueError:
        # Refused: the failed job is kept, whole, and nothing of it is in the queue.
        assert FailedStore(q).get(jobid).get_data() == PAYLOAD
        assert queued_jobs(q) == {}
        assert files_under(q.layout.data_dir) == []
    else:
        # Or placed safely, inside the queue: whole, and no longer a failed job.
        assert assert_no_half_jobs(q) == {jobid: PAYLOAD}
        assert FailedStore(q).count() == 0
    assert _tree(outside) == untouched
    assert assert_no_half_jobs(q) in ({}, {jobid: PAYLOAD})
    assert files_under(q.layout.tmp_dir) == []

    # The operator's remedy: repair removes the symlinks (never what they point at),
    # and the requeue goes through.
    q.repair()
    assert _tree(outside) == untouched
    if FailedStore(q).count():
        assert FailedStore(q).requeue(jobid) == jobid
    job = q.pickup_queued_job()
    assert job is not None
    assert (job.jobid, job.get_data(), job.metadata) == (jobid, PAYLOAD, META)
    job.finish()
    assert files_under(q.dir) == []
    assert _tree(outside) == untouched


def test_a_requeue_never_takes_a_symlink_in_failed_for_the_job_data(tmp_path: Path) -> None:
    """failed/ is writable by the queue's users too: a symlink planted there in place of
    the kept data must not become a job whose data is a file outside the queue."""
    q = DirQueue(tmp_path / "q")
    jobid = _fail(q)
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"x" * len(PAYLOAD))  # The size the control file records.
    kept = Path(q.layout.failed_file(jobid, Layout.FAILED_DATA))
    kept.unlink()
    kept.symlink_to(secret)
    untouched = _tree(secret.parent)

    with pytest.raises(DirQueueError):
        FailedStore(q).requeue(jobid)
    assert queued_jobs(q) == {}
    assert files_under(q.layout.data_dir) == []
    assert files_under(q.layout.tmp_dir) == []
    assert [f.jobid for f in FailedStore(q).jobs()] == [jobid]  # Kept for the operator.
    assert _tree(secret.parent) == untouched
