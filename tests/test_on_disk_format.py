"""What an enqueue and a pickup leave on disk, byte for byte, as docs/format.md describes it
(so that the Perl module, and other hosts, can read it)."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

import dirqueue._enqueue
from _helpers import files_under
from dirqueue import DirQueue
from dirqueue._format import host_tag, make_job_id

JOB_ID = re.compile(r"([0-9]{2})\.([0-9]{14})([0-9]{6})\.([A-Za-z0-9+_]+)(?:\.([0-9]+)\.([0-9]+))?")
TAG_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_")


def data_rel(jobid: str) -> str:
    """docs/format.md's ``data/C1/C2/BASE`` for a job id, worked out independently."""
    if jobid[-2] in TAG_CHARS and jobid[-1] in TAG_CHARS:
        return f"data/{jobid[-2]}/{jobid[-1]}/{jobid[:-2]}"
    return f"data/0/0/{jobid}"


def test_enqueue_writes_the_name_data_file_and_control_file_of_format_md(
    qdir: Path,
) -> None:
    queue = DirQueue(qdir)
    before = time.time()
    jobid = queue.enqueue_string(b"twelve bytes", {"color": "blue", "with space": "a: b: c"}, 7)
    after = time.time()

    match = JOB_ID.fullmatch(jobid)
    assert match is not None, jobid
    pri, stamp, micro, tag, suffix_pid, _rand = match.groups()
    assert pri == "07"
    assert suffix_pid is None  # No collision, so no .PID.RAND.
    assert tag == host_tag(socket.gethostname() + str(os.getpid()))
    when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    submitted = when.timestamp() + int(micro) / 1e6
    assert before - 0.001 <= submitted <= after + 0.001

    assert files_under(qdir) == sorted([f"queue/{jobid}", data_rel(jobid)])
    assert (qdir / data_rel(jobid)).read_bytes() == b"twelve bytes"
    control = (qdir / "queue" / jobid).read_bytes()
    assert control == (
        f"QDFN: {qdir}/{data_rel(jobid)}\n"
        "QDSB: 12\n"
        f"QSTT: {int(when.timestamp())}\n"
        f"QSTM: {int(micro)}\n"
        f"QSHN: {socket.gethostname()}\n"
        "color: blue\n"
        "with space: a: b: c\n"
    ).encode()
    # Nothing half-written is left in tmp/, and nothing is locked.
    assert files_under(qdir / "tmp") == []
    assert os.listdir(qdir / "active") == []


def test_metadata_lines_keep_the_order_given(queue: DirQueue, qdir: Path) -> None:
    names = ["zeta", "alpha", "mid", "Zoë"]
    jobid = queue.enqueue_string("x", {name: str(i) for i, name in enumerate(names)})
    lines = (qdir / "queue" / jobid).read_text("utf-8").splitlines()
    assert lines[5:] == [f"{name}: {i}" for i, name in enumerate(names)]


def test_qdfn_keeps_a_relative_dir_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    queue = DirQueue("spool/rel/")
    jobid = queue.enqueue_string("x")
    control = (tmp_path / "spool/rel/queue" / jobid).read_text()
    assert control.startswith(f"QDFN: spool/rel/{data_rel(jobid)}\n")
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.get_data() == b"x"
    job.finish()


def test_qdfn_with_an_absolute_dir_with_a_trailing_slash(tmp_path: Path) -> None:
    queue = DirQueue(f"{tmp_path}/q/")
    jobid = queue.enqueue_string("x")
    control = (tmp_path / "q/queue" / jobid).read_text()
    assert control.startswith(f"QDFN: {tmp_path}/q/{data_rel(jobid)}\n")


