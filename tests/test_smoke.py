"""A first round trip through the public API."""

from pathlib import Path

from dirqueue import DirQueue


def test_enqueue_then_pickup_round_trip(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("hello", {"k": "v"})
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b"hello"
    assert job.metadata == {"k": "v"}
    job.finish()
    assert q.pickup_queued_job() is None
    assert list(q.jobs()) == []
