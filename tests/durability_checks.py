"""Invariants of a queue directory, checked by the durability, fault and kill tests.

Not a test module: helpers the tests import. Each check reads the directory the way
a reader would and fails with the offending path.
"""

from __future__ import annotations

import os
import stat

from _helpers import is_live_lock_file
from dirqueue import DirQueue
from dirqueue._format import is_job_name, parse_control


def queued_jobs(q: DirQueue) -> dict[str, str]:
    """Every job name in queue/ (fan-out included) -> its control file's path."""
    found: dict[str, str] = {}
    layout = q.layout
    if not os.path.isdir(layout.queue_dir):
        return found
    for name in os.listdir(layout.queue_dir):
        path = os.path.join(layout.queue_dir, name)
        if is_job_name(name):
            found[name] = path
        elif os.path.isdir(path) and not os.path.islink(path):
            for sub in os.listdir(path):
                if is_job_name(sub):
                    found[sub] = os.path.join(path, sub)
    return found


def assert_no_half_jobs(q: DirQueue) -> dict[str, bytes]:
    """Every job visible in queue/ parses and has its data file; return id -> data."""
    jobs: dict[str, bytes] = {}
    for name, path in queued_jobs(q).items():
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
        with open(path, "rb") as fh:
            control = parse_control(fh.read(), path)
        data_path = q.layout.data_path(name)
        assert os.path.isfile(data_path), f"job {name} is visible without its data file"
        with open(data_path, "rb") as fh:
            data = fh.read()
        assert control.size_bytes == len(data), (
            f"job {name}: data is {len(data)} bytes, control says {control.size_bytes}"
        )
        jobs[name] = data
    return jobs


def deferred_jobs(q: DirQueue) -> set[str]:
    """The names of the jobs waiting in deferred/."""
    if not os.path.isdir(q.layout.deferred_dir):
        return set()
    return {name for name in os.listdir(q.layout.deferred_dir) if is_job_name(name)}


def files_under(directory: str) -> list[str]:
    """Every non-directory under ``directory`` (not a running process's lock file)."""
    out: list[str] = []
    for root, dirs, files in os.walk(directory):
        out.extend(os.path.join(root, f) for f in files if not is_live_lock_file(f))
        out.extend(os.path.join(root, d) for d in dirs if os.path.islink(os.path.join(root, d)))
    return out


def assert_no_orphans(q: DirQueue) -> None:
    """Nothing but whole jobs: tmp/ empty, no lock, every data file some job's."""
    layout = q.layout
    assert files_under(layout.tmp_dir) == [], "tmp/ holds leftovers"
    assert files_under(layout.active_dir) == [], "active/ holds locks"
    jobs = set(queued_jobs(q)) | deferred_jobs(q)
    expected = {layout.data_path(name) for name in jobs}
    actual = set(files_under(layout.data_dir))
    assert actual == expected, f"data files without jobs: {sorted(actual - expected)}"
