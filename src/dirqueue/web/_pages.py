"""The dashboard's pages as HTML: plain markup that works with JavaScript off.

Every value a queue supplies goes through :func:`dirqueue.web._text.show` (or
:func:`~dirqueue.web._text.attr` in an attribute); the markup around it is ours. No
inline script or style: the Content-Security-Policy the server sends allows only
``/static/`` files, so even markup that slipped through could not run. The parts that
refresh live (:func:`overview_live`) are whole fragments the script swaps in.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from .._results import ResultRecord
from ..failed import FailedJob
from ._read import STATES, Filters, JobDetail, JobRow, Overview, Page, task_name
from ._samples import Sample, chart
from ._text import age, attr, count, show, size, when

__all__ = [
    "Chrome",
    "error_page",
    "failed_page",
    "job_page",
    "jobs_page",
    "overview_live",
    "overview_page",
    "problem_text",
    "queue_problem",
]

#: How much of one metadata value a row shows; a job's page shows more.
ROW_VALUE: Final = 60
PAGE_VALUE: Final = 4000
#: Per failed group, the jobs listed (and acted on by the group's buttons).
GROUP_JOBS: Final = 200


@dataclass(frozen=True)
class Chrome:
    """What every page knows: the queues' directories, whether actions are on, and
    the CSRF value to put in forms (None unless this browser holds the token)."""

    dirs: Sequence[str]
    actions: bool
    csrf: str | None

    def name(self, index: int) -> str:
        """A queue's short name: its directory's last part."""
        return os.path.basename(self.dirs[index]) or self.dirs[index]


def _page(chrome: Chrome, title: str, body: str, *, refresh: bool = False, here: str = "") -> str:
    nav = ['<a href="/" class="brand">dq web</a>']
    for index in range(len(chrome.dirs)):
        current = ' class="here"' if here == f"q{index}" else ""
        nav.append(
            f'<span class="navq"{current}>{show(chrome.name(index), 40)}'
            f' <a href="/q/{index}/jobs">jobs</a> <a href="/q/{index}/failed">failed</a></span>'
        )
    mode = (
        '<span class="mode rw">actions on</span>' if chrome.actions and chrome.csrf
        else '<span class="mode">actions on: open the URL printed at start</span>'
        if chrome.actions else '<span class="mode">read-only</span>'
    )
    # Without JavaScript the overview reloads itself; with it, dq.js refreshes the
    # live parts in place and this tag is never parsed.
    noscript = '<noscript><meta http-equiv="refresh" content="10"></noscript>' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{show(title, 120)} · dq web</title>"
        '<link rel="stylesheet" href="/static/dq.css">'
        f'<script src="/static/dq.js" defer></script>{noscript}</head>'
        f'<body><header><nav>{"".join(nav)}</nav>{mode}</header><main>{body}</main>'
        '<footer>dq web · dirqueue: a job queue in a directory</footer>'
        "</body></html>"
    )


def error_page(chrome: Chrome, title: str, message: str) -> str:
    """A page that says what went wrong, in words (never a traceback)."""
    return _page(
        chrome, title,
        f'<h1>{show(title, 200)}</h1><p class="problem">{show(message, 2000)}</p>',
    )


def queue_problem(chrome: Chrome, index: int, err: Exception) -> str:
    """Why queue ``index`` cannot be shown, as a paragraph."""
    return f'<p class="problem">{show(problem_text(chrome.dirs[index], err), 1500)}</p>'


def problem_text(directory: str, err: Exception) -> str:
    """The engine's message (which names the queue), or one that names it."""
    if isinstance(err, PermissionError):
        where = err.filename or directory
        return (
            f"Cannot read {directory}: permission denied on {where} (dq web runs as uid"
            f" {os.getuid()}): check the queue's owner and mode (ls -l), or run dq web as"
            " a user who can read it."
        )
    text = str(err)
    if directory not in text:
        text = f"cannot read {directory}: {text}"
    return text[:1].upper() + text[1:]


