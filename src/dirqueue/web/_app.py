"""The dashboard's requests: routing, the read-only rule, the token and CSRF checks.

:class:`App` turns a :class:`Request` into a :class:`Response` and knows nothing of
sockets (the server in :mod:`dirqueue.web._server` does), so each rule is one method
a test can reach. The rules:

- Read-only unless started with ``--actions``. Even then an action (requeue, purge,
  cancel) needs the *token* printed at start: opening ``/login?token=...`` sets it as
  an ``HttpOnly``, ``SameSite=Strict`` cookie, so a request another site makes from the
  operator's browser does not carry it; the form must also carry a CSRF value derived
  from the token (a page of another origin cannot read ours to copy it); and an
  ``Origin`` or ``Sec-Fetch-Site`` header, when the browser sends one, must say the
  request came from this dashboard.
- Bound to a loopback address, requests must name it in ``Host``: a page on another
  site that points its own name at 127.0.0.1 (DNS rebinding) is refused.
- Writes to a queue go only through the engine's own methods
  (:meth:`FailedStore.requeue`, :meth:`FailedStore.purge`, :meth:`DirQueue.cancel`).
- Whatever goes wrong becomes a page that says so in words; a traceback goes to the
  server's stderr, never to the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import parse_qs, quote, unquote

from ..errors import DirQueueError
from ..failed import FailedStore
from ..queue import DirQueue
from . import _pages
from ._pages import Chrome
from ._read import STATES, Filters, failed_groups, job_detail, jobs_page
from ._samples import Snapshots
from ._static import FILES

__all__ = ["App", "Request", "Response"]

#: Security headers on every answer. No inline script or style may run, nothing is
#: framed, nothing is sent elsewhere: what a job's metadata smuggled in stays inert.
_HEADERS: Final = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Not no-referrer: under it Chromium sends "Origin: null" with our own forms, and
    # the Origin check could not tell them from another site's.
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
#: What a redirect after an action may say (``did`` in its query), in fixed words.
_DONE: Final = {"requeued": "Requeued", "purged": "Purged", "cancelled": "Deleted"}
_ROUTE: Final = re.compile(r"/q/(\d+)/(jobs|failed|job/([^/]+)|requeue|purge|cancel)")


@dataclass
class Request:
    """One HTTP request, as the server read it."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def arg(self, name: str) -> str:
        """The first value of query argument ``name``, or ``""``."""
        values = self.query.get(name)
        return values[0] if values else ""

    def header(self, name: str) -> str:
        """Header ``name`` (any case), or ``""``."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), "")


@dataclass
class Response:
    """An answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def all_headers(self) -> list[tuple[str, str]]:
        """Ours, then the security headers every answer carries."""
        return [("Content-Type", self.content_type), *self.headers, *_HEADERS]


def _html(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"))


def _redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *headers])


