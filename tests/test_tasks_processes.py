"""Tasks with real processes: submitted in one process, run by ``dq server --tasks`` in
another, answered through ``results/``; failures, a killed worker, a worker killed
while writing its answer, answers that expire, and jobs a worker cannot run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _perl import PERL_DRAIN, needs_perl, run_perl
from dirqueue import FailedStore
from dirqueue._layout import Layout
from dirqueue.tasks import NoResultError, TaskFailed, TaskQueue, TaskResult

DQ = str(Path(sys.executable).parent / "dq")
pytestmark = pytest.mark.timeout(120)

#: The tasks module the workers import (``--tasks mytasks``), from the queue's folder.
TASKS = '''
import os, time
from dirqueue.tasks import TaskQueue

q = TaskQueue(os.environ["TASKQ"])

@q.task(name="add")
def add(a, b=1):
    return a + b

@q.task(name="boom", retries=0)
def boom(what):
    raise ValueError(f"no {what} here")

@q.task(name="spin", retries=0)
def spin():
    while True:  # Pure Python that no signal handler in the task could count on.
        pass

@q.task(name="hang_first", retries=2)
def hang_first(marker):
    """The first attempt says it started and hangs (its worker is killed); a later
    one, once the test made marker.go, answers at once."""
    if not os.path.exists(marker + ".go"):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(60)
    return "answered"
'''

#: Imported after mytasks: makes this worker die (SIGKILL) halfway through writing an
#: answer, to show a reader never sees half of one.
KILL_IN_RESULT = '''
import os, signal
import dirqueue._fs as fs
import mytasks  # noqa: F401

_write_all = fs.write_all

def write_all(fd, data):
    if b'"status": "done"' in data:
        _write_all(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    _write_all(fd, data)

fs.write_all = write_all
'''


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    (tmp_path / "mytasks.py").write_text(TASKS)
    (tmp_path / "killwrite.py").write_text(KILL_IN_RESULT)
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    monkeypatch.setenv("TASKQ", str(tmp_path / "q"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("mytasks", "killwrite", "broken"):
        sys.modules.pop(name, None)
    TaskQueue(tmp_path / "q").create()
    return {**os.environ, "TASKQ": str(tmp_path / "q")}


def _start(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DQ, "server", "--dir", "q", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, err


def _submit_elsewhere(env: dict[str, str], cwd: Path, code: str) -> str:
    """Run ``code`` (which prints a job id) in a process of its own; the job id."""
    done = subprocess.run(
        [sys.executable, "-c", "import mytasks\n" + code], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout.strip()


def _mytasks():  # type: ignore[no-untyped-def]
    import mytasks  # noqa: PLC0415 - written by the fixture

    return mytasks


def test_submitted_in_one_process_run_by_a_server_answered_in_a_third(
    env: dict[str, str], tmp_path: Path
) -> None:
    server = _start(env, tmp_path, "--tasks", "mytasks", "--workers", "2")
    try:
        jobid = _submit_elsewhere(env, tmp_path, "print(mytasks.add.submit(40, b=2).jobid)")
        q = TaskQueue(tmp_path / "q")
        result: TaskResult[int] = TaskResult(q, jobid)
        assert result.get(timeout=30) == 42
        assert result.status == "done"
        # Submitted here, a failure comes back with the worker's traceback.
        failing = _mytasks().boom.submit("cheese")
        with pytest.raises(TaskFailed) as caught:
            failing.get(timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        code, err = _finish(server)
    assert code == 0, err
    failed = caught.value
    assert failed.error_type == "ValueError"
    assert failed.message == "no cheese here"
    assert "in boom" in failed.traceback
    assert 'raise ValueError(f"no {what} here")' in failed.traceback
    assert "no cheese here" in str(failed)
    assert failing.status == "failed"


def test_a_task_whose_worker_is_killed_is_retried_and_answered_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    result = _mytasks().hang_first.submit(str(marker))
    first = _start(env, tmp_path, "--tasks", "mytasks")
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the first attempt never started"
        assert result.status == "active"
        os.killpg(first.pid, signal.SIGKILL)  # Mid-run: no answer, no finish.
    finally:
        _finish(first)
    assert result.record() is None
    (tmp_path / "started.go").touch()
    second = _start(env, tmp_path, "--tasks", "mytasks", "--until-empty")
    code, err = _finish(second)
    assert code == 0, err
    assert result.get(timeout=5) == "answered"
    record = result.record()
    assert record is not None
    assert record.attempt == 2  # The killed attempt counted.
    assert os.listdir(tmp_path / "q" / Layout.RESULTS) == [result.jobid]
    assert result.get(timeout=5) == "answered"  # Read again: the same one answer.


def test_a_worker_killed_while_writing_an_answer_leaves_none_torn(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = _mytasks().add.submit(1, b=2)
    dying = _start(env, tmp_path, "--tasks", "killwrite", "--until-empty")
    code, _ = _finish(dying)
    assert code == -signal.SIGKILL
    # Half an answer was written, under its tmp name only.
    torn = [n for n in os.listdir(tmp_path / "q" / "tmp") if n.endswith(".result")]
    assert len(torn) == 1
    assert torn[0].startswith(result.jobid)
    assert not (tmp_path / "q" / Layout.RESULTS / result.jobid).exists()
    assert result.record() is None
    assert result.status in ("active", "queued")  # Its lock's owner is dead.
    healthy = _start(env, tmp_path, "--tasks", "mytasks", "--until-empty")
    code, err = _finish(healthy)
    assert code == 0, err
    assert result.get(timeout=5) == 3
    answer = json.loads((tmp_path / "q" / Layout.RESULTS / result.jobid).read_text())
    assert answer["value"] == 3
    # The torn half is a tmp leftover of a dead process, which repair removes.
    report = TaskQueue(tmp_path / "q").repair(min_age=0)  # (By its age: no owner named.)
    assert [f.path.rsplit("/", 1)[-1] for f in report.findings if f.fixed] == torn
    assert [n for n in os.listdir(tmp_path / "q" / "tmp") if n.endswith(".result")] == []


def test_answers_expire_and_the_next_worker_sweeps_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    add = _mytasks().add
    short = add.options(result_ttl=1).submit(1)
    none_kept = add.options(result_ttl=0).submit(2)
    code, err = _finish(_start(env, tmp_path, "--tasks", "mytasks", "--until-empty"))
    assert code == 0, err
    assert short.get(timeout=5) == 2
    assert none_kept.status == "unknown"
    with pytest.raises(NoResultError):
        none_kept.get(timeout=5)
    results = tmp_path / "q" / Layout.RESULTS
    assert os.listdir(results) == [short.jobid]
    expires = (results / short.jobid).stat().st_mtime
    time.sleep(max(0.0, expires - time.time()) + 0.05)  # Its time to live runs out.
    assert short.status == "unknown"
    with pytest.raises(NoResultError):
        short.get(timeout=5)
    # A new worker's first answer sweeps the expired ones.
    later = add.submit(3)
    code, err = _finish(_start(env, tmp_path, "--tasks", "mytasks", "--until-empty"))
    assert code == 0, err
    assert os.listdir(results) == [later.jobid]


def test_jobs_a_worker_cannot_run_fail_with_a_reason_and_the_worker_goes_on(
    env: dict[str, str], tmp_path: Path
) -> None:
    mytasks = _mytasks()
    q = mytasks.q
    ttl = {"dq.result_ttl": "60"}
    unknown = q.enqueue_string('{"args": [], "kwargs": {}}', {"task": "nowhere.fn", **ttl})
    bad_json = q.enqueue_string("{not json", {"task": "add", **ttl})
    bad_args = q.enqueue_string('{"args": [1, 2, 3], "kwargs": {}}', {"task": "add", **ttl})
    plain = q.enqueue_string("a plain job")
    good = mytasks.add.submit(5)
    server = _start(env, tmp_path, "--tasks", "mytasks", "--tasks", "broken",
                    "--until-empty", "--", "sh", "-c", "cat \"$DQ_DATA\" > plain.out")
    code, err = _finish(server)
    assert code == 4, err  # EXIT_JOBS_FAILED: some jobs moved to failed/.
    assert "tasks module broken failed to import" in err
    assert good.get(timeout=5) == 6
    assert (tmp_path / "plain.out").read_text() == "a plain job"
    assert TaskResult(q, plain).status == "unknown"  # A plain job keeps no answer here.
    store = FailedStore(q)
    reasons = {jobid: store.get(jobid) for jobid in (unknown, bad_json, bad_args)}
    assert "unknown task 'nowhere.fn'" in reasons[unknown].error
    assert "broken: ModuleNotFoundError" in reasons[unknown].error
    assert reasons[unknown].attempts == 3  # Retried: another worker may know it.
    assert "not valid JSON" in reasons[bad_json].error
    assert reasons[bad_json].attempts == 1  # Never retried: it reads the same each time.
    assert "cannot be called with" in reasons[bad_args].error
    assert reasons[bad_args].attempts == 1
    with pytest.raises(TaskFailed) as caught:
        TaskResult(q, bad_json).get(timeout=5)
    assert caught.value.error_type == "BadCallError"


def test_the_perl_module_lists_a_task_job_and_ignores_results(
    env: dict[str, str], tmp_path: Path
) -> None:
    needs_perl()
    mytasks = _mytasks()
    done = mytasks.add.submit(1)
    code, err = _finish(_start(env, tmp_path, "--tasks", "mytasks", "--until-empty"))
    assert code == 0, err
    assert done.get(timeout=5) == 2
    waiting = mytasks.add.submit(2, b=3)
    listed = run_perl(
        r"""
        my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
        $q->visit_all_jobs(sub {
            my ($ctx, $job) = @_;
            print $job->{jobid}, " ", $job->{metadata}->{task}, "\n";
        }, undef);
        """,
        str(tmp_path / "q"),
    )
    assert listed.split() == [waiting.jobid, "add"]
    tool = Path(run_perl("print $INC{'IPC/DirQueue.pm'}", "")).parents[2] / "dq-list"
    out = subprocess.run(
        ["perl", f"-I{tool.parent / 'lib'}", str(tool), "--dir", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert waiting.jobid in out.stdout
    assert "queued: 1" in out.stdout
    # A Perl worker takes a task job like any other (and, knowing nothing of answers,
    # keeps none: the caller is told so rather than left waiting).
    assert run_perl(PERL_DRAIN, str(tmp_path / "q")).split() == [waiting.jobid]
    with pytest.raises(NoResultError):
        waiting.get(timeout=5)
    assert done.get(timeout=5) == 2  # results/ left as it was.


def test_a_task_past_the_servers_timeout_is_killed_and_answered_as_timed_out(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = _mytasks().spin.submit()
    started = time.monotonic()
    code, err = _finish(
        _start(env, tmp_path, "--tasks", "mytasks", "--timeout", "1", "--until-empty")
    )
    assert time.monotonic() - started < 30
    assert code == 4, err  # Its one attempt failed: moved to failed/.
    with pytest.raises(TaskFailed) as caught:
        result.get(timeout=5)
    assert caught.value.error_type == "JobTimeoutError"
    assert caught.value.message == "timed out after 1 s"
    assert result.status == "failed"
