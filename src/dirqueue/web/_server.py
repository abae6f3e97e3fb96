"""``dq web``'s server: the standard library's threading HTTP server around :class:`App`.

One thread per connection (browsers poll; a slow one must not hold up the rest), no
state but the overviews and samples in memory, so several ``dq web`` may watch the
same queues from anywhere. It binds to 127.0.0.1 unless told otherwise, and prints
the address and, with ``--actions``, the one URL that hands this browser the token.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Final
from urllib.parse import parse_qs, urlsplit

from ..errors import DirQueueError
from ..queue import DirQueue
from ._app import App, Request
from ._samples import Snapshots

__all__ = ["ListenError", "serve"]

#: The largest request body read (an action's form: job ids and the CSRF value).
_MAX_BODY: Final = 1 << 20
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class ListenError(DirQueueError, OSError):
    """``dq web`` cannot listen where ``--bind`` says."""


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` headers accepted: on a loopback address, only its own names (against
    DNS rebinding); bound wider, any (the operator chose to publish it)."""
    if host not in _LOOPBACK:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return frozenset(f"{name}:{port}" for name in names)


def _handler_for(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dq-web"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self.send_error(413, "request body too large")
                return
            body = self.rfile.read(length) if length > 0 else b""
            req = Request(method, url.path, parse_qs(url.query), dict(self.headers.items()), body)
            res = app.handle(req)
            self.send_response(res.status)
            for name, value in res.all_headers():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(res.body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(res.body)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("HEAD")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            pass  # One line per poll would bury what matters; actions are logged by App.

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(
    dirs: Sequence[str],
    bind: tuple[str, int],
    *,
    actions: bool,
    sample_interval: float,
    out: IO[str],
    ready: threading.Event | None = None,
) -> int:
    """Serve the dashboard for ``dirs`` on ``bind`` until interrupted; return 0."""
    host, port = bind
    queues = [DirQueue(d) for d in dirs]
    snapshots = Snapshots(queues, sample_interval=sample_interval)
    try:
        server = _Server((host, port), BaseHTTPRequestHandler)
    except OSError as err:
        raise ListenError(
            f"cannot listen on {host}:{port}: {err.strerror or err} (another dq web there?"
            " choose another --bind)"
        ) from None
    port = server.server_address[1]
    token = secrets.token_urlsafe(24)
    app = App(queues, snapshots, actions=actions, token=token, port=port,
              allowed_hosts=_allowed_hosts(host, port))
    server.RequestHandlerClass = _handler_for(app)
    shown = f"[{host}]" if ":" in host else host
    out.write(f"dq web: watching {len(queues)} queue{'s' if len(queues) != 1 else ''}"
              f" at http://{shown}:{port}/ ({'actions on' if actions else 'read-only'})\n")
    for queue in queues:
        if not queue.exists:
            out.write(f"dq web: warning: {queue.dir} does not exist (yet); its page says so\n")
    if actions:
        out.write(f"dq web: to act on jobs, open http://{shown}:{port}/login?token={token}\n")
    out.flush()
    snapshots.start()
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        sys.stderr.write("dq web: stopped\n")
    finally:
        snapshots.stop()
        server.server_close()
    return 0
