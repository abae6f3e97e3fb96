"""Listing ``corrupt/``: the jobs moved aside because they could not be read.

A worker or ``repair()`` that meets a job it cannot read moves it to ``corrupt/`` with a
``.reason`` file (:func:`dirqueue._jobfiles.move_aside`), and a stray in place of a
queue file without one (:func:`dirqueue._jobfiles.set_aside`). Nothing in ``corrupt/``
is ever deleted by dirqueue; this module only reads it, so that an operator can see
what is there without walking the directory by hand. The names it reads are built by
:class:`dirqueue._layout.Layout`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import Any, Final

from . import _fs
from ._config import QueueConfig
from ._layout import Layout

__all__ = ["CorruptEntry", "list_corrupt"]

#: More than any reason file dirqueue writes; a planted huge file is read no further.
_REASON_MAX: Final = 65536


@dataclass(frozen=True)
class CorruptEntry:
    """One job (or stray) in ``corrupt/``, and why it is there.

    ``name`` is its name in ``corrupt/`` (``NAME``, or ``NAME.1`` for a second job of one
    id); ``reason``, ``source``, ``moved_by`` and ``moved_at`` come from its ``.reason``
    file and are empty for a stray set aside without one. ``control``, ``data`` and
    ``reason_file`` are the paths of the files present, or None.
    """

    name: str
    jobid: str
    reason: str
    source: str
    moved_by: str
    moved_at: str
    control: str | None
    data: str | None
    reason_file: str | None

    def as_dict(self) -> dict[str, Any]:
        """``dq list --corrupt --json``'s object."""
        return {
            "name": self.name,
            "id": self.jobid,
            "reason": self.reason,
            "from": self.source,
            "moved_by": self.moved_by,
            "moved_at": self.moved_at,
            "control": self.control,
            "data": self.data,
            "reason_file": self.reason_file,
        }


def _read_reason(fd: int, name: str) -> dict[str, str]:
    """The ``key: value`` lines of a reason file; empty if it is not a readable file."""
    try:
        raw = _fs.read_limited(_fs.open_regular(name, dir_fd=fd), _REASON_MAX)
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields.setdefault(key, value)
    return fields


def list_corrupt(config: QueueConfig) -> list[CorruptEntry]:
    """Every entry of ``corrupt/``, in name order; empty when there is no ``corrupt/``."""
    layout = config.layout
    try:
        fd = _fs.open_dir_nofollow(config.dir, (Layout.CORRUPT,))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return []
        raise
    try:
        names = set(os.listdir(fd))
        stems = {n.removesuffix(Layout.REASON_SUFFIX) for n in names
                 if n.endswith(Layout.REASON_SUFFIX)}
        entries = []
        for stem in sorted(stems):
            fields = _read_reason(fd, layout.corrupt_reason_name(stem))
            entries.append(_entry(layout, names, stem, fields))
        claimed = {f for s in stems for f in
                   (s, layout.corrupt_data_name(s), layout.corrupt_reason_name(s))}
        # Strays set aside without a reason file, and data whose control file is gone.
        for name in sorted(names - claimed):
            with contextlib.suppress(FileNotFoundError):
                os.lstat(name, dir_fd=fd)
                entries.append(_entry(layout, {name}, name, {}))
    finally:
        _fs.close_dir(fd)
    return sorted(entries, key=lambda e: e.name)


def _entry(layout: Layout, names: set[str], stem: str, fields: dict[str, str]) -> CorruptEntry:
    def present(name: str) -> str | None:
        return layout.corrupt_path(name) if name in names else None

    reason_name = layout.corrupt_reason_name(stem)
    return CorruptEntry(
        name=stem,
        jobid=fields.get("job", stem),
        reason=fields.get("reason", ""),
        source=fields.get("from", ""),
        moved_by=fields.get("moved-by", ""),
        moved_at=fields.get("moved-at", ""),
        control=present(stem),
        data=present(layout.corrupt_data_name(stem)),
        reason_file=present(reason_name),
    )
