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

The Perl module's counterpart is agent.pl.

Each prints one line of JSON on stdout when it ends. DQ_AGENT_LIFETIME, if set, is
every queue's ``active_file_lifetime`` (seconds; the heartbeat follows it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from dirqueue import DirQueue


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
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
