"""Three hosts share a queue over GlusterFS and NFSv3: Perl and dirqueue processes side
by side, the cross-host wake-up, and a host that dies holding jobs.

The test bed is three simulated hosts (``FSP_HOSTS=3``; see tests/multihost/README.md):
each its own network namespace, host name and client mount. Without it these tests are
skipped, saying why. Settings:

- ``DQ_MULTIHOST_JOBS``: jobs in the mixed-language runs (default 1,200). The same
  scenario at 10,000 jobs, on both filesystems, with a table: ``bench/multihost_mixed.py``.
- ``DQ_MULTIHOST_RESULTS``: a file to which each scenario appends one JSON line of its
  figures (jobs, lost, doubled, seconds, wake-up delays, recovery time).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import wait_for
from _multihost import (
    HOSTS,
    KINDS,
    MIXES,
    MULTIHOST,
    Hosts,
    host_cmd,
    lines,
    missing,
    record,
    run_mixed,
    shared_queue,
)
from dirqueue import DirQueue, list_jobs

# Run after `make test`, by `make test-multihost` and .ci/run, once the test bed is up.
pytestmark = pytest.mark.multihost

JOBS = int(os.environ.get("DQ_MULTIHOST_JOBS", "1200"))


@pytest.fixture(params=sorted(KINDS))
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    why = missing(KINDS[request.param], HOSTS, perl=True)
    if why:
        pytest.skip(f"no three-host {request.param} test bed: {why}")
    with shared_queue(request.param) as h:
        yield h


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.timeout(240 + JOBS // 8)
def test_three_hosts_perl_and_dirqueue_do_every_job_once(
    hosts: Hosts, tmp_path: Path, mix: str
) -> None:
    """On each host 2 producers and 2 consumers: one of each Perl's, the others
    dirqueue's ("mixed"), or all Perl's ("perl-only", the baseline)."""
    figures = run_mixed(hosts, tmp_path, JOBS, mix, timeout=180 + JOBS // 8)
    record(f"3 hosts, {mix}", **figures)
    assert figures["produced"] == figures["acked"] == JOBS, figures
    assert figures["lost"] == 0, figures
    assert figures["doubled"] == 0, figures
    assert figures["not_acked_but_done"] == 0, figures
    # Every host did work, and the queue is empty on every host's view of it.
    assert figures["hosts_that_worked"] == [f"fsphost{n}" for n in HOSTS]
    for n in HOSTS:
        assert list(DirQueue(hosts.qdir(n)).jobs()) == []
        assert os.listdir(os.path.join(hosts.qdir(n), "active")) == []


ROUNDS = 20
POLL = 0.5


@pytest.mark.timeout(240)
def test_cross_host_wake_up_delay(hosts: Hosts) -> None:
    """A job enqueued on host 1 reaches a dirqueue worker waiting on host 2 (no inotify
    crosses hosts: its poll finds it) within about one poll interval."""
    waiter = hosts.start(2, "waits", hosts.qdir(2), str(ROUNDS), str(POLL))
    assert waiter.stdout is not None
    q1 = DirQueue(hosts.qdir(1))
    time.sleep(2)  # Let it settle into waiting.
    delays = []
    for i in range(ROUNDS):
        sent = time.time()
        q1.enqueue_string(f"wake-{i}")
        taken = json.loads(waiter.stdout.readline())
        assert taken["data"] == f"wake-{i}"
        delays.append(float(taken["now"]) - sent)
        # Enqueue at different phases of the poll, and after the waiter has been idle
        # long enough (over 2 s) to trust its cached listing of queue/ by its mtime.
        time.sleep(0.37 * (i % 3) + 2.5 * (i % 2))
    # Its last line is read as the others were: communicate() reads the pipe itself and
    # would miss a line this file object's buffer took in with the twentieth.
    assert json.loads(waiter.stdout.readline()) == {"rounds": ROUNDS}
    assert waiter.wait(timeout=30) == 0
    delays.sort()
    median = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    record(
        "cross-host wake-up", fs=hosts.kind, rounds=ROUNDS, poll_interval=POLL,
        median_s=round(median, 3), p99_s=round(p99, 3),
        delays_s=[round(d, 2) for d in delays],
    )
    # One poll interval, plus the attribute cache where there is one (NFS: 3 s).
    assert median < POLL + 3.5
    assert p99 < 2 * POLL + 3.5


LIFETIME = 6.0


@contextlib.contextmanager
def _own_mount(hosts: Hosts, n: int) -> Iterator[str]:
    """A client mount of the share from host ``n`` that this test may kill (umount -l)
    without touching the test bed's own mounts."""
    mp = f"/mnt/fsp-{hosts.short}-dying-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "FSP_NFS_ATTR_TIMEOUT": os.environ.get("FSP_NFS_ATTR_TIMEOUT", "3")}
    subprocess.run([str(MULTIHOST / "mount-client.sh"), hosts.short, str(n), mp],
                   check=True, timeout=60, env=env, capture_output=True)
    try:
        yield mp
    finally:
        if os.path.ismount(mp):
            subprocess.run(["umount", "-l", mp], check=False, timeout=30)
        pidfile = Path(os.environ.get("FSP_STATE", "/run/fsprobe")) / f"nfsfuse-{Path(mp).name}.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            pidfile.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(mp)


