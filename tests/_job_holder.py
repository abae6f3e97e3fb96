"""A worker that takes one job and holds it until told what to do, for the tests that
need a live (or frozen) lock holder in another process; and :class:`Holder`, the
test's handle on one.

Run as ``python _job_holder.py QDIR LIFETIME HEARTBEAT`` (HEARTBEAT ``1`` or ``0``).
It prints ``ready JOBID`` once it holds a job (or ``none`` if there was none), then
reads commands from stdin, one a line:

  finish    call ``job.finish()``; print ``finished``, or ``error NAME MESSAGE``
  exit      exit at once (the job stays locked)

The test kills its process group at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from dirqueue import DirQueue


class Holder:
    """A ``_job_holder.py`` process in its own session, killed with its group by
    :meth:`kill` (call it in a ``finally``)."""

    def __init__(self, qdir: Path, lifetime: float, *, heartbeat: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(qdir), str(lifetime), "1" if heartbeat else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def read_line(self, timeout: float) -> str:
        """The holder's next line of output; AssertionError after ``timeout`` seconds."""
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            raise AssertionError(f"no word from the job holder within {timeout} s")
        line = out.readline().decode(errors="replace").strip()
        if not line and self.proc.poll() is not None:
            raise AssertionError(f"the job holder died: {self.stderr()}")
        return line

    def wait_ready(self, timeout: float = 30) -> str:
        """Wait until it holds a job; the job's id."""
        word, _, jobid = self.read_line(timeout).partition(" ")
        assert word == "ready", f"the job holder took no job: {word} {self.stderr()}"
        return jobid

    def send(self, command: str) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def stop(self, timeout: float = 10) -> None:
        """SIGSTOP it, and wait until the kernel has stopped it (state ``T``)."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while _state(self.pid) not in ("T", "t"):
            if time.monotonic() > deadline:
                raise AssertionError("the job holder did not stop")
            time.sleep(0.01)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        text = fh.read()
    return text[text.rfind(")") + 2 :].split()[0]


def main() -> int:
    qdir, lifetime, heartbeat = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
    queue = DirQueue(qdir, active_file_lifetime=lifetime, lock_heartbeat=heartbeat)
    job = queue.pickup_queued_job()
    if job is None:
        print("none", flush=True)
        return 1
    print(f"ready {job.jobid}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "finish":
            try:
                job.finish()
            except Exception as err:  # Reported to the test, which judges it.
                print(f"error {type(err).__name__} {err}", flush=True)
            else:
                print("finished", flush=True)
        elif command == "exit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
