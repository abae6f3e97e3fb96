"""dirqueue, the format's floor, dirq and the Perl module on a journaled disk.

The VM's own disk is ext4 without a journal, whose inode allocator skips recently freed
inodes and makes every file creation slow after churn; no production disk behaves so.
As root, this makes a journaled ext4 and an XFS filesystem, each in an image file under
/var/tmp on a loop device, and runs bench/peers.py there (enqueue, drain, 2 producers +
2 consumers; medians of interleaved rounds), then the durable batch: ``enqueue_many``
of 100 jobs with ``durable=True`` against single durable enqueues, both in fresh
processes, in turns, every round reported (the target is >= 5x in every round)::

    .venv/bin/python bench/disk.py [--fs ext4,xfs] [--rounds 3] [--jobs 5000]
                                   [--sizes 1000,10000] [--many-jobs 4000]
                                   [--durable-jobs 300] [--durable-only]
                                   [--interleaved] [--src NAME=PATH ...]
                                   [--markdown] [--json PATH]

With ``--interleaved`` each round measures both in one process, in ten slices taken in
turns, so that both meet the same load (one after the other, a round's ratio also
measures how the load moved between them).

With ``--src NAME=PATH`` (a ``src`` directory, e.g. ``git archive main src`` unpacked),
the durable batch runs that build too, in the same rounds, beside this tree's: its
ratios are then a comparison on the same filesystem at the same moment.

The image is removed and the filesystem unmounted at the end, on error too. A
filesystem whose mkfs is missing (mkfs.xfs: Debian's xfsprogs, installed when missing
if apt-get can) is skipped, saying why; not root: everything is skipped. Peers that
are not installed are skipped by peers.py (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs.
from _common import describe, machine, print_table, write_results

BENCH = Path(__file__).resolve().parent
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-O", "has_journal"], "xfs": ["mkfs.xfs", "-q", "-f"]}
PACKAGE = {"ext4": "e2fsprogs", "xfs": "xfsprogs"}
PEERS = "dirqueue,bare,dirq,perl"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def why_not(fs: str) -> str | None:
    """Why ``fs`` cannot be made here, or None (installs its mkfs when missing)."""
    if os.geteuid() != 0:
        return "not root (a loop device and a mount need root)"
    if shutil.which("losetup") is None:
        return "no losetup (util-linux)"
    if shutil.which(MKFS[fs][0]) is None and shutil.which("apt-get"):
        _say(f"{MKFS[fs][0]} missing: apt-get install {PACKAGE[fs]}")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        PACKAGE[fs]], capture_output=True, check=False, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which(MKFS[fs][0]) is None:
        return f"{MKFS[fs][0]} is not installed and could not be (Debian's {PACKAGE[fs]})"
    return None


@contextlib.contextmanager
def loop_filesystem(fs: str, size_mb: int, parent: str = "/var/tmp") -> Iterator[str]:  # noqa: S108
    """A fresh ``fs`` filesystem of ``size_mb`` MiB in an image under ``parent``, on a
    loop device, mounted; yields the mount point. Unmounted, detached and deleted at
    the end, whatever happened."""
    work = tempfile.mkdtemp(prefix=f"dq-disk-{fs}-", dir=parent)
    image, mnt = os.path.join(work, "image"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    device = None
    try:
        with open(image, "wb") as fh:
            fh.truncate(size_mb << 20)
        subprocess.run([*MKFS[fs], image], check=True, capture_output=True, timeout=300)
        device = subprocess.run(["losetup", "--find", "--show", image], check=True,
                                capture_output=True, text=True, timeout=60).stdout.strip()
        subprocess.run(["mount", device, mnt], check=True, capture_output=True, timeout=60)
        yield mnt
    finally:
        if os.path.ismount(mnt):
            done = subprocess.run(["umount", mnt], capture_output=True, check=False, timeout=300)
            if done.returncode != 0:  # Busy (a straggler): detach it, never leave it.
                subprocess.run(["umount", "-l", mnt], check=False, timeout=60)
        if device:
            subprocess.run(["losetup", "-d", device], check=False, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def durable_once(qdir: str, jobs: int, batch: int) -> float:
    """Enqueues per second with ``durable=True``: one by one, or ``batch`` at a time."""
    from dirqueue import DirQueue  # noqa: PLC0415 - only the measuring process needs it

    q = DirQueue(qdir, durable=True, create=True)
    q.enqueue_string("warm up: the directories and the kept handles")
    payload = b"." * 100
    start = time.perf_counter()
    if batch == 1:
        for _ in range(jobs):
            q.enqueue_string(payload)
    else:
        for _ in range(jobs // batch):
            q.enqueue_many([payload] * batch)
    return (jobs // batch * batch) / (time.perf_counter() - start)


#: Slices a round of the interleaved measure is cut into.
_SLICES = 10


def durable_interleaved(qdir: str, jobs: int, batch_jobs: int) -> tuple[float, float]:
    """(single, batched) enqueues per second with ``durable=True``, measured in turns
    within one process and queue: a tenth of the single enqueues, then a tenth of the
    batches of 100, ten times over, each kind's time summed. Both kinds then meet the
    same moments of a machine whose load swings from one second to the next; measured
    one after the other (:func:`durable_once`), a round's ratio says as much about the
    load's swing between the two as about the batch."""
    from dirqueue import DirQueue  # noqa: PLC0415 - only the measuring process needs it

    q = DirQueue(qdir, durable=True, create=True)
    q.enqueue_string("warm up: the directories and the kept handles")
    payload = b"." * 100
    spent = {"single": 0.0, "batch": 0.0}
    singles, batches = jobs // _SLICES, max(1, batch_jobs // 100 // _SLICES)
    for _ in range(_SLICES):
        start = time.perf_counter()
        for _ in range(singles):
            q.enqueue_string(payload)
        middle = time.perf_counter()
        for _ in range(batches):
            q.enqueue_many([payload] * 100)
        spent["single"] += middle - start
        spent["batch"] += time.perf_counter() - middle
    return (singles * _SLICES / spent["single"], batches * 100 * _SLICES / spent["batch"])


