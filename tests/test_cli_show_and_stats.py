"""``dq show`` (a job whole, in any state), ``dq stats --watch`` and Prometheus output."""

from __future__ import annotations

import io
import json
import os
import re
import socket
from pathlib import Path

import pytest

from dirqueue import DirQueue, Job, Worker
from dirqueue.cli import EXIT_FAILURE, EXIT_OK, main

pytestmark = pytest.mark.timeout(60)


def dq(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_show_a_queued_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("hello", {"owner": "ann"}, priority=7)
    code, out, _ = dq("show", "--dir", str(tmp_path / "q"), jobid)
    assert code == EXIT_OK
    assert re.search(r"^state +queued$", out, re.M)
    assert re.search(r"^meta owner +ann$", out, re.M)
    view = json.loads(dq("show", "--dir", str(tmp_path / "q"), "--json", jobid)[1])
    assert (view["state"], view["priority"], view["size"], view["attempts"]) == (
        "queued", 7, 5, 0,
    )
    assert Path(view["data_path"]).is_absolute()
    assert Path(view["data_path"]).read_text() == "hello"
    assert view["worker"] is None
    assert view["lock_age"] is None


def test_show_an_active_job_names_its_lock_owner_and_age(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    held = q.pickup_queued_job()
    assert held is not None
    try:
        view = json.loads(dq("show", "--dir", str(tmp_path / "q"), "--json", jobid)[1])
        assert view["state"] == "active"
        assert view["worker"]["pid"] == os.getpid()
        assert 0 <= view["lock_age"] < 60
        out = dq("show", "--dir", str(tmp_path / "q"), jobid)[1]
        assert "held by" in out
        assert "lock touched" in out
    finally:
        held.finish()


def test_show_a_failed_job_has_the_whole_error(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    long_error = "the start " + "y" * 150 + " exit status 42 at the end"

    def fail(job: Job) -> None:
        raise ValueError(long_error)

    Worker(q, fail, max_attempts=1).run_once()
    code, out, _ = dq("show", "--dir", str(tmp_path / "q"), jobid)
    assert code == EXIT_OK
    assert f"ValueError: {long_error}" in out
    assert "detail:" in out
    assert "Traceback" in out
    view = json.loads(dq("show", "--dir", str(tmp_path / "q"), "--json", jobid)[1])
    assert view["state"] == "failed"
    assert view["error"] == f"ValueError: {long_error}"
    # The failed table keeps the whole first line too (the exit status is at its end).
    listed = dq("list", "--dir", str(tmp_path / "q"), "--failed")[1]
    assert "exit status 42 at the end" in listed
    assert "dq show JOBID" in listed


def test_show_of_a_job_that_is_nowhere_exits_1(tmp_path: Path) -> None:
    DirQueue(tmp_path / "q").create()
    code, out, err = dq("show", "--dir", str(tmp_path / "q"), "50.20261128192616291083.DMzg5")
    assert (code, out) == (EXIT_FAILURE, "")
    assert "not queued, active or failed" in err


def parse_prometheus(text: str) -> dict[str, dict[str, object]]:
    """A small reader of the text exposition format: HELP, TYPE and samples."""
    metrics: dict[str, dict[str, object]] = {}
    sample = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            metrics.setdefault(name, {"samples": []})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ", 1)
            metrics[name]["type"] = kind
        else:
            match = sample.match(line)
            assert match, f"not a sample line: {line!r}"
            labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match.group(2)))
            samples = metrics[match.group(1)]["samples"]
            assert isinstance(samples, list)
            samples.append((labels, float(match.group(3))))
    return metrics


def test_stats_in_prometheus_format_parses_back(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    for i in range(3):
        q.enqueue_string(str(i))
    held = q.pickup_queued_job()
    assert held is not None
    Worker(q, lambda job: (_ for _ in ()).throw(ValueError("x")), max_attempts=1).run_once()
    try:
        code, out, _ = dq("stats", "--dir", str(tmp_path / "q"), "--format", "prometheus")
    finally:
        held.finish()
    assert code == EXIT_OK
    metrics = parse_prometheus(out)
    assert metrics["dirqueue_jobs"]["type"] == "gauge"
    jobs = {labels["state"]: value for labels, value in metrics["dirqueue_jobs"]["samples"]}  # type: ignore[union-attr]
    assert jobs == {
        "queued": 1, "active": 1, "stale": 0, "failed": 1, "deferred": 0, "waiting": 0
    }
    ((labels, _),) = metrics["dirqueue_oldest_waiting_seconds"]["samples"]  # type: ignore[misc]
    assert labels["queue"] == str((tmp_path / "q").resolve())
    ((labels, count),) = metrics["dirqueue_active_jobs"]["samples"]  # type: ignore[misc]
    assert count == 1
    assert labels["host"] == socket.gethostname()
    assert all("help" in m and "type" in m for m in metrics.values())


def test_stats_watch_prints_a_line_per_refresh_with_rates(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    code, out, _ = dq("stats", "--dir", str(tmp_path / "q"), "--watch", "0.05",
                      "--iterations", "3")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == 3
    assert "queued=1 " in lines[0]
    assert "queued=1 (+0.0/s)" in lines[1]
    assert "oldest=" in lines[0]
    assert "held_by=-" in lines[0]
    code, out, _ = dq("stats", "--dir", str(tmp_path / "q"), "--watch", "0.05",
                      "--iterations", "2", "--json")
    assert [json.loads(line)["queued"] for line in out.splitlines()] == [1, 1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stats_watch_on_a_terminal_redraws_in_place(tmp_path: Path) -> None:
    DirQueue(tmp_path / "q").enqueue_string("x")
    out, err = _Tty(), io.StringIO()
    code = main(["stats", "--dir", str(tmp_path / "q"), "--watch", "0.05", "--iterations", "2"],
                stdout=out, stderr=err)
    assert code == EXIT_OK
    text = out.getvalue()
    blocks = text.split("\033[")
    assert len(blocks) == 3  # Moved up over the first block, cleared it, drew again.
    assert "held by host" in text
    assert text.count("queued ") == 2


def test_stats_counts_a_delayed_job_in_every_form(tmp_path: Path) -> None:
    # dq list and queue_stats() counted it; dq stats' own pass over the queue did not,
    # so every form of dq stats said 0 deferred.
    qdir = str(tmp_path / "q")
    (tmp_path / "x").write_text("x")
    code, _, _ = dq("submit", "--dir", qdir, "--delay", "60", str(tmp_path / "x"))
    assert code == EXIT_OK
    assert json.loads(dq("stats", "--dir", qdir, "--json")[1])["deferred"] == 1
    metrics = parse_prometheus(dq("stats", "--dir", qdir, "--format", "prometheus")[1])
    jobs = {labels["state"]: value for labels, value in metrics["dirqueue_jobs"]["samples"]}  # type: ignore[union-attr]
    assert jobs["deferred"] == 1
    watched = dq("stats", "--dir", qdir, "--watch", "0.05", "--iterations", "1")[1]
    assert "deferred=1 " in watched
    assert re.search(r"^deferred +1$", dq("stats", "--dir", qdir)[1], re.M)
