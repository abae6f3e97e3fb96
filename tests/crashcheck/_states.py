"""The crash states of a trace, under two persistence models, and their materialisation.

A crash at point ``k`` (after the first ``k`` events of a trace were issued) leaves the
starting state (taken after a ``sync()``: all of it durable) with some of those ``k``
events applied. Which ones, is the persistence model's to say:

``ordered`` (like ext4 ``data=ordered``): name operations (create, link, rename,
unlink, mkdir, rmdir, truncate, utime) go to one journal in the order they were made,
and every barrier (an fsync of any file or directory, a syncfs) commits the journal. So
everything before the last barrier survives, and of the name operations after it, a
prefix. A file's data is apart from that: its writes survive only if an fsync of that
file (or a syncfs) came after them; otherwise the file may keep its name and lose its
unsynced data (a new file then reads empty: the "renamed-over-empty" file of the
ALICE paper). (Real ext4 often writes the data too at a journal commit; not counting on
it makes the model weaker than ext4, never stronger.)

``weak``: any subset of the events not yet made durable may be lost, in any order. What
makes an event durable: for a write, truncate or utime, an fsync of that file; for a
name made or removed in directory D, an fsync of D; for a rename, an fsync of either
directory (a rename is taken as atomic); a syncfs, everything. A name in a directory
whose own name did not survive is lost with it.

Both enumerate every state when there are few enough (``limit`` per crash point) and
otherwise sample that many with a seeded random generator, the two extremes (all kept,
all lost) always among them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

from ._recorder import BARRIERS, Event, Snapshot

MODELS = ("ordered", "weak")
_DATA_EVENTS = frozenset({"write"})


@dataclass(frozen=True)
class CrashState:
    """One state a crash can leave: the crash point and which events survived."""

    model: str
    point: int  # events issued before the crash
    kept: frozenset[int]  # indexes of the events that survived


def _dir(path: str) -> str:
    return os.path.dirname(path) or "."


def _covers(barrier: Event, event: Event, model: str) -> bool:  # noqa: PLR0911 - one answer per event kind
    """True if ``barrier``, made after ``event``, makes it durable."""
    kind = barrier[0]
    if kind == "syncfs":
        return True
    what = event[0]
    if model == "ordered" and what not in _DATA_EVENTS:
        return True  # One journal: any commit carries every name operation before it.
    if kind == "fsync":
        return what in ("write", "trunc", "utime") and event[1] == barrier[1]
    # fsyncdir: the names made or removed in that directory.
    target = barrier[1]
    if what in ("create", "unlink", "mkdir", "rmdir"):
        return _dir(event[1]) == target
    if what == "link":
        return _dir(event[2]) == target
    if what == "rename":
        return target in (_dir(event[2]), _dir(event[3]))
    if what == "renamedir":
        return target in (_dir(event[1]), _dir(event[2]))
    if what == "exchange":
        return target in (_dir(event[2]), _dir(event[4]))
    return False


def durable_from(events: list[Event], model: str) -> list[int | None]:
    """For each event, the index of the first barrier after it that makes it durable."""
    result: list[int | None] = [None] * len(events)
    for i, event in enumerate(events):
        if event[0] in BARRIERS:
            continue
        for j in range(i + 1, len(events)):
            if events[j][0] in BARRIERS and _covers(events[j], event, model):
                result[i] = j
                break
    return result


def _choices(n: int, limit: int, rng: random.Random) -> Iterator[tuple[bool, ...]]:
    """Every keep/lose vector of length ``n``, or ``limit`` of them sampled."""
    if 2**n <= limit:
        yield from itertools.product((True, False), repeat=n)
        return
    seen = {(True,) * n, (False,) * n}
    yield from seen
    while len(seen) < limit:
        pick = tuple(rng.random() < 0.5 for _ in range(n))
        if pick not in seen:
            seen.add(pick)
            yield pick


def crash_states(events: list[Event], model: str, limit: int,
                 rng: random.Random) -> Iterator[CrashState]:
    """Every state (or a sample, past ``limit`` per crash point) a crash could leave."""
    forced = durable_from(events, model)
    for point in range(len(events) + 1):
        sure = {i for i in range(point)
                if events[i][0] not in BARRIERS and forced[i] is not None
                and forced[i] < point}  # type: ignore[operator]
        loose = [i for i in range(point) if events[i][0] not in BARRIERS and i not in sure]
        if model == "weak":
            for pick in _choices(len(loose), limit, rng):
                kept = sure | {i for i, keep in zip(loose, pick, strict=True) if keep}
                yield CrashState(model, point, frozenset(kept))
            continue
        # ordered: a prefix of the loose name operations, and per file, its loose data
        # kept or lost.
        names = [i for i in loose if events[i][0] not in _DATA_EVENTS]
        data_by_file: dict[int, list[int]] = {}
        for i in loose:
            if events[i][0] in _DATA_EVENTS:
                data_by_file.setdefault(events[i][1], []).append(i)
        files = list(data_by_file.values())
        budget = max(1, limit // (len(names) + 1))
        for cut in range(len(names) + 1):
            for pick in _choices(len(files), budget, rng):
                kept = set(sure) | set(names[:cut])
                for writes, keep in zip(files, pick, strict=True):
                    if keep:
                        kept |= set(writes)
                yield CrashState(model, point, frozenset(kept))


@dataclass
class FsImage:
    """A queue directory's contents, as a crash state leaves them."""

    dirs: set[str]
    names: dict[str, int]
    data: dict[int, bytearray]
    mtime: dict[int, int]
    mode: dict[int, int]

    def key(self) -> str:
        """A digest of what is visible: equal states are checked once."""
        h = hashlib.sha256()
        dirs = {d for d in self.dirs if self._reachable(d)}
        for d in sorted(dirs):
            h.update(b"D" + d.encode() + b"\0")
        group: dict[int, str] = {}
        for path in sorted(self.names):
            if not self._reachable(_dir(path)):
                continue
            ino = self.names[path]
            first = group.setdefault(ino, path)
            h.update(b"F" + path.encode() + b"\0" + first.encode() + b"\0")
            h.update(hashlib.sha256(bytes(self.data.get(ino, b""))).digest())
            h.update(str(self.mtime.get(ino)).encode())
        return h.hexdigest()

    def _reachable(self, d: str) -> bool:
        while d not in (".", ""):
            if d not in self.dirs:
                return False
            d = _dir(d)
        return True

    def materialise(self, target: str) -> None:
        """Write this image into the empty directory ``target``."""
        for d in sorted(self.dirs, key=lambda p: p.count("/")):
            if self._reachable(d):
                os.mkdir(os.path.join(target, d))
        made: dict[int, str] = {}
        for path in sorted(self.names):
            if not self._reachable(_dir(path)):
                continue
            ino = self.names[path]
            full = os.path.join(target, path)
            if ino in made:
                os.link(made[ino], full)
                continue
            with open(full, "wb") as fh:
                fh.write(bytes(self.data.get(ino, b"")))
            os.chmod(full, self.mode.get(ino, 0o644))
            if ino in self.mtime:
                os.utime(full, ns=(self.mtime[ino], self.mtime[ino]))
            made[ino] = full


