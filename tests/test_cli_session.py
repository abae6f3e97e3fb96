"""The dq sessions in README.md and docs/cli.md are real: examples/cli_session.sh is run
and each session block must be a stretch of its output, once job ids, times, rates,
pids, host names and temporary paths are set aside."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "cli_session.sh"
MARKER = "<!-- The output of a real run of examples/cli_session.sh"


def normalize(text: str) -> list[str]:
    """Lines with what changes from run to run made constant, spacing collapsed."""
    text = re.sub(r"\b\d\d\.\d{20}\.[A-Za-z0-9]+", "JOBID", text)
    text = re.sub(r"/data/\w/\w/", "/data/C/C/", text)
    text = re.sub(r"/\S*?/spool/", "WORK/spool/", text)
    text = re.sub(rf"\bon {re.escape(socket.gethostname())}\b", "on HOST", text)
    text = re.sub(r"\bon \S+( \(pid|$)", r"on HOST\1", text, flags=re.M)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return [" ".join(line.split()) for line in text.splitlines()]


def session_blocks(path: Path) -> list[str]:
    text = path.read_text()
    blocks = []
    for part in text.split(MARKER)[1:]:
        body = part.split("```\n", 1)[1].split("```\n", 1)[0]
        blocks.append(body)
    return blocks


@pytest.fixture(scope="module")
def session() -> list[str]:
    bash = shutil.which("bash")
    if bash is None or not (Path(sys.executable).parent / "dq").exists():
        pytest.skip("needs bash and the dq script in the virtualenv")
    venv = Path(sys.executable).parent.parent
    if venv.resolve() != (ROOT / ".venv").resolve():
        pytest.skip("examples/cli_session.sh runs the dq of the repository's .venv")
    run = subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    return normalize(run.stdout)


def is_stretch_of(block: list[str], lines: list[str]) -> bool:
    return any(lines[i : i + len(block)] == block for i in range(len(lines) - len(block) + 1))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("doc", ["README.md", "docs/cli.md"])
def test_the_sessions_in_the_docs_are_real_output(session: list[str], doc: str) -> None:
    blocks = session_blocks(ROOT / doc)
    assert blocks, f"{doc} has no session from examples/cli_session.sh"
    for block in blocks:
        wanted = normalize(block)
        assert is_stretch_of(wanted, session), (
            f"{doc}: this session is not what examples/cli_session.sh prints now;"
            f" regenerate it:\n{block}"
        )


def test_normalize_sets_aside_what_changes() -> None:
    one = normalize("1       556     3 jobs in 0.01s (508.9 jobs/s) 50.20261128192616291083.DMzg5")
    two = normalize("1     19267     3 jobs in 0.02s (98.0 jobs/s) 10.20261201152540140273.DNDg4")
    assert one == two
