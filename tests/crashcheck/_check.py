"""The checks: each crash state built in a scratch directory and judged by the engine.

For each state, in order:

1. Before any repair, every job a worker could reach (a control file in ``queue/``,
   ``deferred/`` or ``waiting/``) has its whole data: a worker started without a repair
   must not read half a job.
2. ``repair(min_age=0)`` (``dq fsck --repair``) runs, and ``fsck`` then finds the queue
   consistent.
3. No unique key names a job that is not there (unless kept by ``unique_ttl``), and
   every answer in ``results/`` reads whole.
4. The queue is drained (pickups, promotions of due deferred jobs and of dependants
   whose parents ended, each job's data compared with what was submitted, then
   finished); no dependant is left waiting (its parents are gone). With what is left
   in ``deferred/``, ``waiting/`` and ``failed/``, each job is counted: none twice;
   none lost that existed before the operation; after the operation returned, none
   lost that it acknowledged (a durable enqueue), none back that it finished, and its
   answers readable.
5. For the groups' layer and ``queue/dq/``: a job enqueued for dirqueue only is never
   in the plain ``queue/`` (nor its fan-out), where a Perl worker would take it, before
   the repair or after it; after the repair, every slot (``slots/GROUP.K``) is a name
   of a lock still in ``active/``, or the stale-lock rule calls it breakable (the next
   pickup of the group frees it); after the drain no job is left queued (a slot or
   token that blocks its group for good would leave one); a group's ``limits/GROUP``
   reads as the old file or the new one (none, after a clear), whole, and as the new
   one once the operation returned.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from dirqueue import DirQueue, _deps, _keys
from dirqueue._deferred import promote_due
from dirqueue._format import is_job_name
from dirqueue._results import read_result
from dirqueue.limits import _slots

from ._scenarios import Trace, make_queue
from ._states import MODELS, CrashState, FsImage, crash_states, image


@dataclass
class Violation:
    """A broken promise, and the crash that shows it."""

    trace: str
    model: str
    point: int
    kept: frozenset[int]
    problems: list[str]
    promised: bool

    def describe(self, events: list[tuple[object, ...]]) -> str:
        """The violation with its trace prefix, each event marked kept or lost."""
        lines = [f"[{self.trace}] model={self.model}, crash after {self.point} of "
                 f"{len(events)} events:"]
        lines += [f"    ! {p}" for p in self.problems]
        for i, event in enumerate(events[: self.point]):
            shown = event if event[0] != "write" else (*event[:3], f"{len(event[3])} bytes")  # type: ignore[misc]
            mark = "kept" if i in self.kept or event[0] in ("fsync", "fsyncdir", "syncfs") \
                else "LOST"
            lines.append(f"    {i:3} {mark:4} {shown}")
        return "\n".join(lines)


@dataclass
class Tally:
    """What a run saw."""

    traced: int = 0
    events: int = 0
    generated: int = 0
    checked: int = 0
    #: States where a lock that lost its contents was waited out (_wait_out_empty_locks).
    waited: int = 0
    violations: list[Violation] = field(default_factory=list)
    unpromised: list[Violation] = field(default_factory=list)


def _names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if is_job_name(n)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _plain_queued(q: DirQueue) -> list[str]:
    """The jobs in ``queue/`` and its fan-out: where a Perl worker looks."""
    queue_dir = os.path.join(q.dir, "queue")
    found = _names(queue_dir)
    if q.config.queue_fanout:
        for sub in os.listdir(queue_dir) if os.path.isdir(queue_dir) else []:
            if len(sub) == 1:
                found += _names(os.path.join(queue_dir, sub))
    return found


def _queued(q: DirQueue) -> list[str]:
    return _plain_queued(q) + _names(os.path.join(q.dir, "queue", "dq"))


def _perl_sees(q: DirQueue, trace: Trace, when: str) -> list[str]:
    return [f"dirqueue-only job {j} in the plain queue/ ({when}): Perl would take it"
            for j in _plain_queued(q) if j in trace.expect.dirqueue_only]


def _slots_held(q: DirQueue) -> list[str]:
    """Slots that are no active lock's second name and that the stale-lock rule
    would not break: they would hold their group's place for a job that is not
    running."""
    slots_dir = os.path.join(q.dir, "slots")
    try:
        names = os.listdir(slots_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    active = os.path.join(q.dir, "active")
    locks = set()
    for name in _names(active):
        st = os.lstat(os.path.join(active, name))
        locks.add((st.st_dev, st.st_ino))
    problems = []
    for group in sorted({n.rpartition(".")[0] for n in names if "." in n}):
        for holder in _slots.holders(q.config, group):
            if (holder.stat.st_dev, holder.stat.st_ino) in locks:
                continue
            if not holder.judgement.breakable:
                problems.append(
                    f"slot {group}.{holder.slot} held by no active job, not breakable "
                    f"({holder.judgement.verdict.value}: {holder.judgement.reason})")
    return problems


def _limits_read(q: DirQueue, trace: Trace, final: bool) -> list[str]:
    problems = []
    for group, (old, new) in trace.expect.limits.items():
        try:
            with open(os.path.join(q.layout.limits_dir, group), "rb") as fh:
                got: bytes | None = fh.read()
        except FileNotFoundError:
            got = None
        allowed = {new} if final else {old, new}
        if got not in allowed:
            what = "absent" if got is None else repr(got)
            problems.append(f"limits/{group} reads {what}, "
                            + ("not what the operation left" if final
                               else "neither the old nor the new"))
    return problems


def _visible(q: DirQueue) -> list[str]:
    return (_queued(q) + _names(os.path.join(q.dir, "deferred"))
            + _names(os.path.join(q.dir, "waiting")))


def _data_of(q: DirQueue, jobid: str) -> bytes | None:
    try:
        with open(q.layout.data_path(jobid), "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _whole_data(q: DirQueue, trace: Trace) -> list[str]:
    problems = []
    for jobid in _visible(q):
        want = trace.expect.data.get(jobid)
        if want is None:
            continue
        got = _data_of(q, jobid)
        if got != want:
            what = ("no data file" if got is None
                    else f"{len(got)} bytes, not its {len(want)}")
            problems.append(f"job {jobid} visible without its whole data ({what})")
    return problems


def _links(q: DirQueue, present: set[str]) -> list[str]:
    problems = []
    now = time.time()
    for name in _keys.list_keys(q.config):
        holder = _keys.holder_of(q.config, name)
        if holder is None:
            continue
        kept = holder.until is not None and holder.until > now
        if not kept and holder.jobid not in present:
            problems.append(f"key {name} names job {holder.jobid}, which is not there")
    for name in _names(os.path.join(q.dir, "results")):
        if read_result(q.config, name) is None:
            problems.append(f"answer results/{name} does not read whole")
    return problems


def _make_due(q: DirQueue) -> None:
    deferred = os.path.join(q.dir, "deferred")
    for name in _names(deferred):
        os.utime(os.path.join(deferred, name), (1_000_000_000, 1_000_000_000))


def _drain(q: DirQueue, trace: Trace) -> tuple[Counter[str], list[str]]:
    taken: Counter[str] = Counter()
    problems: list[str] = []
    for _ in range(100):
        job = q.pickup_queued_job()
        if job is None:
            # Every deferred job made due now, as time would: promotion drops a crashed
            # deferral's twin and brings the others back.
            _make_due(q)
            moved, _due = promote_due(q.config)
            settled = _deps.settle(q.config)
            if not moved and not settled:
                # Something still queued (a dependant just promoted): a queue object
                # of its own for the last look, as the drain's looks again in a
                # directory it scanned a moment ago only after an interval.
                if not _queued(q):
                    break
                q = make_queue(q.dir, trace.queue_options, trace.task_queue)
                job = q.pickup_queued_job()
                if job is None:
                    break
            else:
                continue
        taken[job.jobid] += 1
        want = trace.expect.data.get(job.jobid)
        if want is not None and job.get_data() != want:
            problems.append(f"job {job.jobid} picked up without its whole data")
        job.finish()
    return taken, problems


def check_state(trace: Trace, img: FsImage, final: bool, scratch: str) -> list[str]:
    """The broken promises of one crash state (empty: none)."""
    # A new name for each state: the engine keeps descriptors of a queue's directories
    # by path, and a reused path would lead a repair into the last state's.
    qdir = tempfile.mkdtemp(dir=scratch)
    try:
        img.materialise(qdir)
        q = make_queue(qdir, trace.queue_options, trace.task_queue)
        problems = _whole_data(q, trace) + _perl_sees(q, trace, "before repair")
        problems += _limits_read(q, trace, final)
        waited = _wait_out_empty_locks(q)
        try:
            q.repair(min_age=0)
            report = q.fsck(min_age=0)
        except Exception as err:  # any error is the finding
            return [*problems, f"repair failed: {err!r}"]
        if not report.ok:
            problems += [f"fsck after repair: {f.kind.value} {f.path}" for f in report.unfixed]
        present = set(_visible(q))
        problems += _links(q, present)
        problems += _perl_sees(q, trace, "after repair") + _slots_held(q)
        failed = _names(os.path.join(qdir, "failed"))
        try:
            taken, drained = _drain(make_queue(qdir, trace.queue_options, trace.task_queue),
                                    trace)
        except Exception as err:  # any error is the finding
            return [*problems, f"draining the recovered queue failed: {err!r}"]
        problems += drained
        problems += [f"job {j} still queued after the drain (its group blocked?)"
                     for j in _queued(q)]
        # Every parent is gone after the drain (finished): a dependant still waiting
        # waits for nothing.
        problems += [f"dependant {j} still waits, its parents gone"
                     for j in _names(os.path.join(qdir, "waiting"))]
        count = Counter(taken)
        count.update(_visible(q))
        count.update(failed)
        e = trace.expect
        problems += [f"job {j} is there {n} times" for j, n in count.items()
                     if n > 1 and (final or j not in e.moving)]
        problems += [f"job {j}, there before the operation, is lost"
                     for j in sorted(e.kept) if not count[j]]
        if final:
            problems += [f"job {j}, acknowledged durable, is lost"
                         for j in sorted(e.acked) if not count[j]]
            problems += [f"job {j}, whose finish returned, is back" for j in sorted(e.finished)
                         if count[j]]
            problems += [f"answer of job {j} is lost" for j in sorted(e.results)
                         if read_result(q.config, j) is None]
        return problems + ([WAITED] if waited and not problems else [])
    finally:
        shutil.rmtree(qdir, ignore_errors=True)


#: Not a problem: the mark of a state where a lock had lost its contents (see below).
WAITED = "waited out a lock that lost its contents"


def _wait_out_empty_locks(q: DirQueue) -> bool:
    """Age every lock in ``active/`` whose contents were lost past its lifetime.

    A pickup does not fsync its lock, so a power loss can leave one empty, naming no
    worker: the judge cannot prove it dead, and it holds its job until
    ``active_file_lifetime`` has passed (then any pickup or repair frees it). That is
    the documented rule, not a broken promise; the checker waits it out (by the
    lock's mtime) and checks the rest, and counts the states where it had to.
    """
    active = os.path.join(q.dir, "active")
    slots = os.path.join(q.dir, "slots")
    waited = False
    # A slot is a second name of a job's lock (slots/GROUP.K): it loses its contents
    # with the lock, and is waited out by the same rule, also where the lock's name in
    # active/ was lost and the slot's kept.
    paths = [os.path.join(active, n) for n in _names(active)]
    if os.path.isdir(slots):
        paths += [os.path.join(slots, n) for n in os.listdir(slots)]
    for path in paths:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            old = time.time() - 2 * q.config.active_file_lifetime - 300
            os.utime(path, (old, old))
            waited = True
    return waited


def states_of(trace: Trace, limit: int, rng: random.Random) -> Iterator[
        tuple[CrashState, FsImage, bool]]:
    """Each distinct crash state of ``trace`` (both models), once."""
    seen: set[tuple[str, bool]] = set()
    n = len(trace.events)
    for model in MODELS:
        for state in crash_states(trace.events, model, limit, rng):
            img = image(trace.start, trace.events, state.kept, trace.modes)
            final = state.point == n
            key = (img.key(), final)
            if key in seen:
                yield state, img, False  # counted as generated, not checked again
                continue
            seen.add(key)
            yield state, img, True


def _scratch_root() -> str | None:
    """Where states are built: $CRASHCHECK_SCRATCH, else tmpfs (/dev/shm) where there is
    one (thousands of small trees, no disk to wait for: the states are already chosen;
    only the traces need the real file system), else the temporary directory."""
    chosen = os.environ.get("CRASHCHECK_SCRATCH")
    if chosen:
        return chosen
    return _TMPFS if os.access(_TMPFS, os.W_OK) else None


#: mkdtemp makes a directory of its own (mode 0700) in it.
_TMPFS = "/dev/shm"  # noqa: S108


def check_trace(trace: Trace, tally: Tally, limit: int, rng: random.Random,
                max_states: int | None = None) -> None:
    """Generate and check the crash states of ``trace``, adding to ``tally``."""
    tally.traced += 1
    tally.events += len(trace.events)
    scratch = tempfile.mkdtemp(prefix="crashcheck.", dir=_scratch_root())
    try:
        checked = 0
        for state, img, new in states_of(trace, limit, rng):
            tally.generated += 1
            if not new:
                continue
            if max_states is not None and checked >= max_states:
                break
            checked += 1
            tally.checked += 1
            problems = check_state(trace, img, state.point == len(trace.events), scratch)
            if problems == [WAITED]:
                tally.waited += 1
            elif problems:
                v = Violation(trace.name, state.model, state.point, state.kept, problems,
                              trace.promised)
                (tally.violations if trace.promised else tally.unpromised).append(v)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
