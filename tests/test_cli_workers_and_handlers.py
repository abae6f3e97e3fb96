"""dq server as people run it: the first Ctrl-C says what happens, handler modules that
do not import are one line, a job's environment, progress on a terminal."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue
from dirqueue.cli import EXIT_FAILURE, main
from dirqueue.cli._output import Progress

pytestmark = pytest.mark.timeout(60)

DQ = str(Path(sys.executable).parent / "dq")
NOTE = "stopping after the current job; press Ctrl-C again to interrupt it"


def dq(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def wait_for(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_first_ctrl_c_prints_one_line_and_the_job_finishes(
    tmp_path: Path, workers: str
) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("x")
    job = f'touch {tmp_path}/started; sleep 1; touch {tmp_path}/done'
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(tmp_path / "q"), "--workers", workers,
         "--poll-interval", "0.2", "--", "sh", "-c", job, "sh"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_for(tmp_path / "started")
        time.sleep(0.3)  # The supervisor's first tick has wrapped its handler.
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert err.count(NOTE) == 1
    # Right after the line that says what the server serves.
    assert err.splitlines()[0].startswith(f"dq server: serving {tmp_path / 'q'} with ")
    assert err.splitlines()[1] == f"dq server: {NOTE}"
    assert (tmp_path / "done").exists()
    assert jobid not in [j.jobid for j in q.jobs()]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def handle(job):\n    return (\n", "SyntaxError"),
        ("import no_such_dependency_here\n", "No module named 'no_such_dependency_here'"),
        ("raise RuntimeError('config missing')\n", "RuntimeError: config missing"),
        ("x = 1\n", "has no 'handle'"),
        ("handle = 42\n", "is not callable"),
    ],
)
def test_a_handler_that_does_not_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    name = f"broken_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    DirQueue(tmp_path / "q").create()
    code, out, err = dq("server", "--dir", "q", "--handler", f"{name}:handle")
    assert (code, out) == (EXIT_FAILURE, "")
    assert err.count("\n") == 1, err
    assert expected in err
    assert "-v shows the traceback" in err
    sys.modules.pop(name, None)
    code, _, err = dq("server", "--dir", "q", "--handler", f"{name}:handle", "-v")
    assert code == EXIT_FAILURE
    assert "Traceback" in err
    sys.modules.pop(name, None)


def test_consumers_refuse_a_missing_queue_unless_told_to_create_it(tmp_path: Path) -> None:
    for args in (["deque", "--", "true"], ["server", "--until-empty", "--", "true"]):
        code, _, err = dq(args[0], "--dir", str(tmp_path / "typo"), *args[1:])
        assert code == EXIT_FAILURE
        assert "--create" in err
        assert str(tmp_path / "typo") in err
        assert err.count("\n") == 1
        assert not (tmp_path / "typo").exists()
    code, _, _ = dq("server", "--dir", str(tmp_path / "new"), "--create", "--until-empty",
                    "-q", "--", "true")
    assert code == 0
    assert (tmp_path / "new").is_dir()


def test_a_job_gets_absolute_paths_and_colliding_meta_names_resolve_one_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    q = DirQueue("q")
    for order in ({"a-b": "lower", "A_B": "upper"}, {"A_B": "upper", "a-b": "lower"}):
        q.enqueue_string("x", order)
    script = (
        'cd /; printf "%s|%s|%s|%s\\n" "$DQ_DIR" "$DQ_DATA" "$DQ_META_A_B"'
        ' "$(cat "$DQ_DATA")" >> ' + str(tmp_path / "env.txt")
    )
    code, _, err = dq("server", "--dir", "q", "--until-empty", "-q", "--", "sh", "-c", script)
    assert code == 0, err
    lines = (tmp_path / "env.txt").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        qdir, data, meta, content = line.split("|")
        assert qdir == str(tmp_path / "q")
        # The data file open, not its path: a path another user could swap for a
        # symlink before the command opens it (see test_hostile_local_user.py).
        assert re.fullmatch(r"/dev/fd/\d+", data)
        assert meta == "upper"  # 'A_B' sorts before 'a-b', whatever the submission order.
        assert content == "x"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_cleared_before_other_output() -> None:
    stream = _Tty()
    now = [0.0]
    progress = Progress("dq server", 4, stream, clock=lambda: now[0])
    progress.update(1)
    progress.clear()
    stream.write("job output\n")
    now[0] = 1.0
    progress.update(2)
    progress.close()
    text = stream.getvalue()
    lines = text.split("\n")
    # The job's line is whole: the bar was cleared (\r + erase line) before it.
    assert lines[0].endswith("\r\033[Kjob output")
    assert "1/4" in lines[0]
    assert lines[1].startswith("\r\033[Kdq server [")
    assert text.endswith("\n")


def test_progress_elsewhere_is_plain_lines() -> None:
    stream = io.StringIO()
    progress = Progress("dq server", 20, stream)
    for done in range(1, 21):
        progress.update(done)
    progress.close()
    assert "\r" not in stream.getvalue()
    assert "\033" not in stream.getvalue()
    assert stream.getvalue().splitlines()[-1] == "dq server: 20/20 (100%)"
