"""Every subcommand as a real process, its output piped: cut short (``| head -1``), into a
file, into ``json.loads``; and the same exit codes everywhere (0 ok, 1 failure, 2 usage).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dirqueue import DirQueue, Job, Worker
from dirqueue.cli import build_parser

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
DQ = str(BIN / "dq")
ENV = {k: v for k, v in os.environ.items() if k != "DQ_DIR"}


def boom(job: Job) -> None:
    raise ValueError("nope")


def dq(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DQ, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False,
        env=env or ENV,
    )


def head_1(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``dq ARGS | head -1``: read one line, close the pipe, let dq write on."""
    proc = subprocess.Popen(
        [DQ, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=ENV
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    with proc.stdout, proc.stderr:
        first = proc.stdout.readline().decode()
        proc.stdout.close()
        err = proc.stderr.read().decode()
    return proc.wait(timeout=60), first, err


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue whose listings are far bigger than a pipe's buffer, with failed jobs."""
    root = tmp_path_factory.mktemp("big")
    q = DirQueue(root / "q", durable=False)
    for i in range(1500):
        q.enqueue_string("x", {"n": str(i), "pad": "p" * 40})
    failing = DirQueue(root / "f", durable=False)
    for i in range(1200):
        failing.enqueue_string(str(i))
    Worker(failing, boom, max_attempts=1, until_empty=True).run()
    (root / "f" / "tmp" / "left.ctrl").write_text("debris")
    return root


def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_output_cut_short_exits_0_quietly(big: Path) -> None:
    # Each of these prints more than a pipe holds, so dq is still writing when the
    # reader goes: it must not say "Broken pipe" or exit 1.
    for args in (
        ["list", "--dir", "q"],
        ["list", "--dir", "q", "--nl"],
        ["list", "--dir", "q", "--json"],
        ["list", "--dir", "f", "--failed"],
        ["list", "--dir", "f", "--failed", "--nl"],
        ["completion", "zsh"],
    ):
        code, first, err = head_1(*args, cwd=big)
        assert (code, err) == (0, ""), args
        assert first.strip(), args


def test_nl_lines_are_each_one_json_object(big: Path) -> None:
    listed = dq("list", "--dir", "q", "--nl", cwd=big)
    lines = listed.stdout.splitlines()
    assert len(lines) == 1500
    assert [json.loads(line)["metadata"]["n"] for line in lines[:3]] == ["0", "1", "2"]
    failed = dq("list", "--dir", "f", "--failed", "--nl", cwd=big).stdout.splitlines()
    assert len(failed) == 1200
    assert json.loads(failed[0])["error"] == "ValueError: nope"
    found = dq("fsck", "--dir", "f", "--min-age", "0", "--nl", cwd=big)
    assert found.returncode == 1  # A problem found and left.
    assert [json.loads(line)["kind"] for line in found.stdout.splitlines()] == ["tmp-leftover"]


def test_server_json_summary_into_a_file_parses(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(3):
        q.enqueue_string(f"job output {i}\n")
    with open(tmp_path / "sum.json", "w") as out:
        proc = subprocess.run(
            [DQ, "server", "--dir", "q", "--until-empty", "--json", "--", "cat"],
            stdout=out, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=60,
            check=False, env=ENV,
        )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert (summary["jobs"], summary["finished"]) == (3, 3)
    # The jobs' output went to stderr for the run: on the terminal, not in the file.
    assert proc.stderr.count("job output") == 3


def test_server_json_file_leaves_stdout_to_the_jobs(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(2):
        q.enqueue_string(f"out {i}\n")
    served = dq("server", "--dir", "q", "--until-empty", "--json-file", "s.json", "--", "cat",
                cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert served.stdout == "out 0\nout 1\n"  # Job output only.
    assert "queue empty" in served.stderr  # The table: dq's words, on stderr.
    assert json.loads((tmp_path / "s.json").read_text())["finished"] == 2


def test_every_subcommand_into_a_file_and_into_json(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    seen: set[str] = set()

    def ok(*args: str, stdout: str | None = None) -> subprocess.CompletedProcess[str]:
        seen.add(args[0])
        result = dq(*args, cwd=tmp_path)
        # 3: deque found no job; 4: a server run moved jobs to failed/.
        assert result.returncode in (0, 3, 4), (args, result.stderr)
        if stdout is not None:
            assert result.stdout == stdout, args
        return result

    jobid = ok("submit", "--dir", "q", "a.txt").stdout.strip()
    ok("submit", "--dir", "q", "--meta", "k=v", "a.txt")
    assert json.loads(ok("list", "--dir", "q", "--json").stdout)[0]["id"] == jobid
    assert json.loads(ok("show", "--dir", "q", "--json", jobid).stdout)["state"] == "queued"
    assert json.loads(ok("stats", "--dir", "q", "--json").stdout)["queued"] == 2
    assert ok("stats", "--dir", "q", "--watch", "0.1", "--iterations", "2").stdout.count(
        "queued=2"
    ) == 2
    assert "queued=2" in ok("watch", "--dir", "q", "0.1", "--iterations", "1").stdout
    ok("deque", "--dir", "q", "--", "cat", stdout="hello\n")
    served = ok("server", "--dir", "q", "--until-empty", "--max-attempts", "1", "--", "false",
                stdout="")
    assert "failed" in served.stderr
    (failed,) = json.loads(ok("list", "--dir", "q", "--failed", "--json").stdout)
    assert "exited 1" in failed["error"]
    assert ok("requeue", "--dir", "q", "--failed").stdout.split() == [failed["id"]]
    ok("server", "--dir", "q", "--until-empty", "--max-attempts", "1", "--", "false")
    assert ok("purge", "--dir", "q", "--failed").stdout.split() == [failed["id"]]
    cancelled = ok("submit", "--dir", "q", "a.txt").stdout
    assert ok("cancel", "--dir", "q", cancelled.strip()).stdout == cancelled
    emptied = ok("submit", "--dir", "q", "a.txt").stdout
    assert ok("empty", "--dir", "q").stdout == emptied
    assert json.loads(ok("fsck", "--dir", "q", "--json").stdout)["ok"] is True
    ok("limit", "--dir", "q", "set", "gpu", "2", stdout="")
    assert json.loads(ok("limit", "--dir", "q", "list", "--json").stdout)[0]["concurrency"] == 2
    assert "_dq" in ok("completion", "bash").stdout
    assert "--actions" in ok("web", "--help").stdout  # It serves until stopped.
    answered = ok("submit", "--dir", "q", "a.txt").stdout.strip()
    ok("server", "--dir", "q", "--until-empty", "--keep-results", "--", "cat")
    ok("result", "--dir", "q", answered, stdout="hello\n")
    assert json.loads(ok("result", "--dir", "q", "--json", answered).stdout)["status"] == "done"
    assert seen == subcommands(), "a subcommand this test does not run"


#: A usage error and a run-time failure for every subcommand.
BAD: dict[str, tuple[list[str], list[str]]] = {
    "submit": (["--dir", "q", "--meta", "a:b=c", "a.txt"], ["--dir", "q", "missing.txt"]),
    "deque": (["--dir", "q", "--wait", "soon", "cat"], ["--dir", "nowhere", "cat"]),
    "server": (["--dir", "q", "--bogus", "--", "cat"], ["--dir", "typo", "--", "cat"]),
    "list": (["--dir", "q", "--json", "--nl"], ["--dir", "nowhere"]),
    "show": (["--dir", "q", "nonsense"], ["--dir", "q", "50.20261128192616291083.DMzg5"]),
    "stats": (["--dir", "q", "--format", "xml"], ["--dir", "nowhere"]),
    "requeue": (["--dir", "q", "nonsense"], ["--dir", "q", "50.20261128192616291083.DMzg5"]),
    "purge": (
        ["--dir", "q", "--failed", "nonsense"],
        ["--dir", "q", "--failed", "50.20261128192616291083.DMzg5"],
    ),
    "fsck": (["--dir", "q", "--min-age", "soon"], ["--dir", "nowhere"]),
    "watch": (["--dir", "q", "soon"], ["--dir", "nowhere"]),
    "cancel": (["--dir", "q", "nonsense"], ["--dir", "q", "50.20261128192616291083.DMzg5"]),
    "empty": (["--dir", "q", "extra"], ["--dir", "nowhere"]),
    "result": (["--dir", "q", "nonsense"], ["--dir", "q", "50.20261128192616291083.DMzg5"]),
    "completion": (["ksh"], []),
    "limit": (["--dir", "q", "set", "gpu", "0"], ["--dir", "nowhere", "list"]),
    "web": (["--dir", "q", "--bind", "nope"], ["--dir", "q", "--bind", "192.0.2.1:8080"]),
}


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_exit_codes_are_the_same_for_every_subcommand(tmp_path: Path, name: str) -> None:
    (tmp_path / "a.txt").write_text("x")
    DirQueue(tmp_path / "q").create()
    usage, failure = BAD[name]
    result = dq(name, *usage, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"dq {name}: ")
    assert result.stderr.count("\n") == 1
    if failure:
        result = dq(name, *failure, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert result.stderr.startswith(f"dq {name}: ")
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "nowhere").exists()


def test_dq_dir_is_the_default_queue(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    env = {**ENV, "DQ_DIR": str(tmp_path / "q")}
    assert dq("submit", "a.txt", cwd=tmp_path, env=env).returncode == 0
    assert dq("list", "--count", cwd=tmp_path, env=env).stdout == "1\n"
    missing = dq("list", "--count", cwd=tmp_path)
    assert missing.returncode == 2
    assert "DQ_DIR" in missing.stderr


def test_fanout_is_offered_only_where_jobs_are_made() -> None:
    parser = build_parser()
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                helped = sub.format_help()
                assert ("--fanout" in helped) == (name == "submit"), name


def test_help_points_to_installed_docs(tmp_path: Path) -> None:
    helped = dq("--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "python -m pydoc dirqueue" in helped.stdout
    assert "docs/cli.md" not in helped.stdout
