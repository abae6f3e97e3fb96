"""`make demo` keeps working: the demo runs end to end and every job is done once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


@pytest.mark.timeout(300)
def test_the_demo_drains_every_job_exactly_once_and_fails_the_poisoned_ones() -> None:
    run = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=280, check=False
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "every job done exactly once: True" in out
    # The warm cache: each of the two server workers built the table once.
    assert "table of primes built 2 times by the server" in out
    # The poisoned jobs ended in failed/ after three attempts, and nothing is left.
    failed = out.split("== dq list --failed", 1)[1]
    assert failed.count("ValueError: -7 is outside the table") == 2
    after = out.split("== dq stats (after)", 1)[1].split()
    assert after[after.index("queued") + 1] == "0"
    assert after[after.index("failed") + 1] == "2"
