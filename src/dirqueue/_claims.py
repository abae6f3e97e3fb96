"""What a claim on a job can spare over NFS, where racing consumers on several hosts
meet jobs already taken and lose links to each other: a few calls each time, which
were most of a racing consumer's calls.

- A young lock that was not made on this host is held, whatever it says, until its
  mtime plus ``active_file_lifetime`` (:func:`young_from_elsewhere`): it is not read.
- A lock file written for a claim that failed (its link lost to another's lock, or
  its job found gone) is kept for this thread's next claim (:func:`keep_spare`,
  :func:`take_spare`), instead of being removed and another made, written and closed.

:mod:`dirqueue._lock` uses both; what a claim is, and what decides it (the inode at
``active/NAME``), is its business.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from ._config import QueueConfig
from ._identity import current_pid
from ._judge import filesystem_now
from ._layout import Layout
from ._lockfile import unlink_in

__all__ = ["SPARE_FOR", "drop_spare", "keep_spare", "take_spare", "young_from_elsewhere"]


def young_from_elsewhere(
    config: QueueConfig, jobid: str, lock: os.stat_result, unseen_here: Callable[[str], bool]
) -> float:
    """The time (filesystem's clock) before which ``lock`` cannot be judged breakable,
    when that is plain without reading it; else 0.0.

    Within ``active_file_lifetime`` of its mtime a lock is breakable only if its owner
    is proven dead, and only a worker of this host can be (see
    :func:`dirqueue._judge.judge`): a young lock that ``unseen_here(jobid)`` says was
    not made on this host is held until its mtime plus the lifetime, whatever it says.
    So the judge's read of it (an open and a read over NFS, for each job found taken
    by another host in a racing drain) is spared; the Perl module does no more than
    this ``lstat`` of a young lock either.
    """
    until = lock.st_mtime + config.active_file_lifetime
    if filesystem_now(config) > until or not unseen_here(jobid):
        return 0.0
    return until


#: A claim's lock file in tmp/ that lost its link (or whose job was found gone once it
#: was written), kept for this thread's next claim: (config, pid, name, stat, written).
#: Racing consumers lose a claim or more a job over NFS, and a lock file made, written,
#: closed and removed is 7 requests of the client; one kept costs nothing until it is
#: used. Its contents name no job (host and pid alone), so it serves any job of its
#: queue; its name (the first job's) says only whose it is.
_spares = threading.local()
#: How long (seconds) a spare serves: a lock linked is as old as its file's mtime.
SPARE_FOR: Final = 1.0


def keep_spare(
    config: QueueConfig, pid: int, name: str, st: os.stat_result, written: float
) -> bool:
    """Keep our lock file ``tmp/name`` (not linked; ``st`` its stat, ``written`` when
    it was written, by ``time.monotonic()``) for this thread's next claim; True."""
    _spares.lock = (config, pid, name, st, written)
    return True


def take_spare(config: QueueConfig, pid: int) -> tuple[str, os.stat_result, float] | None:
    """This thread's spare lock file for ``config``'s queue: its name, its stat and
    when it was written (kept no more: the caller uses it, or removes it), or None.
    One kept too long since it was written, or for another queue, is removed."""
    found = getattr(_spares, "lock", None)
    if found is None:
        return None
    _spares.lock = None
    owner_config, owner, name, st, when = found
    if owner != pid:
        return None  # A forked child's copy: the file names the parent, and is its.
    fresh = time.monotonic() - when < min(SPARE_FOR, config.active_file_lifetime / 10)
    if owner_config.dir == config.dir and fresh:
        return name, st, when
    with contextlib.suppress(OSError):
        unlink_in(owner_config, (Layout.TMP,), name)
    return None


def drop_spare(config: QueueConfig) -> None:
    """Remove this thread's spare lock file, if any (a pickup found nothing to take, or
    took a job without it: none is left behind in tmp/)."""
    if getattr(_spares, "lock", None) is None:
        return  # The usual case, once a job taken: no call to find none.
    spare = take_spare(config, current_pid())
    if spare is not None:
        with contextlib.suppress(OSError):
            unlink_in(config, (Layout.TMP,), spare[0])
