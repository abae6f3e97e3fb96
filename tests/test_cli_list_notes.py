"""``dq list`` says why an old lock is not stale, and ``dq stats`` counts it the same way.

A Perl worker on another host keeps no heartbeat, and its pid cannot be checked from
here: its lock is never broken from here however old it is, so it is ``active``, and a
note line below the table says so. A lock whose heartbeat went quiet is ``stale``, and
its note says the next worker takes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dirqueue import DirQueue
from dirqueue.cli import EXIT_OK
from test_cli import dq

pytestmark = pytest.mark.timeout(60)

TWO_HOURS = 2 * 3600


def lock_job(q: DirQueue, jobid: str, text: str, age: float) -> None:
    """Write job ``jobid``'s lock file by hand, last touched ``age`` seconds ago."""
    lock = Path(q.layout.active_path(jobid))
    lock.write_text(text)
    then = time.time() - age
    os.utime(lock, (then, then))


def note_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("note: ")]


def test_a_perl_workers_old_lock_on_another_host_is_active_with_a_note(qdir: Path) -> None:
    q = DirQueue(qdir)
    assert q.active_file_lifetime == 600
    locked = q.enqueue_string("held by perl", {"n": "1"})
    waiting = q.enqueue_string("waiting", {"n": "2"})
    lock_job(q, locked, "otherhost.example\n4242\n", TWO_HOURS)

    code, out, err = dq("list", "--dir", str(qdir))
    assert code == EXIT_OK, err
    lines = out.splitlines()
    (row,) = [line for line in lines if line.startswith(locked)]
    assert row.split()[1] == "active"
    assert "otherhost.example:4242" in row
    (note,) = note_lines(out)
    assert note.startswith(f"note: {locked}: held by a worker on host otherhost.example ")
    assert "never broken from here" in note
    assert waiting not in note
    # Below the table; the summary is still the last line.
    assert lines.index(note) > lines.index(row)
    assert lines[-1] == "1 queued, 1 active, 0 stale"

    (item,) = [i for i in json.loads(dq("list", "--dir", str(qdir), "--json")[1])
               if i["id"] == locked]
    assert item["state"] == "active"
    assert note == f"note: {locked}: {item['note']}"

    code, out, err = dq("stats", "--dir", str(qdir), "--json")
    assert code == EXIT_OK, err
    stats = json.loads(out)
    assert (stats["queued"], stats["active"], stats["stale"]) == (1, 1, 0)
    human = dq("stats", "--dir", str(qdir))[1].splitlines()
    assert human[1].split() == ["active", "1"]
    assert human[2].split() == ["stale", "0"]


def test_a_quiet_heartbeat_is_stale_with_a_note(qdir: Path) -> None:
    q = DirQueue(qdir)
    jobid = q.enqueue_string("abandoned")
    lock_job(q, jobid, "otherhost.example\n4242\nheartbeat\n", TWO_HOURS)
    code, out, err = dq("list", "--dir", str(qdir))
    assert code == EXIT_OK, err
    (row,) = [line for line in out.splitlines() if line.startswith(jobid)]
    assert row.split()[1] == "stale"
    (note,) = note_lines(out)
    assert note.startswith(f"note: {jobid}: worker otherhost.example:4242 stopped its heartbeat")
    assert note.endswith(": the next worker takes it")
    assert out.splitlines()[-1] == "0 queued, 0 active, 1 stale"


def test_jobs_with_nothing_to_say_have_no_note(qdir: Path) -> None:
    q = DirQueue(qdir)
    q.enqueue_string("a")
    held = q.pickup_queued_job()
    assert held is not None
    q.enqueue_string("b")
    code, out, _ = dq("list", "--dir", str(qdir))
    assert code == EXIT_OK
    assert note_lines(out) == []
    held.finish()


def test_a_note_quoting_a_hostile_host_is_escaped(qdir: Path) -> None:
    q = DirQueue(qdir)
    jobid = q.enqueue_string("x")
    lock_job(q, jobid, "evil\x1b[2J\u202ehost\n4242\n", TWO_HOURS)
    code, out, err = dq("list", "--dir", str(qdir))
    assert code == EXIT_OK, err
    (note,) = note_lines(out)
    assert "held by a worker on host evil\\x1b[2J\\u202ehost " in note
    assert "\x1b" not in out
    assert "\u202e" not in out
