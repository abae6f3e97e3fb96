"""A control file's bytes that dirqueue did not change stay as they were.

The Perl module writes metadata as whatever bytes it was given: Latin-1 from a script
without ``use utf8``, say. dirqueue reads such a value with U+FFFD in place of the
bytes that are not UTF-8; before, a worker that rewrote the control file (to count a
failed attempt) wrote that U+FFFD back, so ``city: Z\\xfcrich`` became
``city: Z\\xef\\xbf\\xbdrich`` for good, Perl readers included.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from _perl import needs_perl, run_perl
from dirqueue import DirQueue, FailedStore, Job, Worker
from dirqueue._format import ATTEMPTS_KEY, COUNTED_RUN_KEY, LAST_ERROR_KEY, attempts_of
from dirqueue._layout import Layout

pytestmark = pytest.mark.timeout(60)

LATIN1_LINE = b"city: Z\xfcrich\n"


def fail(job: Job) -> None:
    raise RuntimeError("boom")


def _plant_latin1(q: DirQueue) -> tuple[str, bytes]:
    """A job whose control file holds a Latin-1 metadata value; its id and bytes."""
    jobid = q.enqueue_string("data", {"city": "Zurich", "lang": "de"})
    path = q.layout.queue_path(jobid)
    raw = Path(path).read_bytes().replace(b"city: Zurich\n", LATIN1_LINE)
    Path(path).write_bytes(raw)
    return jobid, raw


def _kept(before: bytes, after: bytes) -> None:
    """Every line of ``before`` is in ``after`` byte for byte, in the same order; the
    lines added are the attempt count and the last error."""
    old = before.splitlines(keepends=True)
    new = after.splitlines(keepends=True)
    assert [line for line in new if line in old] == old
    added = [line.split(b":")[0].decode() for line in new if line not in old]
    assert set(added) <= {ATTEMPTS_KEY, LAST_ERROR_KEY, COUNTED_RUN_KEY}


def test_a_counted_attempt_keeps_latin1_metadata(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid, before = _plant_latin1(q)
    worker = Worker(q, fail, max_attempts=3, until_empty=True)
    result = worker.run_once()
    assert result.jobid == jobid
    after = Path(q.layout.queue_path(jobid)).read_bytes()
    assert LATIN1_LINE in after
    _kept(before, after)
    job = q.pickup_queued_job()
    assert job is not None
    assert attempts_of(job.control) == 1
    assert job.metadata == {"city": "Z\ufffdrich", "lang": "de"}  # As read: not UTF-8.
    job.retry_later(0, error="again")  # Counted once more, by the API.
    again = Path(q.layout.queue_path(jobid)).read_bytes()
    assert LATIN1_LINE in again
    _kept(before, again)


def test_a_changed_value_is_written_anew_and_the_others_kept(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid, _ = _plant_latin1(q)
    job = q.pickup_queued_job()
    assert job is not None
    job.update_control(replace(job.control, metadata={**job.metadata, "lang": "fr"}))
    after = Path(q.layout.queue_path(jobid)).read_bytes()
    assert LATIN1_LINE in after
    assert b"lang: fr\n" in after
    assert b"lang: de\n" not in after
    job.finish()


def test_a_failed_job_and_its_requeue_keep_the_bytes(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    jobid, _ = _plant_latin1(q)
    worker = Worker(q, fail, max_attempts=1, until_empty=True)
    worker.run_once()
    stored = Path(q.layout.failed_file(jobid, Layout.FAILED_CONTROL)).read_bytes()
    assert LATIN1_LINE in stored
    FailedStore(q).requeue(jobid)
    requeued = Path(q.layout.queue_path(jobid)).read_bytes()
    assert LATIN1_LINE in requeued
    assert b"lang: de\n" in requeued


#: Enqueues one job with Latin-1 metadata (no ``use utf8``: the bytes as written).
PERL_ENQUEUE_LATIN1 = r"""
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
$q->enqueue_string("from perl", { city => "Z\xfcrich", lang => "de" }) or die "enqueue";
"""

#: Takes the job and prints its city's bytes in hex.
PERL_READ_CITY = r"""
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
my $job = $q->pickup_queued_job() or die "no job";
print unpack("H*", $job->{metadata}->{city}), "\n";
$job->finish();
"""


def test_a_perl_written_job_keeps_its_bytes_through_a_counted_attempt(tmp_path: Path) -> None:
    needs_perl()
    q = DirQueue(tmp_path / "q")
    q.create()
    run_perl(PERL_ENQUEUE_LATIN1, q.dir)
    [jobid] = os.listdir(q.layout.queue_dir)
    before = Path(q.layout.queue_path(jobid)).read_bytes()
    assert LATIN1_LINE in before
    Worker(q, fail, max_attempts=3, until_empty=True).run_once()
    after = Path(q.layout.queue_path(jobid)).read_bytes()
    _kept(before, after)
    # The Perl module reads back the very bytes it wrote.
    assert run_perl(PERL_READ_CITY, q.dir).split() == [b"Z\xfcrich".hex()]
