"""The README's task session is real: examples/tasks_session.py (which runs a
``dq server --tasks`` of its own) prints it, once job ids, paths, line numbers and the
carets of newer Pythons' tracebacks are set aside; and the README shows the tasks
module the session imports, as it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- The output of a real run of examples/tasks_session.py"


def normalize(text: str) -> list[str]:
    text = re.sub(r"\b\d\d\.\d{20}\.[A-Za-z0-9]+", "JOBID", text)
    text = re.sub(r'File "[^"]*/examples/', 'File "EXAMPLES/', text)
    text = re.sub(r"line \d+", "line N", text)
    return [
        line.rstrip() for line in text.splitlines()
        if line.strip() and set(line.strip()) - set("~^")  # 3.11's carets: not in 3.10
    ]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(MARKER, 1)[1].split("```\n", 1)[1].split("```\n", 1)[0]


@pytest.mark.timeout(90)
def test_the_readme_task_session_is_what_the_example_prints() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tasks_session.py")], env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert normalize(readme_block()) == normalize(run.stdout), (
        "README.md's task session is not what examples/tasks_session.py prints now:"
        f" regenerate it:\n{run.stdout}"
    )


def test_the_readme_shows_the_tasks_module_the_session_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    module = (ROOT / "examples" / "wordcount_tasks.py").read_text()
    for line in ("@q.task(retries=2, retry_delay=5, timeout=60)", "@q.task(retries=0)",
                 "def word_count(text: str, top: int = 3) -> dict[str, object]:",
                 "def divide(a: float, b: float) -> float:",
                 "    words = text.lower().split()",
                 '    return {"words": len(words), "top": Counter(words).most_common(top)}',
                 "    return a / b"):
        assert line in module
        assert line in readme