def test_data_and_control_files_get_0666_less_umask_by_default(qdir: Path) -> None:
    old = os.umask(0o027)
    try:
        queue = DirQueue(qdir)
        jobid = queue.enqueue_string("x")
        custom = DirQueue(qdir, data_file_mode=0o600, queue_file_mode=0o640)
        other = custom.enqueue_string("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((qdir / data_rel(jobid)).stat().st_mode) == 0o640
    assert stat.S_IMODE((qdir / "queue" / jobid).stat().st_mode) == 0o640
    assert stat.S_IMODE((qdir / data_rel(other)).stat().st_mode) == 0o600
    assert stat.S_IMODE((qdir / "queue" / other).stat().st_mode) == 0o640


def test_enqueue_bumps_the_queue_directory_mtime(queue: DirQueue, qdir: Path) -> None:
    queue.enqueue_string("first")
    os.utime(qdir / "queue", (1_000_000_000, 1_000_000_000))
    queue.enqueue_string("second")
    assert abs((qdir / "queue").stat().st_mtime - time.time()) < 5


@pytest.mark.parametrize(("heartbeat", "extra"), [(True, "heartbeat\n"), (False, "")])
def test_pickup_writes_a_lock_naming_host_and_pid(
    qdir: Path, heartbeat: bool, extra: str
) -> None:
    # IPC::DirQueue reads the first two lines; a third promises a heartbeat, and the
    # last tells who the owner is beyond host and pid (boot, pid namespace, start).
    queue = DirQueue(qdir, lock_heartbeat=heartbeat)
    jobid = queue.enqueue_string("x")
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.is_active
    lock = qdir / "active" / jobid
    *lines, owner = lock.read_text().splitlines(keepends=True)
    assert "".join(lines) == f"{socket.gethostname()}\n{os.getpid()}\n{extra}"
    assert re.fullmatch(r"owner boot=[0-9a-f-]{36} pidns=\d+ start=\d+\n", owner), owner
    assert files_under(qdir / "tmp") == []  # The tmp lock was unlinked after linking.
    job.finish()
    assert files_under(qdir) == []


def test_return_to_queue_removes_only_the_lock(queue: DirQueue, qdir: Path) -> None:
    jobid = queue.enqueue_string("x")
    job = queue.pickup_queued_job()
    assert job is not None
    job.return_to_queue()
    assert files_under(qdir) == sorted([f"queue/{jobid}", data_rel(jobid)])
    os.utime(qdir / "queue", (1_000_000_000, 1_000_000_000))
    job = queue.pickup_queued_job()
    assert job is not None
    job.return_to_queue()
    # Returning wakes waiters, like an enqueue.
    assert abs((qdir / "queue").stat().st_mtime - time.time()) < 5


def test_a_name_collision_gets_a_pid_and_random_suffix(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_ns = time.time_ns()
    real = make_job_id

    def frozen_clock_make_job_id(*args: object, **kwargs: object) -> tuple[str, int, int]:
        if kwargs.get("collision_suffix") is None:
            kwargs["now_ns"] = frozen_ns  # Every first try makes the same name.
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dirqueue._enqueue, "make_job_id", frozen_clock_make_job_id)
    first = queue.enqueue_string("first")
    second = queue.enqueue_string("second")
    third = queue.enqueue_string("third")
    assert JOB_ID.fullmatch(first) is not None
    assert first == real(50, socket.gethostname(), os.getpid(), now_ns=frozen_ns)[0]
    for renamed in (second, third):
        match = JOB_ID.fullmatch(renamed)
        assert match is not None, renamed
        assert match.group(5) == str(os.getpid())
        assert 0 <= int(match.group(6)) <= 65535
    assert len({first, second, third}) == 3
    jobids = (first, second, third)
    expected = [f"queue/{j}" for j in jobids] + [data_rel(j) for j in jobids]
    assert files_under(qdir) == sorted(expected)
    got = {}
    while (job := queue.pickup_queued_job()) is not None:
        got[job.jobid] = job.get_data()
        job.finish()
    assert got == {first: b"first", second: b"second", third: b"third"}


def test_a_collision_in_queue_but_not_data_is_also_renamed(
    queue: DirQueue, qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control file already holding the name (say, left by a crashed writer whose data
    was cleaned up) must not be overwritten."""
    frozen_ns = time.time_ns()
    real = make_job_id

    def frozen_clock_make_job_id(*args: object, **kwargs: object) -> tuple[str, int, int]:
        if kwargs.get("collision_suffix") is None:
            kwargs["now_ns"] = frozen_ns
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dirqueue._enqueue, "make_job_id", frozen_clock_make_job_id)
    taken = real(50, socket.gethostname(), os.getpid(), now_ns=frozen_ns)[0]
    (qdir / "queue").mkdir(parents=True)
    squatter = qdir / "queue" / taken
    squatter.write_bytes(b"not ours")
    jobid = queue.enqueue_string("mine")
    assert jobid != taken
    assert squatter.read_bytes() == b"not ours"
    assert not (qdir / data_rel(taken)).exists()  # The first try's data was removed.
    assert (qdir / data_rel(jobid)).read_bytes() == b"mine"


@pytest.mark.timeout(60)
def test_threads_enqueueing_at_the_same_instant_all_get_distinct_names(
    qdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads share a pid, so with a frozen clock every first try makes the same name:
    every enqueue but one must go through the collision path, and none may overwrite
    another's data or control file."""
    frozen_ns = time.time_ns()
    real = make_job_id

    def frozen_clock_make_job_id(*args: object, **kwargs: object) -> tuple[str, int, int]:
        if kwargs.get("collision_suffix") is None:
            kwargs["now_ns"] = frozen_ns
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dirqueue._enqueue, "make_job_id", frozen_clock_make_job_id)
    queue = DirQueue(qdir, durable=False)
    start = threading.Barrier(6, timeout=10)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def enqueue_many(thread: int) -> None:
        try:
            start.wait()
            results[thread] = [queue.enqueue_string(f"{thread}:{i}") for i in range(40)]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=enqueue_many, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not errors, errors
    jobids = [jobid for ids in results.values() for jobid in ids]
    assert len(jobids) == len(set(jobids)) == 240
    got = {}
    while (job := queue.pickup_queued_job()) is not None:
        got[job.jobid] = job.get_data().decode()
        job.finish()
    assert got == {jobid: f"{t}:{i}" for t, ids in results.items() for i, jobid in enumerate(ids)}
    assert files_under(qdir) == []
