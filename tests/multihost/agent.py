"""A queue client that multi-host tests run inside a simulated host.

    agent.py produce QDIR COUNT TAG [ACKFILE]  enqueue COUNT jobs whose data is TAG-i
                                               (appending TAG-i to ACKFILE once enqueued)
    agent.py consume QDIR OUT STOPFILE         take jobs until STOPFILE exists and the
                                               queue stays empty for 2 s; append each
                                               job's data to OUT as it is finished
    agent.py hold QDIR READYFILE [heartbeat]   take one job, write READYFILE, sleep
    agent.py wait QDIR TIMEOUT [POLL]          wait for one job; print its data and the
                                               time it was taken
    agent.py waits QDIR ROUNDS POLL            ROUNDS times: wait for a job; print (one
                                               JSON line each) its data and when taken
    agent.py unique QDIR COUNT KEYS SEED LOG [DIE]
                                               COUNT enqueues of data KEY with
                                               unique_key KEY (one of KEYS, drawn with
                                               SEED), logging "pre" and "got" lines
    agent.py work QDIR LOG STOPFILE [DIE]      a Worker logging "start", "end" (and
                                               "released", for a key) lines per job,
                                               until STOPFILE exists and no job is left

LOG is a file on a local disk, written with O_APPEND (one write a line), so the order
of its lines is the order of the events across all agents of all simulated hosts
(they share the machine). A job whose data starts with "fail" fails at once (FailJob;
the others have 3 attempts, so a job whose worker was killed runs again); one whose
data starts with "slow" sleeps 3 s first. DIE forces a SIGKILL at a chosen step:
"claim:N" (unique: after the N-th enqueue's key is linked, before its job is),
"seal:N" (after the N-th job is linked, before its key is sealed), "release:N"
(work: after the N-th unique job is finished, before its key is released).

The Perl module's counterpart is agent.pl.

Each prints one line of JSON on stdout when it ends. DQ_AGENT_LIFETIME, if set, is
every queue's ``active_file_lifetime`` (seconds; the heartbeat follows it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from dirqueue import DirQueue, FailJob, Job, Worker, _keys
from dirqueue._deferred import scan_deferred
from dirqueue._deps import scan_waiting


def _queue(qdir: str, **options: object) -> DirQueue:
    lifetime = os.environ.get("DQ_AGENT_LIFETIME")
    if lifetime:
        options.setdefault("active_file_lifetime", float(lifetime))
    return DirQueue(qdir, **options)  # type: ignore[arg-type]  # DirQueue's keywords


def produce(qdir: str, count: int, tag: str, ackfile: str | None) -> dict[str, object]:
    q = _queue(qdir)
    with open(ackfile or os.devnull, "a") as ack:
        for i in range(count):
            q.enqueue_string(f"{tag}-{i}", {"host": socket.gethostname(), "i": str(i)})
            ack.write(f"{tag}-{i}\n")
            ack.flush()
    return {"produced": count}


def consume(qdir: str, out: str, stopfile: str) -> dict[str, object]:
    q = _queue(qdir)
    done = 0
    with open(out, "a") as log:
        while True:
            job = q.wait_for_queued_job(timeout=2.0, poll_interval=0.2)
            if job is None:
                if os.path.exists(stopfile):
                    break
                continue
            with job:
                log.write(job.get_data().decode() + "\n")
                log.flush()
                os.fsync(log.fileno())
            done += 1
    return {"consumed": done, "host": socket.gethostname()}


def hold(qdir: str, readyfile: str, heartbeat: bool) -> dict[str, object]:
    q = _queue(qdir, lock_heartbeat=heartbeat)
    job = q.wait_for_queued_job(timeout=30, poll_interval=0.2)
    if job is None:
        return {"held": None}
    with open(readyfile, "w") as fh:
        fh.write(job.jobid)
    time.sleep(3600)  # The test kills us here, mid-job.
    return {"held": job.jobid}


def wait(qdir: str, timeout: float, poll: float = 0.5) -> dict[str, object]:
    q = _queue(qdir)
    job = q.wait_for_queued_job(timeout=timeout, poll_interval=poll)
    if job is None:
        return {"data": None}
    with job:
        data = job.get_data().decode()
    return {"data": data, "now": time.time()}


def waits(qdir: str, rounds: int, poll: float) -> dict[str, object]:
    """Wait for ROUNDS jobs one after the other, printing when each was taken."""
    q = _queue(qdir)
    for _ in range(rounds):
        job = q.wait_for_queued_job(timeout=60, poll_interval=poll)
        if job is None:
            return {"rounds": "timed out"}
        taken = time.time()
        with job:
            data = job.get_data().decode()
        print(json.dumps({"data": data, "now": taken}), flush=True)
    return {"rounds": rounds}


class _Log:
    """One event a line, appended with a single write (see the module's docstring)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.host = socket.gethostname()

    def __call__(self, *words: str) -> None:
        line = " ".join((*words, self.host, str(os.getpid()), f"{time.time():.6f}"))
        os.write(self.fd, (line + "\n").encode())


def _die_at(die: str | None, step: str) -> Callable[[], None]:
    """A function to call at ``step``: SIGKILLs this process at its N-th call if
    ``die`` is "STEP:N", else does nothing."""
    calls = [0]
    kind, _, nth = (die or "").partition(":")

    def maybe_die() -> None:
        calls[0] += 1
        if kind == step and calls[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

    return maybe_die


def unique(qdir: str, count: int, keys: int, seed: int, logfile: str,  # noqa: PLR0917  # the verb's arguments, in order
           die: str | None) -> dict[str, object]:
    q = _queue(qdir)
    log = _Log(logfile)
    after_claim, before_seal = _die_at(die, "claim"), _die_at(die, "seal")
    claim, seal = _keys.KeyGate.claim, _keys.KeyGate.seal

    def claiming(gate: _keys.KeyGate, jobid: str) -> str | None:
        kept = claim(gate, jobid)
        after_claim()
        return kept

    def sealing(gate: _keys.KeyGate, jobid: str) -> None:
        before_seal()
        seal(gate, jobid)

    _keys.KeyGate.claim = claiming  # type: ignore[method-assign]
    _keys.KeyGate.seal = sealing  # type: ignore[method-assign]
    rng = random.Random(seed)
    new = busy = 0
    for i in range(count):
        key = f"k{rng.randrange(keys)}"
        tag = f"{seed}-{i}"
        log("pre", key, tag)
        for attempt in range(10):
            try:
                jobid = q.enqueue_string(key, unique_key=key)
                break
            except _keys.KeyBusyError:
                # The documented answer to a key that kept changing under heavy
                # contention (an NFS client's caches can outlast the claim's
                # patience): try the enqueue again.
                busy += 1
                if attempt == 9:
                    raise
        existing = getattr(jobid, "existing", False)
        new += not existing
        log("got", key, tag, jobid, "old" if existing else "new")
    return {"enqueued": count, "new": new, "busy": busy}


def work(qdir: str, logfile: str, stopfile: str, die: str | None) -> dict[str, object]:
    q = _queue(qdir)
    log = _Log(logfile)
    before_release = _die_at(die, "release")
    release = _keys.release

    def releasing(config: Any, name: str, jobid: str) -> bool:
        before_release()
        released = release(config, name, jobid)
        log("released", name, jobid)
        return released

    _keys.release = releasing  # type: ignore[assignment]

    def handle(job: Job) -> None:
        data = job.get_data().decode()
        log("start", data, job.jobid)
        if data.startswith("slow"):
            time.sleep(3)
        time.sleep(0.01)
        if data.startswith("fail"):
            log("raise", data, job.jobid)
            raise FailJob(f"{data} fails, as the test asks")
        log("end", data, job.jobid)

    worker = Worker(q, handle, max_attempts=3, poll_interval=0.2)
    done = 0
    with worker:
        while True:
            step = worker.run_once(timeout=0.5)
            if step.jobid is not None:
                done += 1
            elif os.path.exists(stopfile) and not list(q.jobs()) and not _parked(q):
                break
    return {"done": done, "host": socket.gethostname()}


def _parked(q: DirQueue) -> bool:
    return bool(scan_waiting(q.config) or scan_deferred(q.config))


def main(argv: list[str]) -> int:
    cmd, qdir = argv[1], argv[2]
    if cmd == "produce":
        result = produce(qdir, int(argv[3]), argv[4], argv[5] if len(argv) > 5 else None)
    elif cmd == "consume":
        result = consume(qdir, argv[3], argv[4])
    elif cmd == "hold":
        result = hold(qdir, argv[3], len(argv) > 4 and argv[4] == "heartbeat")
    elif cmd == "wait":
        result = wait(qdir, float(argv[3]), *(float(a) for a in argv[4:5]))
    elif cmd == "waits":
        result = waits(qdir, int(argv[3]), float(argv[4]))
    elif cmd == "unique":
        result = unique(qdir, int(argv[3]), int(argv[4]), int(argv[5]), argv[6],
                        argv[7] if len(argv) > 7 else None)
    elif cmd == "work":
        result = work(qdir, argv[3], argv[4], argv[5] if len(argv) > 5 else None)
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
