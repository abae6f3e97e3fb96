"""The dq command line: every subcommand in-process, and each once as a real process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, FailedStore, Job, Worker
from dirqueue.cli import (
    EXIT_FAILURE,
    EXIT_JOBS_FAILED,
    EXIT_NO_JOB,
    EXIT_OK,
    EXIT_USAGE,
    main,
    parse_age,
    perl_arguments,
)

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent


def dq(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run ``dq ARGS`` in this process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(list(args), stdout=out, stderr=err)
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def run(
    *argv: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a real process (``dq``, ``dq-list``, ...) from the virtualenv."""
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        check=False,
    )


def boom(job: Job) -> None:
    raise ValueError("nope")


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    paths = []
    for i in range(3):
        p = tmp_path / f"in{i}.txt"
        p.write_text(f"line {i}\n")
        paths.append(str(p))
    return paths


# -- submit --------------------------------------------------------------------------


def test_submit_prints_one_id_per_file_with_priority_and_metadata(
    tmp_path: Path, files: list[str]
) -> None:
    q = tmp_path / "q"
    code, out, err = dq("submit", "--dir", str(q), "--priority", "7",
                        "--meta", "owner=alice", "--meta", "kind=txt", *files)
    assert code == EXIT_OK
    ids = out.split()
    assert len(ids) == 3
    assert all(i.startswith("07.") for i in ids)
    jobs = list(DirQueue(q).jobs())
    assert [j.jobid for j in jobs] == ids
    assert jobs[0].metadata == {"owner": "alice", "kind": "txt"}
    assert jobs[2].get_data() == b"line 2\n"
    assert "submitted 3 jobs" in err


def test_submit_reads_stdin_for_dash(tmp_path: Path) -> None:
    code, out, _ = dq("submit", "--dir", str(tmp_path / "q"), "-", stdin=b"from stdin")
    assert code == EXIT_OK
    (job,) = DirQueue(tmp_path / "q").jobs()
    assert job.jobid == out.strip()
    assert job.get_data() == b"from stdin"


