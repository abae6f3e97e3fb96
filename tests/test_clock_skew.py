"""Hosts whose clocks are minutes apart (issue 12, clock skew).

A lock's age is judged in the filesystem's clock (the mtime of a file just written in
``tmp/``), not the judging host's: a worker five minutes fast must not break a live
heartbeat lock, and one five minutes slow must still break a lock that has really been
quiet for longer than the lifetime.

The skewed worker runs under libfaketime (Debian's ``faketime``), which moves its
``time.time()``; the file timestamps still come from the kernel's clock, as they come
from the file server's over NFS. (libfaketime also fakes ``utime(NULL)``, which a real
NFS client sends as "the server's time now": so only the judging worker is skewed here,
never a lock's owner.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import files_under
from dirqueue import DirQueue, _judge
from dirqueue._config import QueueConfig
from dirqueue._format import format_lock
from dirqueue._layout import Layout

FAKETIME = shutil.which("faketime")
LIFETIME = 3.0

#: Tries pickups for a while and prints what it took (see the script).
TRY = str(Path(__file__).parent / "_try_pickup.py")

needs_faketime = pytest.mark.skipif(
    FAKETIME is None, reason="no faketime (apt-get install faketime)"
)


def _skewed(offset: str, qdir: Path, seconds: float) -> subprocess.Popen[str]:
    assert FAKETIME is not None
    return subprocess.Popen(
        [FAKETIME, "-f", offset, sys.executable, TRY, str(qdir), str(seconds), str(LIFETIME)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _other_hosts_lock(qdir: Path) -> tuple[str, Path]:
    """A job locked by a heartbeating worker on another host, touched just now."""
    queue = DirQueue(qdir, active_file_lifetime=LIFETIME)
    jobid = queue.enqueue_string("held elsewhere")
    lock = qdir / "active" / jobid
    lock.write_bytes(format_lock("far-away-host", 4242, True, boot="b", pidns="1", start=7))
    return jobid, lock


@needs_faketime
@pytest.mark.timeout(60)
def test_a_worker_5_minutes_fast_keeps_a_fresh_heartbeat_lock(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    _, lock = _other_hosts_lock(qdir)
    worker = _skewed("+5m", qdir, 3 * LIFETIME)
    while worker.poll() is None:  # The owner's heartbeat, every lifetime / 4.
        os.utime(lock)
        time.sleep(LIFETIME / 4)
    seen = json.loads(worker.communicate()[0])
    assert seen["skew"] > 250  # It did run 5 minutes fast.
    assert seen["taken"] is None
    assert lock.exists()


@needs_faketime
@pytest.mark.timeout(60)
def test_a_worker_5_minutes_slow_still_breaks_a_quiet_lock(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    jobid, lock = _other_hosts_lock(qdir)
    quiet_since = time.monotonic()  # Its owner died after this last touch.
    worker = _skewed("-5m", qdir, 6 * LIFETIME)
    seen = json.loads(worker.communicate(timeout=40)[0])
    assert seen["skew"] < -250
    assert seen["taken"] == jobid
    # After the lifetime, within its random grace (lifetime / 2) and a poll or two.
    assert time.monotonic() - quiet_since > LIFETIME
    assert float(seen["after"]) < LIFETIME * 1.5 + 2
    assert not lock.exists()


def test_the_clock_offset_is_measured_once_per_recheck_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qdir = tmp_path / "q"
    DirQueue(qdir).enqueue_string("makes the queue's directories")
    config = QueueConfig(Layout(str(qdir)), "h")
    measured: list[float] = []
    real = _judge._measure_offset

    def counting(cfg: QueueConfig) -> float:
        measured.append(real(cfg))
        return measured[-1]

    monkeypatch.setattr(_judge, "_measure_offset", counting)
    _judge._offsets.clear()
    for _ in range(100):
        assert abs(_judge.filesystem_now(config) - time.time()) < 1.0
    assert measured == [0.0]  # A local filesystem: one clock, no offset.
    assert files_under(qdir / "tmp") == []  # The probe file is gone again.
    clock = time.monotonic()
    monkeypatch.setattr(_judge.time, "monotonic", lambda: clock + _judge.CLOCK_RECHECK + 1)
    _judge.filesystem_now(config)
    assert len(measured) == 2


def test_a_skewed_filesystem_clock_is_what_a_locks_age_is_judged_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qdir = tmp_path / "q"
    _, lock = _other_hosts_lock(qdir)
    config = QueueConfig(Layout(str(qdir)), "h", active_file_lifetime=LIFETIME)
    # This host's clock 5 minutes fast: the filesystem's is 300 s behind it.
    monkeypatch.setattr(_judge, "_measure_offset", lambda cfg: -300.0)
    mtime = os.stat(lock).st_mtime
    monkeypatch.setattr(_judge.time, "time", lambda: mtime + 301)
    _judge._offsets.clear()
    judged = _judge.judge(config, os.lstat(lock), lock.read_bytes())
    assert judged.verdict is _judge.Verdict.HELD
    assert judged.age == pytest.approx(1.0)


def test_a_read_only_queue_uses_this_hosts_clock(tmp_path: Path) -> None:
    config = QueueConfig(Layout(str(tmp_path / "missing")), "h")
    _judge._offsets.clear()
    assert abs(_judge.filesystem_now(config) - time.time()) < 0.5


#: Holds nothing; after a line on stdin (the test has stepped its clock), tries pickups
#: for 2 s (within the offset's CLOCK_RECHECK) and prints the jobs it took and how far
#: its clock is from the queue's.
_STEPPED = """
import json, os, sys, time
from dirqueue import DirQueue
qdir, lifetime = sys.argv[1], float(sys.argv[2])
q = DirQueue(qdir, active_file_lifetime=lifetime)
assert q.pickup_queued_job() is None  # Measures the filesystem's clock: no skew yet.
print("ready", flush=True)
sys.stdin.readline()
taken = []
end = time.monotonic() + 2.0
while time.monotonic() < end:
    job = q.pickup_queued_job()
    if job is not None:
        taken.append(job.jobid)
    # No sleep: libfaketime's nanosleep refuses the monotonic clock left unfaked.
