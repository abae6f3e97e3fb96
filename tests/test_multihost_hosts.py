"""Three hosts share a queue over GlusterFS and NFSv3: Perl and dirqueue processes side
by side, the cross-host wake-up, and a host that dies holding jobs.

The test bed is three simulated hosts (``FSP_HOSTS=3``; see tests/multihost/README.md):
each its own network namespace, host name and client mount. Without it these tests are
skipped, saying why. Settings:

- ``DQ_MULTIHOST_JOBS``: jobs in the mixed-language runs (default 1,200; the figures in
  docs/deploying.md are from 10,000).
- ``DQ_MULTIHOST_RESULTS``: a file to which each scenario appends one JSON line of its
  figures (jobs, lost, doubled, seconds, wake-up delays, recovery time).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
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
from _perl import PERL_LIB
from dirqueue import DirQueue, list_jobs

MULTIHOST = Path(__file__).parent / "multihost"
AGENT = str(MULTIHOST / "agent.py")
PERL_AGENT = str(MULTIHOST / "agent.pl")
KINDS = {"glusterfs": "gl", "nfs3": "nfs"}
HOSTS = (1, 2, 3)
JOBS = int(os.environ.get("DQ_MULTIHOST_JOBS", "1200"))


def _missing(short: str) -> str | None:
    """Why the three-host test bed on ``short`` is not usable here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for n in HOSTS:
        if not os.path.exists(f"/run/netns/fsp-h{n}"):
            return f"no host {n}: run FSP_HOSTS=3 tests/multihost/setup-*.sh as root"
        if not os.path.ismount(f"/mnt/fsp-{short}-h{n}"):
            return f"/mnt/fsp-{short}-h{n} is not mounted (FSP_HOSTS=3 setup-*.sh)"
    if shutil.which("perl") is None or not (PERL_LIB / "IPC" / "DirQueue.pm").is_file():
        return f"no perl, or no IPC::DirQueue at {PERL_LIB}"
    return None


def _host_cmd(n: int, *argv: str) -> list[str]:
    # The host's own network and host name; the mount namespace stays shared.
    return [
        "nsenter", f"--net=/run/netns/fsp-h{n}", "unshare", "-u",
        "sh", "-c", 'hostname "$0"; exec "$@"', f"fsphost{n}", *argv,
    ]


def _record(scenario: str, **figures: object) -> None:
    out = os.environ.get("DQ_MULTIHOST_RESULTS")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"scenario": scenario, **figures}) + "\n")


