"""A persistent worker drains jobs that other processes submit.

Three producer processes enqueue jobs with metadata and priorities; two worker
processes, each keeping a cache warm across jobs, drain the queue. The summary shows
how many jobs each worker did, that priorities were honoured, and the throughput.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter

from dirqueue import DirQueue

PRODUCERS = 3
JOBS_PER_PRODUCER = 100


def produce(qdir: str, n: int) -> None:
    q = DirQueue(qdir)
    for i in range(n):
        priority = 10 if i % 10 == 0 else 50
        q.enqueue_string(f"{n * 7 + i}", {"producer": str(os.getpid()), "i": str(i)}, priority)


def consume(qdir: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    q = DirQueue(qdir)
    cache: dict[int, int] = {}  # Warm across jobs: the point of a persistent worker.
    hits = done = 0
    order: list[int] = []
    while True:
        job = q.wait_for_queued_job(timeout=1.0, poll_interval=0.2)
        if job is None:
            break
        with job:
            key = int(job.get_data()) % 25
            if key in cache:
                hits += 1
            else:
                cache[key] = sum(range(200_000 + key))  # The expensive warm-up.
            order.append(job.priority)
            done += 1
    results.put((os.getpid(), done, hits, order))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        qdir = os.path.join(tmp, "queue")
        start = time.perf_counter()
        producers = [mp.Process(target=produce, args=(qdir, JOBS_PER_PRODUCER)) for _ in range(PRODUCERS)]
        for p in producers:
            p.start()
        for p in producers:
            p.join()
        submitted = time.perf_counter()
        total = PRODUCERS * JOBS_PER_PRODUCER
        print(f"submitted {total} jobs from {PRODUCERS} processes in {submitted - start:.2f}s")
        results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        workers = [mp.Process(target=consume, args=(qdir, results)) for _ in range(2)]
        for w in workers:
            w.start()
        rows = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - submitted
        done = sum(r[1] for r in rows)
        for pid, n, hits, order in rows:
            firsts = Counter(order[:10])
            print(f"worker {pid}: {n} jobs, cache hits {hits}, first ten priorities {dict(firsts)}")
        print(f"done {done}/{total} jobs in {elapsed:.2f}s ({done / elapsed:.0f} jobs/s)")
        left = list(DirQueue(qdir).jobs())
        print(f"left in queue: {len(left)}")
        return 0 if done == total and not left else 1


if __name__ == "__main__":
    sys.exit(main())
