"""The multi-host test bed seen from Python (imported as ``_multihost``; tests/ is on
sys.path): its simulated hosts, the agents started on them, and the three-host
mixed-language scenario, which ``tests/test_multihost_hosts.py`` asserts on and
``bench/multihost_mixed.py`` measures at 10,000 jobs.

A simulated host ``n`` is the network namespace ``fsp-hN`` with its own host name
``fsphostN`` and its own client mount ``/mnt/fsp-KIND-hN`` (see tests/multihost/README.md).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _perl import PERL_LIB
from dirqueue import DirQueue

MULTIHOST = Path(__file__).parent / "multihost"
AGENT = str(MULTIHOST / "agent.py")
PERL_AGENT = str(MULTIHOST / "agent.pl")
#: The filesystems of the test bed, and the short name in their mount points.
KINDS = {"glusterfs": "gl", "nfs3": "nfs", "cephfs": "ceph"}


def host_cmd(n: int, *argv: str) -> list[str]:
    """``argv`` run as simulated host ``n``: its network and host name. The mount
    namespace stays shared, so the venv and the caller's files are where they are."""
    return [
        "nsenter", f"--net=/run/netns/fsp-h{n}", "unshare", "-u",
        "sh", "-c", 'hostname "$0"; exec "$@"', f"fsphost{n}", *argv,
    ]  # fmt: skip


def missing(short: str, hosts: Sequence[int], *, perl: bool) -> str | None:
    """Why the test bed's ``hosts`` on filesystem ``short`` (and, with ``perl``, the
    Perl module) are not usable here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for n in hosts:
        if not os.path.exists(f"/run/netns/fsp-h{n}"):
            return f"no host {n}: run FSP_HOSTS={max(hosts)} tests/multihost/setup-*.sh as root"
        if not os.path.ismount(f"/mnt/fsp-{short}-h{n}"):
            return f"/mnt/fsp-{short}-h{n} is not mounted (FSP_HOSTS={max(hosts)} setup-*.sh)"
    if perl and (shutil.which("perl") is None or not (PERL_LIB / "IPC" / "DirQueue.pm").is_file()):
        return f"no perl, or no IPC::DirQueue at {PERL_LIB}"
    return None


class Hosts:
    """Starts dirqueue and Perl agents on simulated hosts; kills what is left at the end."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.short = KINDS[kind]
        self.name = name
        self.procs: list[subprocess.Popen[str]] = []

    def qdir(self, n: int, mount: str | None = None) -> str:
        """The queue as host ``n`` sees it (through ``mount`` if given)."""
        return f"{mount or f'/mnt/fsp-{self.short}-h{n}'}/{self.name}"

    def start(self, n: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``agent.py ARGS`` on host ``n``."""
        return self._popen(host_cmd(n, sys.executable, AGENT, *args), env)

    def start_perl(self, n: int, *args: str) -> subprocess.Popen[str]:
        """``agent.pl ARGS`` (the Perl module's agent) on host ``n``."""
        return self._popen(host_cmd(n, "perl", f"-I{PERL_LIB}", PERL_AGENT, *args), None)

    def _popen(self, argv: list[str], env: dict[str, str] | None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        """The JSON line an agent prints when it ends; it must end well."""
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def kill(self, proc: subprocess.Popen[str]) -> None:
        """SIGKILL ``proc``'s whole process group and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)  # Reaps it and closes its pipes.

    def kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@contextlib.contextmanager
def shared_queue(kind: str, prefix: str = "dq-test") -> Iterator[Hosts]:
    """A fresh queue on the test bed's ``kind`` filesystem, removed again at the end
    with every agent started on it."""
    h = Hosts(kind, f"{prefix}-{uuid.uuid4().hex[:8]}")
    os.makedirs(h.qdir(1))
    DirQueue(h.qdir(1)).pickup_queued_job()  # Creates the queue's directories.
    try:
        yield h
    finally:
        h.kill_all()
        subprocess.run(["rm", "-rf", h.qdir(1)], check=False, timeout=300)


NFS_SERVER, NFS_EXPORT = "10.213.0.1", "/srv/fsp-nfs-export"


@contextlib.contextmanager
def counting_mount(n: int, mountpoint: str, stats: str, attr_timeout: float = 3.0
                   ) -> Iterator[Callable[[], dict[str, int]]]:
    """A client mount of the bed's NFS export of our own, made from host ``n`` as
    setup-nfs-ganesha.sh makes its mounts but counting the requests it sends by kind
    (nfsfuse.py --stats); yields a function that reads the counts. Nobody else uses
    this mount, so its counts are ours alone; it is unmounted and its client ended at
    the end, and the bed's shared mounts are never touched."""
    os.makedirs(mountpoint, exist_ok=True)
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/fsp-h{n}", "/usr/bin/python3",
         str(MULTIHOST / "nfsfuse.py"), NFS_SERVER, NFS_EXPORT, mountpoint,
         "--nfs-version", "3", "--attr-timeout", str(attr_timeout), "--stats", stats],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip

    def read() -> dict[str, int]:
        # The client rewrites the file within 0.1 s of a change: wait that out.
        time.sleep(0.35)
        with open(stats) as fh:
            return json.load(fh)["counts"]  # type: ignore[no-any-return]

    try:
        deadline = time.monotonic() + 20
        while not (os.path.ismount(mountpoint) and os.path.exists(stats)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nfsfuse on {mountpoint} did not come up: "
                                   f"{proc.stderr.read().decode()[-300:] if proc.stderr else ''}")
            time.sleep(0.1)
        yield read
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", mountpoint], check=False, timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def lines(paths: Sequence[Path]) -> collections.Counter[str]:
    """How often each line stands in the files ``paths`` (those that exist)."""
    return collections.Counter(
        line for p in paths if p.exists() for line in p.read_text().splitlines()
    )


def record(scenario: str, **figures: object) -> None:
    """Append the figures as one JSON line to ``$DQ_MULTIHOST_RESULTS``, if set."""
    out = os.environ.get("DQ_MULTIHOST_RESULTS")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"scenario": scenario, **figures}) + "\n")


