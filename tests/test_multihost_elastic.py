"""Elastic workers on the three-host test bed (issue 23): a server on host 1 with
``--workers 1:6`` drains a burst of 500 slow jobs submitted on host 2, growing to 6
within seconds and back to 1 after the quiet period, while ``dq stats`` on host 3
sees its count change through ``servers/``; every job runs exactly once.

Run with ``pytest -m multihost tests/test_multihost_elastic.py`` (as root, with the
test bed up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import wait_for
from _multihost import KINDS, Hosts, host_cmd, missing, record, shared_queue

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(300)]

DQ = str(Path(sys.executable).parent / "dq")
JOBS = 500
JOB = 'sleep 0.1; echo "$DQ_JOBID" >> "$MARKS/$(hostname).$$"'
SUBMIT = r"""
import sys
from dirqueue import DirQueue
DirQueue(sys.argv[1]).enqueue_many(str(i) for i in range(int(sys.argv[2])))
"""


@pytest.fixture(params=sorted(KINDS))
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    why = missing(KINDS[request.param], (1, 2, 3), perl=False)
    if why:
        pytest.skip(why)
    with shared_queue(request.param, "dq-elastic") as h:
        yield h


def stats_from_host_3(h: Hosts) -> dict[str, int]:
    out = subprocess.run(
        host_cmd(3, DQ, "stats", "--dir", h.qdir(3), "--json"),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    workers: dict[str, int] = json.loads(out)["workers_by_host"]
    return workers


def test_a_burst_from_another_host_grows_the_pool_and_the_quiet_shrinks_it(
    hosts: Hosts, tmp_path: Path
) -> None:
    h = hosts
    marks = tmp_path / "marks"
    marks.mkdir()
    server = h._popen(
        host_cmd(1, DQ, "server", "--dir", h.qdir(1), "--workers", "1:6",
                 "--grow-interval", "0.5", "--shrink-after", "3", "--poll-interval", "0.5",
                 "-q", "--json", "--", "sh", "-c", JOB, "sh"),
        {"MARKS": str(marks)},
    )  # fmt: skip
    assert wait_for(lambda: stats_from_host_3(h) == {"fsphost1": 1}, timeout=60)
    subprocess.run(
        host_cmd(2, sys.executable, "-c", SUBMIT, h.qdir(2), str(JOBS)),
        check=True, timeout=120,
    )
    # From here: enqueue_many links its jobs into queue/ together, at its end.
    began = time.monotonic()
    seen: list[tuple[float, int]] = []

    def at(count: int) -> bool:
        workers = stats_from_host_3(h).get("fsphost1", 0)
        seen.append((round(time.monotonic() - began, 2), workers))
        return workers == count

    assert wait_for(lambda: at(6), timeout=60), seen
    grown_in = seen[-1][0]
    # 5 steps of 0.5 s, and what host 3 sees of it: its dq stats (a few seconds over
    # 500 jobs) and its attribute cache (3 s); generous, for a shared test bed.
    assert grown_in < 20, seen
    done = lambda: sum(len(p.read_text().split()) for p in marks.iterdir())  # noqa: E731
    assert wait_for(lambda: done() == JOBS, timeout=180)
    drained_in = time.monotonic() - began
    assert wait_for(lambda: at(1), timeout=60), seen
    shrunk_in = time.monotonic() - began - drained_in
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    summary = json.loads(out)
    ran = [line for p in marks.iterdir() for line in p.read_text().split()]
    assert len(ran) == len(set(ran)) == JOBS  # Each job exactly once.
    assert summary["jobs"] == JOBS
    assert summary["workers_peak"] == 6
    assert stats_from_host_3(h) == {}  # Its entry went with it.
    assert os.listdir(os.path.join(h.qdir(1), "active")) == []
    record(
        "elastic", filesystem=h.kind, jobs=JOBS, grown_to_6_s=grown_in,
        drained_s=round(drained_in, 2), back_to_1_s=round(shrunk_in, 2),
    )
