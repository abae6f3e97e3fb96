"""What every benchmark here shares: the machine's description, the table, the JSON."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine(directory: str) -> dict[str, Any]:
    """CPU, kernel, Python, and the filesystem that ``directory`` is on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # Not Linux: the platform string below still says what ran.
    fstype = device = "unknown"
    stat_cmd, df_cmd = shutil.which("stat"), shutil.which("df")
    if stat_cmd:
        out = subprocess.run(
            [stat_cmd, "-f", "-c", "%T", directory], capture_output=True, text=True, check=False
        ).stdout.strip()
        fstype = out or fstype
    if df_cmd:
        out = subprocess.run(
            [df_cmd, "--output=source", directory], capture_output=True, text=True, check=False
        ).stdout.split()
        device = out[-1] if out else device
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "filesystem": fstype,
        "device": device,
    }


def describe(m: dict[str, Any]) -> str:
    """One line naming the machine, for the top of a table."""
    return (
        f"{m['cpus']} CPUs ({m['cpu']}), {m['filesystem']} on {m['device']},"
        f" Linux {m['kernel']}, Python {m['python']}"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns aligned: the first to the left, the rest (numbers) to the right."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        first = r[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        print("  ".join([first, *rest]).rstrip())


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the command line) to bench/results/NAME-TIMESTAMP.json."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    record = {"command": " ".join(["python", *sys.argv]), **payload}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out