def durable(mnt: str, rounds: int, jobs: int, batch_jobs: int,
            builds: Sequence[tuple[str, str]] = (), *,
            interleaved: bool = False) -> dict[str, list[dict[str, float]]]:
    """Single and batched durable enqueues in turns, each in a fresh process and queue
    (with ``interleaved``, both in one, in slices: :func:`durable_interleaved`), for
    this tree's build and each of ``builds`` (name, src path), round after round."""
    results: dict[str, list[dict[str, float]]] = {}
    everyone = [("this tree", str(BENCH.parent / "src")), *builds]
    for _ in range(rounds):
        for build, src in everyone:
            env = {**os.environ, "PYTHONPATH": src}
            rates = {}
            if interleaved:
                qdir = tempfile.mkdtemp(prefix="dq-durable-", dir=mnt)
                out = subprocess.run(
                    [sys.executable, __file__, "_interleaved", qdir, str(jobs), str(batch_jobs)],
                    capture_output=True, text=True, check=True, timeout=1800, env=env)
                single, batched = out.stdout.strip().splitlines()[-1].split()
                rates = {"single": float(single), "batch of 100": float(batched)}
                shutil.rmtree(qdir, ignore_errors=True)
                os.sync()  # The removal on disk now, not in the next measurement's fsyncs.
            for name, batch, n in (("single", 1, jobs), ("batch of 100", 100, batch_jobs)):
                if interleaved:
                    break
                qdir = tempfile.mkdtemp(prefix="dq-durable-", dir=mnt)
                out = subprocess.run(
                    [sys.executable, __file__, "_durable", qdir, str(n), str(batch)],
                    capture_output=True, text=True, check=True, timeout=1800, env=env)
                rates[name] = float(out.stdout.strip().splitlines()[-1])
                shutil.rmtree(qdir, ignore_errors=True)
                os.sync()  # The removal on disk now, not in the next measurement's fsyncs.
            rates["ratio"] = rates["batch of 100"] / rates["single"]
            rates["load"] = os.getloadavg()[0]
            results.setdefault(build, []).append(rates)
            _say(f"  durable, {build}: {rates}")
    return results


