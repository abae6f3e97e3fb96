"""The failed-job store: moving aside, listing, requeueing and purging."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue, FailedStore, Job, NoSuchFailedJobError, Outcome, Worker
from dirqueue.failed import ATTEMPTS_KEY, attempts_of, record_attempts


def fail_one(q: DirQueue, data: str = "payload", meta: dict[str, str] | None = None) -> str:
    jobid = q.enqueue_string(data, meta)

    def boom(job: Job) -> None:
        raise RuntimeError("disk on fire")

    result = Worker(q, boom, max_attempts=1).run_once()
    assert result.outcome is Outcome.FAILED
    return jobid


def test_failed_job_keeps_data_metadata_and_error_outside_the_queue(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = fail_one(q, "data!", {"owner": "bob"})
    entry = tmp_path / "q" / "failed" / jobid
    assert sorted(os.listdir(entry)) == ["control", "data", "error.json"]
    assert (entry / "data").read_bytes() == b"data!"
    record = json.loads((entry / "error.json").read_text())
    assert record["error"] == "RuntimeError: disk on fire"
    assert record["attempts"] == 1
    assert f"{ATTEMPTS_KEY}: 1\n" in (entry / "control").read_text()
    # Gone from everything the Perl module reads.
    assert os.listdir(q.layout.queue_dir) == []
    assert os.listdir(q.layout.active_dir) == []
    assert not os.path.exists(q.layout.data_path(jobid))
    assert [f.metadata for f in FailedStore(q).jobs()] == [{"owner": "bob"}]


def test_requeue_puts_the_job_back_with_attempts_reset(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = fail_one(q, "again", {"k": "v"})
    store = FailedStore(q)
    assert store.requeue(jobid) == jobid
    assert store.count() == 0
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b"again"
    assert job.metadata == {"k": "v"}
    assert attempts_of(job.control) == 0
    job.finish()
    assert os.listdir(q.layout.failed_dir) == []


def test_requeue_of_an_unknown_job_says_so(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(NoSuchFailedJobError, match="dq list --failed"):
        FailedStore(q).requeue("50.20260101000000000000.ABCD")
    with pytest.raises(NoSuchFailedJobError, match="not a job id"):
        FailedStore(q).requeue("../etc")


def test_a_failed_job_is_requeued_only_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = fail_one(q)
    store = FailedStore(q)
    store.requeue(jobid)
    with pytest.raises(NoSuchFailedJobError):
        store.requeue(jobid)
    assert [j.jobid for j in q.jobs()] == [jobid]


def test_requeue_all_and_purge(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [fail_one(q, str(i)) for i in range(3)]
    store = FailedStore(q)
    assert sorted(store.requeue_all()) == sorted(ids)
    for _ in ids:
        job = q.pickup_queued_job()
        assert job is not None
        job.finish()
    more = [fail_one(q, str(i)) for i in range(2)]
    assert sorted(store.purge()) == sorted(more)
    assert store.count() == 0
    assert os.listdir(q.layout.failed_dir) == []


def test_purge_older_than_keeps_recent_failures(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = fail_one(q)
    store = FailedStore(q)
    assert store.purge(older_than=3600) == []
    assert store.purge(older_than=3600, now=time.time() + 7200) == [jobid]


def test_record_attempts_refuses_a_job_not_held(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    (listed,) = q.jobs()
    with pytest.raises(Exception, match="not held"):
        record_attempts(listed, 1)


def test_attempt_count_survives_a_perl_style_reader(tmp_path: Path) -> None:
    # The Perl module splits each line at ": " and keeps unknown keys as metadata;
    # the count must be a well-formed line of that shape, after the system fields.
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x", {"a": "1"})
    job = q.pickup_queued_job()
    assert job is not None
    record_attempts(job, 2)
    lines = Path(job.queue_path).read_text().splitlines()
    assert all(": " in line for line in lines)
    assert [line.split(": ", 1)[0] for line in lines] == [
        "QDFN", "QDSB", "QSTT", "QSTM", "QSHN", ATTEMPTS_KEY, "a",
    ]
    job.return_to_queue()


def test_two_processes_requeueing_at_once_requeue_the_job_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the interleaving: both requeuers have looked the job up before either
    # claims it (the claim is a rename, which only one of them can win).
    q = DirQueue(tmp_path / "q")
    jobid = fail_one(q)
    first, second = FailedStore(q), FailedStore(DirQueue(tmp_path / "q"))
    real_rename = os.rename
    second_result: list[object] = []

    def rename_with_rival(src: str, dst: str) -> None:
        if ".requeue." in dst and not second_result:
            monkeypatch.setattr(os, "rename", real_rename)
            # The rival gets in just before our claim.
            try:
                second_result.append(second.requeue(jobid))
            except NoSuchFailedJobError as err:
                second_result.append(err)
            real_rename(src, dst)  # Ours: the entry is gone by now.
            return
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_with_rival)
    with pytest.raises(NoSuchFailedJobError):
        first.requeue(jobid)
    assert second_result == [jobid]
    assert [j.jobid for j in q.jobs()] == [jobid]
    assert FailedStore(q).count() == 0
