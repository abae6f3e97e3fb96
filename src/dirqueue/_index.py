"""The index of waiting jobs a dequeuer picks from: kept exact by inotify, re-read
from ``queue/`` only when it must be.

Every name in ``queue/`` is, for this index, in one of three states:

- *waiting*: a candidate, tried in order (sorted when the queue is ordered): the
  names of the last re-read of ``queue/``, packed in a :class:`~dirqueue._scanner.Listing`
  (a million names take tens of megabytes, not hundreds), and those that arrived since,
  in ``_pending``;
- *held*: locked by another worker (seen in ``active/``, or refused when we tried it);
  re-judged now and then, a few at a time, so a dead worker's lock is still broken
  (but a lock of another host, judged alive, not before it could be stale: see
  :meth:`QueueIndex.held`);
- *taken*: locked by this process.

**Local filesystems** (ext4, XFS, tmpfs, ...): one inotify instance watches ``queue/``
(and its fan-out directories) and ``active/`` for names arriving and leaving. A job
enqueued by any process of this host is a waiting name before that process's
``link()`` has returned; a lock created by another dequeuer makes the name held before
we waste a claim on it; a lock removed (a job given back, a stale lock broken) makes
it waiting again. So a returned job, or a newly enqueued job of better priority, is
the very next pickup of every dequeuer on the host, and a pickup costs the same at
100,000 queued as at 10: ``queue/`` is never re-read, save when the kernel's event
queue overflowed, or a watched directory was replaced, or (a safety net)
:data:`EXACT_RESCAN` seconds have passed and ``queue/`` changed.

**Network filesystems** (NFS, GlusterFS, CephFS, any FUSE) and hosts without inotify:
this host's own changes still arrive as events, but no event says that another host
enqueued a job or gave one back. So the index re-reads ``queue/`` and ``active/``
when either's mtime has changed, at most every :data:`SCAN_INTERVAL` seconds (longer
if one scan costs over a tenth of that): a job enqueued on another host is seen
within ``SCAN_INTERVAL`` plus the client's attribute cache (``actimeo``). A poll
that finds nothing new costs two ``stat()`` calls, never a re-read.

**Exactly once** does not rest on this index. It only proposes names; the lock
(``link()`` in ``active/``, judged by its inode) decides who takes a job. A stale
index can therefore cost a wasted claim or a delay, never a job taken twice. Nor can
it skip a job for good: a name leaves the index only when its control file is seen
gone (an event, a failed ``lstat``, or a re-read), and a held name comes back when
its lock is seen removed or when re-judging finds the lock broken.
"""

from __future__ import annotations

import bisect
import os
import random
import threading
import time
import weakref
from typing import Final

from . import _fs
from ._config import QueueConfig
from ._format import match_job_name
from ._inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    LOST_WATCH,
    Event,
    Notifier,
    open_notifier,
)
from ._judge import filesystem_now
from ._layout import Layout
from ._scanner import Listing, QueueEntry, scan_packed

__all__ = ["EXACT_RESCAN", "HELD_RECHECK", "SCAN_INTERVAL", "QueueIndex"]

#: On a network filesystem, the least time (seconds) between two re-reads of a
#: changed ``queue/``: the bound on seeing another host's job, beside the attribute cache.
SCAN_INTERVAL: Final = 0.5
#: Where inotify sees everything, ``queue/`` is still re-read this often (seconds) if
#: it changed: a safety net that costs nothing measurable.
EXACT_RESCAN: Final = 30.0
#: Locks held by others are re-judged (to break a dead worker's) at most this often...
HELD_RECHECK: Final = 0.1
#: ... and at most this many at a time, least recently judged first, so that a pickup's
#: cost stays flat with a thousand jobs in progress.
HELD_BATCH: Final = 8
#: A directory mtime this recent (seconds, by the filesystem's clock) proves nothing on
#: filesystems with coarse timestamps: two changes in one tick leave one mtime.
_MTIME_TRUST_AFTER: Final = 2.0
#: Where the pending list is trimmed of the names already passed.
_COMPACT_AT: Final = 4096

_ACTIVE: Final = "active"  # the place of active/'s watch (a queue place is None or a digit)
_ARRIVED: Final = IN_CREATE | IN_MOVED_TO
_NOWHERE: Final = "-"  # the place of a watch descriptor that is not ours (any more)