def _write(buf: bytearray, offset: int, data: bytes) -> None:
    if len(buf) < offset:
        buf.extend(b"\0" * (offset - len(buf)))
    buf[offset:offset + len(data)] = data


def image(start: Snapshot, events: list[Event], kept: frozenset[int],
          modes: dict[int, int]) -> FsImage:
    """The state left by applying the ``kept`` events, in their order, to ``start``."""
    img = FsImage(set(start.dirs), dict(start.names),
                  {ino: bytearray(d) for ino, d in start.data.items()},
                  dict(start.mtime), {**start.mode, **modes})
    for i in sorted(kept):
        _apply(img, events[i])
    return img


def _apply(img: FsImage, event: Event) -> None:  # noqa: PLR0912 - one branch per event
    kind = event[0]
    names = img.names
    if kind == "mkdir":
        img.dirs.add(event[1])
    elif kind == "rmdir":
        img.dirs.discard(event[1])
    elif kind == "create":
        names[event[1]] = event[2]
        img.data.setdefault(event[2], bytearray())
    elif kind == "write":
        _write(img.data.setdefault(event[1], bytearray()), event[2], event[3])
    elif kind == "trunc":
        buf = img.data.setdefault(event[1], bytearray())
        del buf[event[2]:]
        _write(buf, event[2], b"")
    elif kind == "link":
        names[event[2]] = event[1]
        img.data.setdefault(event[1], bytearray())
    elif kind == "unlink":
        if names.get(event[1]) == event[2]:
            del names[event[1]]
    elif kind == "rename":
        ino, src, dst = event[1], event[2], event[3]
        if names.get(src) == ino:
            del names[src]
        names[dst] = ino
    elif kind == "renamedir":
        src, dst = event[1], event[2]
        prefix = src + "/"
        img.dirs = {dst + d[len(src):] if d == src or d.startswith(prefix) else d
                    for d in img.dirs}
        img.dirs.add(dst)
        img.names = {(dst + p[len(src):] if p.startswith(prefix) else p): ino
                     for p, ino in names.items()}
    elif kind == "exchange":
        ino_a, a, ino_b, b = event[1:]
        names[a], names[b] = ino_b, ino_a
    elif kind == "utime":
        img.mtime[event[1]] = event[2]