# -- overview --------------------------------------------------------------------------

_TILES: Final = (
    ("queued", "queued", "waiting for a worker"),
    ("active", "active", "held by a live worker"),
    ("stale", "stale", "the next worker takes it again"),
    ("deferred", "deferred", "waiting for a time"),
    ("failed", "failed", "in failed/"),
    ("results", "done", "answers kept in results/"),
)


def _tile(index: int, key: str, label: str, hint: str, n: int) -> str:
    target = {"failed": "failed", "results": "jobs?state=done"}.get(key, f"jobs?state={key}")
    return (
        f'<a class="tile {key}" href="/q/{index}/{target}" title="{hint}">'
        f'<span class="n" data-count="{key}">{count(n)}</span>'
        f'<span class="label">{label}</span></a>'
    )


def _workers(index: int, view: Overview) -> str:
    hosts = view.by_host()
    if not hosts:
        return '<p class="quiet">No job is running.</p>'
    rows = []
    for host, locks in hosts.items():
        stale = sum(1 for lock in locks if lock.stale)
        mark = f' <span class="badge stale">{stale} stale</span>' if stale else ""
        rows.append(
            f'<tr class="host"><th colspan="4">{show(host, 100)} · {len(locks)} job'
            f'{"s" if len(locks) != 1 else ""}{mark}</th></tr>'
        )
        for lock in locks:
            beat = "heartbeat" if lock.heartbeat else "lock touched"
            state = '<span class="badge stale">stale</span>' if lock.stale else "live"
            rows.append(
                f'<tr class="{"stale" if lock.stale else ""}"><td>pid {lock.pid or "?"}</td>'
                f'<td><a href="/q/{index}/job/{quote(lock.jobid)}">{show(lock.jobid, 80)}</a></td>'
                f"<td>{beat} {age(lock.age)} ago</td><td>{state}</td></tr>"
            )
    return '<table class="workers">' + "".join(rows) + "</table>"


def overview_live(index: int, view: Overview, samples: list[Sample]) -> str:
    """The live part of a queue's overview: counts, oldest job, charts, workers."""
    tiles = "".join(
        _tile(index, key, label, hint, getattr(view, key)) for key, label, hint in _TILES
    )
    if view.oldest is None:
        oldest = '<p class="quiet">No job is waiting.</p>'
    else:
        jobid, waited = view.oldest
        oldest = (
            f'<p>Oldest waiting: <a href="/q/{index}/job/{quote(jobid)}">{show(jobid, 80)}</a>,'
            f' waiting <strong data-oldest>{age(waited)}</strong></p>'
        )
    wall = view.taken_at
    charts = (
        '<div class="charts"><figure><figcaption>Throughput, jobs/min (jobs leaving the'
        " queue: done, failed or cancelled)</figcaption>"
        + chart([(s.at, s.per_minute) for s in samples[1:]], now=wall,
                title="throughput", css="rate")
        + "</figure><figure><figcaption>Backlog (queued, running, deferred)</figcaption>"
        + chart([(s.at, float(s.backlog)) for s in samples], now=wall,
                title="backlog", css="backlog")
        + "</figure></div>"
    )
    workers = _workers(index, view)
    return (
        f'<div class="tiles">{tiles}</div>{oldest}{charts}'
        f'<h3>Workers by host</h3>{workers}'
        f'<p class="stamp">read at {when(view.taken_at)}</p>'
    )


def overview_page(chrome: Chrome, parts: list[str], sample_interval: float) -> str:
    """Every queue's overview; ``parts`` holds each one's live fragment (or problem)."""
    sections = []
    for index, part in enumerate(parts):
        sections.append(
            f'<section class="queue" id="q{index}"><h2><a href="/q/{index}/jobs">'
            f'{show(chrome.name(index), 80)}</a> <span class="path">'
            f'{show(chrome.dirs[index], 300)}</span></h2>'
            f'<div class="live" data-live="/live/{index}">{part}</div></section>'
        )
    note = (
        f'<p class="quiet">Charts: samples this dashboard took every {sample_interval:g} s'
        " since it started (kept in its memory for an hour, not in the queue).</p>"
    )
    return _page(chrome, "Overview", "".join(sections) + note, refresh=True)


