"""A full disk must not stop the queue from draining (issue 8, finding 8).

Writing a lock's few bytes needs a data block. If a full disk made every pickup fail,
no job could ever be finished and no space freed: the queue would be stuck for good.
A worker on a full disk takes the job with an empty lock instead (an inode, no block),
and finishing jobs frees the space.

The disk is a small tmpfs mounted for the test (root only). tmpfs counts the pages of
file data against its ``size``; inodes and directory entries are limited separately
(``nr_inodes``, which we leave at its large default), as on a real disk whose blocks
ran out before its inodes. The filler takes every last byte of data space, so that
even a 1-byte write to a new file fails: the test does not depend on how full the
last page happened to be.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue, list_jobs

#: Jobs queued before the disk fills.
N_JOBS = 128
#: Enough pages for the 128 jobs' control and data files (a page each at least, on
#: tmpfs), and about as much again for the filler.
PAGES = 4 * N_JOBS

DQ = Path(sys.executable).with_name("dq")


def _mount_tmpfs(where: Path, size: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"cannot mount a tmpfs: {err}")


def _umount(where: Path) -> None:
    result = subprocess.run(["umount", str(where)], capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        # Something still has a file open there (a child we killed a moment ago): detach
        # it now, the kernel frees it when the last user is gone.
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """The mount point of a fresh tmpfs of :data:`PAGES` pages, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount_tmpfs(where, PAGES * os.sysconf("SC_PAGE_SIZE"))
    try:
        yield where
    finally:
        _umount(where)


def fill(disk: Path) -> None:
    """Fill ``disk``'s data space completely: until not even one byte more fits."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written = os.write(fd, block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
                if written < chunk:
                    break  # A short write: the next full-size one fails.
    finally:
        os.close(fd)
    assert_full(disk)


def assert_full(disk: Path) -> None:
    """Check that no data at all can be written on ``disk`` any more."""
    probe = disk / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # An inode fits.
    try:
        with pytest.raises(OSError, match="No space left") as err:
            os.write(fd, b"x")
        assert err.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
        probe.unlink()


def make_queue(qdir: Path, n: int) -> list[str]:
    queue = DirQueue(qdir, durable=False)
    return [queue.enqueue_string(f"job {i}\n", {"i": str(i)}) for i in range(n)]


@pytest.mark.timeout(120)
def test_dq_server_drains_a_queue_on_a_full_disk(small_disk: Path) -> None:
    if not DQ.exists():
        pytest.skip(f"no dq script next to {sys.executable}")
    qdir = small_disk / "q"
    make_queue(qdir, N_JOBS)
    fill(small_disk)

    proc = subprocess.Popen(
        [str(DQ), "server", "--dir", str(qdir), "--until-empty", "--", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"dq server did not drain the queue in 90 s: {err.decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == 0, f"dq server exited {proc.returncode}: {err.decode()[-2000:]}"
    # Every job processed: nothing waiting or locked, nothing corrupt or failed.
    assert list(DirQueue(qdir).jobs()) == []
    assert files_under(qdir) == []
    assert not (qdir / "corrupt").exists() or os.listdir(qdir / "corrupt") == []
    assert not (qdir / "failed").exists() or os.listdir(qdir / "failed") == []


@pytest.mark.timeout(60)
def test_pickup_on_a_full_disk_takes_the_job_with_an_empty_lock(small_disk: Path) -> None:
    qdir = small_disk / "q"
    jobids = make_queue(qdir, 3)
    fill(small_disk)

    queue = DirQueue(qdir, durable=False, active_file_lifetime=600)
    job = queue.pickup_queued_job()
    assert job is not None, "no job taken on a full disk"
    assert job.jobid == jobids[0]
    assert job.get_data() == b"job 0\n"
    lock = qdir / "active" / job.jobid
    assert lock.is_file()
    assert lock.stat().st_size == 0  # No room for its bytes: an empty lock.
    assert files_under(qdir / "tmp") == []  # The tmp lock was linked and unlinked.

    # While held and fresh, the empty lock shows the job active, not stale: nothing
    # takes it from us.
    states = {info.job.jobid: info.state for info in list_jobs(DirQueue(qdir))}
    assert states == {jobids[0]: "active", jobids[1]: "queued", jobids[2]: "queued"}
    if DQ.exists():
        listed = subprocess.run(
            [str(DQ), "list", "--dir", str(qdir), "--json"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr.decode()
        rows = json.loads(listed.stdout)
        assert {row["id"]: row["state"] for row in rows} == states
        assert [row["note"] for row in rows] == ["", "", ""]
    other = DirQueue(qdir, durable=False, active_file_lifetime=600).pickup_queued_job()
    assert other is not None
    assert other.jobid == jobids[1]  # Not ours: the next one.
    other.return_to_queue()

    job.finish()
    assert not lock.exists()
    assert [j.jobid for j in DirQueue(qdir).jobs()] == jobids[1:]
    # The space freed lets the next worker write a whole lock again.
    nxt = DirQueue(qdir, durable=False).pickup_queued_job()
    assert nxt is not None
    assert (qdir / "active" / nxt.jobid).stat().st_size > 0
    nxt.finish()


@pytest.mark.timeout(60)
def test_a_disk_kept_full_drains_job_by_job(small_disk: Path) -> None:
    """Something else takes every page freed as soon as it is freed: each pickup
    meets a full disk, and each finish frees what the next one needs."""
    qdir = small_disk / "q"
    jobids = make_queue(qdir, 16)
    queue = DirQueue(qdir, durable=False)
    done = []
    for _ in jobids:
        fill(small_disk)
        job = queue.pickup_queued_job()
        assert job is not None
        assert (qdir / "active" / job.jobid).stat().st_size == 0
        assert job.get_data() == f"job {job.metadata['i']}\n".encode()
        job.finish()
        done.append(job.jobid)
    fill(small_disk)
    assert queue.pickup_queued_job() is None
    assert done == jobids  # Each once, in order.
    assert files_under(qdir) == []


@pytest.mark.timeout(60)
def test_an_empty_lock_is_kept_fresh_by_its_heartbeat(small_disk: Path) -> None:
    """An empty lock names no owner, so only its age tells it from a dead worker's:
    the heartbeat keeps it young, and no other worker breaks it."""
    qdir = small_disk / "q"
    make_queue(qdir, 1)
    fill(small_disk)
    lifetime = 1.0
    job = DirQueue(qdir, durable=False, active_file_lifetime=lifetime).pickup_queued_job()
    assert job is not None
    lock = qdir / "active" / job.jobid
    assert lock.stat().st_size == 0
    inode = lock.stat().st_ino
    rival = DirQueue(qdir, durable=False, active_file_lifetime=lifetime)
    deadline = time.monotonic() + 3 * lifetime
    while time.monotonic() < deadline:
        assert rival.pickup_queued_job() is None
        assert [i.state for i in list_jobs(rival)] == ["active"]
        time.sleep(0.1)
    assert lock.stat().st_ino == inode
    job.finish()
    assert files_under(qdir) == []
