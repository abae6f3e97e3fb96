"""Queues shared by several users: file modes, umask, and a setgid group directory.

The two-user test needs root (to become two unprivileged users in forked children)
and is skipped otherwise; the set-up it follows is the one docs/durability.md gives.
"""

from __future__ import annotations

import contextlib
import os
import stat
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _helpers import let_others_reach
from dirqueue import DirQueue
from durability_checks import assert_no_orphans

pytestmark = pytest.mark.timeout(30)

GROUP = 61000
USER_A = 61001
USER_B = 61002


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_modes_and_umask_are_honoured(tmp_path: Path) -> None:
    with umask(0o022):
        q = DirQueue(tmp_path / "q", data_file_mode=0o640, queue_file_mode=0o660)
        jobid = q.enqueue_string("x")
        job = q.pickup_queued_job()
        assert job is not None
        assert _mode(q.layout.data_path(jobid)) == 0o640
        assert _mode(q.layout.queue_path(jobid)) == 0o640 & 0o660  # 0o660 less umask 022
        assert _mode(q.layout.active_path(jobid)) == 0o640
        assert _mode(q.layout.queue_dir) == 0o755
        job.finish()
    with umask(0o002):
        q2 = DirQueue(tmp_path / "q2")
        jobid = q2.enqueue_string("x")
        assert _mode(q2.layout.data_path(jobid)) == 0o664
        assert _mode(q2.layout.queue_path(jobid)) == 0o664
        assert _mode(os.path.dirname(q2.layout.data_path(jobid))) == 0o775


def _as_user(uid: int, body: Callable[[], None]) -> int:
    """Run ``body`` in a child that is user ``uid`` in group GROUP; return its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([GROUP])
            os.setgid(uid)
            os.setuid(uid)
            os.umask(0o002)  # The group may write what this user creates.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                body()
            code = 0
        except BaseException:
            traceback.print_exc()  # Reported through the exit code, and shown here.
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become two users")
def test_two_users_share_a_setgid_group_queue(tmp_path: Path) -> None:
    let_others_reach(tmp_path)
    qdir = tmp_path / "shared"
    qdir.mkdir()
    os.chown(qdir, 0, GROUP)
    qdir.chmod(0o2775)
    results = tmp_path / "results"
    results.mkdir(mode=0o777)
    results.chmod(0o777)

    def a_enqueues() -> None:
        q = DirQueue(qdir)
        for i in range(3):
            q.enqueue_string(f"from A {i}", {"by": "A"})
        q.enqueue_many(["batch A 1", "batch A 2"])

    def b_works() -> None:
        q = DirQueue(qdir)
        done = []
        for _ in range(2):
            job = q.pickup_queued_job()
            assert job is not None
            done.append(job.get_data().decode())
            job.finish()  # Removes A's files: the directories are group-writable.
        job = q.pickup_queued_job()
        assert job is not None
        job.return_to_queue()
        q.enqueue_string("from B", {"by": "B"})
        (results / "b").write_text("\n".join(done))

    def a_drains() -> None:
        q = DirQueue(qdir)
        done = []
        while (job := q.pickup_queued_job()) is not None:
            done.append(job.get_data().decode())
            job.finish()
        assert q.repair(min_age=0).clean
        (results / "a").write_text("\n".join(done))

    assert _as_user(USER_A, a_enqueues) == 0
    assert _as_user(USER_B, b_works) == 0
    assert _as_user(USER_A, a_drains) == 0
    processed = (results / "b").read_text().split("\n") + (results / "a").read_text().split("\n")
    assert sorted(processed) == sorted(
        ["from A 0", "from A 1", "from A 2", "batch A 1", "batch A 2", "from B"]
    )
    q = DirQueue(qdir)
    assert_no_orphans(q)
    # Every directory either user made is in the group, setgid, and group-writable.
    for root, dirs, _ in os.walk(qdir):
        for d in dirs:
            st = os.lstat(os.path.join(root, d))
            assert st.st_gid == GROUP, os.path.join(root, d)
            assert st.st_mode & stat.S_ISGID, os.path.join(root, d)
            assert st.st_mode & 0o070 == 0o070, os.path.join(root, d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become two users")
def test_job_another_user_cannot_read_is_skipped_then_repaired(tmp_path: Path) -> None:
    let_others_reach(tmp_path)
    qdir = tmp_path / "shared"
    qdir.mkdir()
    os.chown(qdir, 0, GROUP)
    qdir.chmod(0o2775)

    def a_enqueues_privately() -> None:
        DirQueue(qdir, queue_file_mode=0o600).enqueue_string("private")
        DirQueue(qdir).enqueue_string("public")

    def b_skips_then_repairs() -> None:
        q = DirQueue(qdir)
        job = q.pickup_queued_job()
        assert job is not None  # Not stuck on the unreadable one: it took the next.
        assert job.get_data() == b"public"
        job.finish()
        assert q.pickup_queued_job() is None
        report = q.repair()
        assert [f.kind for f in report.findings] == ["unreadable-control"]
        assert report.ok
        assert q.pickup_queued_job() is None

    assert _as_user(USER_A, a_enqueues_privately) == 0
    assert _as_user(USER_B, b_skips_then_repairs) == 0
    corrupt = DirQueue(qdir).layout.corrupt_dir
    assert len([n for n in os.listdir(corrupt) if n.endswith(".reason")]) == 1
