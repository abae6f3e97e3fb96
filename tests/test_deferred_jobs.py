"""Jobs that wait for a time: delayed submissions and retries with back-off.

A deferred job sits in deferred/ until it is due; no dequeuer takes it early (the Perl
module's included, which never reads that directory); then any dirqueue process that
looks moves it back to queue/.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest

from _perl import PERL_DRAIN, run_perl
from dirqueue import DirQueue, list_jobs, queue_stats
from dirqueue._deferred import promote_due
from dirqueue._format import attempts_of, last_error_of
from durability_checks import assert_no_orphans, deferred_jobs

pytestmark = pytest.mark.timeout(60)


def _wait_for_job(q: DirQueue, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = q.pickup_queued_job()
        if job is not None:
            return job
        time.sleep(0.05)
    raise AssertionError("no job came")


def test_a_delayed_job_waits_until_it_is_due(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    later = q.enqueue_string("later", {"k": "v"}, delay=1.5)
    now = q.enqueue_string("now", priority=90)
    assert deferred_jobs(q) == {later}
    infos = {info.job.jobid: info for info in list_jobs(q)}
    assert infos[later].state == "deferred"
    assert infos[later].job.deferred_until == pytest.approx(time.time() + 1.5, abs=1)
    assert "due at" in infos[later].note
    assert queue_stats(q).deferred == 1
    first = q.pickup_queued_job()
    assert first is not None
    assert first.jobid == now  # The delayed job of better priority is not taken early.
    first.finish()
    assert q.pickup_queued_job() is None
    started = time.monotonic()
    job = _wait_for_job(q)
    assert job.jobid == later  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5
    assert job.get_data() == b"later"  # type: ignore[attr-defined]
    assert job.metadata == {"k": "v"}  # type: ignore[attr-defined]
    job.finish()  # type: ignore[attr-defined]
    assert_no_orphans(q)
    assert deferred_jobs(q) == set()


def test_not_before_takes_a_datetime_or_seconds(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    a = q.enqueue_string("a", not_before=soon)
    b = q.enqueue_many(["b"], not_before=time.time() + 3600)[0]
    due = {job.jobid: job.deferred_until for job in q.jobs()}
    assert due[a] == pytest.approx(soon.timestamp(), abs=1)
    assert due[b] == pytest.approx(time.time() + 3600, abs=2)
    assert q.pickup_queued_job() is None
    with pytest.raises(ValueError, match="delay must be"):
        q.enqueue_string("x", delay=-1)
    with pytest.raises(ValueError, match="not both"):
        q.enqueue_string("x", delay=1, not_before=1)


def test_a_perl_dequeuer_never_takes_a_deferred_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    deferred = q.enqueue_string("not yet", delay=3600, priority=1)
    ready = q.enqueue_string("ready")
    taken = run_perl(PERL_DRAIN, q.dir).split()
    assert taken == [ready]
    assert deferred_jobs(q) == {deferred}
    # Once due, it is back in queue/ for everyone, the Perl module included.
    os.utime(q.layout.deferred_path(deferred), (1, 1))
    assert promote_due(q.config) == (1, None)  # What any dirqueue pickup does.
    assert run_perl(PERL_DRAIN, q.dir).split() == [deferred]
    assert deferred_jobs(q) == set()
    assert os.listdir(q.layout.queue_dir) == []


def test_retry_later_counts_the_attempt_and_defers_the_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("flaky", {"n": "1"})
    job = q.pickup_queued_job()
    assert job is not None
    job.retry_later(1.0, error="database restarting")
    assert not job.is_active
    assert deferred_jobs(q) == {jobid}
    assert os.listdir(q.layout.active_dir) == []
    assert q.pickup_queued_job() is None  # Not before its back-off.
    assert q.repair(min_age=0).clean  # Its data is not an orphan.
    again = _wait_for_job(q)
    assert again.jobid == jobid  # type: ignore[attr-defined]
    control = again.control  # type: ignore[attr-defined]
    assert attempts_of(control) == 1
    assert last_error_of(control) == "database restarting"
    assert again.metadata == {"n": "1"}  # type: ignore[attr-defined]
    again.finish()  # type: ignore[attr-defined]
    assert_no_orphans(q)


def test_two_processes_promote_a_due_job_once(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("once", delay=0.2)
    time.sleep(0.3)
    a, b = DirQueue(q.dir), DirQueue(q.dir)
    got = [job for job in (a.pickup_queued_job(), b.pickup_queued_job()) if job is not None]
    assert [job.jobid for job in got] == [jobid]
    got[0].finish()
    assert_no_orphans(q)


PERL_FANOUT_DRAIN = PERL_DRAIN.replace("dir => $ARGV[0]", "dir => $ARGV[0], queue_fanout => 1")


def test_a_promoted_job_lands_where_a_perl_fanout_worker_looks(tmp_path: Path) -> None:
    # With fan-out the Perl module reads only queue/X/: a job promoted to the top of
    # queue/ would never be taken by a Perl worker.
    q = DirQueue(tmp_path / "q", queue_fanout=True)
    delayed = q.enqueue_string("delayed", delay=3600)
    q.enqueue_string("flaky")
    job = q.pickup_queued_job()
    assert job is not None
    retried = job.jobid
    job.retry_later(3600, error="later")
    assert deferred_jobs(q) == {delayed, retried}
    for jobid in (delayed, retried):
        os.utime(q.layout.deferred_path(jobid), (1, 1))
    assert promote_due(q.config) == (2, None)
    for jobid in (delayed, retried):
        [path] = [os.path.join(root, jobid) for root, _dirs, files in os.walk(q.layout.queue_dir)
                  if jobid in files]
        fanout = os.path.basename(os.path.dirname(path))
        assert fanout in "0123456789abcdef"
        assert len(fanout) == 1
        assert path == q.layout.queue_path(jobid, fanout)
    assert sorted(run_perl(PERL_FANOUT_DRAIN, q.dir).split()) == sorted([delayed, retried])
    assert deferred_jobs(q) == set()
    assert_no_orphans(q)


def test_an_idle_pickup_with_nothing_deferred_does_not_measure_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measuring the filesystem's clock writes, reads and removes a file in tmp/: over
    # NFS three or four calls to the server every CLOCK_RECHECK seconds for each idle
    # worker, though only a deferred job's due time needs that clock. No deferred job,
    # no measure (bench/nfs.py counted them in every idle poll).
    from dirqueue import _judge  # noqa: PLC0415 - patched here

    q = DirQueue(tmp_path / "q", create=True)
    assert q.pickup_queued_job() is None  # Lists the queue, measures once.
    measured: list[str] = []
    real = _judge._measure_offset
    monkeypatch.setattr(_judge, "_measure_offset",
                        lambda config: measured.append(config.dir) or real(config))
    # The last measure long past, the next promotion due: what a poll meets every 5 s.
    _judge._offsets[q.config.dir] = (0.0, time.monotonic() - 3600, time.time() - 3600)
    q._picker._next_promote = 0.0
    assert q.pickup_queued_job() is None
    assert measured == []
    # A deferred job, and the clock is needed (and measured) again.
    q.enqueue_string("later", delay=3600)
    q._picker._next_promote = 0.0
    assert q.pickup_queued_job() is None
    assert measured == [q.config.dir]
