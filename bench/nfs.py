"""dirqueue on the multi-host test bed: drain rates and the NFS calls a job and a poll cost.

On NFSv3 (attribute cache 3 s, as deployed) and GlusterFS (and CephFS, once
tests/multihost/setup-ceph.sh has mounted it), 1, 3 and 6 consumers spread
over the bed's 3 hosts drain a queue ``--jobs`` deep; then one consumer polls an empty
queue. Three takers run the same way, in interleaved rounds: dirqueue (``durable=False``),
the format's floor (bench/_peer_queues.py ``Bare``: the fewest calls, no checks) and the
Perl module (IPC::DirQueue, ordered). Root only, with the bed up (tests/multihost/README.md)::

    .venv/bin/python bench/nfs.py [--jobs 500] [--consumers 1,3,6] [--rounds 3]
                                  [--fs nfs3,glusterfs] [--markdown] [--json PATH]

The NFS calls are counted by the client: the bench mounts the bed's export once more on
each host with ``nfsfuse.py --stats`` (mounts of its own, under /mnt/dq-nfsbench-*,
removed at the end; the shared /mnt/fsp-* mounts are not touched), so its counts hold
only its own processes' calls. A call is a request the kernel hands the FUSE client,
the nearest thing here to one RPC of a kernel NFS client: ``getattr`` stands for LOOKUP
and GETATTR, ``readdir`` for one listing, and requests nfsfuse answers locally (open
directories, flush, release, access) are left out. libnfs's own path walk (a LOOKUP per
path component on every path-based call, since nfsfuse keeps no handle cache) is not
counted: a kernel client resolves paths from its dentry cache. GlusterFS's calls are not
counted (no client-side counter here), nor CephFS's; their rates are.

``--only dirqueue,base,perl --base-src /tmp/base/src`` runs one more taker, dirqueue
imported from another build (``git archive main src | tar -x -C /tmp/base``), interleaved
with the others: a change's before and after in one run. Each drain also reports the CPU
milliseconds a job of the consumers' drain loops, of the clients serving the mounts
(nfsfuse, glusterfs) and of the file servers (shared with others' work), every request
the clients served (those answered locally too) and the load average.

Every figure includes the processes' start (opening the queue) and each consumer's last,
empty pickup. The bed is shared with other work and nfsfuse is Python: jobs/s are
relative figures; read the ratios within one run. Prints tables, writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs; the bed's helpers live with the tests.
from _common import describe, machine, print_table, write_results
from _peer_workloads import PERL_LIB, PERL_SCRIPT, perl_missing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _multihost import HOSTS, KINDS, counting_mount, host_cmd, missing

WORKER = str(Path(__file__).resolve().parent / "_nfs_worker.py")
PEERS = {"dirqueue": "dirqueue", "bare": "bare floor", "perl": "Perl IPC::DirQueue",
         "base": "dirqueue, --base-src"}
#: Where the ``base`` taker's dirqueue is imported from (``--base-src``): a build to
#: compare with, run interleaved with the others (e.g. ``git archive main src | tar -x``).
BASE_SRC: list[str] = []
#: Requests nfsfuse answers without a call to the server.
LOCAL = {"flush", "opendir", "releasedir", "access", "release", "init", "destroy", "ioctl"}
#: What each counted request is on the wire.
WIRE = {"getattr": "LOOKUP/GETATTR", "readdir": "READDIR", "create": "CREATE",
         "open": "OPEN (LOOKUP+ACCESS)", "read": "READ", "write": "WRITE", "link": "LINK",
         "unlink": "REMOVE", "rename": "RENAME", "utimens": "SETATTR", "mkdir": "MKDIR",
         "rmdir": "RMDIR", "fsync": "COMMIT", "truncate": "SETATTR", "chmod": "SETATTR",
         "statfs": "FSSTAT"}

Counter = Callable[[], dict[str, int]]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _argv(peer: str, mode: str, qdir: str, *args: object) -> list[str]:
    if peer == "perl":
        return ["perl", f"-I{PERL_LIB}", str(PERL_SCRIPT), mode, qdir, *map(str, args)]
    if peer == "base":
        return ["env", f"PYTHONPATH={BASE_SRC[0]}", sys.executable, WORKER, mode, "dirqueue",
                qdir, *map(str, args)]
    return [sys.executable, WORKER, mode, peer, qdir, *map(str, args)]


def _calls(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The calls sent between two readings, by kind, local requests left out."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if k not in LOCAL and after.get(k, 0) != before.get(k, 0)}


class Bed:
    """The mounts one filesystem is reached through, and their counters (if any)."""

    def __init__(self, fs: str, mounts: Sequence[str], counters: Sequence[Counter]) -> None:
        self.fs, self.mounts, self.counters = fs, list(mounts), list(counters)

    def client_cpu(self) -> float:
        """CPU seconds (user and system) used so far by the client processes serving
        this bed's mounts (nfsfuse, glusterfs): the processes naming a mount point.
        On GlusterFS the mounts are the bed's shared ones, so others' work counts too."""
        ticks, mounts = 0, set(self.mounts)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    args = fh.read().decode(errors="replace").split("\0")
                if mounts.isdisjoint(args):
                    continue
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
            except OSError:
                continue
        return ticks / os.sysconf("SC_CLK_TCK")

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for read in self.counters:
            for kind, n in read().items():
                total[kind] = total.get(kind, 0) + n
        return total

    @contextlib.contextmanager
    def queue(self) -> Iterator[Callable[[int], str]]:
        """A fresh queue's path as host n sees it; removed at the end."""
        name = f"dq-nfsbench-{uuid.uuid4().hex[:8]}"
        os.makedirs(f"{self.mounts[0]}/{name}")
        try:
            yield lambda n: f"{self.mounts[n - 1]}/{name}"
        finally:
            subprocess.run(["rm", "-rf", f"{self.mounts[0]}/{name}"], check=False, timeout=600)


