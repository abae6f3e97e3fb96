"""bench/peers.py runs end to end: every workload, every installed peer, exactly once.

The peers from PyPI (the ``bench`` extra) and the Perl module are optional: the script
skips each one that is missing, with its reason, and so does this test. dirqueue, the
bare floor and ``mailbox.Maildir`` need nothing but Python, so they always run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PEERS_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "peers.py"
ALWAYS = ("dirqueue", "bare", "maildir")


@pytest.mark.timeout(90)
def test_quick_run_covers_every_workload_and_every_job_exactly_once(tmp_path: Path) -> None:
    # On tmpfs where there is one: the disk's speed is not what this test is about.
    tmpfs = "/dev/shm"  # noqa: S108 - peers.py makes its own directory below it
    where = tmpfs if os.path.isdir(tmpfs) else tempfile.gettempdir()
    out = tmp_path / "peers.json"
    done = subprocess.run(
        [sys.executable, str(PEERS_SCRIPT), "--quick", "--dir", where, "--json", str(out)],
        capture_output=True, text=True, timeout=80, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    ran = set(result["peers"])
    assert ran | set(result["skipped"]) == {
        "dirqueue", "dirq", "diskcache", "litequeue", "maildir", "perl", "bare"
    }
    assert set(ALWAYS) <= ran
    for peer, reason in result["skipped"].items():
        assert reason, peer
        assert reason in done.stdout, peer
    steps = {step["workload"]: step["key"] for step in result["steps"]}
    assert set(steps) == {"enqueue", "drain", "many", "wakeup", "server", "contention"}
    rounds = result["rounds"]
    for workload in ("enqueue", "drain", "many", "wakeup"):
        assert set(rounds[steps[workload]]) == ran, workload
    for workload in steps:
        for peer, runs in rounds[steps[workload]].items():
            assert runs, (workload, peer)
            for run in runs:
                assert "error" not in run, (workload, peer, run)
    for peer, runs in rounds[steps["many"]].items():
        assert all(run["exactly_once"] for run in runs), (peer, runs)
    for peer, runs in rounds[steps["drain"]].items():
        assert all(run["count"] == run_jobs(result, "drain") for run in runs), peer
    contention = rounds[steps["contention"]]["dirqueue"]
    assert all(run["exactly_once"] and run["held_per_job"] >= 0 for run in contention)
    server = rounds[steps["server"]]["dirqueue"]
    assert all(run["server_jobs"] == run_jobs(result, "server") for run in server)
    assert "ratio to dirqueue" in done.stdout


def run_jobs(result: dict[str, object], workload: str) -> int:
    """The number of jobs the JSON says ``workload`` was run with."""
    steps = result["steps"]
    assert isinstance(steps, list)
    (step,) = [s for s in steps if s["workload"] == workload]
    return int(step["params"]["n"])
