"""Queues written by the Perl module (IPC::DirQueue 1.1) read, taken and finished by us.

The sample queues were written at ``/var/spool/dirqueue/...``; they are extracted under
tmp_path, so every QDFN in them names a path that does not exist here.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from _helpers import FIXTURES_TARBALL, files_under, recorded_logs
from dirqueue import DirQueue

pytestmark = pytest.mark.skipif(
    not FIXTURES_TARBALL.is_file(),
    reason=f"Perl sample queues not found at {FIXTURES_TARBALL} (shared/ must sit next to"
    " the checkout)",
)


@pytest.fixture
def fixtures(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The extracted sample queues' root, and expected.json."""
    with tarfile.open(FIXTURES_TARBALL) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)  # noqa: S202 - our own fixture, from shared/
    root = tmp_path / "dirqueue"
    expected = json.loads((root / "expected.json").read_text("utf-8"))
    return root, expected


QUEUES = ["plain", "fanout"]


@pytest.mark.parametrize("name", QUEUES)
def test_listing_matches_what_the_perl_module_wrote(
    fixtures: tuple[Path, dict[str, Any]], name: str
) -> None:
    root, expected = fixtures
    qdir = root / name
    before = files_under(qdir)
    want = {job["jobid"]: job for job in expected[name]["jobs"]}
    listed = list(DirQueue(qdir).jobs())
    assert sorted(job.jobid for job in listed) == sorted(want)
    assert [job.jobid for job in listed] == sorted(want)  # Listed in pickup order.
    for job in listed:
        exp = want[job.jobid]
        assert job.metadata == exp["metadata"], job.jobid
        assert job.get_data_size_bytes() == exp["size_bytes"]
        data = job.get_data()
        assert len(data) == exp["size_bytes"]
        assert hashlib.sha256(data).hexdigest() == exp["data_sha256"], job.jobid
        assert job.get_time_submitted_secs() == exp["time_submitted_secs"]
        assert job.get_time_submitted_usecs() == exp["time_submitted_usecs"]
        assert job.get_hostname_submitted() == exp["hostname_submitted"]
        assert job.active_host == exp["active_host"]
        assert job.active_pid == exp["active_pid"]
        assert job.queue_path == str(qdir / exp["queue_file"])
        assert job.get_data_path() == str(qdir / exp["data_file"])
    assert files_under(qdir) == before  # Listing changes nothing.


@pytest.mark.parametrize("name", QUEUES)
def test_data_is_found_although_qdfn_names_the_writers_path(
    fixtures: tuple[Path, dict[str, Any]], name: str
) -> None:
    root, expected = fixtures
    written_at = expected[name]["written_at"]
    assert not Path(written_at).exists()
    for job in DirQueue(root / name).jobs():
        assert job.control.data_path is not None
        assert job.control.data_path.startswith(written_at + "/data/")
        assert Path(job.get_data_path()).is_file()


def test_the_remote_lock_is_old_and_from_another_host(
    fixtures: tuple[Path, dict[str, Any]],
) -> None:
    """The premise of the next tests: a lock a naive stale check would break."""
    root, expected = fixtures
    (locked,) = [j for j in expected["plain"]["jobs"] if j["active_host"]]
    lock = root / "plain" / "active" / locked["jobid"]
    assert time.time() - lock.stat().st_mtime > 3600
    assert lock.read_text().split("\n")[:2] == ["otherhost.example", "4242"]


@pytest.mark.parametrize("lifetime", [600, 1])
@pytest.mark.parametrize("name", QUEUES)
def test_pickup_takes_jobs_in_name_order_and_never_the_remote_locked_one(
    fixtures: tuple[Path, dict[str, Any]], name: str, lifetime: float
) -> None:
    root, expected = fixtures
    qdir = root / name
    jobs = expected[name]["jobs"]
    free = sorted(j["jobid"] for j in jobs if j["active_host"] is None)
    locked = [j["jobid"] for j in jobs if j["active_host"] is not None]
    queue = DirQueue(qdir, active_file_lifetime=lifetime)
    taken = []
    with recorded_logs() as logged:  # Breaking the remote lock would log.
        while (job := queue.pickup_queued_job()) is not None:
            taken.append(job.jobid)
            job.finish()
        for jobid in locked:
            assert queue.pickup_queued_job(jobid) is None
    assert logged == []
    assert taken == free
    # What is left is exactly the remote-locked job, untouched.
    remaining = files_under(qdir)
    assert sorted(remaining) == sorted(
        p
        for j in jobs
        if j["active_host"] is not None
        for p in (j["queue_file"], j["data_file"], f"active/{j['jobid']}")
    )
    for jobid in locked:
        lock = (qdir / "active" / jobid).read_text()
        assert lock == "otherhost.example\n4242\n"


def test_priority_order_in_the_plain_fixture(fixtures: tuple[Path, dict[str, Any]]) -> None:
    root, _expected = fixtures
    queue = DirQueue(root / "plain")
    order = []
    while (job := queue.pickup_queued_job()) is not None:
        order.append((job.priority, job.metadata))
        job.finish()
    assert order == [
        (0, {"source": "sub"}),
        (10, {"empty": "yes"}),
        (50, {"color": "blue", "with space": "a: b: c"}),
        (50, {"key=with=equals": "x=y", "name": "Zoë 東京"}),
        (50, {"source": "file"}),
        (50, {}),
        (90, {"kind": "binary"}),
    ]


@pytest.mark.parametrize("name", QUEUES)
def test_finishing_a_fixture_job_removes_its_files_and_lock(
    fixtures: tuple[Path, dict[str, Any]], name: str
) -> None:
    root, expected = fixtures
    qdir = root / name
    first = sorted(j["jobid"] for j in expected[name]["jobs"] if j["active_host"] is None)[0]
    (exp,) = [j for j in expected[name]["jobs"] if j["jobid"] == first]
    before = set(files_under(qdir))
    job = DirQueue(qdir).pickup_queued_job()
    assert job is not None
    assert job.jobid == first
    assert (qdir / "active" / first).is_file()
    job.finish()
    gone = before - set(files_under(qdir))
    assert gone == {exp["queue_file"], exp["data_file"]}
    assert not (qdir / "active" / first).exists()
    assert set(files_under(qdir)) == before - gone


def test_returning_a_fixture_job_leaves_it_as_the_perl_module_wrote_it(
    fixtures: tuple[Path, dict[str, Any]],
) -> None:
    root, _expected = fixtures
    qdir = root / "fanout"
    before = {p: (qdir / p).read_bytes() for p in files_under(qdir)}
    queue = DirQueue(qdir)
    job = queue.pickup_queued_job()
    assert job is not None
    job.return_to_queue()
    assert {p: (qdir / p).read_bytes() for p in files_under(qdir)} == before


def test_python_jobs_join_a_perl_queue_in_order(fixtures: tuple[Path, dict[str, Any]]) -> None:
    root, _expected = fixtures
    qdir = root / "plain"
    queue = DirQueue(qdir)
    urgent = queue.enqueue_string("from python", {"lang": "py"}, priority=5)
    late = queue.enqueue_string("from python, last", priority=95)
    order = []
    fresh = DirQueue(qdir)
    while (job := fresh.pickup_queued_job()) is not None:
        order.append(job.jobid)
        job.finish()
    assert order[1] == urgent  # After the Perl job of priority 0.
    assert order[-1] == late
    assert len(order) == 9
    assert files_under(qdir / "tmp") == []
