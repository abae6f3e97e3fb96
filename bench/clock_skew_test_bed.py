"""Clock skew across simulated hosts of the multi-host test bed (issue 12).

On each shared filesystem that is mounted (GlusterFS /mnt/fsp-gl-hN, NFSv3
/mnt/fsp-nfs-hN; see tests/multihost/README.md), host 1 holds a heartbeat lock of
"another host" (lifetime 3 s) and a worker on host 2 runs under libfaketime with its
clock 5 minutes fast (the lock is touched all along: it must never be taken) or 5
minutes slow (the lock goes quiet: it must be taken after about one lifetime). Prints a
table and writes JSON to bench/results/. Root only; needs Debian's faketime.

    .venv/bin/python bench/clock_skew_test_bed.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

# bench/ is on sys.path when a script here runs.
from _common import print_table, write_results

from dirqueue import DirQueue
from dirqueue._format import format_lock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _multihost import host_cmd
from test_clock_skew import LIFETIME, TRY  # The test's own worker.


def run(short: str, offset: str) -> dict[str, object]:
    name = f"dq-skew-{uuid.uuid4().hex[:8]}"
    q1, q2 = f"/mnt/fsp-{short}-h1/{name}", f"/mnt/fsp-{short}-h2/{name}"
    try:
        jobid = DirQueue(q1, active_file_lifetime=LIFETIME).enqueue_string("held elsewhere")
        lock = f"{q1}/active/{jobid}"
        with open(lock, "wb") as fh:
            fh.write(format_lock("far-away-host", 4242, True, boot="b", pidns="1", start=7))
        seconds = 3 * LIFETIME if offset.startswith("+") else 6 * LIFETIME
        worker = subprocess.Popen(
            host_cmd(2, "faketime", "-f", offset, sys.executable, "-c", TRY, q2, str(seconds)),
            stdout=subprocess.PIPE,
            text=True,
        )
        while offset.startswith("+") and worker.poll() is None:
            os.utime(lock)  # The owner's heartbeat, from host 1.
            time.sleep(LIFETIME / 4)
        seen = json.loads(worker.communicate(timeout=120)[0])
        return {
            "fs": short,
            "worker clock": offset,
            "skew seen (s)": round(seen["skew"]),
            "lock taken": seen["taken"] is not None,
            "after (s)": round(seen["after"], 2),
            "expected": "kept" if offset.startswith("+") else f"taken after ~{LIFETIME:g} s",
        }
    finally:
        shutil.rmtree(q1, ignore_errors=True)


def main() -> None:
    rows = [
        run(short, offset)
        for short in ("gl", "nfs")
        if os.path.ismount(f"/mnt/fsp-{short}-h1") and os.path.ismount(f"/mnt/fsp-{short}-h2")
        for offset in ("+5m", "-5m")
    ]
    print_table(list(rows[0]) if rows else ["fs"], [list(row.values()) for row in rows])
    write_results("clock_skew_test_bed", {"lifetime": LIFETIME, "rows": rows})


if __name__ == "__main__":
    main()