MIXES = ("mixed", "perl-only")
HOSTS = (1, 2, 3)


def run_mixed(
    hosts: Hosts, workdir: Path, jobs: int, mix: str, *, timeout: float,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """On each of three hosts 2 producers and 2 consumers: one of each Perl's, the
    others dirqueue's (``mix="mixed"``), or all Perl's (``"perl-only"``, the baseline).
    ``jobs`` are spread over the six producers. Waits (at most ``timeout`` seconds in
    all) until the consumers have logged as many jobs as were made, then stops them.

    Returns the figures: jobs, lost (acknowledged by a producer, never logged by a
    consumer), doubled (logged twice), seconds, jobs_per_s, what each consumer did;
    asserts nothing about them. ``progress(done, seconds)`` is called every 10 s
    until then.
    """
    deadline = time.monotonic() + timeout
    stop = workdir / "stop"
    langs = ("perl", "dq" if mix == "mixed" else "perl")
    producers_n = len(langs) * len(HOSTS)
    shares = [jobs // producers_n + (i < jobs % producers_n) for i in range(producers_n)]
    done_logs: list[Path] = []
    consumers: list[subprocess.Popen[str]] = []
    for n in HOSTS:
        for k, lang in enumerate(langs):
            log = workdir / f"done-h{n}-{k}-{lang}.txt"
            done_logs.append(log)
            start = hosts.start_perl if lang == "perl" else hosts.start
            consumers.append(start(n, "consume", hosts.qdir(n), str(log), str(stop)))
    began = time.monotonic()
    acks: list[Path] = []
    producers: list[subprocess.Popen[str]] = []
    for n in HOSTS:
        for k, lang in enumerate(langs):
            tag = f"h{n}p{k}{lang}"
            acks.append(workdir / f"ack-{tag}.txt")
            start = hosts.start_perl if lang == "perl" else hosts.start
            share = str(shares[len(producers)])
            producers.append(start(n, "produce", hosts.qdir(n), share, tag, str(acks[-1])))
    # Reading the logs is not free on a small machine: look a few times a second.
    last_said = began
    while (count := sum(lines(done_logs).values())) < jobs:
        if any(proc.poll() not in (None, 0) for proc in producers):
            break  # A producer failed: its result, below, says how.
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{count} of {jobs} jobs done after {now - began:.0f} s")
        if progress is not None and now - last_said >= 10:
            progress(count, now - began)
            last_said = now
        time.sleep(0.25)
    seconds = time.monotonic() - began
    produced = [hosts.result(proc, timeout=max(1.0, deadline - time.monotonic()))["produced"]
                for proc in producers]  # fmt: skip
    stop.touch()
    counts = [hosts.result(proc, timeout=max(60.0, deadline - time.monotonic()))
              for proc in consumers]  # fmt: skip

    acked, done = lines(acks), lines(done_logs)
    return {
        "fs": hosts.kind, "mix": mix, "jobs": jobs, "produced": sum(produced),
        "acked": len(acked), "done": sum(done.values()),
        "lost": len(set(acked) - set(done)),
        "doubled": sum(1 for times in done.values() if times > 1),
        "not_acked_but_done": len(set(done) - set(acked)),
        "seconds": round(seconds, 1), "jobs_per_s": round(jobs / seconds, 1),
        "by_consumer": {log.stem: c["consumed"] for log, c in zip(done_logs, counts, strict=True)},
        "hosts_that_worked": sorted({c["host"] for c in counts if c["consumed"]}),
    }  # fmt: skip
