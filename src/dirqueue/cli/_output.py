"""What ``dq`` prints, and how: escaping, sizes and ages, tables, JSON, progress.

Everything a queue holds (metadata, host names, error text, file names) is whatever a
submitter or a hostile file name made it, so every human-readable line ``dq`` prints
goes through :func:`escape_controls`, and JSON through :func:`print_json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Final

__all__ = [
    "Progress",
    "escape_controls",
    "format_age",
    "format_size",
    "isatty",
    "print_json",
    "print_nl",
    "table",
]

#: Submissions of at least this many files print progress lines when not on a terminal.
_PLAIN_PROGRESS_MIN: Final = 20

#: What a listing must not send to a terminal as it is, beyond C0 controls (which JSON
#: escapes by itself): DEL and the C1 controls (U+009B is CSI to many terminals), the
#: bidi marks, embeddings, overrides and isolates that reorder what is shown (Trojan
#: Source), the Unicode line and paragraph separators, and lone surrogates (a file
#: name's undecodable bytes, which cannot be written as UTF-8 at all).
_UNSAFE_BEYOND_C0: Final = (
    r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
)
_UNSAFE_RE: Final = re.compile(rf"[\\\x00-\x1f{_UNSAFE_BEYOND_C0}]")
_UNSAFE_IN_JSON_RE: Final = re.compile(rf"[{_UNSAFE_BEYOND_C0}]")
_SHORT_ESCAPES: Final = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` safe to show on a terminal: controls written as escapes, visibly.

    Metadata, host names, error text and file names in a queue are whatever the
    submitter or a hostile file name made them; shown raw, an escape sequence could
    clear the operator's screen, retitle the window or hide a line. C0 and C1 controls
    and DEL become ``\\x1b``-style escapes (``\\t``, ``\\n``, ``\\r`` by their short
    names), bidi controls, line separators and lone surrogates ``\\u202e``-style, and
    a backslash is doubled, so the escaped form reads back unambiguously. Every
    human-readable line ``dq`` prints goes through this function.
    """
    return _UNSAFE_RE.sub(_escape_char, text)


def _clipped(text: str, limit: int) -> str:
    """``text`` escaped and cut to ``limit`` characters with ``...``, never mid-escape."""
    shown = escape_controls(text)
    if len(shown) <= limit:
        return shown
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = escape_controls(char)
        if used + len(piece) > limit - 3:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + "..."


def format_age(seconds: float | None) -> str:
    """``"42s"``, ``"3m 07s"``, ``"2h 05m"``, ``"3d 04h"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    secs = int(max(0.0, seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h {secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d {secs % 86400 // 3600:02d}h"


def format_size(size: int) -> str:
    """``"512 B"``, ``"1.5 KiB"``, ``"20.0 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(
    rows: Sequence[Sequence[str]],
    right: frozenset[int] = frozenset(),
    clip: dict[int, int] | None = None,
) -> str:
    """Rows as aligned columns; the first row is the header; ``right`` columns align right.

    Every cell is escaped (see :func:`escape_controls`), and cut to ``clip[column]``
    characters where given, before the columns are measured.
    """
    limits = clip or {}
    rows = [
        [
            _clipped(cell, limits[i]) if i in limits else escape_controls(cell)
            for i, cell in enumerate(row)
        ]
        for row in rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _json_text(value: Any, indent: int | None) -> str:
    text = json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=False)
    # json.dumps escapes C0 controls but leaves DEL, C1 controls, bidi controls and lone
    # surrogates raw. Outside strings JSON is ASCII, so each of these is in a string,
    # where \uXXXX stands for exactly that character: the value read back is unchanged.
    return _UNSAFE_IN_JSON_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def print_json(value: Any, out: IO[str]) -> None:
    """``value`` as indented JSON on ``out``, with no character a terminal acts on."""
    out.write(_json_text(value, 2) + "\n")


def print_nl(values: Iterable[Any], out: IO[str]) -> None:
    """Newline-delimited JSON: each of ``values`` as one compact JSON line on ``out``.

    Every line is a whole JSON value (a newline inside a string is written ``\\n``), so
    ``head``, ``grep`` and ``jq -c`` can work line by line, as with sqlite-utils' --nl.
    """
    for value in values:
        out.write(_json_text(value, None) + "\n")


class Progress:
    """A progress bar on a terminal, plain lines elsewhere (written to ``stream``).

    On a terminal it redraws one line in place (``\\r`` and clear-to-end-of-line) at most
    ten times a second, and :meth:`clear` takes it off the screen before anything else
    is written there (a note, a ``-v`` line, a job's output), so that no other text lands
    on the bar's line; the next update draws it again below. Elsewhere (a pipe, a log
    file) it prints a plain line at each tenth of the way, when there is enough to be
    worth it, and never a control character.
    """

    def __init__(
        self,
        label: str,
        total: int,
        stream: IO[str],
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.tty = enabled and _isatty(stream)
        self.plain = enabled and not self.tty and total >= _PLAIN_PROGRESS_MIN
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._last_draw = 0.0
        self._last_tenth = 0
        self._shown = False

    @property
    def shown(self) -> bool:
        """True if anything is drawn or printed (a bar, or plain lines)."""
        return self.tty or self.plain

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` items are done (of ``total``, if it changed)."""
        self.done = done
        if total is not None:
            if total > self.total and self.total:
                # Jobs came during the run: count tenths of the new total from here,
                # or a run past 100% of the old one would print nothing more.
                self._last_tenth = done * 10 // total
            self.total = total
        self.total = max(self.total, done)
        if self.tty:
            now = self._clock()
            if not self._shown or now - self._last_draw >= 0.1 or done >= self.total:
                self._last_draw = now
                self._draw()
        elif self.plain and self.total:
            tenth = done * 10 // self.total
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(f"{self.label}: {done}/{self.total} ({tenth * 10}%)\n")
                self.stream.flush()

    def line(self) -> str:
        """The bar as drawn: label, bar, count, percentage, rate."""
        width = 30
        total = self.total or 1
        filled = width * self.done // total
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"{self.label} [{bar}] {self.done}/{self.total}"
            f" {100 * self.done // total:3d}%  {rate:7.1f}/s"
        )

    def _draw(self) -> None:
        self.stream.write(_CLEAR_LINE + self.line())
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Take the bar off the screen (on a terminal), before other text is written."""
        if self.tty and self._shown:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._shown = False

    def close(self) -> None:
        """Draw the bar a last time and end its line (on a terminal)."""
        if self.tty and (self._shown or self.done):
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


#: Back to the start of the line, and clear it (VT100 "erase in line").
_CLEAR_LINE: Final = "\r\033[K"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def isatty(stream: Any) -> bool:
    """True if ``stream`` is a terminal (False for anything that cannot tell)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole, or leave the old file: written under a hidden
    temporary name in the same directory, fsynced, then renamed over ``path``.

    A reader (node_exporter's textfile collector reading ``*.prom``, say) never sees
    half a file, nor a name of ours it would take for one of its own: the temporary
    name starts with a dot and ends in ``.tmp``. Same directory, so the rename is one
    atomic step on one filesystem; created with mode 0666 less the umask, like any
    file the shell writes.
    """
    directory, base = os.path.split(path)
    partial = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
