"""How soon a job whose worker was SIGKILLed is taken again, on the same host.

    .venv/bin/python bench/crash_recovery.py [--rounds N] [--poll-interval SECONDS]

Each round: a worker process takes a job and holds it; another worker process waits for
jobs (``wait_for_queued_job``, the way ``dq server`` waits); the holder is SIGKILLed,
and the time until the waiting worker has the job is measured. The dead worker's lock
names this boot and pid namespace, so it is broken at once; what remains is how soon
the waiting worker looks (its poll interval: a lock left behind changes nothing that
inotify sees). Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from _common import describe, machine, print_table, write_results

HOLD = r"""
import sys, time
from dirqueue import DirQueue
job = DirQueue(sys.argv[1]).pickup_queued_job()
print("held", flush=True)
time.sleep(3600)
"""

WAIT = r"""
import logging, sys, time
from dirqueue import DirQueue
logging.disable(logging.WARNING)
q = DirQueue(sys.argv[1])
print("waiting", flush=True)
job = q.wait_for_queued_job(timeout=30, poll_interval=float(sys.argv[2]))
print(time.time() if job is not None else "none", flush=True)
"""


def one_round(root: str, poll: float) -> float:
    qdir = tempfile.mkdtemp(dir=root)
    from dirqueue import DirQueue  # noqa: PLC0415 - after the path is set up

    DirQueue(qdir).enqueue_string("precious")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, qdir], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAIT, qdir, str(poll)], stdout=subprocess.PIPE, text=True
    )
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "waiting"
    time.sleep(poll * 1.5)  # The waiter is asleep in its wait, at a random phase.
    killed = time.time()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    taken = waiter.stdout.readline().strip()
    waiter.wait(timeout=60)
    assert taken != "none", "the job was not taken again within 30 s"
    return float(taken) - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    root = tempfile.mkdtemp()
    times = [one_round(root, args.poll_interval) for _ in range(args.rounds)]
    print(describe(machine(root)))
    print(f"SIGKILL of a worker holding a job -> the job taken by a waiting worker"
          f" (poll interval {args.poll_interval} s), {args.rounds} rounds")
    print_table(
        ["median s", "min s", "max s"],
        [[f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}"]],
    )
    write_results("crash_recovery", {
        "machine": machine(root), "poll_interval": args.poll_interval, "seconds": times,
    })


if __name__ == "__main__":
    main()
