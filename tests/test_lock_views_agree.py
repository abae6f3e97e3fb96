"""``dq list``, ``dq stats``, pickup and ``dq fsck`` agree on every kind of lock (issue 9).

What a user checks: a job that ``dq list`` calls *stale* is taken by the next worker,
and one it calls *active* is not; ``dq stats`` counts the same; ``dq fsck`` reports a
dead lock exactly where the one stale-lock rule (:func:`dirqueue._judge.judge`) says a
repair removes it, and a Perl worker's lock on another host is never touched from here.
Each kind of lock a queue can hold is planted in turn by hand, as the worker that left
it would have written it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from _helpers import files_under, recorded_logs
from dirqueue import DirQueue, Job, list_jobs, queue_stats
from dirqueue._format import format_lock
from dirqueue._identity import this_process
from dirqueue._judge import Verdict, judge_lock
from dirqueue.repair import FindingKind
from dirqueue.stats import waiting_job_ids

pytestmark = pytest.mark.timeout(30)

LIFETIME = 60.0
FRESH = 0.0
OLD = 2 * LIFETIME  # Well past the lifetime, and past any grace (forced to 0 here).
HOST = socket.gethostname()


#: Plants a lock at the path given; the int is the pid of a process that has exited.
Planter = Callable[[Path, int], None]


def _write(content: Callable[[int], bytes]) -> Planter:
    def plant(path: Path, dead_pid: int) -> None:
        path.write_bytes(content(dead_pid))

    return plant


def _garbage(path: Path, _dead_pid: int) -> None:
    # Binary junk, and no permission to read it (root reads it anyway: junk either way).
    path.write_bytes(b"\xff\xfe\x00\x01garbage\x80\n\x02\x03\n")
    path.chmod(0)


def _fifo(path: Path, _dead_pid: int) -> None:
    os.mkfifo(path)


def _directory(path: Path, _dead_pid: int) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"something")


def _local(pid: int) -> bytes:
    """A Perl worker's lock on this host: two lines, no heartbeat promise."""
    return f"{HOST}\n{pid}\n".encode()


def _dirqueue_lock(pid: int, start: int | None) -> bytes:
    """A dirqueue worker's lock on this host, with its owner line and heartbeat."""
    me = this_process()
    return format_lock(HOST, pid, True, boot=me.boot, pidns=me.pidns, start=start)


@dataclass(frozen=True)
class Kind:
    """A kind of lock, and what every view must make of it."""

    id: str
    plant: Planter
    age: float
    verdict: Verdict
    #: True if the next pickup breaks the lock and takes the job ("stale" in dq list).
    taken: bool
    #: What fsck reports about the lock (None: nothing, the lock is left alone).
    finding: FindingKind | None


_OTHER_HOST_HEARTBEAT = b"otherhost.example\n4242\nheartbeat\n"
_DEAD_LOCK = FindingKind.DEAD_LOCK
_NOT_A_FILE = FindingKind.NOT_A_FILE
_ME = os.getpid()
#: A dead owner is proven only with /proc (boot id and pid namespace).
_needs_proc = pytest.mark.skipif(
    this_process().boot is None or this_process().pidns is None,
    reason="no /proc: a dirqueue lock's owner cannot be proven dead here",
)

