"""A GlusterFS replica-3 volume loses a brick mid-run and gets it back (issue 12).

Two simulated hosts (the test bed's ``fsp-h1`` and ``fsp-h2`` network namespaces, see
tests/multihost/README.md) each run a producer and a consumer on a replica-3 volume of
this test's own (``fsrvol``, bricks in ``/srv/fsr-gluster``, mounts
``/mnt/fsr-gl-hN``), made on the test bed's glusterd and removed again at the end.
Mid-run one brick process is killed; a few seconds later it is started again
(``volume start force``) and healed. Every job must be done exactly once; the test
prints what the clients saw (errors, the longest stall).

Slow and intrusive (it adds a volume to the test bed's glusterd), so it runs only with
``DQ_REPLICA_TEST=1``, as root, with the test bed up (``FSP_HOSTS=2
tests/multihost/setup-gluster.sh``)::

    DQ_REPLICA_TEST=1 DQ_REPLICA_JOBS=2000 \
        .venv/bin/python -m pytest -s tests/test_failing_replica.py

``DQ_REPLICA_JOBS`` (default 300) is the job count per producer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _multihost import Hosts, lines

# Run after `make test`, by `make test-multihost` and .ci/run, once the test bed is up.
pytestmark = pytest.mark.multihost

VOL = "fsrvol"
SRV_IP = "10.213.0.1"
BRICKS = [f"/srv/fsr-gluster/b{n}" for n in (1, 2, 3)]
MOUNTS = {n: f"/mnt/fsr-gl-h{n}" for n in (1, 2)}
GLUSTER = ["gluster", "--mode=script"]
JOBS = int(os.environ.get("DQ_REPLICA_JOBS", "300"))


def _why_not() -> str | None:
    if os.environ.get("DQ_REPLICA_TEST") != "1":
        return "set DQ_REPLICA_TEST=1 to run the failing-replica scenario (slow, needs root)"
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("gluster") is None:
        return "no gluster CLI: run tests/multihost/setup-gluster.sh first"
    if not all(os.path.exists(f"/run/netns/fsp-h{n}") for n in (1, 2)):
        return "no test bed hosts fsp-h1, fsp-h2: run tests/multihost/setup-gluster.sh"
    if subprocess.run([*GLUSTER, "volume", "list"], capture_output=True, check=False).returncode:
        return "glusterd does not answer: run tests/multihost/setup-gluster.sh"
    return None


def _gluster(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        [*GLUSTER, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"gluster {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def _brick_pid(brick: str) -> int | None:
    for line in _gluster("volume", "status", VOL).splitlines():
        if line.startswith(f"Brick {SRV_IP}:{brick} "):
            pid = line.split()[-1]
            return int(pid) if pid.isdigit() else None
    return None


@pytest.fixture
def replica() -> Iterator[dict[int, str]]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    created = False
    try:
        if VOL not in _gluster("volume", "list").split():
            for b in BRICKS:
                os.makedirs(b, exist_ok=True)
            _gluster("volume", "create", VOL, "replica", "3",
                     *[f"{SRV_IP}:{b}" for b in BRICKS], "force")  # fmt: skip
            created = True
            for opt in ("stat-prefetch", "quick-read", "io-cache", "read-ahead",
                        "write-behind", "open-behind", "readdir-ahead", "nl-cache"):  # fmt: skip
                _gluster("volume", "set", VOL, f"performance.{opt}", "off")
        if "Status: Started" not in _gluster("volume", "info", VOL):
            _gluster("volume", "start", VOL)
        for n, mp in MOUNTS.items():
            os.makedirs(mp, exist_ok=True)
            if not os.path.ismount(mp):
                subprocess.run(
                    ["nsenter", f"--net=/run/netns/fsp-h{n}", "mount", "-t", "glusterfs",
                     "-o", "attribute-timeout=0,entry-timeout=0,negative-timeout=0",
                     f"{SRV_IP}:/{VOL}", mp],
                    check=True, timeout=60,
                )  # fmt: skip
        yield MOUNTS
    finally:
        for mp in MOUNTS.values():
            if os.path.ismount(mp):
                subprocess.run(["umount", mp], check=False, timeout=60)
        if created:
            _gluster("volume", "stop", VOL, check=False)
            _gluster("volume", "delete", VOL, check=False)
            shutil.rmtree("/srv/fsr-gluster", ignore_errors=True)


@pytest.mark.timeout(900)
def test_a_brick_stopped_and_restarted_mid_run_loses_and_doubles_nothing(
    replica: dict[int, str], tmp_path: Path
) -> None:
    name = f"dq-replica-{uuid.uuid4().hex[:8]}"
    qdirs = {n: f"{mp}/{name}" for n, mp in replica.items()}
    os.makedirs(qdirs[1])
    stop = tmp_path / "stop"
    logs = [tmp_path / f"done-{n}.txt" for n in (1, 2)]
    hosts = Hosts("glusterfs", name)  # Its agents; the queue is on this test's own mounts.
    try:
        [hosts.start(n, "consume", qdirs[n], str(logs[n - 1]), str(stop)) for n in (1, 2)]
        producers = [hosts.start(n, "produce", qdirs[n], str(JOBS), f"h{n}") for n in (1, 2)]
        began = time.monotonic()
        last_count, last_progress, longest_stall = 0, began, 0.0
        killed_at = restarted_at = None
        victim = _brick_pid(BRICKS[1])
        assert victim is not None
        while any(p.poll() is None for p in producers) or sum(lines(logs).values()) < 2 * JOBS:
            now = time.monotonic()
            count = sum(lines(logs).values())
            if count != last_count:
                last_count, last_progress = count, now
            longest_stall = max(longest_stall, now - last_progress)
            if killed_at is None and count >= JOBS // 2:
                os.kill(victim, signal.SIGKILL)  # The brick dies mid-run.
                killed_at = now
            elif killed_at is not None and restarted_at is None and now - killed_at > 5:
                _gluster("volume", "start", VOL, "force")
                restarted_at = now
            assert now - began < 600, f"stuck at {count} of {2 * JOBS} jobs"
            assert all(p.poll() in (None, 0) for p in hosts.procs), "a client failed"
            time.sleep(0.2)
        if restarted_at is None:
            _gluster("volume", "start", VOL, "force")
            restarted_at = time.monotonic()
        stop.touch()
        errors = []
        for proc in hosts.procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            errors += [line for line in err.splitlines() if line.strip()]
        done = lines(logs)
        expected = {f"h{n}-{i}" for n in (1, 2) for i in range(JOBS)}
        lost = expected - set(done)
        doubled = [job for job, times in done.items() if times > 1]
        heal = _gluster("volume", "heal", VOL, "info", check=False)
        pending = sum(int(m) for m in re.findall(r"Number of entries: (\d+)", heal))
        print(
            "\nfailing replica:",
            json.dumps({
                "jobs": 2 * JOBS, "lost": len(lost), "doubled": len(doubled),
                "seconds": round(time.monotonic() - began, 1),
                "brick_down_s": round(restarted_at - (killed_at or restarted_at), 1),
                "longest_stall_s": round(longest_stall, 1),
                "client_stderr_lines": len(errors), "first_errors": errors[:5],
                "heal_entries_pending_at_end": pending,
            }),
        )  # fmt: skip
        assert lost == set()
        assert doubled == []
    finally:
        hosts.kill_all()
        subprocess.run(["rm", "-rf", qdirs[1]], check=False, timeout=120)
