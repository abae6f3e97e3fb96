"""A job is free when its worker's processes are gone, and only then: a zombie owner
is dead, a killed worker's command dies with it (and keeps the job meanwhile), and a
``dq`` that is PID 1 reaps what its commands leave."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import process_alive, wait_for
from _job_holder import Holder, _state
from dirqueue import DirQueue


def _wait_state(pid: int, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _state(pid) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never reached state {wanted}")
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_a_zombie_owners_job_is_recovered_at_once(qdir: Path) -> None:
    queue = DirQueue(qdir, active_file_lifetime=600)
    jobid = queue.enqueue_string("held by a worker that exits unreaped")
    holder = Holder(qdir, 600, heartbeat=True)
    try:
        assert holder.wait_ready() == jobid
        holder.send("exit")
        # We are its parent and do not reap it: it stays a zombie, whose pid kill(0)
        # still finds.
        _wait_state(holder.pid, "Z")
        job = queue.pickup_queued_job()
        assert job is not None, "a zombie's job waited for its parent to reap it"
        assert job.jobid == jobid
        assert _state(holder.pid) == "Z"  # Judged dead as a zombie, not once reaped.
        job.finish()
    finally:
        holder.kill()


DQ = str(Path(sys.executable).parent / "dq")

# Each run of the job first looks whether a process of an earlier run still runs
# ("overlap PID"), then says it runs; the first run starts a child in the background
# (which a parent-death signal on the command alone would not reach) and waits.
RUN_ONCE_SLOWLY = r"""
for p in $(cat "$LOG.pids" 2>/dev/null); do
  if [ -r "/proc/$p/stat" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat")" != Z ]; then
    echo "overlap $p" >> "$LOG"
  fi
done
echo "run $$" >> "$LOG"
if [ ! -e "$LOG.once" ]; then
  : > "$LOG.once"
  sleep 120 &
  echo "$!" >> "$LOG.pids.new"
  echo "$$" >> "$LOG.pids.new"
  mv "$LOG.pids.new" "$LOG.pids"
  wait
