"""dirqueue side by side with other queues, on the same workloads, in one interleaved run.

    .venv/bin/python bench/peers.py [--dir DIR] [--rounds 3] [--sizes 1000,10000,100000]
                                    [--only PEER,...] [--workload NAME,...] [--quick]
                                    [--million] [--markdown] [--json PATH]

The peers: dirqueue (``durable=False``), dirq's QueueSimple, diskcache's Deque,
litequeue, the standard library's ``mailbox.Maildir`` (add, then read and remove, as a
queue), the Perl module IPC::DirQueue (run by perl, timing itself), and "bare": the
fewest system calls that write and take jobs in IPC::DirQueue's format, with no checks
at all, as the floor. A peer that is not installed is skipped with the reason.

The workloads, all with jobs of 100 bytes:

- ``enqueue``: one process puts N jobs (``--jobs``).
- ``drain``: one process takes every job of a queue N deep, in order, for each N of
  ``--sizes`` (filling it is not timed); its peak RSS (``ru_maxrss``) is reported.
- ``many``: 2 producer and 2 consumer processes, 20,000 jobs; every job must be taken
  exactly once, and the table says whether it was.
- ``wakeup``: a consumer blocked waiting, a producer puts one job: the time until the
  consumer has it, median and 99th percentile of ``--samples``. Peers with no blocking
  wait poll every 1 ms; the Perl module polls every 1 ms in ``wait_for_queued_job``.
- ``server`` (dirqueue): ``dq server --workers 2`` with a handler that does nothing,
  against pickup + finish in one process, on the same N.
- ``contention`` (dirqueue): 4 consumer processes on one deep ordered queue; failed
  claims per job, counted by wrapping ``dirqueue._lock.take`` in each consumer and
  counting the calls that return ``Refused.LOST`` (the link lost to another worker's).
- ``million`` (dirqueue, only with ``--million``): enqueue and drain 1,000,000 jobs.

Every measurement runs in a fresh process (in a session of its own, killed whole if it
overruns ``--timeout``). Rounds are interleaved: round 1 runs every peer on a workload,
then round 2 does, and so on, because this VM's speed drifts from minute to minute. The
table gives each peer's median over the rounds and its ratio to dirqueue's; only ratios
taken within one run mean anything. The JSON (bench/results/, or ``--json``) holds the
machine, the options and every round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results
from _peer_queues import POLL_SECONDS, PYTHON_PEERS
from _peer_workloads import perl_missing

WORKLOAD_SCRIPT = Path(__file__).resolve().parent / "_peer_workloads.py"

#: Every peer, in the table's order: key for --only, column title, fsync, how it waits.
PEERS: dict[str, dict[str, str]] = {
    "dirqueue": {"title": "dirqueue", "wake": "inotify, and a poll each 1 s"},
    "dirq": {"title": "dirq QueueSimple", "wake": f"polls each {POLL_SECONDS * 1000:g} ms"},
    "diskcache": {"title": "diskcache Deque", "wake": f"polls each {POLL_SECONDS * 1000:g} ms"},
    "litequeue": {"title": "litequeue", "wake": f"polls each {POLL_SECONDS * 1000:g} ms"},
    "maildir": {"title": "Maildir", "wake": f"polls each {POLL_SECONDS * 1000:g} ms"},
    "perl": {"title": "Perl IPC::DirQueue", "fsync": "none",
             "wake": "wait_for_queued_job, polling each 1 ms"},
    "bare": {"title": "bare floor", "wake": f"polls each {POLL_SECONDS * 1000:g} ms"},
}
_PYTHON_NAME = {"maildir": "Maildir"}

PEER_WORKLOADS = ("enqueue", "drain", "many", "wakeup")
DIRQUEUE_WORKLOADS = ("server", "contention", "million")
DEFAULT_WORKLOADS = ("enqueue", "drain", "many", "wakeup", "server", "contention")


def _missing(peer: str) -> str | None:
    if peer == "perl":
        return perl_missing()
    return PYTHON_PEERS[_PYTHON_NAME.get(peer, peer)].missing()


def _fsync(peer: str) -> str:
    if peer == "perl":
        return PEERS[peer]["fsync"]
    return PYTHON_PEERS[_PYTHON_NAME.get(peer, peer)].fsync


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process; its result, or ``{"error": ...}``."""
    peer = _PYTHON_NAME.get(spec["peer"], spec["peer"])
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD_SCRIPT), json.dumps({**spec, "peer": peer,
                                                           "timeout": timeout * 0.9})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = "", f"overran {timeout:.0f} s and was killed"
    finally:
        # The whole session: whatever the measurement forked goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    if proc.returncode != 0 or not out.strip():
        lines = err.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1][:300]}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def plan(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """``(row key, workload, parameters)`` for each measurement of a round."""
    steps: list[tuple[str, str, dict[str, Any]]] = []
    for workload in args.workloads:
        if workload == "enqueue":
            steps.append((f"enqueue {args.jobs:,}", "enqueue", {"n": args.jobs}))
        elif workload == "drain":
            steps += [(f"drain {size:,} deep", "drain", {"n": size}) for size in args.sizes]
        elif workload == "many":
            steps.append((f"2+2 processes, {args.many_jobs:,}", "many", {"n": args.many_jobs}))
        elif workload == "wakeup":
            steps.append(("wake-up", "wakeup", {"samples": args.samples}))
        elif workload == "server":
            steps.append((f"dq server vs library, {args.server_jobs:,}", "server",
                          {"n": args.server_jobs}))
        elif workload == "contention":
            steps.append((f"4 consumers, {args.contention_jobs:,} deep", "contention",
                          {"n": args.contention_jobs}))
        elif workload == "million":
            steps.append((f"{args.million_jobs:,} jobs", "million", {"n": args.million_jobs}))
    return steps


def _peers_for(workload: str, params: dict[str, Any], peers: Sequence[str],
               perl_max_depth: int) -> list[str]:
    if workload in DIRQUEUE_WORKLOADS:
        return [p for p in peers if p == "dirqueue"]
    if workload in ("drain", "many") and params["n"] > perl_max_depth:
        # In 2 + 2 too: the producers run ahead and the queue grows that deep.
        return [p for p in peers if p != "perl"]
    return list(peers)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summarise(steps: list[tuple[str, str, dict[str, Any]]], rounds: dict[str, Any],
              peers: Sequence[str]) -> tuple[list[list[str]], dict[str, Any]]:
    """The main table's rows (medians, ratio to dirqueue) and the medians for the JSON."""
    rows: list[list[str]] = []
    medians: dict[str, Any] = {}

    def row(label: str, key: str, metric: str, *, digits: int = 0, scale: float = 1.0,
            unit_ratio: bool = True) -> None:
        values: dict[str, float | None] = {}
        for peer in peers:
            runs = rounds.get(key, {}).get(peer, [])
            ok = [r[metric] * scale for r in runs if metric in r]
            values[peer] = _median(ok)
            if runs and not ok:
                values[peer] = None
        medians.setdefault(key, {})[metric] = values
        base = values.get("dirqueue")
        cells = [label]
        for peer in peers:
            runs = rounds.get(key, {}).get(peer, [])
            value = values[peer]
            if value is None:
                cells.append("error" if any("error" in r for r in runs) else "-")
            elif peer == "dirqueue" or not base or not unit_ratio:
                cells.append(_fmt(value, digits))
            else:
                cells.append(f"{_fmt(value, digits)} ({value / base:.2f})")
        rows.append(cells)

    for key, workload, _params in steps:
        if workload in ("enqueue", "drain"):
            row(f"{key} (jobs/s)", key, "rate")
        elif workload == "many":
            row(f"{key} (jobs/s)", key, "rate")
            once = [key + ": exactly once"]
            for peer in peers:
                runs = rounds.get(key, {}).get(peer, [])
                good = sum(bool(r.get("exactly_once")) for r in runs)
                once.append(f"{good}/{len(runs)} rounds" if runs else "-")
            rows.append(once)
        elif workload == "wakeup":
            row("wake-up median (ms)", key, "median_ms", digits=2)
            row("wake-up p99 (ms)", key, "p99_ms", digits=2)
    drains = [(key, params["n"]) for key, workload, params in steps if workload == "drain"]
    if drains:
        key, size = max(drains, key=lambda d: d[1])
        row(f"consumer peak RSS, drain {size:,} (MB)", key, "rss_kb", digits=1,
            scale=1 / 1024)
    return rows, medians


def dirqueue_rows(steps: list[tuple[str, str, dict[str, Any]]],
                  rounds: dict[str, Any]) -> list[list[str]]:
    """The table of what is measured for dirqueue alone."""
    rows: list[list[str]] = []
    for key, workload, _params in steps:
        runs = [r for r in rounds.get(key, {}).get("dirqueue", []) if "error" not in r]
        errors = [r["error"] for r in rounds.get(key, {}).get("dirqueue", []) if "error" in r]
        if errors and not runs:
            rows.append([key, "error", errors[0][:60]])
            continue

        def med(metric: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return _median([r[metric] for r in runs if metric in r])

        if workload == "server":
            rows.append([key, "library pickup+finish, 1 process (jobs/s)", _fmt(med("raw_rate"))])
            rows.append([key, "dq server --workers 2, no-op handler (jobs/s)",
                         _fmt(med("server_rate"))])
            rows.append([key, "ratio server / library", _fmt(med("ratio"), 2)])
        elif workload == "contention":
            rows.append([key, "failed claims (Refused.LOST) per job",
                         _fmt(med("held_per_job"), 3)])
            takes = _median([sum(c["takes"] for c in r["counters"]) / r["jobs"] for r in runs])
            rows.append([key, "claim attempts (_lock.take calls) per job", _fmt(takes, 2)])
            rows.append([key, "drain rate, 4 consumers (jobs/s)", _fmt(med("rate"))])
            good = sum(bool(r.get("exactly_once")) for r in runs)
            rows.append([key, "exactly once", f"{good}/{len(runs)} rounds"])
        elif workload == "million":
            rows.append([key, "enqueue (jobs/s)", _fmt(med("enqueue_rate"))])
            rows.append([key, "drain (jobs/s)", _fmt(med("drain_rate"))])
            rows.append([key, "consumer peak RSS (MB)", _fmt((med("rss_kb") or 0) / 1024, 1)])
            rows.append([key, "producer peak RSS (MB)",
                         _fmt((med("enqueue_rss_kb") or 0) / 1024, 1)])
    return rows


def print_markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """The same table as :func:`print_table`, as Markdown for the docs."""
    print("| " + " | ".join(headers) + " |")
    print("| --- |" + " ---: |" * (len(headers) - 1))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python bench/peers.py --dir /dev/shm --sizes 1000,10000",
    )
    # On disk by default: /var/tmp is kept on disk where /tmp may be tmpfs.
    default_dir = "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()  # noqa: S108
    parser.add_argument("--dir", default=default_dir,
                        help=f"where queues are made (default {default_dir}; /dev/shm: tmpfs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in _csv(s)],
                        default=[1000, 10000, 100000], help="queue depths to drain")
    parser.add_argument("--jobs", type=int, default=10000, help="jobs to enqueue")
    parser.add_argument("--many-jobs", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=200, help="wake-ups per round")
    parser.add_argument("--server-jobs", type=int, default=10000)
    parser.add_argument("--contention-jobs", type=int, default=10000)
    parser.add_argument("--million-jobs", type=int, default=1_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--perl-max-depth", type=int, default=10000,
                        help="most jobs the Perl module drains or runs 2 + 2 (it lists the"
                             " whole queue for every pickup; default 10000)")
    parser.add_argument("--only", type=lambda s: [p.lower() for p in _csv(s)],
                        help="peers to run: " + ",".join(PEERS))
    parser.add_argument("--workload", type=_csv, dest="workloads",
                        help="workloads to run: "
                        + ",".join((*PEER_WORKLOADS, *DIRQUEUE_WORKLOADS)))
    parser.add_argument("--million", action="store_true",
                        help="add the million workload (1,000,000 jobs; not in the default run)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test in well under a minute: 1 round, small sizes")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds one measurement may take before it is killed")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--json", type=Path, help="write the JSON here (default bench/results/)")
    args = parser.parse_args(argv)
    _settle(parser, args)
    return args


