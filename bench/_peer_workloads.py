"""One measurement of bench/peers.py, run in a process of its own.

    python bench/_peer_workloads.py '{"peer": "dirq", "workload": "drain", "base": "/tmp",
                                      "n": 1000}'

Makes a fresh queue under ``base``, runs the workload, removes the queue, and prints one
line of JSON with the result. bench/peers.py starts it in a session of its own and kills
that whole session when it overruns, so the processes a workload forks die with it; the
workloads here also kill their own children when they run out of time.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _peer_queues import PYTHON_PEERS, Bare, PeerQueue, number_of, payload

BENCH = Path(__file__).resolve().parent
PERL_SCRIPT = BENCH / "_peers_perl.pl"
PERL_LIB = BENCH.parents[1] / "shared" / "perl" / "IPC-DirQueue" / "lib"

#: Jobs each producer of the many-to-many workload numbers from ``p * _BLOCK``.
_BLOCK = 1_000_000

_FORK = mp.get_context("fork")


def perl_missing() -> str | None:
    """Why the Perl module cannot run here, or None."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    if not (PERL_LIB / "IPC" / "DirQueue.pm").is_file():
        return f"IPC::DirQueue is not at {PERL_LIB}"
    return None


def _perl(mode: str, qdir: str, *args: object) -> list[str]:
    return ["perl", f"-I{PERL_LIB}", str(PERL_SCRIPT), mode, qdir, *map(str, args)]


def _rss_kb(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss  # kilobytes on Linux


def _open(peer: str, qdir: str) -> PeerQueue:
    return PYTHON_PEERS[peer](qdir)


def _fill(peer: str, qdir: str, count: int) -> float:
    """Put jobs 0 .. count-1 from a forked process (so the consumer's RSS is its own)."""
    start = time.perf_counter()
    filler = "bare" if peer == "perl" else peer
    proc = _FORK.Process(target=_fill_child, args=(filler, qdir, count))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"filling {peer}'s queue failed (exit {proc.exitcode})")
    return time.perf_counter() - start


def _fill_child(peer: str, qdir: str, count: int) -> None:
    queue = _open(peer, qdir)
    queue.fill(count)
    queue.close()


# -- enqueue and drain, one process -------------------------------------------------


def enqueue(peer: str, qdir: str, n: int, **_: Any) -> dict[str, Any]:
    if peer == "perl":
        out = subprocess.run(_perl("enqueue", qdir, n, 0), capture_output=True, text=True,
                             check=True).stdout
        return {"rate": n / json.loads(out)["seconds"]}
    queue = _open(peer, qdir)
    queue.put(payload(0))  # Warm up: directories made, libraries loaded.
    assert queue.take() is not None
    start = time.perf_counter()
    for number in range(n):
        queue.put(payload(number))
    seconds = time.perf_counter() - start
    queue.close()
    return {"rate": n / seconds}


def drain(peer: str, qdir: str, n: int, **_: Any) -> dict[str, Any]:
    fill_seconds = _fill(peer, qdir, n)
    if peer == "perl":
        before = _rss_kb(resource.RUSAGE_CHILDREN)
        out = subprocess.run(_perl("drain", qdir), capture_output=True, text=True,
                             check=True).stdout
        result = json.loads(out)
        rss = _rss_kb(resource.RUSAGE_CHILDREN)
        return {
            "rate": n / result["seconds"], "count": result["count"],
            "out_of_order": result["out_of_order"], "rss_kb": max(rss, before),
            "fill_seconds": fill_seconds,
        }
    queue = _open(peer, qdir)
    count, previous, out_of_order = 0, -1, 0
    start = time.perf_counter()
    while (data := queue.take()) is not None:
        number = number_of(data)
        out_of_order += number < previous
        previous = number
        count += 1
    seconds = time.perf_counter() - start
    queue.close()
    return {
        "rate": n / seconds, "count": count, "out_of_order": out_of_order,
        "rss_kb": _rss_kb(), "fill_seconds": fill_seconds,
    }


# -- many producers and consumers, in processes of their own ------------------------


