"""A stop signal that reaches the supervisor while its workers start is never lost.

Issue 8.5: a forked child kept the supervisor's signal handler until its Worker put up
its own, so a SIGTERM forwarded in that window went nowhere, and the child (and the
supervisor waiting for it) ran for ever. The test forces the interleaving: an at-fork
hook makes every child slow to start, and the supervisor signals itself right after
the Nth fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import process_alive

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
]

WORKERS = 6

SUPERVISOR = """
import json, os, signal, sys, time
from pathlib import Path
from dirqueue import DirQueue, run_workers

qdir, pids = sys.argv[1], Path(sys.argv[2])
signal_after, workers = int(sys.argv[3]), int(sys.argv[4])
supervisor = os.getpid()
forks = 0
signal.alarm(100)  # However the test ends, this process does not outlive it.

def in_child():
    if os.getppid() == supervisor:
        (pids / str(os.getpid())).touch()
        time.sleep(0.3)  # A child slow to start: its Worker's handlers come late.

def in_parent():
    global forks
    if os.getpid() == supervisor:
        forks += 1
        if forks == signal_after:
            os.kill(supervisor, signal.SIGTERM)  # As a child starts.

os.register_at_fork(after_in_child=in_child, after_in_parent=in_parent)
reports = run_workers(DirQueue(qdir, create=True), lambda job: None, workers, poll_interval=0.1)
print(json.dumps([r.as_dict() for r in reports]))
"""


@pytest.mark.parametrize("signal_after", [1, 2, 3, 4, 6])
def test_sigterm_while_children_start_stops_every_child(
    tmp_path: Path, signal_after: int
) -> None:
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "q"), str(pids), str(signal_after),
         str(WORKERS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        reports = json.loads(out)
        # No worker starts after the stop signal; each one started stops because of it.
        assert len(reports) == signal_after
        assert [r["stop_reason"] for r in reports] == ["signal"] * signal_after
        assert [r["exit_code"] for r in reports] == [0] * signal_after
        started = sorted(int(p.name) for p in pids.iterdir())
        assert started == sorted(r["pid"] for r in reports)
        assert not [pid for pid in started if process_alive(pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for entry in pids.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(entry.name), signal.SIGKILL)
        proc.communicate()