def _settle(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Apply --quick and --million, and refuse unknown peers and workloads."""
    if args.quick:
        args.rounds, args.sizes, args.jobs, args.many_jobs = 1, [200], 200, 400
        args.samples, args.server_jobs, args.contention_jobs = 10, 200, 200
        args.timeout = min(args.timeout, 60)
    args.workloads = args.workloads or list(DEFAULT_WORKLOADS)
    if args.million and "million" not in args.workloads:
        args.workloads.append("million")
    unknown = set(args.workloads) - {*PEER_WORKLOADS, *DIRQUEUE_WORKLOADS}
    if unknown:
        parser.error(f"unknown workload {', '.join(sorted(unknown))}")
    unknown = set(args.only or []) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer {', '.join(sorted(unknown))}: choose from {', '.join(PEERS)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = args.only or list(PEERS)
    peers, skipped = [], {}
    for peer in PEERS:
        if peer not in wanted:
            continue
        reason = _missing(peer)
        if reason:
            skipped[peer] = reason
            print(f"skipped {PEERS[peer]['title']}: {reason}", file=sys.stderr)
        else:
            peers.append(peer)
    steps = plan(args)
    # A SIGTERM unwinds like Ctrl-C: the running measurement's session is killed and the
    # queues are removed (run_one and the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = tempfile.mkdtemp(prefix="dirqueue-peers-", dir=args.dir)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.monotonic()
    try:
        for number in range(1, args.rounds + 1):
            for key, workload, params in steps:
                # Interleaved: every peer once on this workload, then the next workload.
                for peer in _peers_for(workload, params, peers, args.perl_max_depth):
                    spec = {"peer": peer, "workload": workload, "base": base, **params}
                    result = run_one(spec, args.timeout)
                    rounds.setdefault(key, {}).setdefault(peer, []).append(result)
                    shown = result.get("error") or ", ".join(
                        f"{k} {v:,.2f}" for k, v in result.items()
                        if isinstance(v, float) and k != "seconds"
                    )
                    print(f"[{time.monotonic() - started:6.0f} s] round {number}/{args.rounds}"
                          f" {key}, {peer}: {shown}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report(args, steps, rounds, peers, skipped)
    return 0


def report(args: argparse.Namespace, steps: list[tuple[str, str, dict[str, Any]]],
           rounds: dict[str, Any], peers: list[str], skipped: dict[str, str]) -> None:
    """Print the tables and write the JSON."""
    m = machine(args.dir)
    show = print_markdown if args.markdown else print_table
    print(f"{describe(m)}; {args.rounds} interleaved rounds, median; jobs of 100 bytes;"
          " (ratio to dirqueue: above 1 is faster for rates, slower for times and RSS)")
    rows, medians = summarise(steps, rounds, peers)
    if rows:
        show(["", *(PEERS[p]["title"] for p in peers)], rows)
        print()
        show(["peer", "fsync", "waits by"],
             [[PEERS[p]["title"], _fsync(p), PEERS[p]["wake"]] for p in peers])
    if "perl" in peers and any(size > args.perl_max_depth for size in args.sizes):
        print(f"(Perl IPC::DirQueue not run deeper than {args.perl_max_depth:,}: it lists and"
              " sorts the whole queue for every pickup.)")
    extra = dirqueue_rows(steps, rounds) if "dirqueue" in peers else []
    if extra:
        print()
        show(["dirqueue alone", "what", "median"], extra)
    for peer, reason in skipped.items():
        print(f"skipped {PEERS[peer]['title']}: {reason}")
    payload = {
        "machine": m, "options": {k: (str(v) if isinstance(v, Path) else v)
                                  for k, v in vars(args).items()},
        "peers": {p: {**PEERS[p], "fsync": _fsync(p)} for p in peers},
        "skipped": skipped,
        "steps": [{"key": key, "workload": w, "params": params} for key, w, params in steps],
        "medians": medians, "rounds": rounds,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                         **payload}, indent=2) + "\n")
        print(f"wrote {args.json}")
    else:
        write_results("peers", payload)


if __name__ == "__main__":
    sys.exit(main())
