"""When a job or a queue cannot be reached, dq says which file and why: not "finished
jobs leave nothing behind" for a job that is there but unreadable, not "Permission
denied: 5" (a directory descriptor) for a queue this user may not write to."""

from __future__ import annotations

import io
import os
import traceback
from pathlib import Path

import pytest

from _helpers import let_others_reach
from dirqueue import DirQueue
from dirqueue.cli import EXIT_FAILURE, main

pytestmark = pytest.mark.timeout(30)

OTHER_USER = 61013


def dq(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def dq_as_other_user(*args: str) -> tuple[int, str, str]:
    """``dq ARGS`` run in a forked child that is an unprivileged user of its own."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(OTHER_USER)
            os.setuid(OTHER_USER)
            status, out, err = dq(*args)
            os.write(write_end, f"{status}\0{out}\0{err}".encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read().decode()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    code, out, err = data.split("\0")
    return int(code), out, err


def reachable(tmp_path: Path) -> None:
    let_others_reach(tmp_path)


def test_show_on_a_corrupt_job_does_not_call_it_finished(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    Path(q.layout.queue_path(jobid)).write_text("not a control file\n")
    code, _, err = dq("show", "--dir", str(tmp_path / "q"), jobid)
    assert code == EXIT_FAILURE
    assert "finished jobs leave nothing behind" not in err
    assert f"job {jobid} is in {q.layout.queue_path(jobid)}, but it is not a valid job" in err
    assert "dq fsck" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_show_on_a_job_this_user_cannot_read_says_so(tmp_path: Path) -> None:
    reachable(tmp_path)
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    os.chmod(q.layout.queue_path(jobid), 0o600)
    code, _, err = dq_as_other_user("show", "--dir", str(tmp_path / "q"), jobid)
    assert code == EXIT_FAILURE
    assert "finished jobs leave nothing behind" not in err
    assert f"job {jobid} is in {q.layout.queue_path(jobid)}, but permission denied" in err
    assert "owner and mode" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_submit_without_write_access_names_the_queue_not_a_descriptor(
    tmp_path: Path,
) -> None:
    reachable(tmp_path)
    qdir = tmp_path / "q"
    DirQueue(qdir).enqueue_string("made by root, 0755")
    source = tmp_path / "in"
    source.write_text("x")
    source.chmod(0o644)
    code, _, err = dq_as_other_user("submit", "--dir", str(qdir), str(source))
    assert code == EXIT_FAILURE
    (line,) = err.splitlines()
    assert line.endswith(
        f"Permission denied: {qdir} (check that this user may write there: its owner,"
        " group and mode; a queue shared by several users wants a group directory, see"
        " docs/durability.md)"
    ), line