fi
"""


class Server:
    """A ``dq server -- sh SCRIPT`` in a session of its own; :meth:`stop` ends it and
    every process of the test's runs."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        script = tmp_path / "run.sh"
        script.write_text(RUN_ONCE_SLOWLY)
        self.log = tmp_path / "log"
        self.proc = subprocess.Popen(
            [DQ, "server", "--dir", str(tmp_path / "q"), "--poll-interval", "0.2", *args,
             "--", "sh", str(script)],
            env={**os.environ, "LOG": str(self.log)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def runs(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return self.log.read_text().splitlines()
        return []

    def first_run(self, timeout: float = 20) -> list[int]:
        """The pids of the first run (its command, and its child), once both run."""
        pids = Path(f"{self.log}.pids")
        assert wait_for(pids.exists, timeout), "the job never ran"
        return [int(line) for line in pids.read_text().split()]

    def stop(self, *leftovers: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.timeout(90)
def test_a_killed_workers_command_is_gone_before_its_job_runs_again(tmp_path: Path) -> None:
    DirQueue(tmp_path / "q").enqueue_string("one job")
    server = Server(tmp_path, "--workers", "2")
    first: list[int] = []
    try:
        first = server.first_run()
        command = first[-1]
        worker = _parent_of(command)
        assert worker != server.proc.pid  # A forked worker, under the supervisor.
        os.kill(worker, signal.SIGKILL)
        # The supervisor restarts it; the job runs again (a worker died on it).
        assert wait_for(lambda: len([r for r in server.runs() if r.startswith("run")]) == 2,
                        timeout=30), f"the job did not run again: {server.runs()}"
        overlaps = [r for r in server.runs() if r.startswith("overlap")]
        assert not overlaps, f"the job ran again beside its killed run's processes: {overlaps}"
        assert not [pid for pid in first if process_alive(pid)]
    finally:
        server.stop(*first)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.timeout(90)
def test_a_killed_servers_command_dies_with_it_and_what_it_left_keeps_the_job(
    tmp_path: Path,
) -> None:
    DirQueue(tmp_path / "q").enqueue_string("one job")
    server = Server(tmp_path, "--workers", "1")
    first: list[int] = []
    second: Server | None = None
    try:
        first = server.first_run()
        child, command = first
        assert _parent_of(command) == server.proc.pid  # The server is the worker.
        os.kill(server.proc.pid, signal.SIGKILL)
        assert wait_for(lambda: not process_alive(command), timeout=5), (
            "the command outlived its killed worker"
        )
        # Its child in the background lives on (nobody is left to kill it), in the
        # dead worker's session: the job is not free while it runs.
        assert process_alive(child)
        second = Server(tmp_path, "--workers", "1")
        time.sleep(2)  # Long enough for many pickups (the index re-judges every 0.1 s).
        assert len(server.runs()) == 1, f"the job ran beside its last run: {server.runs()}"
        os.kill(child, signal.SIGKILL)
        assert wait_for(lambda: len(server.runs()) == 2, timeout=20), server.runs()
        assert not [r for r in server.runs() if r.startswith("overlap")]
    finally:
        server.stop(*first)
        if second is not None:
            second.stop()


# A job "count" writes how many zombies its pid namespace holds (once none are left,
# or after 1.5 s: another worker's timeout may have left some a moment ago, for PID 1 to
# reap); any other job runs into its timeout, leaving (once SIGTERM has killed it)
# dead children for PID 1.
COUNT_OR_HANG = r"""
if [ "$(cat "$1")" = count ]; then
  for _ in $(seq 15); do
    n=0
    for f in /proc/[0-9]*/stat; do
      read -r line < "$f" 2>/dev/null || continue
      case "$line" in *") Z "*) n=$((n + 1));; esac
    done
    [ "$n" = 0 ] && break
    sleep 0.1
  done
  echo "$n" > "$OUT"
else
  sleep 30 & sleep 30 & wait
fi
"""


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"),
    reason="starts dq server as PID 1 of a new pid namespace (unshare, as root)",
)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_dq_server_as_pid_1_ends_timeouts_promptly_and_reaps_zombies(
    tmp_path: Path, workers: str
) -> None:
    qdir = tmp_path / "q"
    q = DirQueue(qdir)
    for _ in range(2):
        q.enqueue_string("hang")
    q.enqueue_string("count", priority=60)  # After the others.
    out = tmp_path / "zombies"
    started = time.monotonic()
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", DQ, "server", "--dir", str(qdir),
         "--workers", workers, "--until-empty", "--timeout", "2", "--max-attempts", "1",
         "--", "sh", "-c", COUNT_OR_HANG, "sh"],
        env={**os.environ, "OUT": str(out)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    elapsed = time.monotonic() - started
    assert out.read_text().strip() == "0", "zombies piled up under PID 1"
    # Two timeouts of 2 s, one after the other on one worker: each waited the whole
    # kill grace (5 s) for its zombies before.
    assert elapsed < 10, f"took {elapsed:.1f} s: the timeouts waited out the kill grace\n{err}"


def _sigterm_pending(pid: int) -> bool:
    """True while a SIGTERM waits to be handled by ``pid`` (its pending masks)."""
    bit = 1 << (signal.SIGTERM - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"),
    reason="starts dq server as PID 1 of a new pid namespace (unshare, as root)",
)
@pytest.mark.timeout(60)
def test_dq_server_as_pid_1_stops_promptly_on_a_second_signal(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    DirQueue(qdir).enqueue_string("hang")
    mark = tmp_path / "started"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", DQ, "server", "--dir", str(qdir),
         "--workers", "1", "--", "sh", "-c", 'touch "$MARK"; sleep 30 & sleep 30 & wait',
         "sh"],
        env={**os.environ, "MARK": str(mark)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(mark.exists, timeout=20), "the command never started"
        (server,) = _children_of(proc.pid)  # PID 1 inside; this is its pid out here.
        os.kill(server, signal.SIGTERM)  # The first: the job in hand runs to its end.
        assert wait_for(lambda: not _sigterm_pending(server), timeout=10)
        stopped = time.monotonic()
        os.kill(server, signal.SIGTERM)  # The second: stop the command, at once.
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The command's group (sh, two sleeps) dies of the SIGTERM at once; its dead
    # members were PID 1's zombies, which made the stop wait the whole kill grace (5 s).
    assert took < 3, f"the second signal took {took:.1f} s to stop the server\n{err}"


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if _parent_of(int(entry)) == pid:
                    found.append(int(entry))
    return found
