"""The pre-fork pattern: a parent picks up a job, forks a child to do it, and picks up
the next. For tests of what a queue object promises across ``fork``.

Run as ``python _prefork.py QDIR LIFETIME MODE``:

  MODE ``finish N``: pick up N jobs, forking a child for each; the children wait until
  the parent has taken them all (and its heartbeat has ticked), then ``finish()``
  their job. Prints one line per child, ``PID finished`` or ``PID lost MESSAGE``.

  MODE ``late``: pick up one job; a first child takes it over; then a second child
  and the parent try to finish it (and must be told it is taken), then the first
  child finishes it. Prints ``parent lost True``, ``sibling 0``, ``first 0`` when so.

  MODE ``orphan``: pick up one job, fork a child that calls ``get_data()`` (its
  first call on the job), prints ``child PID`` and then waits forever; the
  parent exits as soon as the child has printed. The test kills the child.
"""

from __future__ import annotations

import os
import sys
import time

from dirqueue import DirQueue, JobLostError


def finish_each(queue: DirQueue, count: int) -> None:
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()
    children = []
    for _ in range(count):
        job = queue.pickup_queued_job()
        assert job is not None
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.read(go_read, 1)  # Until the parent has taken every job.
            try:
                job.finish()
                line = f"{os.getpid()} finished\n"
            except JobLostError as err:
                line = f"{os.getpid()} lost {err}\n"
            os.write(report_write, line.encode())
            os._exit(0)
        children.append(pid)
    time.sleep(queue.active_file_lifetime / 2)  # The parent's heartbeat ticks meanwhile.
    os.write(go_write, b"x" * count)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(report_write)
    with os.fdopen(report_read) as report:
        sys.stdout.write(report.read())


def orphan(queue: DirQueue) -> None:
    job = queue.pickup_queued_job()
    assert job is not None
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        job.get_data()  # Its first call on the job takes it over.
        print("child", os.getpid(), flush=True)
        os.write(ready_write, b"x")
        while True:
            time.sleep(60)
    os.read(ready_read, 1)
    os._exit(0)  # The parent goes; its child works on.


def second_comes_late(queue: DirQueue) -> None:
    job = queue.pickup_queued_job()
    assert job is not None
    took_read, took_write = os.pipe()
    go_read, go_write = os.pipe()
    first = os.fork()
    if first == 0:
        job.touch_active_lock()  # Takes the job over.
        os.write(took_write, b"x")
        os.read(go_read, 1)
        job.finish()
        os._exit(0)
    os.read(took_read, 1)
    sibling = os.fork()
    if sibling == 0:
        try:
            job.finish()
            os._exit(1)
        except JobLostError as err:
            os._exit(0 if err.taken_by == f"{queue.hostname}:{first}" else 2)
    sibling_status = os.waitpid(sibling, 0)[1]
    try:
        job.finish()
        print("parent finished")
    except JobLostError as err:
        print("parent lost", err.taken_by == f"{queue.hostname}:{first}")
    os.write(go_write, b"x")
    print("sibling", os.waitstatus_to_exitcode(sibling_status))
    print("first", os.waitstatus_to_exitcode(os.waitpid(first, 0)[1]))


def main(qdir: str, lifetime: float, mode: list[str]) -> None:
    queue = DirQueue(qdir, active_file_lifetime=lifetime)
    if mode[0] == "finish":
        finish_each(queue, int(mode[1]))
    elif mode[0] == "late":
        second_comes_late(queue)
    else:
        orphan(queue)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3:])