_fork_generation = 0
#: Every index, whose guard a forked child makes anew: a thread of the parent may have
#: held it at the fork, and nothing in the child would ever release it.
_indexes: weakref.WeakSet[QueueIndex] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation  # noqa: PLW0603 (one counter per process, bumped by fork)
    _fork_generation += 1
    for index in list(_indexes):
        index.guard = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class QueueIndex:
    """The waiting, held and taken jobs of one queue, as this process knows them.

    Safe to share between threads (those of one queue object): every method runs under
    :attr:`guard`. Without it a thread trimming the pending list made another's
    :meth:`head` index past its end, and one marking a job held changed the dict that
    another's :meth:`held_due` was walking.
    """

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        #: Held by each method; re-entrant, as applying an event calls :meth:`held`.
        self.guard = threading.RLock()
        _indexes.add(self)
        self._generation = _fork_generation
        #: The waiting names of the last re-read of queue/, packed.
        self._listing = Listing()
        #: The names that arrived since (sorted when ordered), and which of them wait.
        self._pending: list[str] = []
        self._pos = 0
        self._waiting: set[str] = set()
        self._held: dict[str, float] = {}
        #: Held names whose lock (another host's, judged alive) cannot be stale before
        #: this time, in the filesystem's clock: not judged again until then.
        self._not_before: dict[str, float] = {}
        #: True while inotify watches active/: a lock made on this host is then seen.
        self._sees_local_locks = False
        self._taken: set[str] = set()
        self._fanout: dict[str, str] = {}
        #: Waiting jobs a pickup's gate said no to (see :meth:`park`), for this pass.
        self._parked: set[str] = set()
        self._notifier: Notifier | None = None
        self._notifier_tried = False
        self._places: dict[int, str | None] = {}
        self._watching = False
        self._exact = False
        self._dirty = True
        self._scanned_at = 0.0
        self._scan_cost = 0.0
        self._mtimes: tuple[int, int] = (0, 0)
        self._mtimes_trusted = False
        self._next_recheck = 0.0
        #: How many full re-reads of queue/ this index has made (for tests and benches).
        self.scans = 0

    # -- what the picker asks ---------------------------------------------------------

    @property
    def exact(self) -> bool:
        """True while inotify reports every change to the queue (a local filesystem)."""
        with self.guard:
            return self._exact and not self._dirty

    def refresh(self) -> None:
        """Bring the index up to date: read the events queued, re-read if needed."""
        with self.guard:
            if self._generation != _fork_generation:
                self._forget_the_parents()
            notifier = self._notifier
            if notifier is not None and not self._dirty:
                self._apply_all(notifier.events())
            if self._dirty:
                self._scan()
                return
            interval = EXACT_RESCAN if self._exact else max(SCAN_INTERVAL, 10 * self._scan_cost)
            if time.monotonic() - self._scanned_at >= interval and self._changed():
                self._scan()

    def begin_pass(self) -> tuple[QueueEntry | None, list[QueueEntry]]:
        """A pickup's first look, under one hold of the guard: :meth:`refresh`,
        :meth:`unpark`, then the :meth:`head` and the held jobs :meth:`held_due`
        before it (the calls skipped where there is nothing parked or held: asked
        once a job taken)."""
        with self.guard:
            self.refresh()
            if self._parked:
                self.unpark()
            entry = self.head()
            return entry, self.held_due(entry) if self._held else []

    def head(self) -> QueueEntry | None:
        """The first waiting job, or None."""
        with self.guard:
            listed = self._listing.current()
            # (No call where nothing has arrived since the last re-read: a deep drain.)
            arrived = self._first_arrived() if self._pending else None
            if arrived is None or (
                listed is not None and (not self.config.ordered or listed < arrived)
            ):
                name = listed
            else:
                name = arrived
            if name is None:
                return None
            return QueueEntry(name, self._fanout.get(name) if self._fanout else None)

    def _first_arrived(self) -> str | None:
        """The first waiting name of those that arrived since the last re-read."""
        pending, waiting = self._pending, self._waiting
        pos = self._pos
        if pos > _COMPACT_AT and pos * 2 > len(pending):
            del pending[:pos]  # Trim the names passed (memory, at a million jobs).
            pos = 0
        while pos < len(pending):
            name = pending[pos]
            if name in waiting:
                self._pos = pos
                return name
            pos += 1
        self._pos = pos
        return None

    def _is_waiting(self, name: str) -> bool:
        return name in self._waiting or self._listing.has(name)

    def _not_waiting(self, name: str) -> None:
        if name in self._waiting:
            self._waiting.discard(name)
        else:
            self._listing.drop(name)

    def held_due(self, before: QueueEntry | None) -> list[QueueEntry]:
        """A few jobs held by others whose locks are due to be judged again.

        In an ordered queue only those that come before ``before`` (the first waiting
        job; None: all): a dead worker's job, taken back, keeps its place in the order.
        """
        with self.guard:
            held = self._held
            now = time.monotonic()
            if not held or now < self._next_recheck:
                return []
            self._next_recheck = now + HELD_RECHECK
            limit = before.name if before is not None and self.config.ordered else None
            not_before = self._not_before
            fs_now: float | None = None
            due: list[QueueEntry] = []
            # The dict is in the order of the last judgement, oldest first (see held()).
            for name, when in held.items():
                if now - when < HELD_RECHECK or len(due) == HELD_BATCH:
                    break
                if limit is not None and name >= limit:
                    continue
                if name in not_before:
                    if fs_now is None:
                        fs_now = filesystem_now(self.config)
                    if fs_now < not_before[name]:
                        continue  # Cannot be stale yet: judging it would cost calls.
                due.append(QueueEntry(name, self._fanout.get(name)))
            return due

    def lock_unseen_here(self, name: str) -> bool:
        """True if a lock found at ``active/NAME`` cannot have been made on this host,
        so that its owner's death could not be seen from here either.

        So only on a network filesystem while inotify watches ``active/`` (a lock made
        on this host is then seen arriving), and only for a job this index holds as
        waiting: no lock was listed for it at the last re-read, which came after the
        watch began, and none has arrived since (the events queued are read first).
        A lock of this host made through another mount of the same export is not seen
        either: see docs/scaling.md.
        """
        with self.guard:
            notifier = self._notifier
            if notifier is None or self._exact or not self._sees_local_locks or self._dirty:
                return False
            for event in notifier.events():
                self._apply(event)
            return not self._dirty and self._is_waiting(name)

    def taken(self, name: str) -> None:
        """We locked job ``name``."""
        with self.guard:
            if name in self._waiting:  # _not_waiting, without its call (once a job)
                self._waiting.discard(name)
            else:
                self._listing.drop(name)
            self._held.pop(name, None)
            self._not_before.pop(name, None)
            self._taken.add(name)

    def held(self, name: str, stale_not_before: float = 0.0) -> None:
        """Another worker holds job ``name`` (judged alive just now).

        ``stale_not_before``: the lock judged is another host's, which can go stale only
        by age, not before this time (the filesystem's clock; see
        :func:`dirqueue._lock.stale_not_before`): it is not judged again until then. On
        a network filesystem each judgement is an lstat, an open and a read of the lock,
        and a few such a pickup were most of a racing consumer's calls. Only while
        inotify watches ``active/``: the lock may be replaced meanwhile (the job given
        back and taken again), and a lock made on this host, whose owner's death is seen
        at once, must be judged as soon as it comes (see :meth:`_lock_event`); another
        host's new lock is newer, so no sooner stale.
        """
        with self.guard:
            self._not_waiting(name)
            # Moved to the end: the dict stays in the order of the last judgement.
            self._held.pop(name, None)
            self._held[name] = time.monotonic()
            if stale_not_before and self._sees_local_locks:
                self._not_before[name] = stale_not_before
            else:
                self._not_before.pop(name, None)

    def park(self, name: str) -> None:
        """Job ``name`` may not be taken now (its group is full, say): pass over it for
        the rest of this pass; :meth:`unpark` makes it waiting again, in its place."""
        with self.guard:
            if name in self._taken:
                self._taken.discard(name)
            elif name in self._held:
                del self._held[name]
                self._not_before.pop(name, None)
            else:
                self._not_waiting(name)
            self._parked.add(name)

    def unpark(self) -> None:
        """Make the jobs parked in the last pass waiting again (a new pass begins)."""
        with self.guard:
            if not self._parked:
                return
            # In name order: inserted each at its place, so the queue's order holds.
            for name in sorted(self._parked):
                if name not in self._held and not self._is_waiting(name):
                    self._add_waiting(name)
            self._parked.clear()

    def gone(self, name: str) -> None:
        """Job ``name`` has left the queue."""
        with self.guard:
            self._forget(name)

    def changed_here(self) -> None:
        """This process added jobs to queue/: without inotify, look again."""
        with self.guard:
            if self._notifier is None:
                self._dirty = True

    def notifier(self) -> Notifier | None:
        """The inotify instance that wakes a waiting dequeuer, if there is one."""
        with self.guard:
            if self._generation != _fork_generation:
                self._forget_the_parents()
            if not self._notifier_tried:
                self._scan()  # Opens it (once: where inotify fails, polls must stay cheap).
            return self._notifier

    # -- events -----------------------------------------------------------------------

    def _apply_all(self, events: list[Event]) -> None:
        """Apply ``events``, oldest first.

        Most are this process's own, three a job taken and finished: its lock arriving
        in active/ (the name is taken already), its control file leaving queue/, its
        lock leaving active/ (the name forgotten by then). Those are settled here, each
        exactly as :meth:`_apply` would settle it, without its calls; any other event
        (and any of these in another state) goes through :meth:`_apply`. Nothing is
        skipped unread: an event of another process on the same name is applied in its
        order, as before.
        """
        places, taken, held = self._places, self._taken, self._held
        parked = self._parked
        for event in events:
            wd, mask, name = event
            place = places.get(wd, _NOWHERE)
            if place == _ACTIVE:
                if mask == IN_CREATE:
                    if name in taken and name not in parked and name not in self._not_before:
                        continue  # A lock of ours (or one made over it): nothing changes.
                elif mask == IN_DELETE and name not in held and name not in taken:
                    continue  # No lock of a job we know as held or taken: nothing changes.
            elif mask == IN_DELETE and place != _NOWHERE and name in taken:
                # Our job's control file removed (finished): what _forget does for it.
                parked.discard(name)
                taken.discard(name)
                if self._fanout:
                    self._fanout.pop(name, None)
                continue
            self._apply(event)

    def _apply(self, event: Event) -> None:
        wd, mask, name = event
        if mask & IN_Q_OVERFLOW:
            self._dirty = True  # Events were lost.
            self._not_before.clear()  # A lock made here among them: judge them all.
            return
        if mask & LOST_WATCH:
            # A watched directory was removed or replaced: watch (and read) it anew.
            self._places.pop(wd, None)
            self._watching = False
            self._dirty = True
            self._not_before.clear()
            return
        place = self._places.get(wd, _NOWHERE)
        if place == _NOWHERE:
            return
        if mask & IN_ISDIR and not match_job_name(name):
            if place is None and name in Layout.QUEUE_SUBDIRS:
                # A fan-out directory came or went: watch it too.
                self._watching = False
                self._dirty = True
            return
        # A name that is not a job's is never waiting, held or taken: only one that
        # arrives in queue/ must be checked.
        if place == _ACTIVE:
            self._lock_event(name, arrived=bool(mask & _ARRIVED))
        elif mask & _ARRIVED:
            if (
                name not in self._held
                and name not in self._taken
                and match_job_name(name)
                and not self._is_waiting(name)
            ):
                if place is not None:
                    self._fanout[name] = place
                self._add_waiting(name)
        else:
            self._forget(name)

    def _lock_event(self, name: str, *, arrived: bool) -> None:
        """A lock appeared in (or left) active/."""
        if arrived:
            # A new lock, made on this host: whatever we knew of the one before says
            # nothing of it (its owner's death is seen at once; judge it soon).
            self._not_before.pop(name, None)
            if name in self._parked or (
                name not in self._taken and name not in self._held and self._is_waiting(name)
            ):
                self._parked.discard(name)
                self.held(name)
        elif name in self._held or name in self._taken:
            # A lock removed: the job given back, or a stale lock broken.
            self._held.pop(name, None)
            self._not_before.pop(name, None)
            self._taken.discard(name)
            self._add_waiting(name)

    def _add_waiting(self, name: str) -> None:
        self._waiting.add(name)
        pending, pos = self._pending, self._pos
        if self.config.ordered:
            # Never before the head: names passed are done with.
            bisect.insort(pending, name, lo=pos)
        else:
            pending.insert(random.randint(pos, len(pending)), name)

    def _forget(self, name: str) -> None:
        self._parked.discard(name)
        # A name is in at most one of taken, held and waiting: the first two are small
        # sets, and the listing is searched only when the name is in neither.
        if name in self._taken:
            self._taken.discard(name)
        elif name in self._held:
            del self._held[name]
            self._not_before.pop(name, None)
        else:
            self._not_waiting(name)
        if self._fanout:
            self._fanout.pop(name, None)

    # -- re-reading the queue ---------------------------------------------------------

    def _changed(self) -> bool:
        """Whether queue/ or active/ may have changed since the last re-read."""
        return not self._mtimes_trusted or self._stat_mtimes() != self._mtimes

    def _stat_mtimes(self) -> tuple[int, int]:
        layout = self.config.layout
        return (_mtime_ns(layout.queue_dir), _mtime_ns(layout.active_dir))

    def _scan(self) -> None:
        """Re-read queue/ and active/ (watching them first, so nothing is missed)."""
        started = time.monotonic()
        if self._dirty:
            # The events queued are dropped unread (see _watch): a lock made here among
            # them must not go unjudged for the times kept of the locks before.
            self._not_before.clear()
        self._watch()
        mtimes = self._stat_mtimes()
        locked = _locked_names(self.config.layout)
        self._listing = Listing()  # The old one's memory back before the new is made.
        listing, locked_entries, fanout = scan_packed(
            self.config.layout, ordered=self.config.ordered, locked=locked
        )
        old_held, old_taken = self._held, self._taken
        held: dict[str, float] = {}
        taken: set[str] = set()
        for name, _ in sorted(locked_entries):
            if name in old_taken:
                taken.add(name)
            else:
                # Judged afresh soon if new to us: its owner may be dead.
                held[name] = old_held.get(name, 0.0)
        self._listing = listing
        self._pending, self._pos = [], 0
        self._waiting = set()
        self._parked.clear()  # Those still there are waiting again, in their place.
        # Oldest judgement first (a stable sort: in queue order among equals).
        held = dict(sorted(held.items(), key=lambda item: item[1]))
        self._held, self._taken, self._fanout = held, taken, fanout
        # Kept for the names still locked: a lock replaced since was either made here
        # (an event said so) or by another host (newer, so no sooner stale).
        old_not_before = self._not_before
        self._not_before = {
            name: until for name, until in old_not_before.items() if name in held
        } if self._sees_local_locks else {}
        self._mtimes = mtimes
        newest = max(mtimes) / 1e9
        self._mtimes_trusted = filesystem_now(self.config) - newest > _MTIME_TRUST_AFTER
        self._dirty = False
        self._scanned_at = time.monotonic()
        self._scan_cost = self._scanned_at - started
        self.scans += 1

    def _watch(self) -> None:
        """Set up the inotify watches, once (or again after one was lost), and drop
        the events queued before the re-read that follows, which covers them."""
        layout = self.config.layout
        if not self._notifier_tried:
            self._notifier_tried = True
            self._notifier = open_notifier()
        notifier = self._notifier
        if notifier is None:
            self._exact = self._sees_local_locks = False
            return
        if not self._watching:
            places: list[tuple[str, str | None]] = [
                (layout.queue_dir, None),
                (layout.active_dir, _ACTIVE),
            ]
            places += [(os.path.join(layout.queue_dir, d), d) for d in Layout.QUEUE_SUBDIRS]
            watched = 0
            self._sees_local_locks = False
            for path, place in places:
                wd = notifier.watch(path)
                if wd >= 0:
                    self._places[wd] = place
                    watched += place is None or place == _ACTIVE
                    if place == _ACTIVE:
                        self._sees_local_locks = True
            self._watching = True
            self._exact = watched == 2 and _fs.is_local_filesystem(layout.queue_dir)
        for _ in notifier.events():
            pass

    def _forget_the_parents(self) -> None:
        """After fork(): the inherited inotify descriptor shares the parent's events
        (closing our copy leaves the parent's alone), and the jobs taken are its."""
        self.close()
        self._taken.clear()
        self._generation = _fork_generation

    def close(self) -> None:
        """Release the inotify descriptor; the next pickup re-reads the queue."""
        with self.guard:
            if self._notifier is not None:
                self._notifier.close()
            self._notifier, self._places = None, {}
            self._notifier_tried = self._watching = self._sees_local_locks = False
            self._not_before.clear()
            self._dirty = True


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _locked_names(layout: Layout) -> set[str]:
    """The job names that have a lock in active/."""
    try:
        fd = _fs.open_dir_nofollow(layout.dir, (Layout.ACTIVE,))
    except FileNotFoundError:
        return set()
    try:
        return {name for name in os.listdir(fd) if match_job_name(name)}
    finally:
        _fs.close_dir(fd)