def _reporting_errors(role: Callable[..., None]) -> Callable[..., None]:
    """Run ``role`` in a child; if it raises, leave the error where the parent reads it."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            role(*args, **kwargs)
        except BaseException as exc:
            where = os.path.join(os.path.dirname(args[1]), f"error-{os.getpid()}.txt")
            Path(where).write_text(f"{role.__name__.strip('_')}: {type(exc).__name__}: {exc}")
            raise

    return run


def _first_error(qdir: str) -> str:
    errors = [path.read_text()[:200] for path in Path(qdir).parent.glob("error-*.txt")]
    # A broken start barrier is what the others see of the child that failed first.
    errors.sort(key=lambda text: "BrokenBarrierError" in text)
    return errors[0] if errors else ""


def _producer(peer: str, qdir: str, first: int, count: int, barrier: Barrier) -> None:
    queue = _open(peer, qdir)
    barrier.wait()
    for number in range(first, first + count):
        queue.put(payload(number))
    queue.close()


def _consumer(
    peer: str, qdir: str, out: str, *, barrier: Barrier, done: Event,
    take_hook: Callable[[], dict[str, int]] | None,
) -> None:
    counters = take_hook() if take_hook else {}
    queue = _open(peer, qdir)
    seen: list[int] = []
    barrier.wait()
    while True:
        # Read before the take: once every job is in, a take that finds nothing means
        # every job has been taken.
        finished = done.is_set()
        data = queue.take()
        if data is not None:
            seen.append(number_of(data))
            continue
        if finished:
            break
        time.sleep(0.001)
    queue.close()
    Path(out).write_text(json.dumps({"seen": seen, "rss_kb": _rss_kb(), **counters}))


def _stop(procs: list[Any]) -> None:
    """Kill whatever is still running of ``procs`` (multiprocessing or Popen alike)."""
    for proc in procs:
        if (proc.exitcode if hasattr(proc, "exitcode") else proc.poll()) is None:
            proc.kill()
    for proc in procs:
        if hasattr(proc, "join"):
            proc.join(5)
        else:
            proc.wait(5)


def _check_once(expected: set[int], seen: list[int]) -> dict[str, Any]:
    got = set(seen)
    return {
        "exactly_once": got == expected and len(seen) == len(expected),
        "lost": len(expected - got),
        "doubled": len(seen) - len(got),
        "strangers": len(got - expected),
    }


def many(
    peer: str, qdir: str, n: int, *, producers: int = 2, consumers: int = 2,
    timeout: float = 300, take_hook: Callable[[], dict[str, int]] | None = None,
    prefilled: bool = False, **_: Any,
) -> dict[str, Any]:
    """``producers`` processes put ``n`` jobs between them while ``consumers`` take them.

    With ``prefilled``, the ``n`` jobs are queued first and only the consumers run.
    """
    if peer == "perl":
        return _many_perl(qdir, n, producers, consumers, timeout)
    share = n // producers
    expected = {p * _BLOCK + i for p in range(producers) for i in range(share)}
    if prefilled:
        _fill(peer, qdir, n)
        expected, producers = set(range(n)), 0
    _open(peer, qdir).close()  # The queue made once, before anyone races to make it.
    barrier, done = _FORK.Barrier(producers + consumers + 1), _FORK.Event()
    outs = [os.path.join(os.path.dirname(qdir), f"seen-{c}.json") for c in range(consumers)]
    prods = [
        _FORK.Process(target=_reporting_errors(_producer),
                      args=(peer, qdir, p * _BLOCK, share, barrier))
        for p in range(producers)
    ]
    cons = [
        _FORK.Process(target=_reporting_errors(_consumer), args=(peer, qdir, out),
                      kwargs={"barrier": barrier, "done": done, "take_hook": take_hook})
        for out in outs
    ]
    deadline = time.monotonic() + timeout
    try:
        for proc in (*cons, *prods):
            proc.start()
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return {"error": f"a child failed before the start: {_first_error(qdir)}"}
        start = time.perf_counter()
        if prefilled:
            done.set()
        for proc in prods:
            proc.join(max(0.0, deadline - time.monotonic()))
        done.set()
        for proc in cons:
            proc.join(max(0.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - start
        if any(proc.exitcode != 0 for proc in (*prods, *cons)):
            codes = [proc.exitcode for proc in (*prods, *cons)]
            why = _first_error(qdir) or f"overran {timeout:.0f} s"
            return {"error": f"a child failed (exit codes {codes}): {why}"}
    finally:
        _stop([*prods, *cons])
    reports = [json.loads(Path(out).read_text()) for out in outs]
    seen = [number for report in reports for number in report["seen"]]
    result = {
        "rate": len(expected) / seconds, "seconds": seconds, "jobs": len(expected),
        "per_consumer": [len(r["seen"]) for r in reports],
        "consumer_rss_kb": max(r["rss_kb"] for r in reports),
        **_check_once(expected, seen),
    }
    if take_hook:
        result["counters"] = [{k: v for k, v in r.items() if k not in ("seen",)}
                              for r in reports]
    return result


def _many_perl(qdir: str, n: int, producers: int, consumers: int,
               timeout: float) -> dict[str, Any]:
    share = n // producers
    expected = {p * _BLOCK + i for p in range(producers) for i in range(share)}
    donefile = os.path.join(os.path.dirname(qdir), "producers-done")
    Bare(qdir).close()  # The queue's directories made once, before anyone races.
    procs: list[subprocess.Popen[str]] = []
    try:
        start = time.perf_counter()
        cons = [subprocess.Popen(_perl("consume", qdir, donefile), stdout=subprocess.PIPE,
                                 text=True) for _ in range(consumers)]
        procs += cons
        prods = [subprocess.Popen(_perl("enqueue", qdir, share, p * _BLOCK),
                                  stdout=subprocess.DEVNULL, text=True)
                 for p in range(producers)]
        procs += prods
        for proc in prods:
            proc.wait(max(0.1, timeout - (time.perf_counter() - start)))
        Path(donefile).touch()
        outputs = [proc.communicate(timeout=max(0.1, timeout - (time.perf_counter() - start)))[0]
                   for proc in cons]
        seconds = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return {"error": f"overran {timeout:.0f} s"}
    finally:
        _stop(procs)
    seen = [int(line) for out in outputs for line in out.split()]
    return {
        "rate": len(expected) / seconds, "seconds": seconds, "jobs": len(expected),
        "per_consumer": [len(out.split()) for out in outputs],
        "consumer_rss_kb": _rss_kb(resource.RUSAGE_CHILDREN),
        **_check_once(expected, seen),
    }


# -- wake-up --------------------------------------------------------------------------


def _waiter(peer: str, qdir: str, samples: int, conn: Any) -> None:
    queue = _open(peer, qdir)
    conn.send("ready")
    for _ in range(samples):
        data = queue.wait_take(30)
        conn.send(time.time() if data is not None else None)
    queue.close()


def wakeup(peer: str, qdir: str, samples: int, timeout: float = 300,
           **_: Any) -> dict[str, Any]:
    """A consumer blocked waiting; the producer puts one job; the time until it is taken."""
    import random  # noqa: PLC0415 - only the wake-up's pauses use it

    producer_peer = "bare" if peer == "perl" else peer
    _open(producer_peer, qdir).close()
    delays: list[float] = []
    if peer == "perl":
        proc = subprocess.Popen(_perl("wait", qdir, samples, 0.001), stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        stream = proc.stdout

        def pickup_time() -> float | None:
            line = stream.readline()
            return float(line) if line.strip() else None

        ready = stream.readline().strip() == "ready"
        stopper: list[Any] = [proc]
    else:
        parent, child = _FORK.Pipe()
        waiter = _FORK.Process(target=_waiter, args=(peer, qdir, samples, child))
        waiter.start()

        def pickup_time() -> float | None:
            if not parent.poll(30):
                return None
            got: float | None = parent.recv()
            return got

        ready = parent.poll(30) and parent.recv() == "ready"
        stopper = [waiter]
    deadline = time.monotonic() + timeout
    try:
        if not ready:
            return {"error": "the waiter did not start"}
        producer = _open(producer_peer, qdir)
        for number in range(samples):
            # Long enough for the waiter to be asleep again, varied so that a poller's
            # phase is sampled evenly.
            time.sleep(0.01 + random.random() * 0.01)
            sent = time.time()
            producer.put(payload(number))
            got = pickup_time()
            if got is None or time.monotonic() > deadline:
                return {"error": f"no pickup of job {number} within 30 s"}
            delays.append(got - sent)
        producer.close()
    finally:
        _stop(stopper)
    delays.sort()
    return {
        "median_ms": statistics.median(delays) * 1000,
        "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000,
        "samples": len(delays),
    }


# -- dirqueue alone -------------------------------------------------------------------


def server(peer: str, qdir: str, n: int, timeout: float = 300, **_: Any) -> dict[str, Any]:
    """`dq server --workers 2` with a do-nothing handler, against pickup+finish in one process."""
    assert peer == "dirqueue"
    from dirqueue import DirQueue  # noqa: PLC0415

    Bare(qdir).fill(n)
    queue = DirQueue(qdir, durable=False)
    start = time.perf_counter()
    while (job := queue.pickup_queued_job()) is not None:
        job.finish()
    raw = n / (time.perf_counter() - start)
    Bare(qdir).fill(n)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), *sys.path])}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dirqueue", "server", "--dir", qdir, "--workers", "2",
         "--until-empty", "--json", "--handler", "_noop_handler:handle"],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"dq server exited {done.returncode}: {done.stderr.strip()[-300:]}"}
    summary = json.loads(done.stdout)
    server_rate = summary["jobs"] / summary["seconds"]
    return {
        "raw_rate": raw, "server_rate": server_rate, "ratio": server_rate / raw,
        "server_jobs": summary["jobs"], "server_wall_rate": summary["jobs"] / wall,
    }


def _count_held_refusals() -> dict[str, int]:
    """Wrap ``dirqueue._lock.take`` in this process: count its calls and lost claims."""
    from dirqueue import _lock  # noqa: PLC0415

    counters = {"takes": 0, "held": 0}
    original = _lock.take

    def counting_take(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        counters["takes"] += 1
        # A claim lost at the link (LOST); older builds said HELD for it.
        counters["held"] += result is getattr(_lock.Refused, "LOST", _lock.Refused.HELD)
        return result

    _lock.take = counting_take
    return counters


def contention(peer: str, qdir: str, n: int, timeout: float = 300,
               **_: Any) -> dict[str, Any]:
    """Four consumers on a deep ordered queue: failed claims per job (``Refused.LOST``:
    another worker linked first)."""
    assert peer == "dirqueue"
    from dirqueue import _lock  # noqa: PLC0415

    if not hasattr(_lock, "take") or not hasattr(_lock, "Refused"):
        return {"error": "dirqueue._lock.take or Refused is gone: the count needs a new hook"}
    result = many(peer, qdir, n, consumers=4, timeout=timeout, prefilled=True,
                  take_hook=_count_held_refusals)
    if "error" not in result:
        held = sum(c["held"] for c in result["counters"])
        result["held_per_job"] = held / result["jobs"]
        result["held"] = held
    return result


def million(peer: str, qdir: str, n: int, **_: Any) -> dict[str, Any]:
    """Enqueue ``n`` jobs (1,000,000 by default) in one process, drain them in another."""
    assert peer == "dirqueue"
    proc = _FORK.Process(target=_enqueue_child, args=(qdir, n))
    start = time.perf_counter()
    proc.start()
    proc.join()
    enqueue_rate = n / (time.perf_counter() - start)
    queue = _open(peer, qdir)
    count = 0
    start = time.perf_counter()
    while queue.take() is not None:
        count += 1
    seconds = time.perf_counter() - start
    return {"enqueue_rate": enqueue_rate, "drain_rate": count / seconds, "count": count,
            "rss_kb": _rss_kb(), "enqueue_rss_kb": _rss_kb(resource.RUSAGE_CHILDREN)}


def _enqueue_child(qdir: str, n: int) -> None:
    queue = _open("dirqueue", qdir)
    for number in range(n):
        queue.put(payload(number))


WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {
    "enqueue": enqueue, "drain": drain, "many": many, "wakeup": wakeup,
    "server": server, "contention": contention, "million": million,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    # Our children are killed with us: the parent kills this whole session on overrun.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    root = tempfile.mkdtemp(prefix="peers-", dir=spec["base"])
    try:
        result = WORKLOADS[spec["workload"]](spec["peer"], os.path.join(root, "q"), **{
            k: v for k, v in spec.items() if k not in ("peer", "workload", "base")
        })
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