def _run(argv: list[str], timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Each process's last JSON line; every process is reaped, killed if it overran."""
    results, deadline = [], time.monotonic() + timeout
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise RuntimeError(f"{proc.args!r} failed: {err.strip()[-300:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.communicate()
    return results


#: The file servers' processes, by the name the kernel knows them by.
SERVERS = {"nfs3": ("ganesha.nfsd",), "glusterfs": ("glusterfsd", "glusterd"),
           "cephfs": ("ceph-mds", "ceph-osd", "ceph-mon")}


def _server_cpu(fs: str) -> float:
    """CPU seconds used so far by the bed's file servers (shared with others' work)."""
    ticks, names = 0, SERVERS.get(fs, ())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        if name in names:
            fields = text.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def drain(bed: Bed, peer: str, consumers: int, jobs: int, timeout: float) -> dict[str, Any]:
    """``consumers`` processes, host 1, 2, 3, 1, ... in turn, drain ``jobs`` jobs."""
    with bed.queue() as qdir:
        _finish([_run(host_cmd(1, sys.executable, WORKER, "fill", qdir(1), str(jobs)),
                      timeout)], timeout)
        before = bed.counts() if bed.counters else {}
        client_before = bed.client_cpu()
        server_before = _server_cpu(bed.fs)
        hosts = [HOSTS[i % len(HOSTS)] for i in range(consumers)]
        procs = [_run(host_cmd(n, *_argv(peer, "drain", qdir(n))), timeout) for n in hosts]
        results = _finish(procs, timeout)
        after = bed.counts() if bed.counters else {}
        calls = _calls(before, after) if bed.counters else {}
        client_cpu = bed.client_cpu() - client_before
        server_cpu = _server_cpu(bed.fs) - server_before
        # Every request the clients served, those answered locally (release, flush,
        # opendir...) too: each is a round trip through the host's one-threaded client.
        requests = sum(after.values()) - sum(before.values())
    taken = sum(r["count"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"taken": taken, "all_taken": taken == jobs, "seconds": seconds,
            "rate": taken / seconds if seconds > 0 else None, "calls": calls,
            "calls_per_job": sum(calls.values()) / jobs if calls else None,
            # CPU milliseconds a job: the consumers' drain loops, the clients' serving.
            "cpu_ms": 1000 * sum(r.get("cpu", 0) for r in results) / jobs,
            "client_cpu_ms": 1000 * client_cpu / jobs,
            "server_cpu_ms": 1000 * server_cpu / jobs,
            "requests_per_job": requests / jobs if calls else None,
            "load": os.getloadavg()[0],
            "per_consumer": [r["count"] for r in results],
            "failed_calls": sum(r.get("errors", 0) for r in results)}


def enqueue(bed: Bed, peer: str, jobs: int, timeout: float) -> dict[str, Any]:
    """One producer on host 1 enqueues ``jobs`` jobs into an empty queue."""
    with bed.queue() as qdir:
        args = (jobs, 0) if peer == "perl" else (jobs,)
        before = bed.counts()
        result = _finish([_run(host_cmd(1, *_argv(peer, "enqueue", qdir(1), *args)), timeout)],
                         timeout)[0]
        calls = _calls(before, bed.counts())
    return {"taken": jobs, "seconds": result["seconds"], "rate": jobs / result["seconds"],
            "calls": calls, "calls_per_job": sum(calls.values()) / jobs}


def idle(bed: Bed, peer: str, polls: int, gap: float, settle: float,  # noqa: PLR0917
         timeout: float) -> dict[str, Any]:
    """One consumer on host 1 polls an empty queue ``polls`` times, ``gap`` s apart,
    counted from its third: the second comes ``settle`` seconds after the first, for an
    idle queue is an old one, and dirqueue trusts a directory's mtime (and stops
    listing it) only once it is 2 s old."""
    with bed.queue() as qdir:
        proc = _run(host_cmd(1, *_argv(peer, "polls", qdir(1), polls, gap, settle)), timeout)
        try:
            assert proc.stdout is not None
            assert proc.stdin is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{peer} poller did not start")
            before = bed.counts()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            if proc.stdout.readline().strip() != "done":
                raise RuntimeError(f"{peer} poller failed")
            calls = _calls(before, bed.counts())
        finally:
            _finish([proc], timeout) if proc.poll() is None else None
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    return {"polls": polls, "gap": gap, "calls": calls,
            "calls_per_poll": sum(calls.values()) / polls}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(runs: dict[str, list[dict[str, Any]]], peers: Sequence[str]
              ) -> tuple[list[list[str]], list[list[str]], dict[str, Any]]:
    """The table of rates and calls per job and poll; the table of calls by kind."""
    rows, kinds_rows, medians = [], [], {}
    def order(key: str) -> tuple[str, int, str]:
        fs, what = key.split("|")
        first = what.split(" ", 1)[0]
        return fs, int(first) if first.isdigit() else 1 << 30, what

    keys = sorted({k.rsplit("|", 1)[0] for k in runs}, key=order)
    for key in keys:
        fs, what = key.split("|")
        cells = [fs, what]
        base_rate = base_calls = None
        stats: dict[str, Any] = {}
        for peer in peers:
            results = [r for r in runs.get(f"{key}|{peer}", []) if "error" not in r]
            rate = _median([r["rate"] for r in results if r.get("rate")])
            per = _median([r["calls_per_job"] if "calls_per_job" in r else r["calls_per_poll"]
                           for r in results
                           if (r.get("calls_per_job") or r.get("calls_per_poll")) is not None])
            ok = sum(bool(r.get("all_taken", True)) for r in results)
            stats[peer] = {"rate": rate, "calls": per, "rounds": len(results), "all_taken": ok,
                           "cpu_ms": _median([r["cpu_ms"] for r in results if "cpu_ms" in r]),
                           "client_cpu_ms": _median([r["client_cpu_ms"] for r in results
                                                     if "client_cpu_ms" in r])}
            if peer == "dirqueue":
                base_rate, base_calls = rate, per
        medians[key] = stats
        for peer in peers:
            s = stats[peer]
            rate = "-" if s["rate"] is None else f"{s['rate']:,.0f}"
            if s["rate"] and base_rate and peer != "dirqueue":
                rate += f" ({base_rate / s['rate']:.2f}x)"
            per = "-" if s["calls"] is None else f"{s['calls']:.2f}"
            if s["calls"] and base_calls is not None and peer != "dirqueue":
                per += f" ({base_calls / s['calls']:.2f}x)"
            cells += [rate, per]
        rows.append(cells)
        for peer in peers:
            results = [r for r in runs.get(f"{key}|{peer}", []) if r.get("calls")]
            if not results:
                continue
            unit = results[0].get("polls") or results[0].get("taken") or 1
            per_kind = {kind: _median([r["calls"].get(kind, 0) / unit for r in results])
                        for kind in sorted({k for r in results for k in r["calls"]})}
            cpu = ""
            if stats[peer]["cpu_ms"] is not None:
                cpu = (f"; CPU ms a job: consumers {stats[peer]['cpu_ms']:.1f},"
                       f" clients {stats[peer]['client_cpu_ms']:.1f}")
            kinds_rows.append([fs, what, PEERS[peer],
                               ", ".join(f"{WIRE.get(k, k)} {v:.2f}"
                                         for k, v in per_kind.items() if v) + cpu])
    return rows, kinds_rows, medians


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fs", default="nfs3,glusterfs",
                    help="of nfs3,glusterfs,cephfs (cephfs: tests/multihost/setup-ceph.sh)")
    ap.add_argument("--jobs", type=int, default=500, help="queue depth drained on NFS (500)")
    ap.add_argument("--gluster-jobs", type=int, default=200,
                    help="queue depth drained on GlusterFS and CephFS (default 200)")
    ap.add_argument("--consumers", default="1,3,6", help="consumers per run, spread on 3 hosts")
    ap.add_argument("--only", default=",".join(PEERS), help="of " + ",".join(PEERS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--polls", type=int, default=12, help="idle polls counted (0: none)")
    ap.add_argument("--enqueue", type=int, default=300,
                    help="jobs one producer enqueues, calls counted (NFS; 0: none)")
    ap.add_argument("--gap", type=float, default=1.0,
                    help="seconds between idle polls (default 1: wait_for_queued_job's)")
    ap.add_argument("--settle", type=float, default=4.0,
                    help="seconds from the queue's making to the first idle poll counted")
    ap.add_argument("--attr-timeout", type=float, default=3.0,
                    help="the counting NFS mounts' attribute cache (s; the bed's is 3)")
    ap.add_argument("--base-src", type=Path,
                    help="the base taker's src directory: dirqueue imported from there,"
                         " run as one more taker (add base to --only)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0912 - a step per kind of run
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the counting mounts are unmounted, the queues removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    peers = [p for p in args.only.split(",") if p]
    if "base" in peers:
        if args.base_src is None:
            _say("the base taker needs --base-src")
            return 2
        BASE_SRC[:] = [str(args.base_src.resolve())]
    if "perl" in peers and perl_missing():
        _say(f"skipped the Perl module: {perl_missing()}")
        peers.remove("perl")
    consumers = [int(c) for c in args.consumers.split(",") if c]
    runs: dict[str, list[dict[str, Any]]] = {}
    machines: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        beds: list[Bed] = []
        for fs in args.fs.split(","):
            short = KINDS[fs]
            why = missing(short, HOSTS, perl=False)
            if why:
                skipped[fs] = why
                _say(f"{fs}: skipped, {why}")
                continue
            if fs == "nfs3":
                tag = f"{os.getpid()}"
                mounts = [f"/mnt/dq-nfsbench-{tag}-h{n}" for n in HOSTS]
                counters = [stack.enter_context(counting_mount(
                    n, mounts[n - 1], f"/run/dq-nfsbench-{tag}-h{n}.json", args.attr_timeout))
                    for n in HOSTS]
                beds.append(Bed(fs, mounts, counters))
            else:
                beds.append(Bed(fs, [f"/mnt/fsp-{short}-h{n}" for n in HOSTS], []))
            machines[fs] = machine(beds[-1].mounts[0])
        for number in range(1, args.rounds + 1):
            for bed in beds:
                jobs = args.jobs if bed.counters else args.gluster_jobs
                steps: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
                    (f"{bed.fs}|{c} consumer{'s' if c > 1 else ''}, {jobs} deep",
                     lambda p, c=c, bed=bed, n=jobs: drain(bed, p, c, n, args.timeout))
                    for c in consumers]
                if bed.counters and args.enqueue:
                    steps.insert(0, (f"{bed.fs}|enqueue {args.enqueue}, 1 producer",
                                     lambda p, bed=bed: enqueue(bed, p, args.enqueue,
                                                                args.timeout)))
                if bed.counters and args.polls:
                    steps.append((f"{bed.fs}|idle poll", lambda p, bed=bed: idle(
                        bed, p, args.polls, args.gap, args.settle, args.timeout)))
                for key, step in steps:
                    for peer in peers:  # Interleaved: every peer, then the next step.
                        try:
                            result = step(peer)
                        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                            result = {"error": str(exc)[:300]}
                        runs.setdefault(f"{key}|{peer}", []).append(result)
                        shown = {k: round(v, 2) for k, v in result.items()
                                 if isinstance(v, float)}
                        _say(f"[{time.monotonic() - started:5.0f} s] round {number} {key}"
                             f" {peer}: {result.get('error') or shown}")
    report(args, runs, peers, machines, skipped)
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]],
           peers: list[str], machines: dict[str, Any], skipped: dict[str, str]) -> None:
    rows, kinds_rows, medians = summarise(runs, peers)
    show = _markdown if args.markdown else print_table
    for fs, m in machines.items():
        print(f"{fs}: {describe(m)}")
    print(f"{args.rounds} interleaved rounds, median; jobs of 100 bytes; in brackets"
          " dirqueue's figure over the peer's (rate: above 1, dirqueue is faster;"
          " calls: below 1, dirqueue sends fewer)")
    headers = ["fs", "run"]
    for peer in peers:
        headers += [f"{PEERS[peer]} jobs/s", f"{PEERS[peer]} calls/job (or /poll)"]
    show(headers, [r + [""] * (len(headers) - len(r)) for r in rows])
    print()
    show(["fs", "run", "taker", "NFS calls per job (or per idle poll), by kind"], kinds_rows)
    for fs, why in skipped.items():
        print(f"{fs}: skipped, {why}")
    payload = {"machines": machines, "options": {k: str(v) for k, v in vars(args).items()},
               "medians": medians, "runs": runs, "skipped": skipped}
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), **payload},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")
    else:
        write_results("nfs", payload)


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("| --- |" + " --- |" * (len(headers) - 1))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    sys.exit(main())