def peers(mnt: str, args: argparse.Namespace) -> dict[str, Any]:
    """bench/peers.py on ``mnt``: its JSON."""
    out = os.path.join(tempfile.mkdtemp(prefix="dq-disk-json-"), "peers.json")
    cmd = [sys.executable, str(BENCH / "peers.py"), "--dir", mnt, "--only", args.only,
           "--workload", "enqueue,drain,many", "--jobs", str(args.jobs),
           "--sizes", args.sizes, "--many-jobs", str(args.many_jobs),
           "--rounds", str(args.rounds), "--perl-max-depth", str(args.perl_max_depth),
           "--json", out]
    _say(" ".join(cmd))
    subprocess.run(cmd, check=True, timeout=args.timeout, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        result: dict[str, Any] = json.load(fh)
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    return result


def table(fs: str, result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of one filesystem's peers run: medians, and each peer over the floor."""
    names = list(result["peers"])
    titles = [result["peers"][p]["title"] for p in names]
    rows = []
    for step in result["steps"]:
        values = result["medians"][step["key"]]["rate"]
        floor = values.get("bare")
        cells = [f"{fs}: {step['key']} (jobs/s)"]
        for p in names:
            v = values.get(p)
            if v is None:
                cells.append("-")
            elif floor and p != "bare":
                cells.append(f"{v:,.0f} ({v / floor:.2f})")
            else:
                cells.append(f"{v:,.0f}")
        rows.append(cells)
    return ["", *titles], rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fs", default="ext4,xfs")
    ap.add_argument("--size-mb", type=int, default=4096, help="each image's size (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=PEERS, help=f"peers for peers.py (default {PEERS})")
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--many-jobs", type=int, default=4000)
    ap.add_argument("--perl-max-depth", type=int, default=4000,
                    help="deepest queue the Perl module drains (it lists it for every pickup)")
    ap.add_argument("--durable-jobs", type=int, default=300, help="single durable enqueues")
    ap.add_argument("--batch-jobs", type=int, default=3000, help="jobs enqueued 100 at a time")
    ap.add_argument("--durable-only", action="store_true",
                    help="only the durable batch against single durable enqueues")
    ap.add_argument("--interleaved", action="store_true",
                    help="single and batched durable enqueues in slices, in turns, in one"
                         " process: both meet the same load")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=PATH",
                    help="another build's src directory, for the durable batch too")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    report: dict[str, Any] = {"filesystems": {}, "skipped": {}}
    for fs in args.fs.split(","):
        why = why_not(fs)
        if why:
            report["skipped"][fs] = why
            _say(f"{fs}: skipped, {why}")
            continue
        with loop_filesystem(fs, args.size_mb) as mnt:
            _say(f"{fs} on {mnt}")
            report["filesystems"][fs] = {
                "machine": machine(mnt),
                "peers": None if args.durable_only else peers(mnt, args),
                "durable": durable(mnt, args.rounds, args.durable_jobs, args.batch_jobs,
                                   [(n, p) for n, _, p in (s.partition("=") for s in args.src)],
                                   interleaved=args.interleaved)}
    show = _markdown if args.markdown else print_table
    for fs, r in report["filesystems"].items():
        if r["peers"] is None:
            continue
        print(f"{fs}: {describe(r['machine'])}; {args.rounds} interleaved rounds, median;"
              " in brackets the ratio to the bare floor")
        headers, rows = table(fs, r["peers"])
        show(headers, rows)
        print()
    durable_rows = []
    for fs, r in report["filesystems"].items():
        for build, rounds in r["durable"].items():
            durable_rows.append([
                fs if len(r["durable"]) == 1 else f"{fs}, {build}",
                f"{statistics.median(x['single'] for x in rounds):,.0f}",
                f"{statistics.median(x['batch of 100'] for x in rounds):,.0f}",
                ", ".join(f"{x['ratio']:.1f}" for x in rounds),
                "yes" if all(x["ratio"] >= 5 for x in rounds) else "NO",
                ", ".join(f"{x['load']:.1f}" for x in rounds)])
    if durable_rows:
        show(["durable=True", "single enqueue (jobs/s)", "enqueue_many(100) (jobs/s)",
              "ratio, each round", ">= 5x every round", "load average, each round"],
             durable_rows)
    for fs, why in report["skipped"].items():
        print(f"{fs}: skipped, {why}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), **report}, indent=2))
        print(f"wrote {args.json}")
    else:
        write_results("disk", report)
    return 0


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("| --- |" + " ---: |" * (len(headers) - 1))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_durable":
        print(durable_once(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    if len(sys.argv) == 5 and sys.argv[1] == "_interleaved":
        print(*durable_interleaved(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    sys.exit(main())