class Hosts:
    """Starts dirqueue and Perl agents on simulated hosts; kills what is left at the end."""

    def __init__(self, kind: str, short: str, name: str) -> None:
        self.kind = kind
        self.short = short
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []

    def qdir(self, n: int, mount: str | None = None) -> str:
        return f"{mount or f'/mnt/fsp-{self.short}-h{n}'}/{self.name}"

    def start(self, n: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return self._popen(_host_cmd(n, sys.executable, AGENT, *args), env)

    def start_perl(self, n: int, *args: str) -> subprocess.Popen[str]:
        return self._popen(_host_cmd(n, "perl", f"-I{PERL_LIB}", PERL_AGENT, *args), None)

    def _popen(self, argv: list[str], env: dict[str, str] | None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def kill(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)  # Reaps it and closes its pipes.

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture(params=sorted(KINDS))
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    short = KINDS[request.param]
    why = _missing(short)
    if why:
        pytest.skip(f"no three-host {request.param} test bed: {why}")
    h = Hosts(request.param, short, f"dq-test-{uuid.uuid4().hex[:8]}")
    os.makedirs(h.qdir(1))
    DirQueue(h.qdir(1)).pickup_queued_job()  # Creates the queue's directories.
    try:
        yield h
    finally:
        h.kill_all()
        subprocess.run(["rm", "-rf", h.qdir(1)], check=False, timeout=300)


def _lines(paths: list[Path]) -> collections.Counter[str]:
    return collections.Counter(
        line for p in paths if p.exists() for line in p.read_text().splitlines()
    )


@pytest.mark.parametrize("mix", ["mixed", "perl-only"])
@pytest.mark.timeout(240 + JOBS // 8)
def test_three_hosts_perl_and_dirqueue_do_every_job_once(
    hosts: Hosts, tmp_path: Path, mix: str
) -> None:
    """On each host 2 producers and 2 consumers: one of each Perl's, the others
    dirqueue's ("mixed"), or all Perl's ("perl-only", the baseline)."""
    stop = tmp_path / "stop"
    producers_n = 2 * len(HOSTS)
    shares = [JOBS // producers_n + (i < JOBS % producers_n) for i in range(producers_n)]
    done_logs: list[Path] = []
    acks: list[Path] = []
    consumers: list[subprocess.Popen[str]] = []
    for n in HOSTS:
        for k, lang in enumerate(("perl", "dq" if mix == "mixed" else "perl")):
            log = tmp_path / f"done-h{n}-{k}-{lang}.txt"
            done_logs.append(log)
            start = hosts.start_perl if lang == "perl" else hosts.start
            consumers.append(start(n, "consume", hosts.qdir(n), str(log), str(stop)))
    began = time.monotonic()
    producers: list[subprocess.Popen[str]] = []
    for n in HOSTS:
        for k, lang in enumerate(("perl", "dq" if mix == "mixed" else "perl")):
            tag = f"h{n}p{k}{lang}"
            ack = tmp_path / f"ack-{tag}.txt"
            acks.append(ack)
            start = hosts.start_perl if lang == "perl" else hosts.start
            share = shares[len(producers)]
            producers.append(start(n, "produce", hosts.qdir(n), str(share), tag, str(ack)))
    total = sum(shares)
    assert total == JOBS
    for proc, share in zip(producers, shares, strict=True):
        assert hosts.result(proc, timeout=60 + JOBS // 8) == {"produced": share}
    assert wait_for(lambda: sum(_lines(done_logs).values()) >= total, timeout=120 + JOBS // 10)
    seconds = time.monotonic() - began
    stop.touch()
    counts = [hosts.result(proc, timeout=60) for proc in consumers]

    acked = _lines(acks)
    done = _lines(done_logs)
    lost = sorted(set(acked) - set(done))
    doubled = sorted(job for job, times in done.items() if times > 1)
    _record(
        f"3 hosts, {mix}", fs=hosts.kind, jobs=total, lost=len(lost), doubled=len(doubled),
        seconds=round(seconds, 1), jobs_per_s=round(total / seconds),
        by_consumer={log.stem: done_by for log, done_by in zip(
            done_logs, (c["consumed"] for c in counts), strict=True)},
    )
    assert len(acked) == total
    assert lost == []
    assert doubled == []
    assert set(done) == set(acked)
    # Every host did work, and the queue is empty on every host's view of it.
    assert {c["host"] for c in counts if c["consumed"]} == {f"fsphost{n}" for n in HOSTS}
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
    assert hosts.result(waiter, timeout=30) == {"rounds": ROUNDS}
    delays.sort()
    median = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    _record(
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
    return subprocess.run(_host_cmd(n, sys.executable, "-m", "dirqueue", *args),
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
        assert wait_for(lambda: "dirqueue's" in _lines(logs), timeout=LIFETIME + 60)
        recovered = time.monotonic() - died
        assert recovered >= LIFETIME - 1  # Not before the heartbeat went quiet.

        # The Perl worker's lock stays, and the listing (what dq list shows, judged
        # with this queue's lifetime) says why.
        time.sleep(LIFETIME)
        assert "perl's" not in _lines(logs)
        [held] = list_jobs(DirQueue(hosts.qdir(2), active_file_lifetime=LIFETIME))
        assert held.job.jobid == perl_job
        assert "never broken from here" in held.note

        freed_at = time.monotonic()
        repaired = _dq(1, "fsck", "--dir", hosts.qdir(1), "--repair", "--host", "fsphost3")
        assert repaired.returncode == 0, repaired.stderr
        assert "dead-host-lock" in repaired.stdout
        assert wait_for(lambda: "perl's" in _lines(logs), timeout=30)
        after_repair = time.monotonic() - freed_at
        stop.touch()
        for proc in consumers:
            hosts.result(proc, timeout=60)
    done = _lines(logs)
    assert done == {"dirqueue's": 1, "perl's": 1}
    assert list(q1.jobs()) == []
    _record(
        "a host dies", fs=hosts.kind, jobs=2, lost=0, doubled=0, lifetime_s=LIFETIME,
        heartbeat_lock_recovered_s=round(recovered, 1),
        perl_lock_taken_after_repair_s=round(after_repair, 1),
    )