print(json.dumps({"taken": taken, "skew": time.time() - os.stat(qdir).st_mtime}))
"""


def _libfaketime() -> str | None:
    for lib in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"):
        if os.path.exists(lib):
            return lib
    return None


@needs_faketime
@pytest.mark.timeout(60)
def test_a_clock_stepped_2_hours_ahead_breaks_no_live_lock(tmp_path: Path) -> None:
    """Issue 19 item 4: the measured offset was trusted for 5 s whatever this host's
    clock did meanwhile, so a step of +2 h made a live worker's heartbeat locks look
    2 h quiet, and a pickup broke them all."""
    lib = _libfaketime()
    if lib is None:
        pytest.skip("libfaketime.so.1 not found")
    qdir = tmp_path / "q"
    owner = DirQueue(qdir, active_file_lifetime=LIFETIME)  # Heartbeat every LIFETIME / 4.
    ids = [owner.enqueue_string(f"job {n}") for n in range(5)]
    held = [owner.pickup_queued_job() for _ in ids]
    assert all(job is not None for job in held)
    step = tmp_path / "faketime"
    step.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": lib,
        "FAKETIME_TIMESTAMP_FILE": str(step),
        "FAKETIME_NO_CACHE": "1",
        # A real clock step leaves the monotonic clock alone.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", _STEPPED, str(qdir), str(LIFETIME)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        step.write_text("+2h\n")
        worker.stdin.write("go\n")
        worker.stdin.flush()
        seen = json.loads(worker.communicate(timeout=30)[0])
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
    assert seen["skew"] > 7000  # Its clock did step 2 hours ahead.
    assert seen["taken"] == []
    for job in held:
        assert job is not None
        job.finish()  # Still ours: none of the locks was broken.


@needs_faketime
@pytest.mark.timeout(60)
def test_a_worker_15_minutes_fast_waits_for_a_delayed_job(tmp_path: Path) -> None:
    """Issue 19 item 4: a delayed job's due time is in the filesystem's clock, and a
    worker whose own clock is 15 minutes fast took a ``delay=600`` job at once."""
    qdir = tmp_path / "q"
    jobid = DirQueue(qdir).enqueue_string("in ten minutes", delay=600)
    worker = _skewed("+15m", qdir, 1.5)
    seen = json.loads(worker.communicate(timeout=30)[0])
    assert seen["skew"] > 850  # It did run 15 minutes fast.
    assert seen["taken"] is None
    assert (qdir / "deferred" / jobid).exists()
