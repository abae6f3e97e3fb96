"""A live worker is never judged dead from another pid namespace (issue 8, finding 4).

Containers that share the host's UTS namespace (or its network, or a sidecar's) have
the same host name as the host but their own pid namespace: from there, a worker on
the host is invisible, and ``kill(pid, 0)`` says it is gone. Repair and pickup in such
a container must not take that for proof: the lock's owner line names the owner's pid
namespace, and a lock from another namespace is judged by its age and heartbeat only.

The other namespace is made with ``unshare --pid --fork --mount-proc`` (root only): the
same host name and boot, a new pid namespace, and a ``/proc`` in which the worker's
pid does not exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import files_under
from _job_holder import Holder
from dirqueue import DirQueue

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]

#: Run in the other pid namespace as ``python -c SCRIPT QDIR PID LIFETIME MODE``: look
#: at the queue as a container would, and print what it saw and did as JSON. MODE is
#: ``repair`` (repair, then try a pickup) or ``fsck`` (a dry run only).
IN_OTHER_NAMESPACE = textwrap.dedent(
    """
    import json, logging, os, socket, sys
    from dirqueue import DirQueue

    qdir, pid, lifetime, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    try:
        os.kill(pid, 0)
        visible = True
    except ProcessLookupError:
        visible = False
    out = {"host": socket.gethostname(), "my_pid": os.getpid(), "pid_visible": visible}
    caught = []
    class Keep(logging.Handler):
        def emit(self, record):
            caught.append(record.getMessage())
    logging.getLogger("dirqueue").addHandler(Keep())
    if True:
        if mode == "fsck":
            report = DirQueue(qdir).fsck(min_age=0)
        else:
            report = DirQueue(qdir).repair(min_age=0)
        out["findings"] = [
            {"kind": str(getattr(f.kind, "value", f.kind)), "path": f.path,
             "detail": f.detail, "fixed": f.fixed}
            for f in report.findings
        ]
        if mode == "repair":
            job = DirQueue(qdir, active_file_lifetime=lifetime).pickup_queued_job()
            out["picked_up"] = None if job is None else job.jobid
    out["warnings"] = caught
    print(json.dumps(out))
    """
)


def _unshare_works() -> str | None:
    """Why another pid namespace cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root for unshare --pid"
    if shutil.which("unshare") is None:
        return "needs the unshare tool (util-linux)"
    try:
        probe = subprocess.run(
            [*UNSHARE, sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"unshare failed: {err}"
    if probe.returncode != 0 or probe.stdout.strip() != b"1":
        return f"unshare --pid --fork --mount-proc failed: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture(scope="module")
def other_namespace() -> None:
    why = _unshare_works()
    if why is not None:
        pytest.skip(why)


def in_other_namespace(qdir: Path, pid: int, lifetime: float, mode: str) -> dict[str, Any]:
    """Run :data:`IN_OTHER_NAMESPACE` in a new pid namespace; what it printed."""
    proc = subprocess.Popen(
        [*UNSHARE, sys.executable, "-c", IN_OTHER_NAMESPACE, str(qdir), str(pid),
         str(lifetime), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, f"the other namespace's run failed: {err.decode()[-2000:]}"
    seen: dict[str, Any] = json.loads(out)
    # The premise: same host name, and the worker cannot be seen from there.
    assert seen["host"] == DirQueue(qdir).hostname
    assert seen["my_pid"] != os.getpid()
    assert seen["pid_visible"] is False
    return seen


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.kill()


def owner_lock_text(host: str, pid: int) -> str:
    """A lock of process ``pid`` in this pid namespace, without a heartbeat promise:
    host, pid, then the owner line (see dirqueue._format.format_lock)."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
        boot = fh.read().strip()
    pidns = os.stat("/proc/self/ns/pid").st_ino
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    start = int(stat[stat.rfind(")") + 2 :].split()[19])
    return f"{host}\n{pid}\nowner boot={boot} pidns={pidns} start={start}\n"


def _lock_findings(seen: dict[str, Any], jobid: str) -> list[dict[str, Any]]:
    return [f for f in seen["findings"] if f["path"].endswith(os.path.join("active", jobid))]


def _finish_cleanly(holder: Holder, qdir: Path) -> None:
    holder.send("finish")
    assert holder.read_line(timeout=30) == "finished"
    assert files_under(qdir) == []


@pytest.mark.timeout(90)
def test_repair_in_another_pid_namespace_keeps_a_heartbeating_workers_lock(
    other_namespace: None, qdir: Path, holders: list[Holder]
) -> None:
    queue = DirQueue(qdir)
    queue.enqueue_string("run me once")
    lifetime = 2.0  # The worker touches its lock every 0.5 s.
    holder = Holder(qdir, lifetime, heartbeat=True)
    holders.append(holder)
    jobid = holder.wait_ready()
    lock = qdir / "active" / jobid
    inode = lock.stat().st_ino
    assert lock.read_text().split("\n")[:3] == [queue.hostname, str(holder.pid), "heartbeat"]

    # Repair (min_age=0: nothing is spared for being young), then a pickup whose
    # lifetime is short but still longer than the heartbeat's period.
    seen = in_other_namespace(qdir, holder.pid, lifetime, "repair")

    assert _lock_findings(seen, jobid) == [], seen["findings"]
    assert seen["picked_up"] is None
    assert seen["warnings"] == []
    assert lock.stat().st_ino == inode  # The very lock: never removed, never re-taken.
    assert [j.jobid for j in queue.jobs()] == [jobid]
    _finish_cleanly(holder, qdir)


@pytest.mark.timeout(90)
def test_an_old_lock_from_another_pid_namespace_is_not_judged_dead_by_kill(
    other_namespace: None, qdir: Path, holders: list[Holder]
) -> None:
    """A worker that keeps no heartbeat, with a lock older than the lifetime: on its own
    host and namespace it is seen alive; from another namespace it cannot be seen,
    and its owner line says so: not dead, so kept."""
    queue = DirQueue(qdir)
    queue.enqueue_string("run me once")
    lifetime = 1.0
    holder = Holder(qdir, lifetime, heartbeat=False)
    holders.append(holder)
    jobid = holder.wait_ready()
    lock = qdir / "active" / jobid
    # What a dirqueue worker in this namespace writes (and what the holder wrote):
    # written again in place, so the lock says it whatever wrote it.
    content = owner_lock_text(queue.hostname, holder.pid)
    with open(lock, "r+", encoding="ascii") as fh:
        fh.write(content)
        fh.truncate()
    then = time.time() - 3600
    os.utime(lock, (then, then))
    inode = lock.stat().st_ino

    seen = in_other_namespace(qdir, holder.pid, lifetime, "repair")

    assert _lock_findings(seen, jobid) == [], seen["findings"]
    assert seen["picked_up"] is None
    assert seen["warnings"] == []
    assert lock.stat().st_ino == inode
    assert lock.read_text() == content
    _finish_cleanly(holder, qdir)


@pytest.mark.timeout(90)
def test_from_another_pid_namespace_a_quiet_heartbeat_is_stale_but_not_dead(
    other_namespace: None, qdir: Path, holders: list[Holder]
) -> None:
    """A lock past its lifetime whose heartbeat stopped (here: its worker is frozen) is
    stale from anywhere; but from another namespace its owner is not called dead."""
    queue = DirQueue(qdir)
    queue.enqueue_string("run me once")
    lifetime = 1.0
    holder = Holder(qdir, lifetime, heartbeat=True)
    holders.append(holder)
    jobid = holder.wait_ready()
    holder.stop()
    lock = qdir / "active" / jobid
    then = time.time() - 3600
    os.utime(lock, (then, then))

    seen = in_other_namespace(qdir, holder.pid, lifetime, "fsck")  # A dry run.

    found = _lock_findings(seen, jobid)
    assert len(found) == 1, seen["findings"]
    assert "heartbeat" in found[0]["detail"]
    assert "dead" not in found[0]["detail"]
    assert found[0]["fixed"] is False
    assert lock.exists()
    holder.resume()
    _finish_cleanly(holder, qdir)
