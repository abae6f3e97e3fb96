"""What a task job costs in system calls, counted with strace: the tasks layer's speed
rests on it (``bench/tasks_roundtrip.py``, docs/performance.md#tasks-the-round-trip-and-the-rate).

A worker takes a task job, reads its call, runs it, keeps its answer and finishes the
job in 23 calls (one thread, tmpfs or any local filesystem): 18 for a plain job whose
handler reads its data, and 5 for the answer (create in ``tmp/``, write, set its expiry
as its mtime, close, rename into ``results/``), plus on a durable queue the answer's 2
fsyncs (the file and ``results/``) and the finish's fsync of ``queue/`` (open, fsync,
close: the control file's removal made durable before the data's, docs/durability.md).
A later change that adds a ``stat``, a directory listing per answer or a second read of
the job's files fails here, by name, instead of showing only as a slower benchmark on a
loaded machine.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dirqueue

pytestmark = pytest.mark.timeout(120)

STRACE = shutil.which("strace")
#: Jobs run in each phase (after 10 to warm up); the turns between the end of the
#: first and the end of the last are counted.
JOBS = 61
#: The most calls a task job may take, its worker's every thread counted: what it takes
#: now (23.0 on average; the half is room for an odd call, such as a refresh of the
#: pickup's index).
TASK_JOB_MAX = 23.5
#: A plain job whose handler reads its data (the calls a task job adds to it: the answer).
READ_JOB_MAX = 18.5
#: Calls an answer takes (tmp/ file, write, utimensat, close, rename), durable or not.
ANSWER_MAX = 5.5
#: And a durable queue's fsyncs: the answer's file, results/, and queue/ at the finish
#: (opened, fsynced and closed).
DURABLE_EXTRA_MAX = 5.5

_MARK = "/nonexistent-dq-task-syscalls/"
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")

_CHILD = """
import os, sys
from dirqueue import Worker
from dirqueue.tasks import TaskHandler, TaskQueue

root, jobs = sys.argv[1], int(sys.argv[2])

def mark(what):
    try:
        os.stat(MARK + what)
    except OSError:
        pass

def read(job):
    return job.get_data()

queues = {}
for phase, durable in (("task", False), ("read", False), ("durable", True)):
    queues[phase] = TaskQueue(os.path.join(root, phase), durable=durable, create=True)

echo = queues["task"].task(name="echo")(lambda x: x)
echo_durable = queues["durable"].task(name="echo-durable")(lambda x: x)

def fill(phase, n):
    if phase == "read":
        queues[phase].enqueue_many([b"%d" % i for i in range(n)])
    else:
        for i in range(n):
            (echo if phase == "task" else echo_durable).submit(i)

for phase, q in queues.items():
    handler = read if phase == "read" else TaskHandler(q)
    fill(phase, 10)  # Warm up: imports, kept directories, the first sweep of results/.
    Worker(q, handler, until_empty=True).run()
    fill(phase, jobs)
    done = []

    def on_result(result, phase=phase, done=done):
        # From the end of the first job to the end of the last: jobs - 1 whole turns
        # of the loop (take, run, answer, finish), without the worker's start or end.
        done.append(result.outcome.value)
        if len(done) == 1:
            mark(phase + "-begin")
        elif len(done) == jobs:
            mark(phase + "-end")

    Worker(q, handler, until_empty=True, on_result=on_result).run()
    assert done == ["finished"] * jobs, done
""".replace("MARK", repr(_MARK))


def _calls_per_job(tmp_path: Path) -> dict[str, tuple[float, collections.Counter[str]]]:
    """Each phase's calls per job, and the calls by name, from one traced child."""
    assert STRACE is not None
    out = tmp_path / "strace.out"
    src = str(Path(dirqueue.__file__).resolve().parent.parent)
    done = subprocess.run(
        [STRACE, "-f", "-qq", "-o", str(out), sys.executable, "-c", _CHILD,
         str(tmp_path / "queues"), str(JOBS)],
        env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True, timeout=100,
        check=False,
    )
    if done.returncode != 0 and "ptrace" in done.stderr.lower():
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    found: dict[str, tuple[float, collections.Counter[str]]] = {}
    phase, calls = None, collections.Counter[str]()
    for line in out.read_text().splitlines():
        if _MARK in line:
            what = line.split(_MARK, 1)[1].split('"', 1)[0]
            name, _, edge = what.rpartition("-")
            if edge == "begin":
                phase, calls = name, collections.Counter()
            else:
                found[name] = (calls.total() / (JOBS - 1), calls)
                phase = None
            continue
        match = _CALL.match(line)
        if phase is not None and match:
            calls[match.group(1)] += 1
    return found


@pytest.mark.skipif(STRACE is None, reason="needs strace (apt-get install strace)")
def test_a_task_job_costs_a_plain_jobs_calls_and_its_answers_five(tmp_path: Path) -> None:
    found = _calls_per_job(tmp_path)
    task, task_calls = found["task"]
    read, read_calls = found["read"]
    durable, durable_calls = found["durable"]
    shown = {k: (round(v[0], 2), dict(v[1].most_common())) for k, v in found.items()}
    assert task <= TASK_JOB_MAX, shown
    assert read <= READ_JOB_MAX, shown
    assert task - read <= ANSWER_MAX, shown
    assert durable - task <= DURABLE_EXTRA_MAX, shown
    # Sweeping expired answers lists results/ every few minutes, never per answer; and
    # no answer is stat()ed or read back by the worker that wrote it.
    assert task_calls["getdents64"] == 0, shown
    assert durable_calls["getdents64"] == 0, shown
    stats = ("newfstatat", "fstat", "stat", "lstat", "statx")
    assert sum(task_calls[c] for c in stats) <= sum(read_calls[c] for c in stats), shown
    assert task_calls["renameat"] + task_calls["renameat2"] <= JOBS, shown
    assert durable_calls["fsync"] <= 3 * JOBS, shown
    assert read_calls["renameat"] + read_calls["renameat2"] == 0, shown
