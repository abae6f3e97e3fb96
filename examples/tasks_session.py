"""Runs the README's task session for real and prints it as an interactive session.

tests/test_readme_tasks.py checks that the README's block is this script's output. A
``dq server --tasks wordcount_tasks`` runs meanwhile, in a process of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def show(source: str, scope: dict[str, Any]) -> None:
    """Print ``>>> source`` and what the interpreter would print after it."""
    print(f">>> {source}")
    try:
        code = compile(source, "<session>", "eval")
    except SyntaxError:
        exec(source, scope)  # noqa: S102 - our own session's lines
        return
    try:
        value = eval(code, scope)  # noqa: S307 - our own session's lines
    except Exception as err:  # Printed as the interpreter would.
        print("Traceback (most recent call last):\n  ...")
        print(f"{type(err).__module__}.{type(err).__name__}: {err}")
        return
    if value is not None:
        print(repr(value))


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        os.environ["WORDCOUNT_QUEUE"] = str(Path(work) / "spool" / "words")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        sys.path.insert(0, str(HERE))
        from wordcount_tasks import q  # noqa: PLC0415 - after its queue is chosen

        q.create()
        server = subprocess.Popen(  # noqa: S603 - our own dq server
            [sys.executable, "-m", "dirqueue", "server", "--dir", q.dir,
             "--tasks", "wordcount_tasks", "--workers", "2", "-q"],
            cwd=HERE, env=env, start_new_session=True, stderr=subprocess.DEVNULL,
        )
        try:
            scope: dict[str, Any] = {}
            for line in [
                "from wordcount_tasks import word_count, divide",
                'r = word_count.submit("the cat saw the other cat", top=2)',
                "r.get(timeout=10)",
                "r.status",
                "from dirqueue.tasks import TaskResult",
                "TaskResult(word_count.queue, r.jobid).get()",
                "divide.submit(1, 0).get(timeout=10)",
                'word_count.submit(("a", "tuple"))',
                'word_count.options(priority=10, delay=60).submit("later").status',
            ]:
                show(line, scope)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
