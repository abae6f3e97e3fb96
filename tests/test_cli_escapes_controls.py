"""Hostile text in a queue never reaches the operator's terminal raw.

Metadata, host names, error text and file names are whatever a submitter (or a Perl
producer, or anyone who can write to the queue) made them. Every human-readable line
``dq`` prints shows their control characters as visible escapes; ``--json`` keeps
the exact values.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dirqueue import DirQueue, Job, Worker
from dirqueue.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, escape_controls
from test_cli import dq, run

pytestmark = pytest.mark.timeout(60)

#: Clears the screen, sets the terminal's title, rings the bell.
SCREEN = "\x1b[2J\x1b]0;pwned\x07"
SCREEN_SHOWN = r"\x1b[2J\x1b]0;pwned\x07"
#: C1 CSI (ESC [ in one character) and DEL, which JSON leaves raw unless told.
C1 = "\x9b31m\x7f"
NAME = "n\u202eame"  # A right-to-left override in a metadata name.
SUBMIT_HOST = "evil\rhost"
WORKER_HOST = "w\rhost\x1b[8m"
STRAY = "bad\x1b[2Jname"
STRAY_BYTES = b"odd\xffname"  # Not UTF-8: listed as a lone surrogate.

#: What must never be written raw: C0 controls but the newline ending each line, DEL,
#: C1 controls, bidi controls, line separators, lone surrogates.
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
    "\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def assert_no_raw_controls(*texts: str) -> None:
    for text in texts:
        found = RAW.findall(text)
        assert not found, f"raw controls {found!r} in {text!r}"


def unescape(shown: str) -> str:
    """The inverse of escape_controls: proves the escaped form is unambiguous."""
    short = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return short[code] if code in short else chr(int(code[1:], 16))

    return re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[\\tnr])", one, shown)


# -- the escaping function -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", r"\x1b[2J"),
        ("a\rb", r"a\rb"),
        ("a\nb", r"a\nb"),
        ("a\tb", r"a\tb"),
        ("\b\x00\x07", r"\x08\x00\x07"),
        ("\x7f", r"\x7f"),
        ("\x80\x9b\x9f", r"\x80\x9b\x9f"),
        ("\u202aA\u202e", r"\u202aA\u202e"),
        ("\u2066\u2069", r"\u2066\u2069"),
        ("\u200f\u2028", r"\u200f\u2028"),
        ("\udcff", r"\udcff"),
        ("back\\slash", r"back\\slash"),
        (r"\x1b", r"\\x1b"),  # Already looks escaped: the backslash is doubled.
        ("Zürich, 東京, naïve ½", "Zürich, 東京, naïve ½"),
    ],
)
def test_escape_controls_shows_each_control_visibly(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


@given(st.text())
def test_escaped_text_has_no_controls_and_reads_back_exactly(text: str) -> None:
    shown = escape_controls(text)
    assert not RAW.search(shown)
    assert "\n" not in shown
    assert unescape(shown) == text


# -- every listing, on a queue full of hostile text ----------------------------------


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, str]:
    """A queue with hostile metadata, host names, error text and file names.

    Holds one failed job, one job locked by a live worker (this process) whose lock
    names a hostile host, and two stray files in queue/. Returns it and the locked id.
    """
    qdir = tmp_path / "q"
    q = DirQueue(qdir)
    q.enqueue_string("will fail", {"v": SCREEN, NAME: "x", "c1": C1})

    def fail(job: Job) -> None:
        raise ValueError(job.metadata["v"])

    Worker(q, fail, max_attempts=1, until_empty=True).run()
    jobid = q.enqueue_string("locked", {"v": SCREEN, NAME: "x", "c1": C1})
    control = Path(q.layout.queue_path(jobid))
    text = control.read_text()
    control.write_text(re.sub(r"(?m)^QSHN: .*$", f"QSHN: {SUBMIT_HOST}", text))
    Path(q.layout.active_path(jobid)).write_text(f"{WORKER_HOST}\n{os.getpid()}\n")
    (qdir / "queue" / STRAY).write_text("not a control file\n")
    fd = os.open(os.path.join(os.fsencode(qdir / "queue"), STRAY_BYTES), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    return qdir, jobid


def test_dq_list_escapes_metadata_and_hosts(hostile: tuple[Path, str]) -> None:
    qdir, jobid = hostile
    code, out, err = dq("list", "--dir", str(qdir))
    assert code == EXIT_OK, err
    assert_no_raw_controls(out, err)
    (row,) = [line for line in out.splitlines() if line.startswith(jobid)]
    assert f"v={SCREEN_SHOWN} n\\u202eame=" in row  # Clipped after that.
    assert f"w\\rhost\\x1b[8m:{os.getpid()}" in row


def test_dq_list_failed_escapes_the_error_text(hostile: tuple[Path, str]) -> None:
    qdir, _ = hostile
    code, out, err = dq("list", "--dir", str(qdir), "--failed")
    assert code == EXIT_OK, err
    assert_no_raw_controls(out, err)
    assert f"ValueError: {SCREEN_SHOWN}" in out
    assert out.splitlines()[-1].startswith("1 failed")


def test_dq_stats_of_a_hostile_queue_is_plain(hostile: tuple[Path, str]) -> None:
    qdir, _ = hostile
    code, out, err = dq("stats", "--dir", str(qdir))
    assert code == EXIT_OK, err
    assert_no_raw_controls(out, err)
    assert out.splitlines()[1].split() == ["active", "1"]


@pytest.mark.parametrize("repair", [False, True])
def test_dq_fsck_escapes_hostile_file_names(hostile: tuple[Path, str], repair: bool) -> None:
    qdir, _ = hostile
    code, out, err = dq("fsck", "--dir", str(qdir), *(["--repair"] if repair else []))
    assert code == EXIT_OK, err
    assert_no_raw_controls(out, err)
    assert r"queue/bad\x1b[2Jname" in out
    assert r"queue/odd\udcffname" in out
    assert (qdir / "queue" / STRAY).exists()  # A stray is reported, never touched.


def test_json_keeps_the_exact_values(hostile: tuple[Path, str]) -> None:
    qdir, jobid = hostile
    code, out, _ = dq("list", "--dir", str(qdir), "--json")
    assert code == EXIT_OK
    assert_no_raw_controls(out)
    (job,) = json.loads(out)
    assert job["id"] == jobid
    assert job["metadata"] == {"v": SCREEN, NAME: "x", "c1": C1}
    assert job["submitted_host"] == SUBMIT_HOST
    assert job["worker"] == {"host": WORKER_HOST, "pid": os.getpid()}

    code, out, _ = dq("list", "--dir", str(qdir), "--failed", "--json")
    assert_no_raw_controls(out)
    (failed,) = json.loads(out)
    assert failed["metadata"] == {"v": SCREEN, NAME: "x", "c1": C1}
    assert failed["error"] == f"ValueError: {SCREEN}"

    code, out, _ = dq("fsck", "--dir", str(qdir), "--json")
    assert_no_raw_controls(out)
    paths = {os.path.basename(f["path"]) for f in json.loads(out)["findings"]}
    assert paths == {STRAY, os.fsdecode(STRAY_BYTES)}


def test_real_dq_list_and_dq_list_tool_write_no_raw_bytes(hostile: tuple[Path, str]) -> None:
    qdir, jobid = hostile
    for argv in (
        ("dq", "list", "--dir", str(qdir)),
        ("dq-list", "--dir", str(qdir)),
        ("dq", "list", "--failed", "--dir", str(qdir)),
        ("dq", "stats", "--dir", str(qdir)),
        ("dq", "fsck", "--dir", str(qdir)),
        ("dq", "list", "--json", "--dir", str(qdir)),
    ):
        result = run(*argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert_no_raw_controls(result.stdout, result.stderr)
    listed = run("dq-list", "--dir", str(qdir)).stdout
    assert jobid in listed
    assert SCREEN_SHOWN in listed


# -- warnings and errors that quote hostile text -------------------------------------


def test_a_library_warning_is_escaped(tmp_path: Path) -> None:
    # Breaking a stale lock warns, naming the host the lock file claims. (A lock
    # from another host is stale when it promised a heartbeat and has gone quiet.)
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    lock = Path(q.layout.active_path(jobid))
    lock.write_text(f"{WORKER_HOST}\n4242\nheartbeat\n")
    then = time.time() - 7200
    os.utime(lock, (then, then))
    result = run("dq", "deque", "--dir", str(tmp_path / "q"), "--", "true")
    assert result.returncode == 0, result.stderr
    assert_no_raw_controls(result.stdout, result.stderr)
    assert f"dq deque: warning: broke stale lock on {jobid}" in result.stderr
    assert r"(worker w\rhost\x1b[8m:4242" in result.stderr


def test_error_lines_are_escaped(tmp_path: Path) -> None:
    code, out, err = dq("submit", "--dir", str(tmp_path / "q"), str(tmp_path / STRAY))
    assert code == EXIT_FAILURE
    assert_no_raw_controls(out, err)
    assert r"bad\x1b[2Jname does not exist" in err
    assert err.count("\n") == 1
    code, out, err = dq("list", "--dir", str(tmp_path), "--\x1b[2J")
    assert code == EXIT_USAGE
    assert_no_raw_controls(out, err)
    assert r"--\x1b[2J" in err
    code, out, err = dq("list", "--dir", str(tmp_path / STRAY))
    assert code == EXIT_FAILURE
    assert_no_raw_controls(out, err)
