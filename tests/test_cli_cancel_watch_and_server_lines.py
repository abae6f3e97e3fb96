"""dq cancel and dq empty (real processes, a live worker's job refused), dq watch as
dq stats --watch, usage hints said once, what a server that runs until stopped says,
and dq stats --output replacing its file whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _job_holder import Holder
from dirqueue import DirQueue, Job, Worker
from dirqueue.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

pytestmark = pytest.mark.timeout(60)

DQ = str(Path(sys.executable).parent / "dq")
ENV = {k: v for k, v in os.environ.items() if k != "DQ_DIR"}


def dq(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DQ, *args], capture_output=True, text=True, timeout=30, cwd=cwd, check=False, env=ENV
    )


def dq_here(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    return DirQueue(tmp_path / "q", create=True)


@pytest.fixture
def holder(q: DirQueue) -> Iterator[Holder]:
    q.enqueue_string("running", priority=0)
    child = Holder(Path(q.dir), 600, heartbeat=True)
    try:
        yield child
    finally:
        child.kill()


def test_dq_cancel_deletes_waiting_jobs_and_refuses_a_running_one(
    tmp_path: Path, q: DirQueue, holder: Holder
) -> None:
    running = holder.wait_ready()
    queued = q.enqueue_string("queued")
    deferred = q.enqueue_string("deferred", delay=3600)
    kept = q.enqueue_string("kept")
    result = dq("cancel", "--dir", "q", queued, running, deferred, cwd=tmp_path)
    assert result.returncode == EXIT_FAILURE
    assert result.stdout.split() == [queued, deferred]
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"dq cancel: cannot cancel job {running}: a worker is running it")
    assert lines[-1] == "dq cancel: cancelled 2 jobs, 1 not"
    assert sorted(j.jobid for j in q.jobs()) == sorted([running, kept])
    # Every id cancelled: exit 0.
    result = dq("cancel", "--dir", "q", kept, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (EXIT_OK, kept + "\n")
    assert result.stderr == "dq cancel: cancelled 1 job\n"


def test_dq_empty_deletes_what_waits_and_names_what_workers_hold(
    tmp_path: Path, q: DirQueue, holder: Holder
) -> None:
    running = holder.wait_ready()
    waiting = sorted([q.enqueue_string("a"), q.enqueue_string("b", delay=60)])
    result = dq("empty", "--dir", "q", cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.split() == waiting
    assert result.stderr == "dq empty: cancelled 2 jobs; 1 job held by workers left to finish\n"
    assert [j.jobid for j in q.jobs()] == [running]


def test_dq_watch_is_dq_stats_watch(tmp_path: Path, q: DirQueue) -> None:
    q.enqueue_string("x")
    watch = dq("watch", "--dir", "q", "0.1", "--iterations", "2", cwd=tmp_path)
    stats = dq("stats", "--dir", "q", "--watch", "0.1", "--iterations", "2", cwd=tmp_path)
    assert watch.returncode == stats.returncode == EXIT_OK

    def shape(text: str) -> list[list[str]]:
        # Each line but its time stamp and the oldest job's age, which move on.
        return [
            [w.split("=")[0] if w.startswith("oldest=") else w for w in line.split()[1:]]
            for line in text.splitlines()
        ]

    assert shape(watch.stdout) == shape(stats.stdout)
    assert len(shape(watch.stdout)) == 2
    assert watch.stdout.split()[1] == "queued=1"


def test_a_usage_error_names_help_once(tmp_path: Path, q: DirQueue) -> None:
    q.create()
    for args in (
        ["stats", "--dir", "q", "--watch", "--format", "prometheus"],
        ["stats", "--dir", "q", "--watch", "--output", "x"],
    ):
        result = dq(*args, cwd=tmp_path)
        assert result.returncode == EXIT_USAGE
        assert result.stderr.count("--help") == 1, result.stderr
        assert result.stderr.count("\n") == 1


def test_a_server_that_runs_until_stopped_says_where_and_a_line_per_job(
    tmp_path: Path, q: DirQueue
) -> None:
    jobs = [q.enqueue_string(str(i)) for i in range(2)]
    served = dq("server", "--dir", "q", "--njobs", "2", "--workers", "2", "--", "true",
                cwd=tmp_path)
    assert served.returncode == EXIT_OK, served.stderr
    lines = served.stderr.splitlines()
    assert lines[0] == (
        f"dq server: serving {tmp_path / 'q'} with 2 workers, command true, stopping after 2"
        " jobs (a line per job; Ctrl-C stops after the jobs running)"
    )
    per_job = sorted(line.split()[4] for line in lines if " finished in " in line)
    assert per_job == sorted(jobs)
    # -q: nothing but what the jobs write.
    jobs = [q.enqueue_string(str(i)) for i in range(2)]
    quiet = dq("server", "--dir", "q", "--njobs", "2", "-q", "--", "true", cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (EXIT_OK, "", "")
    # --until-empty keeps its progress and summary, without a line per job.
    q.enqueue_string("x")
    drained = dq("server", "--dir", "q", "--until-empty", "--", "true", cwd=tmp_path)
    assert "serving" not in drained.stderr
    assert " finished in " not in drained.stderr


def test_a_failed_attempt_is_not_also_a_job_line(tmp_path: Path, q: DirQueue) -> None:
    q.enqueue_string("x")
    served = dq("server", "--dir", "q", "--njobs", "1", "--max-attempts", "1", "--", "false",
                cwd=tmp_path)
    assert served.returncode == 4
    assert " attempt 1/1 failed: " in served.stderr
    assert " failed in " not in served.stderr


def test_stats_output_replaces_the_file_whole(
    tmp_path: Path, q: DirQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    q.enqueue_string("x")
    target = tmp_path / "metrics" / "q.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    before = target.stat().st_ino
    code, out, err = dq_here("stats", "--dir", str(tmp_path / "q"), "--format", "prometheus",
                             "--output", str(target))
    assert (code, out, err) == (EXIT_OK, "", "")
    text = target.read_text()
    assert 'state="queued"} 1\n' in text
    assert target.stat().st_ino != before  # Renamed into place, not rewritten in place.
    assert os.listdir(target.parent) == ["q.prom"]
    # A write that fails half-way leaves the old file and nothing else.
    target.write_text("old\n")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    code, _, err = dq_here("stats", "--dir", str(tmp_path / "q"), "--format", "prometheus",
                           "--output", str(target))
    assert code == EXIT_FAILURE
    assert "No space left" in err
    assert target.read_text() == "old\n"
    assert os.listdir(target.parent) == ["q.prom"]


def boom(job: Job) -> None:
    raise ValueError("no")


def test_stats_output_takes_every_format(tmp_path: Path, q: DirQueue) -> None:
    Worker(q, boom, max_attempts=1).run_once()
    q.enqueue_string("x")
    for form in ("table", "json", "prometheus"):
        code, printed, _ = dq_here("stats", "--dir", str(q.dir), "--format", form)
        assert code == EXIT_OK
        code, out, _ = dq_here("stats", "--dir", str(q.dir), "--format", form,
                               "--output", str(tmp_path / form))
        assert (code, out) == (EXIT_OK, "")
        written = (tmp_path / form).read_text()
        # The same reading, but for how long the oldest job has waited.
        assert written.splitlines()[:3] == printed.splitlines()[:3]