# -- jobs ------------------------------------------------------------------------------


def _meta_summary(metadata: dict[str, str]) -> str:
    items = [
        f'<span class="kv"><b>{show(key, 40)}</b>={show(value, ROW_VALUE)}</span>'
        for key, value in list(metadata.items())[:6]
    ]
    if len(metadata) > 6:
        items.append(f'<span class="quiet">+{len(metadata) - 6} more</span>')
    return " ".join(items)


def _row(index: int, row: JobRow) -> str:
    task = task_name(row.metadata)
    return (
        f'<tr class="{row.state}"><td><a href="/q/{index}/job/{quote(row.jobid)}">'
        f"{show(row.jobid, 80)}</a></td><td><span class=\"badge {row.state}\">{row.state}"
        f"</span></td><td>{row.priority}</td><td>{age(time.time() - row.submitted)}</td>"
        f"<td>{size(row.size)}</td><td>{row.attempts}</td>"
        f"<td>{show(task, 60) if task else ''}</td><td>{_meta_summary(row.metadata)}</td>"
        f"<td>{show(row.worker, 60)}</td></tr>"
    )


def _filter_form(index: int, f: Filters) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if f.state == s else ""}>{s or "any state"}</option>'
        for s in ("", *STATES)
    )
    meta = f.meta_key + (f"={f.meta_value}" if f.meta_value is not None else "")
    priority = "" if f.priority is None else str(f.priority)
    return (
        f'<form class="filters" method="get" action="/q/{index}/jobs">'
        f'<label>State <select name="state">{options}</select></label>'
        f'<label>Priority <input name="priority" type="number" min="0" max="99"'
        f' value="{attr(priority)}" size="3"></label>'
        f'<label>Metadata <input name="meta" placeholder="key=value or key"'
        f' value="{attr(meta)}"></label>'
        f'<label>Task <input name="task" placeholder="module.function"'
        f' value="{attr(f.task)}"></label>'
        '<button type="submit">Filter</button></form>'
    )


def filter_query(f: Filters, start: int) -> str:
    """The query string of a jobs page with these filters, from candidate ``start``."""
    fields = {
        "state": f.state,
        "priority": "" if f.priority is None else str(f.priority),
        "meta": f.meta_key + (f"={f.meta_value}" if f.meta_value is not None else ""),
        "task": f.task,
        "start": str(start) if start else "",
    }
    return urlencode({k: v for k, v in fields.items() if v})


def jobs_page(chrome: Chrome, index: int, f: Filters, page: Page, took: float) -> str:
    """A page of jobs with its filter form and the links to the next page."""
    rows = "".join(_row(index, row) for row in page.rows)
    if not rows:
        rows = '<tr><td colspan="9" class="quiet">No job matches.</td></tr>'
    shown = (
        f"{count(page.start + 1)} to {count(page.start + len(page.rows))} of {count(page.total)}"
        if page.total is not None and page.rows
        else f"{count(len(page.rows))} shown, {count(page.scanned)} read"
    )
    links = []
    if page.start:
        links.append(f'<a href="/q/{index}/jobs?{attr(filter_query(f, 0))}">« first</a>')
    if page.next_start is not None:
        links.append(
            f'<a rel="next" href="/q/{index}/jobs?{attr(filter_query(f, page.next_start))}">'
            "next »</a>"
        )
    body = (
        f"<h1>Jobs in {show(chrome.name(index), 80)}</h1>{_filter_form(index, f)}"
        f'<p class="quiet">{shown} · read in {took * 1000:.0f} ms</p>'
        '<table class="jobs"><thead><tr><th>id</th><th>state</th><th>pri</th><th>age</th>'
        "<th>size</th><th>attempts</th><th>task</th><th>metadata</th><th>worker</th></tr>"
        f'</thead><tbody>{rows}</tbody></table><p class="pager">{" ".join(links)}</p>'
    )
    return _page(chrome, f"Jobs · {chrome.name(index)}", body, here=f"q{index}")