KINDS = [
    Kind("fresh-live-local", _write(lambda _: _local(_ME)), FRESH, Verdict.HELD, False, None),
    Kind("fresh-dead-local", _write(_local), FRESH, Verdict.DEAD, False, _DEAD_LOCK),
    Kind("old-dead-local", _write(_local), OLD, Verdict.STALE, True, _DEAD_LOCK),
    # The Perl rule: the owner is alive, so however old, its lock is kept.
    Kind(
        "old-live-local-no-heartbeat",
        _write(lambda _: _local(_ME)), OLD, Verdict.HELD, False, None,
    ),
    Kind(
        "fresh-dirqueue-lock-of-this-process",
        _write(lambda _: _dirqueue_lock(_ME, this_process().start)),
        FRESH, Verdict.HELD, False, None,
    ),
    # dirqueue's owner line proves the death (this boot and pid namespace, pid gone):
    # the next pickup breaks the lock at once, without waiting for the lifetime.
    Kind(
        "fresh-dirqueue-lock-of-a-dead-local-worker",
        _write(lambda dead: _dirqueue_lock(dead, 1)), FRESH, Verdict.DEAD, True, _DEAD_LOCK,
    ),
    Kind(
        "fresh-heartbeat-other-host",
        _write(lambda _: _OTHER_HOST_HEARTBEAT), FRESH, Verdict.HELD, False, None,
    ),
    Kind(
        "quiet-heartbeat-other-host",
        _write(lambda _: _OTHER_HOST_HEARTBEAT), OLD, Verdict.STALE, True, _DEAD_LOCK,
    ),
    # A Perl worker on another host: its owner cannot be seen from here and it
    # promised no heartbeat. Only an operator frees it.
    Kind(
        "old-perl-lock-other-host",
        _write(lambda _: b"otherhost.example\n4242\n"), OLD, Verdict.FOREIGN, False, None,
    ),
    Kind("old-empty-lock", _write(lambda _: b""), OLD, Verdict.STALE, True, _DEAD_LOCK),
    Kind("old-garbage-lock", _garbage, OLD, Verdict.STALE, True, _DEAD_LOCK),
    Kind("old-fifo", _fifo, OLD, Verdict.NOT_A_LOCK, True, _NOT_A_FILE),
    Kind("old-directory", _directory, OLD, Verdict.NOT_A_LOCK, True, _NOT_A_FILE),
    Kind("fresh-directory", _directory, FRESH, Verdict.NOT_A_LOCK, False, _NOT_A_FILE),
]
EACH_KIND = pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, id=k.id, marks=[_needs_proc] if "dirqueue-lock-of-a-dead" in k.id else [])
        for k in KINDS
    ],
)


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickup breaks a stale lock at once: the random grace is always its least."""
    monkeypatch.setattr("dirqueue._lock.random.uniform", lambda lo, hi: lo)


def _queue_with_lock(qdir: Path, kind: Kind, dead_pid: int) -> tuple[DirQueue, str, Path]:
    q = DirQueue(qdir, active_file_lifetime=LIFETIME)
    jobid = q.enqueue_string("the payload", {"k": "v"})
    lock = qdir / "active" / jobid
    kind.plant(lock, dead_pid)
    then = time.time() - kind.age
    os.utime(lock, (then, then), follow_symlinks=False)
    return q, jobid, lock


def _snapshot(lock: Path) -> tuple[int, int, int]:
    st = lock.lstat()
    return st.st_ino, st.st_mode, st.st_mtime_ns


def _pickup(q: DirQueue) -> tuple[Job | None, list[str]]:
    with recorded_logs() as caught:
        job = q.pickup_queued_job()
    return job, list(caught)


@EACH_KIND
def test_list_says_stale_exactly_when_the_next_pickup_takes_the_job(
    tmp_path: Path, kind: Kind, dead_pid: int
) -> None:
    q, jobid, lock = _queue_with_lock(tmp_path / "q", kind, dead_pid)
    judged = judge_lock(q.config, jobid)
    assert judged is not None
    assert judged.verdict is kind.verdict, judged.reason
    assert judged.breakable is kind.taken

    (info,) = list_jobs(q)
    assert info.job.jobid == jobid
    assert info.state == ("stale" if kind.taken else "active")  # Never "queued".
    stats = queue_stats(q)
    assert (stats.queued, stats.active, stats.stale) == (0, int(not kind.taken), int(kind.taken))
    assert stats.oldest_waiting_age is None
    assert waiting_job_ids(q) == []

    before = _snapshot(lock)
    job, messages = _pickup(q)
    if not kind.taken:
        assert job is None
        assert messages == []
        assert _snapshot(lock) == before  # Not broken, not touched.
        return
    assert job is not None
    assert [m for m in messages if "broke stale lock" in m and jobid in m] == messages
    assert len(messages) == 1
    assert job.jobid == jobid
    assert job.get_data() == b"the payload"
    job.finish()
    assert os.listdir(q.layout.active_dir) == []
    assert files_under(q.layout.tmp_dir) == []
    assert files_under(q.layout.queue_dir) == []


@EACH_KIND
def test_fsck_reports_a_dead_lock_exactly_where_the_judge_says_removable(
    tmp_path: Path, kind: Kind, dead_pid: int
) -> None:
    q, jobid, lock = _queue_with_lock(tmp_path / "q", kind, dead_pid)
    judged = judge_lock(q.config, jobid)
    assert judged is not None
    before = _snapshot(lock)

    # min_age=0: however eager the operator, a held or foreign lock is never "dead".
    report = q.fsck(min_age=0)
    assert report.jobs_checked == 1
    found = [(f.kind, f.path) for f in report.findings]
    expected = [] if kind.finding is None else [(kind.finding, str(lock))]
    assert found == expected
    assert (kind.finding is FindingKind.DEAD_LOCK) is judged.removable
    assert _snapshot(lock) == before  # fsck changes nothing.


@EACH_KIND
def test_repair_frees_the_job_exactly_where_fsck_said_so(
    tmp_path: Path, kind: Kind, dead_pid: int
) -> None:
    q, jobid, lock = _queue_with_lock(tmp_path / "q", kind, dead_pid)
    before = _snapshot(lock)
    report = q.repair(min_age=0)
    assert [(f.kind, f.fixed) for f in report.findings] == (
        [] if kind.finding is None else [(kind.finding, True)]
    )
    if kind.finding is None:
        # Held, or a Perl worker's on another host (FOREIGN): left exactly as it was.
        assert _snapshot(lock) == before
        assert [i.state for i in list_jobs(q)] == ["active"]
        assert _pickup(q) == (None, [])
        return
    assert not os.path.lexists(lock)
    (info,) = list_jobs(q)
    assert info.state == "queued"
    assert waiting_job_ids(q) == [jobid]
    job, messages = _pickup(q)
    assert messages == []
    assert job is not None
    assert job.jobid == jobid
    job.finish()
    # Something that was not a lock is kept for the operator in corrupt/, never deleted;
    # a lock file is simply removed.
    assert os.path.lexists(q.layout.corrupt_path(jobid + ".lock")) is (
        kind.verdict is Verdict.NOT_A_LOCK
    )