class App:
    """The dashboard over ``queues``; ``token`` guards the actions (when ``actions``)."""

    def __init__(
        self,
        queues: Sequence[DirQueue],
        snapshots: Snapshots,
        *,
        actions: bool,
        token: str,
        port: int,
        allowed_hosts: frozenset[str] | None,
        log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    ) -> None:
        self.queues = list(queues)
        self.snapshots = snapshots
        self.actions = actions
        self.token = token
        self.cookie = f"dq_web_{port}"  # Cookies ignore ports: one name per dashboard.
        self.allowed_hosts = allowed_hosts
        self._log = log
        self._act = threading.Lock()  # One action at a time: each is many renames.

    # -- the token ---------------------------------------------------------------------

    def csrf_value(self) -> str:
        """The value forms carry: derived from the token, not the token itself."""
        return hmac.new(self.token.encode(), b"dq web csrf", hashlib.sha256).hexdigest()[:32]

    def _has_token(self, req: Request) -> bool:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(req.header("Cookie"))
        except Exception:
            return False
        morsel = jar.get(self.cookie)
        return morsel is not None and hmac.compare_digest(morsel.value, self.token)

    def _chrome(self, req: Request) -> Chrome:
        csrf = self.csrf_value() if self.actions and self._has_token(req) else None
        return Chrome([q.dir for q in self.queues], self.actions, csrf)

    def refusal(self, req: Request) -> str | None:
        """Why an action request is refused, or None if it may go ahead."""
        if not self.actions:
            return "This dashboard is read-only: start dq web with --actions to act on jobs."
        if not self._has_token(req):
            return "This action needs the token: open the URL dq web printed at start."
        form = parse_qs(req.body.decode("utf-8", "replace"))
        sent = (form.get("csrf") or [""])[0]
        if not hmac.compare_digest(sent.encode(), self.csrf_value().encode()):
            return "The form's CSRF value is missing or wrong: reload the page and try again."
        origin = req.header("Origin")
        if origin and origin != f"http://{req.header('Host')}":
            return "Refused: the request came from another site."
        if req.header("Sec-Fetch-Site") not in ("", "same-origin", "none"):
            return "Refused: the request came from another site."
        return None

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        """Answer ``req``; never raises."""
        try:
            return self._dispatch(req)
        except Exception:
            self._log(f"dq web: error answering {req.method} {req.path}:\n{traceback.format_exc()}")
            chrome = Chrome([q.dir for q in self.queues], self.actions, None)
            return _html(500, _pages.error_page(
                chrome, "Something went wrong",
                "dq web could not answer this request; its stderr has the details.",
            ))

    def _dispatch(self, req: Request) -> Response:
        host = req.header("Host")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return Response(400, b"unexpected Host header: use the address dq web printed\n",
                            "text/plain; charset=utf-8")
        path = req.path
        if req.method == "POST":
            match = _ROUTE.fullmatch(path)
            if match is None or match.group(2) not in ("requeue", "purge", "cancel"):
                return self._missing(req)
            return self._action(req, int(match.group(1)), match.group(2))
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"", "text/plain", [("Allow", "GET, HEAD, POST")])
        return self._get(req)

    def _get(self, req: Request) -> Response:  # noqa: PLR0911 - one return per route
        path = req.path
        if path == "/":
            return self._overview(req)
        if path == "/login":
            return self._login(req)
        if path.startswith("/static/") and path[8:] in FILES:
            kind, body = FILES[path[8:]]
            return Response(200, body, kind)
        if path.startswith("/live/") and path[6:].isdigit():
            index = int(path[6:])
            if index < len(self.queues):
                return _html(200, self._live(index))
        match = _ROUTE.fullmatch(path)
        if match is not None and int(match.group(1)) < len(self.queues):
            index, what = int(match.group(1)), match.group(2)
            if what == "jobs":
                return self._jobs(req, index)
            if what == "failed":
                return self._failed(req, index)
            if match.group(3):
                # Ids may hold '+', which links write as %2B.
                return self._job(req, index, unquote(match.group(3)))
        return self._missing(req)

    def _missing(self, req: Request) -> Response:
        return _html(404, _pages.error_page(
            self._chrome(req), "Not found", "No such page: start from the overview."
        ))

    def _login(self, req: Request) -> Response:
        if not self.actions or not hmac.compare_digest(req.arg("token").encode(),
                                                       self.token.encode()):
            return _html(403, _pages.error_page(
                self._chrome(req), "Wrong token",
                "That is not the token dq web printed at start (or actions are off).",
            ))
        cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        return _redirect("/", ("Set-Cookie", cookie))

    # -- pages -------------------------------------------------------------------------

    def _live(self, index: int) -> str:
        try:
            view = self.snapshots.get(index)
        except (DirQueueError, OSError) as err:
            return _pages.queue_problem(self._chrome(Request("GET", "/")), index, err)
        return _pages.overview_live(index, view, self.snapshots.samples(index))

    def _overview(self, req: Request) -> Response:
        parts = [self._live(index) for index in range(len(self.queues))]
        return _html(200, _pages.overview_page(
            self._chrome(req), parts, self.snapshots.sample_interval
        ))

    def _problem(self, req: Request, index: int, err: Exception) -> Response:
        chrome = self._chrome(req)
        return _html(404 if isinstance(err, FileNotFoundError) else 503, _pages.error_page(
            chrome, f"Queue {chrome.name(index)}", _pages.problem_text(chrome.dirs[index], err)
        ))

    def _jobs(self, req: Request, index: int) -> Response:
        state = req.arg("state")
        priority = req.arg("priority").strip()
        key, eq, value = req.arg("meta").partition("=")
        start = req.arg("start")
        chrome = self._chrome(req)
        if (state and state not in STATES) or (priority and not (
            priority.isdigit() and int(priority) <= 99
        )) or (start and not start.isdigit()):
            return _html(400, _pages.error_page(
                chrome, "Bad filter",
                f"state is one of {', '.join(STATES)}; priority a number from 0 to 99;"
                " start a row number.",
            ))
        filters = Filters(
            state, int(priority) if priority else None, key.strip(),
            value if eq else None, req.arg("task").strip(),
        )
        began = time.perf_counter()
        try:
            page = jobs_page(self.queues[index], filters, int(start or 0))
        except (DirQueueError, OSError) as err:
            return self._problem(req, index, err)
        took = time.perf_counter() - began
        return _html(200, _pages.jobs_page(chrome, index, filters, page, took))

    def _job(self, req: Request, index: int, jobid: str) -> Response:
        try:
            view = job_detail(self.queues[index], jobid)
        except (DirQueueError, OSError) as err:
            return self._problem(req, index, err)
        chrome = self._chrome(req)
        if view is None:
            return _html(404, _pages.error_page(
                chrome, "No such job",
                f"No job {jobid} in {chrome.dirs[index]}: it is not waiting, running,"
                " deferred or failed, and kept no answer (finished jobs leave nothing"
                " behind unless results are kept).",
            ))
        return _html(200, _pages.job_page(chrome, index, view))

    def _failed(self, req: Request, index: int) -> Response:
        try:
            groups = failed_groups(self.queues[index])
        except (DirQueueError, OSError) as err:
            return self._problem(req, index, err)
        done = ""
        did, n = req.arg("did"), req.arg("n")
        if did in _DONE and n.isdigit():
            done = f"{_DONE[did]} {int(n)} job{'s' if int(n) != 1 else ''}."
        return _html(200, _pages.failed_page(self._chrome(req), index, groups, done))

    # -- actions -----------------------------------------------------------------------

    def _action(self, req: Request, index: int, what: str) -> Response:
        why = self.refusal(req)
        if why is not None or index >= len(self.queues):
            return _html(403, _pages.error_page(
                self._chrome(req), "Refused", why or "No such queue."
            ))
        jobids = parse_qs(req.body.decode("utf-8", "replace")).get("jobid", [])
        queue = self.queues[index]
        done = 0
        with self._act:
            if what == "requeue":
                store = FailedStore(queue)
                for jobid in jobids:
                    try:
                        store.requeue(jobid)
                        done += 1
                    except LookupError:
                        continue  # Requeued or purged by someone else meanwhile.
            elif what == "purge":
                done = len(FailedStore(queue).purge(jobids))
            else:
                for jobid in jobids:
                    try:
                        queue.cancel(jobid)
                        done += 1
                    except DirQueueError as err:
                        return _html(409, _pages.error_page(
                            self._chrome(req), "Not deleted", str(err)
                        ))
        did = {"requeue": "requeued", "purge": "purged", "cancel": "cancelled"}[what]
        self._log(f"dq web: {did} {done} job(s) in {queue.dir}")
        if what == "cancel":
            return _redirect(f"/q/{index}/jobs?did={did}&n={done}")
        return _redirect(f"/q/{index}/failed?did={quote(did)}&n={done}")