# -- one job ---------------------------------------------------------------------------


def _form(chrome: Chrome, action: str, label: str, jobids: Sequence[str], css: str = "") -> str:
    """A POST form for one action, or nothing when actions are off."""
    if not chrome.actions or chrome.csrf is None:
        return ""
    ids = "".join(f'<input type="hidden" name="jobid" value="{attr(j)}">' for j in jobids)
    return (
        f'<form method="post" action="{attr(action)}" class="act {css}">'
        f'<input type="hidden" name="csrf" value="{attr(chrome.csrf)}">{ids}'
        f'<button type="submit">{show(label, 80)}</button></form>'
    )


def _result(result: ResultRecord) -> str:
    if result.status == "failed":
        value = f"{result.error_type}: {result.error_message}"
    elif result.kind == "json":
        value = json.dumps(result.value, indent=2, ensure_ascii=False)
    else:  # str as it is; bytes and pickle as the record keeps them, base64
        value = str(result.value)
    return (
        f'<h2>Result <span class="badge {attr(result.status)}">'
        f"{show(result.status, 20)}</span></h2>"
        f"<dl><dt>attempt</dt><dd>{result.attempt}</dd><dt>by</dt><dd>{show(result.host, 100)}"
        f" pid {result.pid}</dd><dt>finished</dt><dd>{when(result.finished_at)}</dd>"
        f"<dt>kept until</dt><dd>{when(result.expires_at)}</dd><dt>value ({show(result.kind, 20)})"
        f"</dt><dd><pre>{show(value, PAGE_VALUE, multiline=True)}</pre></dd></dl>"
    )


