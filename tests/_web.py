"""A real ``dq web`` process for the dashboard's tests, and plain HTTP to talk to it.

The server runs as ``python -m dirqueue web`` on 127.0.0.1 with port 0 (a free port the
kernel picks; the start line says which), and is killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dirqueue
from dirqueue import DirQueue
from dirqueue.failed import FailedStore

#: The dirqueue the tests import (the worktree's src, or a copy PYTHONPATH names),
#: for the dq web they start.
SRC = str(Path(dirqueue.__file__).resolve().parents[1])


@dataclass
class Web:
    """A running ``dq web``: its base URL, its token (with --actions), its process."""

    url: str
    token: str
    proc: subprocess.Popen[str] | None
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def request(
        self,
        path: str,
        *,
        data: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """``(status, headers, body)`` of a GET (or a POST of ``data``), redirects not followed."""
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data, doseq=True).encode()
        url = self.url.rstrip("/") + path  # http://127.0.0.1:PORT, from dq web's start line
        req = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=30) as res:
                return res.status, dict(res.headers.items()), res.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers.items()), err.read().decode()

    def login_cookie(self) -> str:
        """The ``Cookie`` header the login URL hands a browser."""
        status, headers, _ = self.request(f"/login?token={self.token}")
        assert status == 303, status
        return headers["Set-Cookie"].split(";", 1)[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@contextlib.contextmanager
def dq_web(*dirs: str | os.PathLike[str], actions: bool = False) -> Iterator[Web]:
    """Run ``dq web`` on ``dirs`` until the block ends."""
    args = [sys.executable, "-m", "dirqueue", "web", "--bind", "127.0.0.1:0",
            "--sample-interval", "0.5"]
    for d in dirs:
        args += ["--dir", str(d)]
    if actions:
        args.append("--actions")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        url, token = "", ""
        deadline = time.monotonic() + 20
        while not url or (actions and not token):
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("dq web printed no start line in 20 s") from None
            if not line:
                raise AssertionError(f"dq web exited: {proc.stderr.read() if proc.stderr else ''}")
            if found := re.search(r"at (http://\S+/)", line):
                url = found.group(1)
            if found := re.search(r"login\?token=(\S+)", line):
                token = found.group(1)
        yield Web(url, token, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


@contextlib.contextmanager
def dq_web_as(uid: int, directory: str | os.PathLike[str]) -> Iterator[Web]:
    """Run ``dq web`` on ``directory`` as user ``uid``: forked, then setuid, in this
    interpreter (another user may not be able to reach this Python to exec it, nor
    its standard library to import http.server: imported here, before the fork)."""
    for module in ("dirqueue.web._server", "encodings.idna"):  # idna: for getfqdn()
        importlib.import_module(module)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            from dirqueue.cli import main  # noqa: PLC0415 - imported before the fork too

            with os.fdopen(write_fd, "w", buffering=1) as out:
                code = main(["web", "--dir", str(directory), "--bind", "127.0.0.1:0"],
                            stdout=out)
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            ready, _, _ = select.select([fh], [], [], 20)
            assert ready, "dq web printed no start line in 20 s"
            found = re.search(r"at (http://\S+/)", fh.readline())
            assert found is not None
            yield Web(found.group(1), "", None)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def fill(q: DirQueue, n: int, **meta: str) -> list[str]:
    """Submit ``n`` small jobs with ``meta``; their ids."""
    return [q.enqueue_string(f"job {i}\n", dict(meta)) for i in range(n)]


def fail_one(q: DirQueue, error: str, detail: str = "", **meta: str) -> str:
    """A job moved to failed/ with ``error``; its id."""
    jobid = q.enqueue_string(b"failing\n", dict(meta), priority=0)
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    FailedStore(q).add(job, error, attempts=3, detail=detail)
    return jobid
