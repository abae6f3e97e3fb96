"""The queue shared by two hosts over real network filesystems (GlusterFS, NFSv3).

Each simulated host is its own network namespace, UTS namespace (host name) and client
mount of the share, set up by the scripts in ``tests/multihost/`` (``make
test-multihost`` runs them, as root; see tests/multihost/README.md). The two hosts see
the queue at different paths, as real hosts often do.
Without those mounts these tests are skipped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import recorded_logs
from dirqueue import DirQueue

AGENT = str(Path(__file__).parent / "multihost" / "agent.py")
KINDS = {"glusterfs": "gl", "nfs3": "nfs"}


def _available(short: str) -> bool:
    return all(
        os.path.ismount(f"/mnt/fsp-{short}-h{n}") and os.path.exists(f"/run/netns/fsp-h{n}")
        for n in (1, 2)
    )


def _host_cmd(n: int, *argv: str) -> list[str]:
    # The host's own network and host name; the mount namespace stays shared, so the
    # venv and the test's files are where they are.
    return [
        "nsenter", f"--net=/run/netns/fsp-h{n}", "unshare", "-u",
        "sh", "-c", 'hostname "$0"; exec "$@"', f"fsphost{n}", *argv,
    ]


class Hosts:
    """Starts agents on simulated hosts and kills whatever is left at the end."""

    def __init__(self, short: str, name: str) -> None:
        self.short = short
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []

    def qdir(self, n: int) -> str:
        return f"/mnt/fsp-{self.short}-h{n}/{self.name}"

    def start(self, n: int, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            _host_cmd(n, sys.executable, AGENT, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)  # Reaps it and closes its pipes.


@pytest.fixture(params=sorted(KINDS))
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    short = KINDS[request.param]
    if os.geteuid() != 0 or not _available(short):
        pytest.skip(f"no {request.param} test bed: run 'make test-multihost' as root to set it up")
    h = Hosts(short, f"dq-test-{uuid.uuid4().hex[:8]}")
    os.makedirs(h.qdir(1))
    try:
        yield h
    finally:
        h.kill_all()
        subprocess.run(["rm", "-rf", h.qdir(1)], check=False, timeout=60)


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

    done = collections.Counter(
        line for log in logs if log.exists() for line in log.read_text().splitlines()
    )
    expected = {f"h{n}-{i}" for n in (1, 2) for i in range(150)}
    assert set(done) == expected
    assert [job for job, times in done.items() if times > 1] == []
    # Both hosts did work, and the queue is empty on both views of it.
    by_host = collections.Counter()
    for c in counts:
        by_host[c["host"]] += c["consumed"]  # type: ignore[index,operator]
    assert set(by_host) == {"fsphost1", "fsphost2"}
    for n in (1, 2):
        assert list(DirQueue(hosts.qdir(n)).jobs()) == []
        assert os.listdir(os.path.join(hosts.qdir(n), "active")) == []


@pytest.mark.timeout(60)
def test_a_job_from_one_host_wakes_a_waiter_on_the_other(hosts: Hosts) -> None:
    DirQueue(hosts.qdir(2)).pickup_queued_job()  # Creates the queue's directories.
    waiter = hosts.start(2, "wait", hosts.qdir(2), "30")
    time.sleep(2)  # Let it settle into waiting.
    sent = time.time()
    producer = hosts.start(1, "produce", hosts.qdir(1), "1", "wake")
    hosts.result(producer, timeout=30)
    result = hosts.result(waiter, timeout=40)
    assert result["data"] == "wake-0"
    # No inotify crosses hosts: the poll (0.5 s) must find it.
    assert float(result["now"]) - sent < 3.0  # type: ignore[arg-type]


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