def job_page(chrome: Chrome, index: int, view: JobDetail) -> str:
    """One job: its state, metadata, data preview, attempts, error, lock and result."""
    state = view.state or "done"
    facts = [("state", f'<span class="badge {state}">{state}</span>')]
    facts.append(("priority", str(int(view.jobid[:2]))))
    if view.control is not None:
        c = view.control
        facts.append(("submitted", f"{when(c.submitted_secs + c.submitted_usecs / 1e6)}"
                                   f" from {show(c.hostname, 100)}"))
        facts.append(("data size", size(view.size)))
        facts.append(("attempts", str(view.attempts)))
    if view.due is not None:
        facts.append(("due", f"{when(view.due)} (in {age(view.due - time.time())})"))
    if view.lock is not None:
        lock = view.lock
        facts.append(("lock owner", f"{show(lock.host, 100)} pid {lock.pid or '?'}"
                                    f" · touched {age(lock.age)} ago · {show(lock.reason, 300)}"))
    if view.failed is not None:
        failed = view.failed
        facts.append(("failed", f"{when(failed.failed_at)} on {show(failed.host, 100)}"
                                f" pid {failed.pid}"))
    facts.append(("where", show(view.where, 500)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    parts = [f'<h1 class="jobid">{show(view.jobid, 80)}</h1><dl class="facts">{dl}</dl>']
    if view.control is not None:
        meta = "".join(
            f"<tr><th>{show(k, 200)}</th><td>{show(v, PAGE_VALUE)}</td></tr>"
            for k, v in view.control.metadata.items()
        ) or '<tr><td class="quiet">none</td></tr>'
        parts.append(f'<h2>Metadata</h2><table class="meta">{meta}</table>')
        text = view.preview.decode("utf-8", errors="replace")
        more = "" if view.size is None or view.size <= len(view.preview) else (
            f'<p class="quiet">the first {count(len(view.preview))} of {count(view.size)} bytes</p>'
        )
        parts.append(
            f'<h2>Data</h2><pre class="data">{show(text, len(text) + 1, multiline=True)}'
            f"</pre>{more}"
        )
    if view.error:
        parts.append(f'<h2>Last error</h2><p class="error">{show(view.error, 2000)}</p>')
    if view.detail:
        parts.append(f'<pre class="trace">{show(view.detail, 20000, multiline=True)}</pre>')
    if view.result is not None:
        parts.append(_result(view.result))
    actions = []
    if view.state in ("queued", "stale", "deferred"):
        actions.append(_form(
            chrome, f"/q/{index}/cancel", "Delete this job (cancel)", [view.jobid], "danger"
        ))
    if view.state == "failed":
        actions.append(_form(chrome, f"/q/{index}/requeue", "Requeue", [view.jobid]))
        actions.append(_form(chrome, f"/q/{index}/purge", "Purge", [view.jobid], "danger"))
    if any(actions):
        parts.append(f'<div class="actions">{"".join(actions)}</div>')
    return _page(chrome, f"Job {view.jobid}", "".join(parts), here=f"q{index}")


# -- failed ----------------------------------------------------------------------------


def failed_page(
    chrome: Chrome, index: int, groups: list[tuple[str, list[FailedJob]]], done: str
) -> str:
    """The failed jobs grouped by their last error, with requeue and purge."""
    total = sum(len(jobs) for _, jobs in groups)
    parts = [f"<h1>Failed jobs in {show(chrome.name(index), 80)}</h1>"]
    if done:
        parts.append(f'<p class="done">{show(done, 200)}</p>')
    parts.append(f'<p>{count(total)} failed job{"s" if total != 1 else ""},'
                 f' {count(len(groups))} reason{"s" if len(groups) != 1 else ""}.</p>')
    if chrome.actions and chrome.csrf is None:
        parts.append('<p class="quiet">Actions need the token: open the URL dq web printed'
                     " at start.</p>")
    elif not chrome.actions:
        parts.append('<p class="quiet">Read-only: start dq web with --actions to requeue'
                     " or purge.</p>")
    for error, jobs in groups:
        listed = jobs[:GROUP_JOBS]
        ids = [job.jobid for job in listed]
        rows = "".join(
            f'<tr><td><a href="/q/{index}/job/{quote(job.jobid)}">{show(job.jobid, 80)}</a></td>'
            f"<td>{when(job.failed_at)}</td><td>{show(job.host, 60)}</td><td>{job.attempts}</td>"
            f"<td>{_meta_summary(job.metadata)}</td>"
            f'<td>{_form(chrome, f"/q/{index}/requeue", "requeue", [job.jobid], "small")}'
            f'{_form(chrome, f"/q/{index}/purge", "purge", [job.jobid], "small danger")}</td></tr>'
            for job in listed
        )
        more = (
            f'<p class="quiet">the first {GROUP_JOBS} of {count(len(jobs))} shown</p>'
            if len(jobs) > GROUP_JOBS else ""
        )
        parts.append(
            f'<section class="group"><h2><span class="n">{count(len(jobs))}</span>'
            f' {show(error, 300)}</h2><div class="actions">'
            f'{_form(chrome, f"/q/{index}/requeue", f"Requeue these {len(ids)}", ids)}'
            f'{_form(chrome, f"/q/{index}/purge", f"Purge these {len(ids)}", ids, "danger")}'
            f'</div><table class="jobs"><thead><tr><th>id</th><th>failed</th><th>host</th>'
            f"<th>attempts</th><th>metadata</th><th></th></tr></thead><tbody>{rows}</tbody>"
            f"</table>{more}</section>"
        )
    return _page(chrome, f"Failed · {chrome.name(index)}", "".join(parts), here=f"q{index}")
