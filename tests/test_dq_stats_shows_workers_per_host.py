"""``dq stats`` shows the workers of each host, idle ones too (issue 23): each
supervising server keeps ``servers/HOST.PID`` saying how many it runs.

An idle worker holds no lock, so before this the queue could not tell a host whose
workers all wait from a host with none; and an elastic server changes its count.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from pathlib import Path

import pytest

from _perl import PERL_DRAIN, run_perl
from dirqueue import DirQueue
from dirqueue._servers import REFRESH, STALE_AFTER, Announcer, ServerEntry, read_servers
from dirqueue.cli import main

pytestmark = pytest.mark.timeout(60)

HOST = socket.gethostname()


def entry_path(q: DirQueue, announcer: Announcer) -> Path:
    return Path(q.layout.servers_dir) / announcer.name


def test_an_entry_is_written_when_the_count_changes_and_on_its_heartbeat(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    assert read_servers(q.config) == []
    announcer = Announcer(q.config, 8)
    announcer.update(1, now=100.0)
    assert read_servers(q.config) == [ServerEntry(HOST, os.getpid(), 1, 8)]
    inode = entry_path(q, announcer).stat().st_ino
    announcer.update(1, now=100.0 + REFRESH / 2)  # Unchanged, not due: not rewritten.
    assert entry_path(q, announcer).stat().st_ino == inode
    announcer.update(3, now=100.0 + REFRESH / 2)  # Changed: at once.
    assert read_servers(q.config)[0].workers == 3
    inode = entry_path(q, announcer).stat().st_ino
    announcer.update(3, now=100.0 + 2 * REFRESH)  # Due: rewritten (its heartbeat).
    assert entry_path(q, announcer).stat().st_ino != inode
    announcer.withdraw()
    assert read_servers(q.config) == []
    assert os.listdir(q.layout.servers_dir) == []


def test_a_dead_servers_entry_is_not_counted_and_the_next_server_removes_it(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    servers = Path(q.layout.servers_dir)
    servers.mkdir()
    old = time.time() - STALE_AFTER - 30
    for name, text in [
        ("deadhost.77", "host deadhost\npid 77\nworkers 5\nmost 8\n"),
        (".deadhost.77.tmp", "host dead"),  # Cut short while written.
    ]:
        (servers / name).write_text(text)
        os.utime(servers / name, (old, old))
    (servers / "junk.1").write_text("not an entry\n")  # Fresh but unreadable.
    (servers / "link.2").symlink_to("/etc/hostname")  # Never followed.
    assert read_servers(q.config) == []
    Announcer(q.config, 2).update(2)
    assert sorted(os.listdir(servers)) == sorted(
        ["junk.1", "link.2", Announcer(q.config, 2).name]
    )
    assert [e.workers for e in read_servers(q.config)] == [2]


def test_dq_stats_shows_workers_per_host_in_every_form(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    Announcer(q.config, 8).update(3)

    def run(*args: str) -> str:
        out = io.StringIO()
        assert main(["stats", "--dir", q.dir, *args], stdout=out, stderr=io.StringIO()) == 0
        return out.getvalue()

    assert json.loads(run("--json"))["workers_by_host"] == {HOST: 3}
    assert f"workers {HOST}" in run()
    assert f'dirqueue_workers{{queue="{os.path.abspath(q.dir)}",host="{HOST}"}} 3' in run(
        "--format", "prometheus"
    )
    assert f"workers={HOST}:3" in run("--watch", "0.1", "--iterations", "1")


def test_perl_workers_ignore_servers_and_leave_it_alone(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    ids = [q.enqueue_string(str(i)) for i in range(3)]
    announcer = Announcer(q.config, 4)
    announcer.update(4)
    taken = run_perl(PERL_DRAIN, q.dir).split()
    assert sorted(taken) == sorted(ids)
    assert os.listdir(q.layout.servers_dir) == [announcer.name]
