"""The queue shared by two hosts over real network filesystems (GlusterFS, NFSv3).

Each simulated host is its own network namespace, UTS namespace (host name) and client
mount of the share, set up by the scripts in ``tests/multihost/`` (``make
test-multihost`` runs them, as root; see tests/multihost/README.md). The two hosts see
the queue at different paths, as real hosts often do.
Without those mounts these tests are skipped.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import recorded_logs
from _multihost import KINDS, Hosts, lines, missing, shared_queue
from dirqueue import DirQueue

# Run after `make test`, by `make test-multihost` and .ci/run, once the test bed is up.
pytestmark = pytest.mark.multihost


@pytest.fixture(params=sorted(KINDS))
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    why = missing(KINDS[request.param], (1, 2), perl=False)
    if why:
        pytest.skip(f"no {request.param} test bed ({why}): run 'make test-multihost' as root")
    with shared_queue(request.param) as h:
        yield h


@pytest.mark.timeout(180)
def test_two_hosts_share_a_queue_and_every_job_is_done_once(hosts: Hosts, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    logs = [tmp_path / f"done-{n}-{k}.txt" for n in (1, 2) for k in range(2)]
    consumers = [
        hosts.start(n, "consume", hosts.qdir(n), str(log), str(stop))
        for log, n in zip(logs, (1, 1, 2, 2), strict=False)
    ]
    producers = [hosts.start(n, "produce", hosts.qdir(n), "150", f"h{n}") for n in (1, 2)]
    for proc in producers:
        assert hosts.result(proc, timeout=120) == {"produced": 150}
    stop.touch()
    counts = [hosts.result(proc, timeout=120) for proc in consumers]

    done = lines(logs)
    expected = {f"h{n}-{i}" for n in (1, 2) for i in range(150)}
    assert set(done) == expected
    assert [job for job, times in done.items() if times > 1] == []
    # Both hosts did work, and the queue is empty on both views of it.
    by_host = collections.Counter()
    for c in counts:
        by_host[c["host"]] += c["consumed"]
    assert set(by_host) == {"fsphost1", "fsphost2"}
    for n in (1, 2):
        assert list(DirQueue(hosts.qdir(n)).jobs()) == []
        assert os.listdir(os.path.join(hosts.qdir(n), "active")) == []


@pytest.mark.timeout(60)
def test_a_job_from_one_host_wakes_a_waiter_on_the_other(hosts: Hosts) -> None:
    waiter = hosts.start(2, "wait", hosts.qdir(2), "30")
    time.sleep(2)  # Let it settle into waiting.
    sent = time.time()
    producer = hosts.start(1, "produce", hosts.qdir(1), "1", "wake")
    hosts.result(producer, timeout=30)
    result = hosts.result(waiter, timeout=40)
    assert result["data"] == "wake-0"
    # No inotify crosses hosts: the poll (0.5 s) must find it.
    assert float(result["now"]) - sent < 3.0


@pytest.mark.timeout(90)
def test_a_dead_workers_lock_on_another_host_is_recovered_only_with_heartbeats(
    hosts: Hosts, tmp_path: Path
) -> None:
    q1 = DirQueue(hosts.qdir(1))
    perl_style = q1.enqueue_string("plain lock")
    ready = tmp_path / "ready"
    holder = hosts.start(1, "hold", hosts.qdir(1), str(ready))
    _wait_for(ready, holder)
    assert ready.read_text() == perl_style
    os.killpg(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)

    # Of better priority, so that the second holder (on host 1 too) takes it, not the
    # first holder's job, which it would recover at once (same host, boot and pid
    # namespace: its owner is proven dead there).
    beating = q1.enqueue_string("heartbeat lock", priority=10)
    ready2 = tmp_path / "ready2"
    holder2 = hosts.start(1, "hold", hosts.qdir(1), str(ready2), "heartbeat")
    _wait_for(ready2, holder2)
    assert ready2.read_text() == beating
    os.killpg(holder2.pid, signal.SIGKILL)
    holder2.communicate(timeout=10)

    # Host 2 cannot see host 1's processes. A lock that promised heartbeats and went
    # quiet is recovered; an IPC::DirQueue-style lock (no promise) is left alone.
    q2 = DirQueue(hosts.qdir(2), active_file_lifetime=2)
    deadline = time.monotonic() + 30
    taken = []
    while time.monotonic() < deadline and not taken:
        with recorded_logs() as seen:
            job = q2.pickup_queued_job()
        if job is not None:
            assert any("stale lock" in message for message in seen)
            taken.append(job.jobid)
            assert job.get_data() == b"heartbeat lock"
            job.finish()
        time.sleep(0.5)
    assert taken == [beating]
    assert q2.pickup_queued_job() is None
    assert [j.jobid for j in q2.jobs()] == [perl_style]


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the holder never took its job"
        time.sleep(0.1)
