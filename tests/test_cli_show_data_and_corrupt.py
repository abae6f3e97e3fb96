"""dq show --data (exact bytes when piped, escaped on a terminal, from wherever the job
is) and dq list --corrupt (what corrupt/ holds, and why), as real processes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, Job, Worker

pytestmark = pytest.mark.timeout(60)

DQ = str(Path(sys.executable).parent / "dq")
ENV = {k: v for k, v in os.environ.items() if k != "DQ_DIR"}
#: Bytes that are no text at all, and an escape sequence that would recolour a terminal.
NASTY = b"caf\xc3\xa9 \x1b[31mred\x00\xff\nsecond line"


def dq(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([DQ, *args], capture_output=True, timeout=30, cwd=cwd, check=False,
                          env=ENV)


def on_a_terminal(*args: str, cwd: Path) -> bytes:
    """What ``dq ARGS`` writes to standard output when that is a terminal (a pty)."""
    main, sub = os.openpty()
    try:
        proc = subprocess.Popen([DQ, *args], stdout=sub, stderr=subprocess.PIPE, cwd=cwd,
                                env=ENV)
        os.close(sub)
        sub = -1
        chunks = []
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, "dq wrote nothing to its terminal"
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other end is closed.
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        proc.stderr.close()
        return b"".join(chunks)
    finally:
        os.close(main)
        if sub != -1:
            os.close(sub)


def boom(job: Job) -> None:
    raise ValueError("no")


def test_show_data_piped_is_the_exact_bytes_wherever_the_job_is(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    big = os.urandom(1 << 20)
    queued = q.enqueue_string(big)
    deferred = q.enqueue_string(NASTY, delay=3600)
    failed = q.enqueue_string(NASTY + b"!", priority=0)
    Worker(q, boom, max_attempts=1).run_once()
    for jobid, data in ((queued, big), (deferred, NASTY), (failed, NASTY + b"!")):
        result = dq("show", "--dir", "q", "--data", jobid, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (0, b""), result.stderr
        assert result.stdout == data


def test_show_data_on_a_terminal_shows_controls_as_escapes(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string(NASTY)
    shown = on_a_terminal("show", "--dir", "q", "--data", jobid, cwd=tmp_path)
    assert b"\x1b" not in shown
    assert b"\x00" not in shown
    # Newlines kept (the pty writes them as CRLF), a last one added; é kept, the stray
    # byte as U+FFFD.
    assert shown == "café \\x1b[31mred\\x00\ufffd\r\nsecond line\r\n".encode()


def test_show_data_is_refused_with_json_and_for_no_such_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    both = dq("show", "--dir", "q", "--data", "--json", jobid, cwd=tmp_path)
    assert both.returncode == 2
    assert b"not allowed with" in both.stderr
    q.cancel(jobid)
    gone = dq("show", "--dir", "q", "--data", jobid, cwd=tmp_path)
    assert (gone.returncode, gone.stdout) == (1, b"")
    assert f"no job {jobid}".encode() in gone.stderr


def test_list_corrupt_shows_what_was_moved_aside_and_why(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    empty = dq("list", "--dir", "q", "--corrupt", cwd=tmp_path)
    assert empty.stdout == b"no corrupt jobs in q\n"
    jobid = q.enqueue_string("x", {"k": "v"})
    os.unlink(q.layout.data_path(jobid))
    assert q.pickup_queued_job() is None  # Moved aside, with a warning.
    (tmp_path / "q" / "corrupt" / "stray.lock").write_text("?")
    listed = dq("list", "--dir", "q", "--corrupt", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["name", "moved", "at", "moved", "by", "reason"]
    assert lines[1].startswith(jobid)
    assert lines[1].endswith("has a control file but no data file")
    assert lines[2].startswith("stray.lock")
    assert lines[2].endswith("(no readable .reason file)")
    assert lines[3].startswith("2 in q/corrupt")
    (entry, stray) = json.loads(dq("list", "--dir", "q", "--corrupt", "--json",
                                   cwd=tmp_path).stdout)
    assert entry["id"] == jobid
    assert entry["from"] == q.layout.queue_path(jobid)  # As the mover named it.
    assert entry["control"] == f"q/corrupt/{jobid}"
    assert entry["data"] is None
    assert entry["reason_file"] == f"q/corrupt/{jobid}.reason"
    assert entry["moved_by"].endswith(f"pid {os.getpid()}")
    assert stray["reason"] == ""
    counted = dq("list", "--dir", "q", "--corrupt", "--count", cwd=tmp_path)
    assert counted.stdout == b"2\n"
    both = dq("list", "--dir", "q", "--corrupt", "--failed", cwd=tmp_path)
    assert both.returncode == 2
