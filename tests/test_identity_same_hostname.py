"""Two hosts with one host name, and a reused pid (issue 12, identity).

Neither may make a worker break a live lock, or keep a dead one for ever.

A "host" here is a UTS namespace (its own host name, the same for both) and a pid
namespace of its own (``unshare --uts --pid --fork --mount-proc``, root only). On one
machine both share the boot id, so only the lock's ``pidns=`` tells them apart: from
the other one the owner's pid does not exist (or is another process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _helpers import wait_for
from dirqueue import DirQueue
from dirqueue._config import QueueConfig
from dirqueue._format import format_lock
from dirqueue._identity import process_start_time, this_process
from dirqueue._judge import Verdict, judge
from dirqueue._layout import Layout

SAME_NAME = "twinhost"
LIFETIME = 2.0

#: ``python -c HOLD QDIR READY``: take one job (heartbeat on) and hold it until killed.
#: Started after a few short-lived processes (see _as_twin), which set its pid there.
HOLD = textwrap.dedent(
    f"""
    import sys, time
    from dirqueue import DirQueue
    q = DirQueue(sys.argv[1], active_file_lifetime={LIFETIME!r})
    job = q.pickup_queued_job()
    assert job is not None
    open(sys.argv[2], "w").write(job.jobid)
    time.sleep(3600)
    """
)

#: Tries pickups for a while and prints what it took (see the script).
TRY = str(Path(__file__).parent / "_try_pickup.py")


def _as_twin(*argv: str, pad: int = 3) -> list[str]:
    """A command run on a "host" named SAME_NAME with a pid namespace of its own, after
    ``pad`` short-lived processes (which set the pid the command gets there)."""
    return [
        "unshare", "--uts", "--pid", "--fork", "--mount-proc",
        "sh", "-c", 'hostname "$0"; ' + "/bin/true; " * pad + '"$@"', SAME_NAME, *argv,
    ]  # fmt: skip


@pytest.fixture
def twin_holder(tmp_path: Path) -> Iterator[tuple[DirQueue, str, subprocess.Popen[bytes]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: unshare --uts --pid")
    qdir = str(tmp_path / "q")
    queue = DirQueue(qdir, active_file_lifetime=LIFETIME)
    jobid = queue.enqueue_string("held on twin 1")
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        _as_twin(sys.executable, "-c", HOLD, qdir, str(ready)), start_new_session=True
    )
    try:
        assert wait_for(ready.exists, 30), "the holder never took its job"
        assert wait_for(lambda: ready.read_text() == jobid, 5)
        yield queue, jobid, holder
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)


def _try_from_twin(qdir: str, seconds: float, pad: int = 0) -> dict[str, object]:
    out = subprocess.run(
        _as_twin(sys.executable, TRY, qdir, str(seconds), str(LIFETIME), pad=pad),
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pad", [0, 3], ids=["owner-pid-absent-there", "owner-pid-reused-there"])
def test_a_live_heartbeating_lock_is_never_broken_from_a_twin_host(
    twin_holder: tuple[DirQueue, str, subprocess.Popen[bytes]], pad: int
) -> None:
    queue, jobid, _ = twin_holder
    lock = Path(queue.dir) / "active" / jobid
    text = lock.read_text()
    owner_pid = int(text.splitlines()[1])
    assert text.startswith(f"{SAME_NAME}\n")
    assert "pidns=" in text
    # Three lifetimes of pickups from the twin, where the owner's pid is either no
    # process at all or the twin's own (another start time): the heartbeat keeps it.
    seen = _try_from_twin(queue.dir, 3 * LIFETIME, pad)
    assert seen["taken"] is None
    assert seen["host"] == SAME_NAME
    assert (seen["pid"] == owner_pid) is (pad == 3)
    assert lock.read_text() == text


@pytest.mark.timeout(60)
def test_a_dead_twins_lock_is_recovered_after_the_lifetime(
    twin_holder: tuple[DirQueue, str, subprocess.Popen[bytes]],
) -> None:
    queue, jobid, holder = twin_holder
    os.killpg(holder.pid, signal.SIGKILL)  # The whole twin host: its pid namespace dies.
    holder.wait(timeout=10)
    died = time.monotonic()
    seen = _try_from_twin(queue.dir, 6 * LIFETIME, pad=3)
    assert seen["taken"] == jobid
    # Not before its heartbeat went quiet for a whole lifetime; within lifetime * 1.5
    # (the random grace) and a poll or two.
    assert time.monotonic() - died > LIFETIME * 0.5
    assert float(seen["after"]) < LIFETIME * 1.5 + 2  # type: ignore[arg-type]


def _judged(tmp_path: Path, pid: int, start: int | None) -> Verdict:
    me = this_process()
    config = QueueConfig(Layout(str(tmp_path)), me.host, active_file_lifetime=600)
    lock = tmp_path / "lock"
    lock.write_bytes(format_lock(me.host, pid, True, boot=me.boot, pidns=me.pidns, start=start))
    return judge(config, os.lstat(lock), lock.read_bytes()).verdict


@pytest.mark.skipif(process_start_time(os.getpid()) is None, reason="no /proc/PID/stat")
def test_a_recycled_pid_is_judged_dead_and_the_right_start_time_alive(tmp_path: Path) -> None:
    live = subprocess.Popen(["sleep", "60"])
    try:
        # The pid is alive now, but the process that wrote the lock started at tick 1:
        # another process has its pid. A fresh heartbeat lock does not save it.
        assert _judged(tmp_path, live.pid, start=1) is Verdict.DEAD
        assert _judged(tmp_path, live.pid, start=process_start_time(live.pid)) is Verdict.HELD
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(process_start_time(os.getpid()) is None, reason="no /proc/PID/stat")
def test_a_pickup_takes_a_job_whose_lock_names_a_recycled_pid_at_once(tmp_path: Path) -> None:
    live = subprocess.Popen(["sleep", "60"])
    try:
        queue = DirQueue(tmp_path / "q")
        jobid = queue.enqueue_string("x")
        me = this_process()
        (tmp_path / "q" / "active" / jobid).write_bytes(
            format_lock(queue.hostname, live.pid, True, boot=me.boot, pidns=me.pidns, start=1)
        )
        job = queue.pickup_queued_job()
        assert job is not None
        assert job.jobid == jobid
        job.finish()
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="no CLOCK_BOOTTIME")
def test_a_lock_no_process_of_this_kernel_can_have_written_is_not_judged_dead(
    tmp_path: Path, dead_pid: int
) -> None:
    """A clone of this machine, resumed from the same memory snapshot, has our host
    name, boot id and pid namespace. A lock whose owner started later than this
    kernel's clock says now was written by such a twin: its pid means nothing here, and
    its lock waits for its heartbeat to go quiet."""
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert _judged(tmp_path, dead_pid, start=int((uptime + 3600) * ticks)) is Verdict.HELD
    # A start time this kernel has passed: the pid's owner was ours, and is gone.
    assert _judged(tmp_path, dead_pid, start=int((uptime - 1) * ticks)) is Verdict.DEAD
