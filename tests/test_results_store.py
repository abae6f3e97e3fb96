"""The engine's results store (dirqueue._results): answers written whole through
descriptors that follow no symlink, read back by kind, expired by their mtime, swept by
fsck --repair, and waited for by inotify (local) or by looking at one file (NFS)."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _helpers import let_others_reach
from dirqueue import DirQueue, Worker
from dirqueue import _results as results
from dirqueue._findings import FindingKind
from dirqueue._layout import Layout
from dirqueue._results import (
    ResultWaiter,
    UnstorableResultError,
    count_results,
    failure_record,
    read_result,
    remove_expired,
    success_record,
    write_result,
)
from dirqueue.errors import QueueIOError

pytestmark = pytest.mark.timeout(60)
JOB = "50.20261207210000000001.AAAAA"


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    queue = DirQueue(tmp_path / "q")
    queue.create()
    return queue


@pytest.mark.parametrize("value", [b"\x00\xffbytes", "text\n", {"a": [1, 2.5, None, True]}, None])
def test_an_answer_reads_back_as_it_was_returned(q: DirQueue, value: object) -> None:
    write_result(q.config, success_record(q.config, JOB, value, 1, 60))
    record = read_result(q.config, JOB)
    assert record is not None
    assert record.status == "done"
    assert record.decoded() == value
    assert os.listdir(q.layout.tmp_dir) == []  # Renamed away: nothing left in tmp/.


@pytest.mark.parametrize("value", [
    b"\x00\xff", "t\u00e9xt \"quoted\"\n", {"a": [1, 2.5, None, True], "\u00e9": "x"},
    None, 0, -1.5e300, [], {},
])
def test_a_done_answers_file_is_the_json_of_its_record(q: DirQueue, value: object) -> None:
    # _payload lays a done answer out by hand, for speed: it must stay the very text
    # json.dumps gives (readers on older versions parse it), failures included.
    done = success_record(q.config, JOB, value, 3, 60)
    failed = failure_record(q.config, JOB, ValueError("no\n\u00e9"), "no", "tb", 2, 60)
    for record in (done, failed):
        write_result(q.config, record)
        with open(q.layout.result_path(JOB), "rb") as fh:
            assert fh.read() == json.dumps(record.as_dict(), allow_nan=False).encode()
        assert read_result(q.config, JOB) == record


def test_what_cannot_be_kept_is_refused_with_what_to_return(q: DirQueue) -> None:
    with pytest.raises(UnstorableResultError, match="return bytes, str or a JSON value"):
        success_record(q.config, JOB, {1, 2}, 1, 60)
    with pytest.raises(TypeError):
        success_record(q.config, JOB, float("nan"), 1, 60)


def test_a_failure_keeps_its_type_message_and_traceback(q: DirQueue) -> None:
    try:
        raise KeyError("gone")
    except KeyError as err:
        write_result(q.config, failure_record(q.config, JOB, err, str(err), "Traceback...", 2, 60))
    record = read_result(q.config, JOB)
    assert record is not None
    assert (record.status, record.error_type, record.traceback, record.attempt) == (
        "failed", "KeyError", "Traceback...", 2,
    )


def test_a_symlinked_results_directory_is_never_written_through(
    q: DirQueue, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, q.layout.results_dir)
    with pytest.raises(QueueIOError):
        write_result(q.config, success_record(q.config, JOB, "x", 1, 60))
    assert os.listdir(elsewhere) == []
    assert os.listdir(q.layout.tmp_dir) == []
    with pytest.raises(QueueIOError):
        read_result(q.config, JOB)


def test_answers_expire_by_their_mtime_and_fsck_repair_sweeps_them(q: DirQueue) -> None:
    write_result(q.config, success_record(q.config, JOB, "old", 1, 60))
    kept = JOB.replace("1.AAAAA", "2.AAAAA")
    write_result(q.config, success_record(q.config, kept, "new", 1, 3600))
    path = q.layout.result_path(JOB)
    assert os.stat(path).st_mtime == pytest.approx(time.time() + 60, abs=5)
    later = time.time() + 120
    assert read_result(q.config, JOB, now=later) is None  # Gone to readers at once.
    assert count_results(q.config, now=later) == 1
    os.utime(path, (time.time() - 1, time.time() - 1))  # As if its minute had passed.
    report = q.fsck()
    assert [(f.kind, f.action) for f in report.findings] == [
        (FindingKind.EXPIRED_RESULT, "would remove")
    ]
    assert report.ok  # Housekeeping, not a problem.
    assert os.path.exists(path)
    report = q.repair()
    assert [(f.kind, f.action) for f in report.findings] == [
        (FindingKind.EXPIRED_RESULT, "removed")
    ]
    assert os.listdir(q.layout.results_dir) == [kept]
    assert remove_expired(q.config) == []


def test_a_waiter_wakes_by_inotify_long_before_its_poll(q: DirQueue) -> None:
    waiter = ResultWaiter(q.config)
    if not waiter.uses_inotify:
        pytest.skip("no inotify on this filesystem")
    landed = threading.Event()

    def answer() -> None:
        landed.wait(10)
        write_result(q.config, success_record(q.config, JOB, 7, 1, 60))

    writer = threading.Thread(target=answer)
    writer.start()
    try:
        started = time.monotonic()
        landed.set()
        record = waiter.wait(JOB, timeout=30, poll_interval=30)  # A poll would take 30 s.
        waited = time.monotonic() - started
    finally:
        writer.join(10)
    assert record is not None
    assert record.value == 7
    assert waited < 5


def test_without_inotify_a_waiter_looks_at_the_one_file(
    q: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results._fs, "is_local_filesystem", lambda path: False)
    waiter = ResultWaiter(q.config)
    assert not waiter.uses_inotify
    listed: list[object] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda *a: listed.append(a) or real_listdir(*a))
    assert waiter.wait(JOB, timeout=0.2, poll_interval=0.05) is None
    write_result(q.config, success_record(q.config, JOB, "seen", 1, 60))
    record = waiter.wait(JOB, timeout=5, poll_interval=0.05)
    assert record is not None
    assert record.value == "seen"
    assert listed == []  # Never a listing of results/.


def test_a_worker_keeps_any_handlers_answer_when_asked(q: DirQueue) -> None:
    plain = q.enqueue_string("no answer wanted")
    asked = q.enqueue_string("an answer wanted", {"dq.result_ttl": "60"})
    Worker(q, lambda job: job.get_data().upper(), until_empty=True).run()
    assert read_result(q.config, plain) is None
    record = read_result(q.config, asked)
    assert record is not None
    assert record.decoded() == b"AN ANSWER WANTED"
    everything = q.enqueue_string("kept by the worker")
    Worker(q, lambda job: {"n": len(job.get_data())}, until_empty=True, keep_results=True).run()
    record = read_result(q.config, everything)
    assert record is not None
    assert record.value == {"n": 18}
    assert sorted(os.listdir(q.layout.path(Layout.RESULTS))) == sorted([asked, everything])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_reader_who_may_not_make_results_waits_by_looking(tmp_path: Path) -> None:
    """Another user, who may read the queue but not write to it, can still wait for
    an answer: without results/ to watch, it looks at the file."""
    let_others_reach(tmp_path)
    q = DirQueue(tmp_path / "q")
    q.create()  # 0755 and root's: no results/, and no right to make it.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgid(61003)
            os.setuid(61003)
            waiter = ResultWaiter(DirQueue(tmp_path / "q").config)
            code = 0 if not waiter.uses_inotify and waiter.wait(JOB, 0.1, 0.05) is None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_threads_waiter_closes_its_inotify_descriptor_when_the_thread_ends(
    q: DirQueue,
) -> None:
    write_result(q.config, success_record(q.config, JOB, 1, 1, 60))
    if not ResultWaiter(q.config).uses_inotify:
        pytest.skip("no inotify on this filesystem")
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):  # Short-lived threads, each waiting once.
        waiter = threading.Thread(
            target=lambda: ResultWaiter.for_queue(q.config).wait(JOB, 5, 1)
        )
        waiter.start()
        waiter.join(10)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_symlink_in_place_of_results_is_reported_and_counts_no_answers(
    q: DirQueue, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / JOB).write_text("{}")
    os.utime(elsewhere / JOB, (0, 0))  # "Expired": a sweep through the link would remove it.
    os.symlink(elsewhere, q.layout.results_dir)
    assert count_results(q.config) == 0
    report = q.repair()
    assert [(f.kind, f.action) for f in report.findings] == [(FindingKind.SYMLINK, "left")]
    assert os.listdir(elsewhere) == [JOB]


@pytest.mark.parametrize(
    "planted",
    [
        {"jobid": JOB, "status": "done", "kind": "bytes", "value": "not base64!"},
        {"jobid": JOB, "status": "done", "kind": "shell", "value": "rm -rf"},
        {"jobid": JOB, "status": "maybe", "kind": "json", "value": 1},
        {"jobid": JOB, "status": "failed", "error_type": ["x"]},
        {"jobid": "50.20261207210000000002.AAAAA", "status": "done", "kind": "json"},
        ["not", "an", "object"],
    ],
)
def test_a_planted_answer_that_does_not_parse_is_no_answer(q: DirQueue, planted: Any) -> None:
    os.mkdir(q.layout.results_dir)
    path = q.layout.result_path(JOB)
    Path(path).write_text(json.dumps(planted))
    os.utime(path, (time.time() + 60, time.time() + 60))
    assert read_result(q.config, JOB) is None
