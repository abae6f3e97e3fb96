"""Three hosts, Perl beside dirqueue, on each filesystem of the multi-host test bed.

On each of three simulated hosts 2 producers and 2 consumers share one queue: one of
each the Perl module's (IPC::DirQueue), the others dirqueue's ("mixed"); then the same
with every process Perl's ("perl-only", the baseline). Counts the jobs lost (acknowledged
by a producer, never done) and doubled (done twice), and the throughput of each run.
The scenario is the one ``tests/test_multihost_hosts.py`` asserts on
(``tests/_multihost.py``), here at 10,000 jobs by default. Prints a table and writes JSON
to bench/results/. Root only, with the test bed up (tests/multihost/README.md)::

    export FSP_HOSTS=3 FSP_NFS_ATTR_TIMEOUT=3
    tests/multihost/setup-gluster.sh && tests/multihost/setup-nfs-ganesha.sh
    .venv/bin/python bench/multihost_mixed.py [--jobs 10000] [--fs glusterfs,nfs3]

A filesystem that is not mounted is skipped, saying why. At 10,000 jobs a run takes
5 to 30 minutes on a 2-CPU machine: run it under nohup and watch its progress lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a script here runs; the scenario lives with the tests.
from _common import describe, machine, print_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _multihost import HOSTS, KINDS, MIXES, missing, run_mixed, shared_queue


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_run(kind: str, mix: str, jobs: int, timeout: float) -> dict[str, Any]:
    with shared_queue(kind, prefix="dq-bench") as hosts, tempfile.TemporaryDirectory() as tmp:
        _say(f"{kind} {mix}: {jobs} jobs on {hosts.qdir(1)}")
        row = run_mixed(
            hosts, Path(tmp), jobs, mix, timeout=timeout,
            progress=lambda done, s: _say(f"  {kind} {mix}: {done}/{jobs} done, {s:.0f} s"),
        )  # fmt: skip
    _say(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per run (default 10000)")
    parser.add_argument("--fs", default=",".join(sorted(KINDS)),
                        help="filesystems, of glusterfs,nfs3 (default both)")  # fmt: skip
    parser.add_argument("--mix", default=",".join(MIXES), help="runs, of mixed,perl-only")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds a run may take")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    machines: dict[str, Any] = {}
    for kind in args.fs.split(","):
        why = missing(KINDS[kind], HOSTS, perl=True)
        if why:
            _say(f"{kind}: skipped, {why}")
            continue
        machines[kind] = machine(f"/mnt/fsp-{KINDS[kind]}-h1")
        rows += [one_run(kind, mix, args.jobs, args.timeout) for mix in args.mix.split(",")]

    perl_alone = {r["fs"]: r["jobs_per_s"] for r in rows if r["mix"] == "perl-only"}
    for kind, m in machines.items():
        print(f"{kind}: {describe(m)}")
    print_table(
        ["filesystem", "run", "jobs", "lost", "doubled", "seconds", "jobs/s", "vs Perl alone"],
        [[r["fs"], r["mix"], r["jobs"], r["lost"], r["doubled"], r["seconds"], r["jobs_per_s"],
          f"{r['jobs_per_s'] / perl_alone[r['fs']]:.2f}" if r["fs"] in perl_alone else "-"]
         for r in rows],
    )  # fmt: skip
    write_results("multihost_mixed", {"hosts": len(HOSTS), "machines": machines, "rows": rows})


if __name__ == "__main__":
    main()