def _dq(n: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(host_cmd(n, sys.executable, "-m", "dirqueue", *args),
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.timeout(180)
def test_a_dead_host_heartbeat_locks_recovered_perl_lock_freed_by_the_operator(
    hosts: Hosts, tmp_path: Path
) -> None:
    """Host 3 dies (every process SIGKILLed, its mount gone) holding a dirqueue job and a
    Perl job: hosts 1 and 2 recover the first after the lifetime; the second keeps the
    Perl rule until ``dq fsck --repair --host fsphost3``."""
    env = {"DQ_AGENT_LIFETIME": str(LIFETIME)}
    q1 = DirQueue(hosts.qdir(1), active_file_lifetime=LIFETIME)
    perl_job = q1.enqueue_string("perl's", priority=10)
    with _own_mount(hosts, 3) as mount:
        ready = tmp_path / "ready-perl"
        perl_holder = hosts.start_perl(3, "hold", hosts.qdir(3, mount), str(ready))
        assert wait_for(ready.exists, timeout=30), perl_holder.communicate(timeout=5)
        assert ready.read_text() == perl_job
        dq_job = q1.enqueue_string("dirqueue's", priority=20)
        ready2 = tmp_path / "ready-dq"
        dq_holder = hosts.start(3, "hold", hosts.qdir(3, mount), str(ready2), "heartbeat",
                                env=env)
        assert wait_for(ready2.exists, timeout=30), dq_holder.communicate(timeout=5)
        assert ready2.read_text() == dq_job

        # Alive: the operator is refused, and nothing is removed.
        alive = _dq(1, "fsck", "--dir", hosts.qdir(1), "--repair", "--host", "fsphost3")
        assert alive.returncode != 0
        assert "looks alive" in alive.stderr
        mine = _dq(1, "fsck", "--dir", hosts.qdir(1), "--repair", "--host", "fsphost1")
        assert mine.returncode != 0
        assert "this host" in mine.stderr

        # The host dies: all its processes at once, then its mount.
        hosts.kill(perl_holder)
        hosts.kill(dq_holder)
        died = time.monotonic()
        subprocess.run(["umount", "-l", mount], check=True, timeout=30)

        stop = tmp_path / "stop"
        logs = [tmp_path / f"done-h{n}.txt" for n in (1, 2)]
        consumers = [hosts.start(n, "consume", hosts.qdir(n), str(log), str(stop), env=env)
                     for n, log in zip((1, 2), logs, strict=True)]
        assert wait_for(lambda: "dirqueue's" in lines(logs), timeout=LIFETIME + 60)
        recovered = time.monotonic() - died
        assert recovered >= LIFETIME - 1  # Not before the heartbeat went quiet.

        # The Perl worker's lock stays, and the listing (what dq list shows, judged
        # with this queue's lifetime) says why.
        time.sleep(LIFETIME)
        assert "perl's" not in lines(logs)
        [held] = list_jobs(DirQueue(hosts.qdir(2), active_file_lifetime=LIFETIME))
        assert held.job.jobid == perl_job
        assert "never broken from here" in held.note

        freed_at = time.monotonic()
        repaired = _dq(1, "fsck", "--dir", hosts.qdir(1), "--repair", "--host", "fsphost3")
        assert repaired.returncode == 0, repaired.stderr
        assert "dead-host-lock" in repaired.stdout
        assert wait_for(lambda: "perl's" in lines(logs), timeout=30)
        after_repair = time.monotonic() - freed_at
        stop.touch()
        for proc in consumers:
            hosts.result(proc, timeout=60)
    done = lines(logs)
    assert done == {"dirqueue's": 1, "perl's": 1}
    assert list(q1.jobs()) == []
    record(
        "a host dies", fs=hosts.kind, jobs=2, lost=0, doubled=0, lifetime_s=LIFETIME,
        heartbeat_lock_recovered_s=round(recovered, 1),
        perl_lock_taken_after_repair_s=round(after_repair, 1),
    )
