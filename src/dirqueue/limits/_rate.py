"""A group's rate limit: at most M starts in any P seconds, across hosts.

The group has M tokens. Each start uses one: the N-th use of token K is a file
``starts/GROUP.K.N``, written in ``tmp/`` and ``link()``ed into place, so of all the
workers that try to make the same use exactly one wins (over NFS its inode says so).
A token may be used again once its last use is P seconds old; each token is used at most
once in any window of P seconds, so no window holds more than M starts.

"Old" is read in the filesystem's clock: a use's time is its file's mtime, stamped by
the file server (by a write made after the link, so the stamp is never earlier than
the start it records), and compared with :func:`dirqueue._judge.filesystem_now`. Hosts
whose clocks are minutes apart therefore agree.

Names are never used twice, so a listing that is behind (an NFS client's cached
directory) cannot make an old use look like the latest: a use is made only over a
predecessor seen *there* and old; a predecessor found gone means the listing is behind,
and the token is passed over this time. The winner of use N+1 removes use N-1 (never
use 0, which stays as each token's first mark, so no listing however old can make use
0 anew). The Perl module never opens ``starts/``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random

from .. import _dirfds, _fs
from .._config import QueueConfig
from .._identity import current_pid
from .._jobfiles import in_queue_dir
from .._judge import filesystem_now
from .._layout import Layout

__all__ = ["MARGIN", "claim", "recent_starts"]

#: Seconds added to the period before a token is used again: the filesystem clock is
#: known to a few milliseconds (the round trip that measured it), and a start is
#: recorded a moment after its token was taken.
MARGIN = 0.05


def _uses(config: QueueConfig, group: str) -> dict[int, tuple[int, str]]:
    """Token -> (its latest use, that use's name) for ``group``."""
    try:
        names = _dirfds.at(config.dir, (Layout.STARTS,), os.listdir, create=True)
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            return {}
        raise
    latest: dict[int, tuple[int, str]] = {}
    for name in names:
        parsed = Layout.parse_start_name(name)
        if parsed is None or parsed[0] != group:
            continue
        _, token, use = parsed
        seen = latest.get(token)
        if seen is None or use > seen[0]:
            latest[token] = (use, name)
    return latest


def _remove(config: QueueConfig, name: str) -> None:
    with contextlib.suppress(OSError):
        _dirfds.at(
            config.dir, (Layout.STARTS,), lambda sfd: os.unlink(name, dir_fd=sfd), retry=False
        )


def _mtime(config: QueueConfig, name: str) -> float | None:
    try:
        return _dirfds.at(
            config.dir, (Layout.STARTS,), lambda sfd: os.lstat(name, dir_fd=sfd).st_mtime,
            retry=False,
        )
    except FileNotFoundError:
        return None


def _use(config: QueueConfig, group: str, token: int, use: int) -> bool:
    """Make use ``use`` of ``token``; True if ours (no other worker's link won)."""
    mine = Layout.tmp_start_name(group, config.hostname, current_pid())
    target = Layout.start_name(group, token, use)

    def attempt(tfd: int) -> bool:
        fd = _fs.create_exclusive(mine, config.queue_file_mode, dir_fd=tfd)
        try:
            _fs.write_all(fd, f"{config.hostname} {current_pid()}\n".encode())
            linked = _dirfds.at(
                config.dir,
                (Layout.STARTS,),
                lambda sfd: _fs.link_verified(mine, target, src_dir_fd=tfd, dst_dir_fd=sfd),
                create=True,
            )
            if linked is _fs.LinkResult.LINKED:
                # Stamped again now, after the link, by the file server's clock: a
                # stall between the write and the link must not date the start early.
                _fs.write_all(fd, b"started\n")
            return linked is _fs.LinkResult.LINKED
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(mine, dir_fd=tfd)

    return in_queue_dir(config, (Layout.TMP,), attempt)


def claim(config: QueueConfig, group: str, count: int, period: float) -> float | None:
    """Take one of ``group``'s ``count`` start tokens: None if this start may happen
    now, else the time (filesystem clock) when a token frees."""
    latest = _uses(config, group)
    now = filesystem_now(config)
    wait = period + MARGIN
    soonest: float | None = None
    tokens = list(range(count))
    random.shuffle(tokens)  # Workers that start together try different tokens.
    for token in tokens:
        use, name = latest.get(token, (-1, ""))
        if use >= 0:
            stamped = _mtime(config, name)
            if stamped is None:
                continue  # Our listing is behind: a newer use exists. Not this token.
            if now - stamped < wait:
                due = stamped + wait
                soonest = due if soonest is None else min(soonest, due)
                continue
        if _use(config, group, token, use + 1):
            if use >= 2:
                _remove(config, Layout.start_name(group, token, use - 1))
            return None
    # Every token used within the period (or just taken by another): try again when
    # the oldest frees (soon, if another worker took the last one under us).
    return soonest if soonest is not None else now + min(period / count, 0.1)


def recent_starts(config: QueueConfig, group: str, period: float) -> int:
    """How many of ``group``'s starts fall within the last ``period`` seconds."""
    now = filesystem_now(config)
    return sum(
        1
        for _, name in _uses(config, group).values()
        if (stamped := _mtime(config, name)) is not None and now - stamped < period
    )
