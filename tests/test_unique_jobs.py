"""Unique jobs: an enqueue with a key enqueues nothing while a job with that key is
waiting, deferred or running, and the key is free again once the job has ended,
however it ends (finished, failed, cancelled, or its finisher killed)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from dirqueue import DirQueue, QueueIOError, Worker
from dirqueue import _keys as _keys_module
from dirqueue._keys import KEY_META, KeyBusyError
from dirqueue._layout import Layout
from dirqueue._lock import BREAK_TOKEN_STALE
from dirqueue._place import place_of

pytestmark = pytest.mark.timeout(120)

_ctx = multiprocessing.get_context("fork")


def _keys(q: DirQueue) -> list[str]:
    path = Path(q.dir) / "keys"
    return sorted(os.listdir(path)) if path.exists() else []


def test_a_second_enqueue_returns_the_first_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="thumb:a.jpg")
    again = q.enqueue_string("b", unique_key="thumb:a.jpg")
    other = q.enqueue_string("c", unique_key="thumb:b.jpg")
    assert first.existing is False  # type: ignore[attr-defined]
    assert again == first
    assert again.existing is True  # type: ignore[attr-defined]
    assert other != first
    assert len(list(q.jobs())) == 2
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == first
    # Held while the job runs, too.
    assert q.enqueue_string("d", unique_key="thumb:a.jpg") == first
    job.finish()
    fresh = q.enqueue_string("e", unique_key="thumb:a.jpg")
    assert fresh != first
    assert fresh.existing is False  # type: ignore[attr-defined]
    assert q.enqueue_string("f", unique_key="thumb:a.jpg", delay=60) == fresh


def test_a_deferred_unique_job_holds_its_key_and_cancel_frees_it(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    later = q.enqueue_string("a", unique_key="k", delay=3600)
    assert q.enqueue_string("b", unique_key="k") == later
    q.cancel(later)
    assert _keys(q) == []
    assert q.enqueue_string("c", unique_key="k") != later


def test_a_failed_unique_job_frees_its_key(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a", unique_key="k")

    def boom(job: object) -> None:
        raise RuntimeError("no")

    Worker(q, boom, max_attempts=1).run_once()
    assert os.path.isdir(q.layout.failed_job_dir(jobid))
    assert _keys(q) == []
    assert q.enqueue_string("b", unique_key="k") != jobid


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(ValueError, match="unique_key must be a non-empty str"):
        q.enqueue_string("a", unique_key="")
    assert list(q.jobs()) == []


def _die_in_release(*_args: object) -> bool:
    os.kill(os.getpid(), signal.SIGKILL)
    return False


def _finish_and_die(directory: str) -> None:
    _keys_module.release = _die_in_release  # type: ignore[assignment]
    job = DirQueue(directory).pickup_queued_job()
    assert job is not None
    job.finish()


def test_a_finisher_killed_before_releasing_leaves_no_stuck_key(tmp_path: Path) -> None:
    # The enqueuer (this process) lives on: the key's owner line cannot free it. The
    # seal set when the job went in does: a sealed key whose job is gone is stale.
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a", unique_key="k")
    child = _ctx.Process(target=_finish_and_die, args=(q.dir,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert place_of(q.config, jobid) is None
    assert len(_keys(q)) == 1  # Left behind...
    fresh = q.enqueue_string("b", unique_key="k")
    assert fresh != jobid  # ... and broken by the next enqueue at once.
    assert fresh.existing is False  # type: ignore[attr-defined]


def _claim_and_die(directory: str) -> None:
    """Enqueue with a key, and be killed right after the key is linked: before the
    job's own link."""
    real_claim = _keys_module.claim

    def claim_then_die(*args: Any, **kwargs: Any) -> str | None:
        result = real_claim(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    _keys_module.claim = claim_then_die  # type: ignore[assignment]
    DirQueue(directory).enqueue_string("doomed", unique_key="k")


def test_an_enqueuer_killed_between_its_two_links_leaves_no_stuck_key(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    child = _ctx.Process(target=_claim_and_die, args=(q.dir,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert len(_keys(q)) == 1
    assert list(q.jobs()) == []
    # A fresh key (not sealed), but its owner is provably dead: broken at once.
    jobid = q.enqueue_string("b", unique_key="k")
    assert jobid.existing is False  # type: ignore[attr-defined]
    assert [job.jobid for job in q.jobs()] == [jobid]


def _racer(directory: str, n: int, go: object, out: object) -> None:
    q = DirQueue(directory)
    go.wait(30)  # type: ignore[attr-defined]
    seen: dict[str, set[str]] = {}
    for i in range(125):
        key = f"key{(i * 7 + n) % 100}"
        jobid = q.enqueue_string(f"{n}:{i}", unique_key=key)
        seen.setdefault(key, set()).add(str(jobid))
    out.put(seen)  # type: ignore[attr-defined]


def test_eight_processes_racing_a_thousand_enqueues_of_a_hundred_keys(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    go = _ctx.Event()
    out: multiprocessing.Queue[dict[str, set[str]]] = _ctx.Queue()
    procs = [_ctx.Process(target=_racer, args=(q.dir, n, go, out)) for n in range(8)]
    try:
        for p in procs:
            p.start()
        go.set()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    jobs = list(q.jobs())
    by_key: dict[str, list[str]] = {}
    for job in jobs:
        by_key.setdefault(job.metadata[KEY_META], []).append(job.jobid)
    assert len(jobs) == 100  # Exactly one job per key...
    assert all(len(ids) == 1 for ids in by_key.values())
    merged: dict[str, set[str]] = {}
    for seen in results:
        for key, ids in seen.items():
            merged.setdefault(key, set()).update(ids)
    # ... and every enqueue of a key was told that one job's id.
    assert all(len(ids) == 1 for ids in merged.values())
    assert {next(iter(ids)) for ids in merged.values()} == {job.jobid for job in jobs}


def _checking_worker(directory: str, stop_at: float, out: object) -> None:
    """Run jobs; on each, check that no other job with its key is in the queue (the
    key is held while the job runs, so none may be)."""
    q = DirQueue(directory)
    violations = 0
    done = 0
    while time.time() < stop_at:
        job = q.pickup_queued_job()
        if job is None:
            time.sleep(0.002)
            continue
        key = job.metadata[KEY_META]
        others = [
            other.jobid
            for other in q.jobs()
            if other.jobid != job.jobid and other.metadata.get(KEY_META) == key
        ]
        violations += bool(others)
        job.finish()
        done += 1
    out.put((violations, done))  # type: ignore[attr-defined]


def _killable_racer(directory: str, n: int) -> None:
    q = DirQueue(directory)
    i = 0
    try:
        while True:
            # A racer killed while it breaks a stale key leaves the key's breaker token
            # (cleared after 30 s): enqueues of that key say so meanwhile.
            with contextlib.suppress(KeyBusyError):
                q.enqueue_string(f"{n}:{i}", unique_key=f"key{(i * 7 + n) % 100}")
            i += 1
    except BaseException:
        # Only SIGKILL may end a racer: anything else is a failure, shown by the test.
        with open(os.path.join(directory, "..", f"racer{n}.error"), "w") as fh:
            fh.write(traceback.format_exc())
        raise


def _enqueue_past_a_dead_breaker(q: DirQueue, key: str) -> str:
    """Enqueue a job with ``key``. A racer SIGKILLed while it broke the key's stale
    claim leaves the key's breaker token, which holds the key for BREAK_TOKEN_STALE
    seconds (so the error says): age the token past that, as the wait would, and the
    key must then be free."""
    busy: str | None = None
    try:
        return q.enqueue_string("check", unique_key=key)
    except KeyBusyError as err:
        busy = err.key
    token = Path(q.config.layout.breaker_token_path(Layout.key_token_name(busy)))
    assert token.exists()
    old = time.time() - BREAK_TOKEN_STALE - 5
    os.utime(token, (old, old))
    return q.enqueue_string("check", unique_key=key)


@pytest.mark.timeout(180)
def test_racing_enqueuers_and_workers_with_sigkills_leave_one_job_per_key(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    out: multiprocessing.Queue[tuple[int, int]] = _ctx.Queue()
    stop_at = time.time() + 6
    workers = [_ctx.Process(target=_checking_worker, args=(q.dir, stop_at, out)) for _ in range(2)]
    racers: list[multiprocessing.process.BaseProcess] = []
    try:
        for w in workers:
            w.start()
        for n in range(6):
            racers.append(_ctx.Process(target=_killable_racer, args=(q.dir, n)))
            racers[-1].start()
        # SIGKILL enqueuers at arbitrary points of their enqueues, and start new ones.
        n = 6
        while time.time() < stop_at - 1:
            time.sleep(0.15)
            victim = racers.pop(0)
            victim.kill()
            victim.join()
            racers.append(_ctx.Process(target=_killable_racer, args=(q.dir, n)))
            racers[-1].start()
            n += 1
        for r in racers:
            r.kill()
            r.join()
        results = [out.get(timeout=60) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        for p in [*workers, *racers]:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.read_text() for p in tmp_path.glob("racer*.error")] == []
    assert sum(v for v, _ in results) == 0
    assert sum(d for _, d in results) > 50
    # At most one job per key is left, and no key is stuck: each key's next enqueue
    # either names a job that is there or enqueues one.
    left: dict[str, int] = {}
    for job in q.jobs():
        left[job.metadata[KEY_META]] = left.get(job.metadata[KEY_META], 0) + 1
    assert all(count == 1 for count in left.values())
    for k in range(100):
        jobid = _enqueue_past_a_dead_breaker(q, f"key{k}")
        assert place_of(q.config, jobid) is not None
    while (job := q.pickup_queued_job()) is not None:
        job.finish()
    assert _keys(q) == []


def test_repair_removes_a_key_whose_finisher_died(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("a", unique_key="k")
    held = q.enqueue_string("b", unique_key="other")
    child = _ctx.Process(target=_finish_and_die, args=(q.dir,))
    child.start()
    child.join(30)
    assert len(_keys(q)) == 2
    report = q.repair(min_age=0)
    assert [f.kind for f in report.findings] == ["stale-key"]
    assert all(f.fixed for f in report.findings)
    assert len(_keys(q)) == 1  # The key whose job is still queued stays.
    assert q.enqueue_string("c", unique_key="other") == held


@pytest.mark.timeout(60)
def test_a_dead_breakers_token_holds_a_stale_key_until_the_token_rule_clears_it(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("a", unique_key="k")
    child = _ctx.Process(target=_finish_and_die, args=(q.dir,))
    child.start()
    child.join(30)
    assert place_of(q.config, jobid) is None  # A stale key is left...
    token = Path(q.layout.breaker_token_path(Layout.key_token_name(Layout.key_name("k"))))
    token.touch()  # ... and the token of a breaker that died breaking it.
    with pytest.raises(KeyBusyError, match="breaker token"):
        q.enqueue_string("b", unique_key="k")
    assert list(q.jobs()) == []
    old = time.time() - BREAK_TOKEN_STALE - 5
    os.utime(token, (old, old))  # Past the token rule: the next breaker clears it.
    fresh = q.enqueue_string("c", unique_key="k")
    assert fresh.existing is False  # type: ignore[attr-defined]
    assert not token.exists()


def test_a_symlink_planted_in_place_of_keys_is_never_followed(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.create()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "q" / "keys").symlink_to(elsewhere)
    with pytest.raises(QueueIOError, match=r"symlink|Too many levels"):
        q.enqueue_string("a", unique_key="k")
    assert list(elsewhere.iterdir()) == []
    assert list(q.jobs()) == []  # Nothing half-enqueued either.
    assert q.enqueue_string("b") is not None  # Plain enqueues are not concerned.


def test_a_release_never_removes_a_newer_key_that_took_the_old_ones_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finisher reads its key, stalls; meanwhile the key is broken as stale and a new
    enqueue links its own, whose inode may be the old one's (reused at once) and whose
    mtime is every sealed key's: the finisher must leave it."""
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="k")
    name = Layout.key_name("k")
    as_read = _keys_module.holder_of(q.config, name)  # What the finisher read...
    assert as_read is not None
    job = q.pickup_queued_job()
    assert job is not None
    with monkeypatch.context() as stalled:
        stalled.setattr(_keys_module, "release", lambda *args: False)
        job.finish()  # ... before it stalled.
    second = q.enqueue_string("b", unique_key="k")  # Breaks the stale key, links its own.
    newer = _keys_module.holder_of(q.config, name)
    assert newer is not None
    assert newer.jobid == second
    # The finisher's view: its own key's contents at the new key's inode and times.
    view = iter([_keys_module.KeyHolder(newer.stat, as_read.raw)])
    real = _keys_module.holder_of
    monkeypatch.setattr(
        _keys_module, "holder_of", lambda config, key: next(view, None) or real(config, key)
    )
    assert _keys_module.release(q.config, name, first) is False
    monkeypatch.undo()
    assert q.enqueue_string("c", unique_key="k") == second  # Still held by its job.


def test_a_job_looked_up_before_its_link_is_not_judged_gone_by_a_cached_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on the three-host NFS bed: an enqueue that met a key between its two links
    looked its job up (not there yet), and the NFS client kept that miss (a negative
    lookup cache: 3 s there, ``lookupcache=all`` on a kernel client). Once the job was
    in and the key sealed, the next enqueue on that host still missed the job, judged
    the sealed key stale, broke it and enqueued a second job with the key.

    The cache is played by a ``place_of`` that keeps every miss; the first enqueue is
    held between its two links by a gate in its key claim."""
    q = DirQueue(tmp_path / "q")
    missed: set[str] = set()
    real_place_of = _keys_module.place_of

    def caching_place_of(config: Any, jobid: str) -> Any:
        if jobid in missed:
            return None  # A miss kept by the client's lookup cache.
        found = real_place_of(config, jobid)
        if found is None:
            missed.add(jobid)
        return found

    monkeypatch.setattr(_keys_module, "place_of", caching_place_of)
    claimed, go = threading.Event(), threading.Event()
    real_claim = _keys_module.KeyGate.claim

    def gated_claim(gate: Any, jobid: str) -> str | None:
        kept = real_claim(gate, jobid)
        claimed.set()
        assert go.wait(30)
        return kept

    monkeypatch.setattr(_keys_module.KeyGate, "claim", gated_claim)
    first: list[str] = []
    enqueuer = threading.Thread(target=lambda: first.append(q.enqueue_string("a", unique_key="k")))
    enqueuer.start()
    try:
        assert claimed.wait(30)
        monkeypatch.setattr(_keys_module.KeyGate, "claim", real_claim)
        # Between the links: the key is held (its enqueuer lives), job or no job.
        between = q.enqueue_string("b", unique_key="k")
    finally:
        go.set()
        enqueuer.join(30)
    assert between == first[0]
    again = q.enqueue_string("c", unique_key="k")
    assert again == first[0]
    assert again.existing is True  # type: ignore[attr-defined]
    assert len(list(q.jobs())) == 1


def test_a_queued_job_missed_by_a_cached_lookup_keeps_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way an NFS client's kept miss hides a job (see the dependencies'
    twin test): a host that lost a race to promote a unique dependant (or a delayed
    job) into queue/ keeps a miss for queue/NAME. The sealed key of a job found
    nowhere by name is stale; it is now confirmed by a listing first."""
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="k")
    real_place_of = _keys_module.place_of
    monkeypatch.setattr(
        _keys_module, "place_of", lambda config, j: None if j == first else real_place_of(config, j)
    )
    again = q.enqueue_string("b", unique_key="k")
    assert again == first
    assert again.existing is True  # type: ignore[attr-defined]
    assert [job.jobid for job in q.jobs()] == [first]
