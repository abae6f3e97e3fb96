"""Stop reasons are an enum that still reads, compares and serialises as the old words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dirqueue import DirQueue, StopReason, Worker, WorkerReport

pytestmark = pytest.mark.timeout(30)


def test_stop_reasons_are_the_words_of_the_summary() -> None:
    assert [r.value for r in StopReason] == [
        "queue empty", "njobs reached", "idle timeout", "signal SIGTERM", "signal SIGINT",
        "signal", "requested", "parent gone", "let go",
    ]
    assert StopReason.QUEUE_EMPTY == "queue empty"
    assert f"{StopReason.IDLE_TIMEOUT}" == "idle timeout"
    report = WorkerReport(stop_reason=StopReason.NJOBS_REACHED)
    assert json.loads(json.dumps(report.as_dict()))["stop_reason"] == "njobs reached"


def test_a_worker_reports_its_reason_as_an_enum_member(tmp_path: Path) -> None:
    worker = Worker(DirQueue(tmp_path / "q", create=True), lambda job: None, until_empty=True)
    report = worker.run()
    assert report.stop_reason is StopReason.QUEUE_EMPTY
    worker = Worker(DirQueue(tmp_path / "q"), lambda job: None)
    worker.request_stop()
    assert worker.run().stop_reason is StopReason.REQUESTED
