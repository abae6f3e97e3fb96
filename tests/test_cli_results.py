"""``dq result``, and the answers in ``dq show``, ``dq stats`` and ``dq purge``, with real
``dq`` processes; ``dq server --keep-results`` keeps a command's stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue
from dirqueue._results import read_result

DQ = str(Path(sys.executable).parent / "dq")
pytestmark = pytest.mark.timeout(60)


def dq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DQ, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_commands_stdout_is_its_answer_with_keep_results(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    kept = q.enqueue_string("shout")
    failing = q.enqueue_string("fail")
    served = dq("server", "--dir", "q", "--until-empty", "--keep-results", "--max-attempts",
                "1", "-q", "--", "sh", "-c",
                'if grep -q fail "$1"; then echo oops >&2; exit 3; fi; tr a-z A-Z < "$1"; echo',
                "sh", cwd=tmp_path)
    assert served.returncode == 4, served.stderr
    assert served.stdout == ""  # Captured, not passed through.
    shown = dq("result", "--dir", "q", kept, cwd=tmp_path)
    assert (shown.returncode, shown.stdout) == (0, "SHOUT\n")
    record = json.loads(dq("result", "--dir", "q", "--json", kept, cwd=tmp_path).stdout)
    assert (record["status"], record["kind"], record["attempt"]) == ("done", "bytes", 1)
    failed = dq("result", "--dir", "q", failing, cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stdout.startswith("failed: CommandFailedError: command sh -c")
    assert "oops" in failed.stdout  # The command's stderr, kept as the traceback text.
    # A finished job: dq show has nothing but its answer to show.
    assert dq("show", "--dir", "q", kept, cwd=tmp_path).stdout == "SHOUT\n"


def test_stats_count_answers_and_purge_removes_expired_ones(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    short = q.enqueue_string("a", {"dq.result_ttl": "3600"})
    kept = q.enqueue_string("b", {"dq.result_ttl": "3600"})
    served = dq("server", "--dir", "q", "--until-empty", "-q", "--", "true", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    stats = json.loads(dq("stats", "--dir", "q", "--json", cwd=tmp_path).stdout)
    assert stats["results"] == 2
    table = dq("stats", "--dir", "q", cwd=tmp_path).stdout
    assert "results         2" in table
    prometheus = dq("stats", "--dir", "q", "--format", "prometheus", cwd=tmp_path).stdout
    assert f'dirqueue_results{{queue="{tmp_path / "q"}"}} 2' in prometheus
    past = time.time() - 1  # As if its hour had run out (its mtime is its expiry).
    os.utime(q.layout.result_path(short), (past, past))
    assert json.loads(dq("stats", "--dir", "q", "--json", cwd=tmp_path).stdout)["results"] == 1
    none = dq("result", "--dir", "q", short, cwd=tmp_path)
    assert none.returncode == 1
    assert "has no result" in none.stderr
    purged = dq("purge", "--dir", "q", "--results", cwd=tmp_path)
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 expired result" in purged.stderr
    assert os.listdir(q.layout.results_dir) == [kept]
    assert read_result(q.config, kept) is not None
    listed = dq("list", "--dir", "q", cwd=tmp_path)
    assert listed.stdout.endswith(", 1 result kept\n")
