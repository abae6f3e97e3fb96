"""The dashboard's one stylesheet and one script, served from ``/static/``.

Kept as files of their own (not inline) so the Content-Security-Policy can forbid
every inline script and style: markup a hostile job smuggled into a page could not
run. The script only refreshes the live parts of a page: with JavaScript off, every
page still works, and the overview reloads itself every ten seconds instead.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FILES"]

_CSS: Final = """
:root { --bg: #f5f6f8; --card: #fff; --ink: #1d2330; --muted: #6b7280; --line: #e3e6eb;
  --queued: #2563eb; --active: #059669; --stale: #d97706; --deferred: #7c3aed;
  --failed: #dc2626; --results: #0f766e; --accent: #111827; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
header { display: flex; align-items: center; justify-content: space-between; gap: 1rem;
  padding: .6rem 1.5rem; background: var(--accent); color: #e5e7eb; flex-wrap: wrap; }
header a { color: #e5e7eb; text-decoration: none; }
header a:hover { color: #fff; text-decoration: underline; }
nav { display: flex; gap: 1.25rem; align-items: baseline; flex-wrap: wrap; }
.brand { font-weight: 700; font-size: 1.05rem; color: #fff; letter-spacing: .02em; }
.navq { color: #9ca3af; } .navq a { margin-left: .35rem; } .navq.here { color: #fff; }
.mode { font-size: .8rem; padding: .15rem .55rem; border-radius: 999px; background: #374151; }
.mode.rw { background: #b45309; color: #fff; }
main { max-width: 1180px; margin: 1.25rem auto; padding: 0 1.5rem; }
footer { max-width: 1180px; margin: 2rem auto; padding: 0 1.5rem; color: var(--muted);
  font-size: .8rem; }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; } h2 { font-size: 1.15rem; margin: 1.4rem 0 .6rem; }
h3 { font-size: .95rem; margin: 1.2rem 0 .4rem; color: var(--muted); text-transform: uppercase;
  letter-spacing: .05em; }
a { color: #1d4ed8; }
section.queue, section.group { background: var(--card); border: 1px solid var(--line);
  border-radius: 10px; padding: 1rem 1.25rem 1.1rem; margin-bottom: 1.25rem;
  box-shadow: 0 1px 2px rgba(0,0,0,.04); }
section.queue h2 { margin-top: 0; } section.queue h2 a { color: var(--ink);
  text-decoration: none; }
.path { color: var(--muted); font-weight: 400; font-size: .85rem; margin-left: .4rem;
  font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.tiles { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: .6rem; }
.tile { display: flex; flex-direction: column; padding: .6rem .8rem; border-radius: 8px;
  text-decoration: none; color: var(--ink); background: #f9fafb; border: 1px solid var(--line);
  border-top: 4px solid var(--c, #999); }
.tile:hover { background: #f3f4f6; }
.tile .n { font-size: 1.7rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile .label { color: var(--muted); font-size: .8rem; text-transform: uppercase;
  letter-spacing: .05em; }
.tile.queued { --c: var(--queued); } .tile.active { --c: var(--active); }
.tile.stale { --c: var(--stale); } .tile.deferred { --c: var(--deferred); }
.tile.failed { --c: var(--failed); } .tile.results { --c: var(--results); }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin-top: .6rem; }
figure { margin: 0; } figcaption { color: var(--muted); font-size: .8rem; margin-bottom: .2rem; }
svg.chart { width: 100%; height: auto; display: block; background: #fbfbfc;
  border: 1px solid var(--line); border-radius: 6px; }
svg .grid { stroke: #e5e7eb; stroke-width: 1; }
svg .axis { fill: #9ca3af; font-size: 10px; }
svg .empty { fill: #9ca3af; font-size: 11px; }
svg .line { fill: none; stroke-width: 2; stroke-linejoin: round; }
svg .area { opacity: .12; }
svg.rate .line { stroke: var(--active); } svg.rate .area, svg.rate .dot { fill: var(--active); }
svg.backlog .line { stroke: var(--queued);
  } svg.backlog .area, svg.backlog .dot { fill: var(--queued); }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { text-align: left; padding: .35rem .55rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
thead th { font-size: .75rem; text-transform: uppercase; letter-spacing: .05em;
  color: var(--muted); }
table.jobs td:first-child, .jobid, pre, .kv {
  font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
table.jobs td:first-child { font-size: .82rem; white-space: nowrap; }
table.workers { width: auto; min-width: 60%; }
table.workers tr.host th { background: #f3f4f6; font-weight: 600; }
tr.stale td { background: #fffbeb; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .75rem;
  color: #fff; background: #6b7280; }
.badge.queued { background: var(--queued); } .badge.active { background: var(--active); }
.badge.stale { background: var(--stale); } .badge.deferred { background: var(--deferred); }
.badge.failed { background: var(--failed); } .badge.done { background: var(--results); }
.kv { display: inline-block; font-size: .78rem; background: #f3f4f6; border-radius: 4px;
  padding: 0 .3rem; margin: 0 .2rem .15rem 0; max-width: 32rem; overflow-wrap: anywhere; }
.kv b { font-weight: 600; }
.esc { color: #b91c1c; background: #fee2e2; border-radius: 3px; padding: 0 1px;
  font-family: ui-monospace, monospace; font-size: .85em; }
.cut { color: var(--muted); font-style: italic; }
.quiet { color: var(--muted); } .stamp { color: var(--muted); font-size: .75rem;
  margin: .6rem 0 0; }
.problem { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; padding: .6rem .8rem;
  border-radius: 6px; }
.done { background: #ecfdf5; border: 1px solid #a7f3d0; color: #065f46; padding: .5rem .8rem;
  border-radius: 6px; }
.live.offline { opacity: .55; }
form.filters { display: flex; gap: .8rem; align-items: end; flex-wrap: wrap;
  background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; padding: .7rem .9rem; margin-bottom: .6rem; }
form.filters label { display: flex; flex-direction: column; font-size: .75rem;
  color: var(--muted); }
input, select, button { font: inherit; padding: .3rem .5rem; border: 1px solid #cbd5e1;
  border-radius: 6px; background: #fff; }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
.danger button { background: #fff; color: var(--failed); border-color: #fca5a5; }
form.act { display: inline-block; margin: 0 .4rem .3rem 0; }
form.small button { padding: .05rem .4rem; font-size: .78rem; }
.pager a { margin-right: 1rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .8rem 1rem; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table.meta th { width: 14rem; font-family: ui-monospace, monospace; font-weight: 600; }
table.meta td { overflow-wrap: anywhere; }
pre { background: #0f172a; color: #e2e8f0; padding: .8rem 1rem; border-radius: 8px;
  overflow: auto; max-height: 28rem; white-space: pre-wrap; overflow-wrap: anywhere; }
pre .esc { background: #7f1d1d; color: #fecaca; }
p.error { color: #991b1b; font-weight: 600; }
section.group h2 { margin-top: 0; overflow-wrap: anywhere; }
section.group h2 .n { display: inline-block; min-width: 2.2rem; text-align: center;
  background: var(--failed); color: #fff; border-radius: 6px; padding: 0 .4rem;
  margin-right: .4rem; }
@media (max-width: 800px) { .tiles { grid-template-columns: repeat(3, 1fr); }
  .charts { grid-template-columns: 1fr; } }
"""

_JS: Final = """
// dq web: refresh each [data-live] part of the page in place, once a second, while the
// tab is visible. The parts are HTML the server escaped; nothing else is inserted.
(function () {
  "use strict";
  var parts = document.querySelectorAll("[data-live]");
  if (!parts.length || !window.fetch) { return; }
  function refresh(part) {
    fetch(part.getAttribute("data-live"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) { part.innerHTML = html; part.classList.remove("offline"); })
      .catch(function () { part.classList.add("offline"); });
  }
  window.setInterval(function () {
    if (document.hidden) { return; }
    Array.prototype.forEach.call(parts, refresh);
  }, 1000);
})();
"""

#: ``/static/NAME`` -> ``(content type, body)``.
FILES: Final = {
    "dq.css": ("text/css; charset=utf-8", _CSS.encode("utf-8")),
    "dq.js": ("text/javascript; charset=utf-8", _JS.encode("utf-8")),
}
