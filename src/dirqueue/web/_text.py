"""Job-supplied text made safe for a page, and the small formats the pages share.

Everything a queue holds (metadata, error text, tracebacks, host names, data) is
whatever its submitter or a hostile local user made it. A page must show it as text,
never as markup: :func:`show` HTML-escapes it, and first makes visible what a browser
would otherwise render silently or not at all: C0 and C1 controls and DEL (a terminal
escape pasted from the page must not run in the operator's shell), the bidi marks,
embeddings, overrides and isolates that reorder what is shown (Trojan Source), the
Unicode line separators and lone surrogates. Each becomes a ``\\x1b``- or
``\\u202e``-style escape in a ``<span class="esc">``. Long values (a 1 MB metadata
value) are cut, saying how much was left out, so one job cannot make a page huge.
"""

from __future__ import annotations

import html
import re
import time
from typing import Final

__all__ = ["age", "attr", "count", "show", "size", "when"]

#: The characters shown as escapes rather than as themselves (see the module's note).
_UNSAFE_RE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ufeff\ud800-\udfff]"
)
#: A newline and a tab are kept in multi-line text (tracebacks, data), escaped elsewhere.
_UNSAFE_ONE_LINE_RE: Final = re.compile(f"{_UNSAFE_RE.pattern}|[\t\n]")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _marked(match: re.Match[str]) -> str:
    return f'<span class="esc">{_escape(match.group())}</span>'


def show(text: str, limit: int = 200, *, multiline: bool = False) -> str:
    """``text`` as HTML that displays it literally, cut to ``limit`` characters.

    Escaped first and cut after on the original characters, so a cut never splits an
    entity or an escape. ``multiline`` keeps newlines and tabs (for a ``<pre>``).
    """
    cut = len(text) > limit
    shown = text[:limit] if cut else text
    pieces: list[str] = []
    last = 0
    unsafe = _UNSAFE_RE if multiline else _UNSAFE_ONE_LINE_RE
    for match in unsafe.finditer(shown):
        pieces.append(html.escape(shown[last : match.start()], quote=True))
        pieces.append(_marked(match))
        last = match.end()
    pieces.append(html.escape(shown[last:], quote=True))
    if cut:
        pieces.append(f'<span class="cut">… ({count(len(text) - limit)} more characters)</span>')
    return "".join(pieces)


def attr(text: str) -> str:
    """``text`` for an attribute value or a URL's query (ours: ids, filters); quoted."""
    return html.escape(_UNSAFE_RE.sub(lambda m: _escape(m.group()), text), quote=True)


def count(n: int) -> str:
    """``100,000``: counts are read at a glance."""
    return f"{n:,}"


def size(n: int | None) -> str:
    """Bytes in the largest unit that keeps a number of at least 1 (``1.5 MiB``)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def age(seconds: float | None) -> str:
    """A duration the way people say it: ``42s``, ``5m 3s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def when(epoch: float | None) -> str:
    """A time as UTC ISO 8601 to the second (the pages may be read on any host)."""
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