def test_submit_of_a_missing_file_fails_before_submitting_anything(
    tmp_path: Path, files: list[str]
) -> None:
    code, out, err = dq("submit", "--dir", str(tmp_path / "q"), *files, "nope.txt")
    assert code == EXIT_FAILURE
    assert out == ""
    assert err.count("\n") == 1
    assert "nope.txt does not exist" in err
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["submit", "--dir", "q", "--priority", "100", "f"], "out of range"),
        (["submit", "--dir", "q", "--meta", "novalue", "f"], "KEY=VALUE"),
        (["submit", "f"], "--dir"),
        (["server", "--dir", "q"], "give a handler"),
        (["server", "--dir", "q", "--handler", "m:f", "--", "cat"], "not both"),
        (["deque", "--dir", "q"], "give the command"),
        (["requeue", "--dir", "q"], "--failed"),
        (["purge", "--dir", "q"], "--failed"),
        (["purge", "--dir", "q", "--failed", "--older-than", "soon"], "not an age"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q").mkdir()
    code, _, err = dq(*args)
    assert code == EXIT_USAGE
    assert problem in err
    assert err.count("\n") == 1
    assert "--help" in err


# -- list and stats ------------------------------------------------------------------


def test_list_shows_an_aligned_table(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string("x" * 10, {"n": str(i)}) for i in range(2)]
    held = q.pickup_queued_job()
    assert held is not None
    code, out, _ = dq("list", "--dir", str(tmp_path / "q"))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == [
        "job", "id", "state", "pri", "size", "age", "tries", "worker", "metadata",
    ]
    assert lines[1].startswith(ids[0])
    assert " active " in lines[1]
    assert lines[2].startswith(ids[1])
    assert " queued " in lines[2]
    assert lines[1].index("active") == lines[2].index("queued")
    assert lines[-1] == "1 queued, 1 active, 0 stale"
    held.finish()


def test_list_json_and_count(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("abc", {"k": "v"}, priority=3)
    code, out, _ = dq("list", "--dir", str(tmp_path / "q"), "--json")
    assert code == EXIT_OK
    (item,) = json.loads(out)
    assert set(item) == {
        "id", "state", "priority", "size", "submitted", "submitted_host", "worker",
        "attempts", "metadata", "note", "due",
    }
    assert (item["id"], item["state"], item["priority"], item["size"]) == (jobid, "queued", 3, 3)
    assert item["worker"] is None
    assert item["metadata"] == {"k": "v"}
    assert dq("list", "--dir", str(tmp_path / "q"), "--count")[1] == "1\n"
    assert json.loads(dq("list", "--dir", str(tmp_path / "q"), "--count", "--json")[1]) == {
        "count": 1
    }


def test_list_failed_shows_the_last_error(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    Worker(q, boom, max_attempts=1).run_once()
    code, out, _ = dq("list", "--dir", str(tmp_path / "q"), "--failed")
    assert code == EXIT_OK
    assert jobid in out
    assert "ValueError: nope" in out
    (item,) = json.loads(dq("list", "--dir", str(tmp_path / "q"), "--failed", "--json")[1])
    assert item["id"] == jobid
    assert item["attempts"] == 1
    assert item["error"] == "ValueError: nope"


def test_missing_queue_is_an_error_for_list_and_stats(tmp_path: Path) -> None:
    for command in ("list", "stats"):
        code, out, err = dq(command, "--dir", str(tmp_path / "nowhere"))
        assert code == EXIT_FAILURE
        assert out == ""
        assert "no queue at" in err
        assert "--dir" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()


def test_stats_counts_jobs_by_state(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(3):
        q.enqueue_string(str(i))
    held = q.pickup_queued_job()
    assert held is not None
    code, out, _ = dq("stats", "--dir", str(tmp_path / "q"), "--json")
    assert code == EXIT_OK
    stats = json.loads(out)
    assert {k: stats[k] for k in ("queued", "active", "stale", "failed")} == {
        "queued": 2, "active": 1, "stale": 0, "failed": 0,
    }
    assert stats["oldest_waiting_age"] >= 0
    human = dq("stats", "--dir", str(tmp_path / "q"))[1].splitlines()
    assert [line.split()[0] for line in human] == [
        "queued", "active", "stale", "failed", "deferred", "oldest",
    ]
    held.finish()


# -- deque and server ----------------------------------------------------------------


def test_deque_runs_the_command_with_the_data_path_last(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("hello", {"owner": "ann"})
    out_file = tmp_path / "out"
    script = (
        f'printf "%s %s %s " "$DQ_JOBID" "$DQ_META_OWNER" "$DQ_ATTEMPT" > {out_file};'
        f' cat "$1" >> {out_file}'
    )
    code, _, err = dq("deque", "--dir", str(tmp_path / "q"), "--", "sh", "-c", script, "sh")
    assert code == EXIT_OK, err
    assert out_file.read_text() == f"{jobid} ann 1 hello"
    assert list(q.jobs()) == []


def test_deque_with_a_failing_command_never_finishes_the_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    code, _, err = dq("deque", "--dir", str(tmp_path / "q"), "--max-attempts", "2", "false")
    assert code == EXIT_FAILURE
    assert "returned to the queue" in err
    code, _, err = dq("deque", "--dir", str(tmp_path / "q"), "--max-attempts", "2", "false")
    assert code == EXIT_FAILURE
    assert "moved to failed/" in err
    (failed,) = FailedStore(q).jobs()
    assert failed.jobid == jobid
    assert "exited 1" in failed.error


def test_deque_on_an_empty_queue_exits_3(tmp_path: Path) -> None:
    code, _, err = dq("deque", "--dir", str(tmp_path / "q"), "--create", "true")
    assert code == EXIT_NO_JOB
    assert "no job waiting" in err


def test_server_with_a_python_handler_until_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "myhandler.py").write_text(
        "seen = []\n"
        "def handle(job):\n"
        "    if job.get_data() == b'bad':\n"
        "        raise RuntimeError('bad data')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    q = DirQueue(tmp_path / "q")
    for data in ("a", "b", "bad"):
        q.enqueue_string(data)
    code, out, err = dq("server", "--dir", "q", "--until-empty", "--max-attempts", "1",
                        "--handler", "myhandler:handle", "--json")
    assert code == EXIT_JOBS_FAILED, err  # The run ended, and a job went to failed/.
    summary = json.loads(out)
    assert (summary["jobs"], summary["finished"], summary["failed"]) == (3, 2, 1)
    assert summary["workers"][0]["stop_reason"] == "queue empty"
    assert FailedStore(q).count() == 1


def test_server_njobs_stops_after_that_many(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(4):
        q.enqueue_string(str(i))
    code, out, err = dq("server", "--dir", str(tmp_path / "q"), "--njobs", "3", "--", "true")
    assert code == EXIT_OK
    assert out == ""  # Standard output is the jobs'; the summary is on stderr.
    assert "njobs reached" in err
    assert len(list(q.jobs())) == 1


def test_server_handler_that_cannot_be_imported_is_one_line(tmp_path: Path) -> None:
    DirQueue(tmp_path / "q").create()
    code, _, err = dq("server", "--dir", str(tmp_path / "q"), "--handler", "no_such_mod:f")
    assert code == EXIT_FAILURE
    assert "cannot import handler module 'no_such_mod'" in err
    assert err.count("\n") == 1


# -- requeue and purge ---------------------------------------------------------------


def test_requeue_and_purge_failed_jobs(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(3)]
    worker = Worker(q, boom, max_attempts=1, until_empty=True)
    worker.run()
    assert FailedStore(q).count() == 3
    code, out, err = dq("requeue", "--dir", str(tmp_path / "q"), ids[0])
    assert (code, out.split()) == (EXIT_OK, [ids[0]])
    assert "requeued 1 failed job" in err
    code, out, _ = dq("purge", "--dir", str(tmp_path / "q"), "--failed", "--older-than", "1h")
    assert (code, out) == (EXIT_OK, "")
    code, out, _ = dq("requeue", "--dir", str(tmp_path / "q"), "--failed")
    assert sorted(out.split()) == sorted(ids[1:])
    assert sorted(j.jobid for j in q.jobs()) == sorted(ids)
    code, _, err = dq("requeue", "--dir", str(tmp_path / "q"), ids[0])
    assert code == EXIT_FAILURE
    assert f"no failed job {ids[0]}" in err


def test_library_errors_are_one_line_and_exit_1(tmp_path: Path, files: list[str]) -> None:
    code, _, err = dq("stats", "--dir", "")
    assert code == EXIT_FAILURE
    assert err.startswith("dq stats: queue directory must not be empty")
    code, _, err = dq("submit", "--dir", str(tmp_path / "q"), "--meta", "QABC=1", files[0])
    assert code == EXIT_USAGE  # A malformed option, found before anything is submitted.
    assert "reserved" in err
    assert err.count("\n") == 1
    assert list(DirQueue(tmp_path / "q").jobs()) == []


def test_perl_style_single_dash_options_are_converted() -> None:
    assert perl_arguments(["-dir", "q", "-njobs", "3", "cat", "-n"]) == [
        "--dir", "q", "--njobs", "3", "cat", "-n",
    ]
    assert perl_arguments(["-dir=q", "-count"]) == ["--dir=q", "--count"]
    assert perl_arguments(["-dir", "q", "--", "cat", "-dir"]) == [
        "--dir", "q", "--", "cat", "-dir",
    ]


def test_parse_age_units() -> None:
    assert parse_age("90") == 90
    assert parse_age("15m") == 900
    assert parse_age("2h") == 7200
    assert parse_age("7d") == 7 * 86400


# -- real processes: one run of each subcommand, the Perl tools, python -m -------------


def test_every_subcommand_as_a_real_dq_process(tmp_path: Path, files: list[str]) -> None:
    q = str(tmp_path / "q")
    submitted = run("dq", "submit", "--dir", q, *files)
    assert submitted.returncode == 0, submitted.stderr
    ids = submitted.stdout.split()
    assert len(ids) == 3
    assert "submitted 3 jobs" in submitted.stderr  # Plain summary: not a terminal.

    listed = run("dq", "list", "--dir", q, "--json")
    assert [item["id"] for item in json.loads(listed.stdout)] == ids

    stats = run("dq", "stats", "--dir", q)
    assert stats.returncode == 0
    assert stats.stdout.splitlines()[0].split() == ["queued", "3"]

    deque = run("dq", "deque", "--dir", q, "--", "cat")
    assert (deque.returncode, deque.stdout) == (0, "line 0\n")

    failing = run("dq", "server", "--dir", q, "--until-empty", "--max-attempts", "1", "--", "false")
    assert failing.returncode == 4, failing.stderr  # Jobs moved to failed/.
    assert "failed" in failing.stderr

    requeued = run("dq", "requeue", "--dir", q, "--failed")
    assert sorted(requeued.stdout.split()) == sorted(ids[1:])

    served = run("dq", "server", "--dir", q, "--until-empty", "--workers", "2", "--", "true")
    assert served.returncode == 0, served.stderr
    assert "total" in served.stderr

    run("dq", "server", "--dir", q, "--until-empty", "--max-attempts", "1", "--", "false")
    purged = run("dq", "purge", "--dir", q, "--failed")
    assert purged.returncode == 0
    assert "purged 0 failed jobs" in purged.stderr

    missing = run("dq", "stats", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 1
    usage = run("dq", "submit", "--dir", q)
    assert usage.returncode == 2


def test_perl_tool_names_accept_the_perl_options(tmp_path: Path, files: list[str]) -> None:
    q = str(tmp_path / "q")
    assert run("dq-submit", "--dir", q, "--fanout", files[0]).returncode == 0
    assert run("dq-submit", "--dir", q, *files[1:]).returncode == 0
    fanned = [d for d in os.listdir(os.path.join(q, "queue")) if len(d) == 1]
    assert len(fanned) == 1  # --fanout put the first job one level down.
    counted = run("dq-list", "--dir", q, "--count")
    assert counted.stdout == "3\n"
    assert run("dq-list", "--dir", q).returncode == 0
    deque = run("dq-deque", "--dir", q, "cat")
    assert (deque.returncode, deque.stdout) == (0, "line 0\n")
    served = run("dq-server", "--njobs", "1", "--dir", q, "cat")
    assert served.returncode == 0, served.stderr
    assert served.stdout.startswith("line 1\n")
    # Getopt::Long also takes one dash, as old scripts may have it.
    served = run("dq-server", "-njobs", "1", "-dir", q, "cat")
    assert served.returncode == 0, served.stderr
    assert served.stdout.startswith("line 2\n")
    assert list(DirQueue(q).jobs()) == []
    bad = run("dq-list")
    assert bad.returncode == 2
    assert bad.stderr.startswith("dq-list: ")


def test_python_dash_m_dirqueue_works_like_dq(tmp_path: Path, files: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dirqueue", "submit", "--dir", str(tmp_path / "q"), files[0]],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 1
    helped = subprocess.run(
        [sys.executable, "-m", "dirqueue", "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert helped.returncode == 0
    assert "submit" in helped.stdout
