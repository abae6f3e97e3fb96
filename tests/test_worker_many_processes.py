"""Many workers at once, as real processes: every job done exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import handles_signal, wait_for
from dirqueue import DirQueue

pytestmark = pytest.mark.timeout(90)

DQ = str(Path(sys.executable).parent / "dq")

HANDLER = '''
import os
def handle(job):
    # O_EXCL: a job done twice fails loudly here and shows in the counts.
    fd = os.open(os.path.join(os.environ["RESULTS"], job.jobid),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, b"%d\\n" % os.getpid())
    os.close(fd)
'''


def test_two_servers_of_two_workers_do_every_job_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = {q.enqueue_string(str(i)) for i in range(200)}
    results = tmp_path / "results"
    results.mkdir()
    (tmp_path / "exactly_once.py").write_text(HANDLER)
    env = {**os.environ, "RESULTS": str(results)}
    argv = [DQ, "server", "--dir", str(tmp_path / "q"), "--workers", "2", "--until-empty",
            "--json", "--handler", "./exactly_once.py:handle"]
    servers = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        for _ in range(2)
    ]
    try:
        summaries = []
        for proc in servers:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            summaries.append(json.loads(out))
    finally:
        for proc in servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert {p.name for p in results.iterdir()} == ids
    assert sum(s["finished"] for s in summaries) == 200
    assert sum(s["failed"] + s["retried"] for s in summaries) == 0
    pids = {p.read_text().strip() for p in results.iterdir()}
    assert len(pids) <= 4  # Persistent workers: at most one process per worker.
    assert list(q.jobs()) == []
    assert os.listdir(q.layout.active_dir) == []


def test_deque_waiting_for_a_job_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [DQ, "deque", "--dir", str(tmp_path / "q"), "--create", "--wait", "60", "--", "true"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        # Not before dq handles SIGTERM: on a loaded machine starting it takes seconds.
        assert wait_for(lambda: handles_signal(proc.pid, signal.SIGTERM), 30)
        time.sleep(0.5)  # And is waiting for a job.
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 3
        assert proc.returncode == 3
        assert "no job waiting" in err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_deque_wait_takes_a_job_submitted_meanwhile(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    proc = subprocess.Popen(
        [DQ, "deque", "--dir", str(tmp_path / "q"), "--create", "--wait", "30", "--", "cat"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        time.sleep(0.3)
        q.enqueue_string("late arrival\n")
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert out == "late arrival\n"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
