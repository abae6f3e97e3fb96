"""``repair(host=DEAD)`` / ``dq fsck --repair --host DEAD``: an operator frees the locks
of a host that died, including Perl workers' locks that no worker ever breaks, and is
refused where the host is this one or looks alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue, HostAliveError
from dirqueue._format import format_lock

pytestmark = pytest.mark.timeout(30)


def _lock(q: DirQueue, jobid: str, body: bytes, age: float) -> str:
    path = os.path.join(q.config.dir, "active", jobid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(body)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _queue_with_locks(tmp_path: Path) -> tuple[DirQueue, dict[str, str]]:
    q = DirQueue(tmp_path / "q", active_file_lifetime=60)
    ids = {k: q.enqueue_string(k) for k in ("perl", "quiet", "other", "mine")}
    # A Perl worker on the dead host, well past the lifetime: never broken by a worker.
    _lock(q, ids["perl"], b"deadhost\n4242\n", 600)
    # A dirqueue worker there whose heartbeat stopped a moment ago (within the lifetime).
    _lock(q, ids["quiet"], format_lock("deadhost", 4243, heartbeat=False), 5)
    # A live host's Perl worker, and one of ours: left alone.
    _lock(q, ids["other"], b"livehost\n77\n", 600)
    _lock(q, ids["mine"], format_lock(q.config.hostname, os.getpid(), True), 0)
    return q, ids


def test_repair_host_frees_that_hosts_locks_only(tmp_path: Path) -> None:
    q, ids = _queue_with_locks(tmp_path)
    assert q.pickup_queued_job() is None  # Every job is held; the Perl lock stays.
    dry = q.fsck(min_age=0, host="deadhost")
    assert sorted(f.path for f in dry.findings if f.kind == "dead-host-lock") == sorted(
        os.path.join(q.config.dir, "active", ids[k]) for k in ("perl", "quiet")
    )
    assert all(os.path.exists(f.path) for f in dry.findings)
    report = q.repair(min_age=0, host="deadhost")
    assert report.ok
    freed = {f.path for f in report.findings if f.kind == "dead-host-lock" and f.fixed}
    assert len(freed) == 2
    taken = set()
    while (job := q.pickup_queued_job()) is not None:
        taken.add(job.jobid)
        job.finish()
    assert taken == {ids["perl"], ids["quiet"]}


def test_repair_refuses_this_host_and_a_host_with_a_fresh_heartbeat(tmp_path: Path) -> None:
    q, ids = _queue_with_locks(tmp_path)
    with pytest.raises(HostAliveError, match="this host") as this:
        q.repair(min_age=0, host=q.config.hostname)
    assert this.value.host == q.config.hostname
    _lock(q, ids["quiet"], format_lock("deadhost", 4243, heartbeat=True), 1)
    before = sorted(os.listdir(os.path.join(q.config.dir, "active")))
    with pytest.raises(HostAliveError, match="looks alive"):
        q.repair(min_age=0, host="deadhost")
    assert sorted(os.listdir(os.path.join(q.config.dir, "active"))) == before
    with pytest.raises(ValueError, match="host name"):
        q.repair(host="")


def test_dq_fsck_repair_host(tmp_path: Path) -> None:
    q, ids = _queue_with_locks(tmp_path)
    dq = [sys.executable, "-m", "dirqueue", "fsck", "--dir", q.config.dir, "--min-age", "0"]
    done = subprocess.run([*dq, "--repair", "--host", "deadhost"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "dead-host-lock" in done.stdout
    assert "2 fixed" in done.stdout
    _lock(q, ids["quiet"], format_lock("deadhost", 1, heartbeat=True), 0)
    refused = subprocess.run([*dq, "--repair", "--host", "deadhost"], capture_output=True,
                             text=True, timeout=30, check=False)
    assert refused.returncode != 0
    assert "looks alive" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
