"""Perl workers and groups' limits: the Perl module knows nothing of groups, so jobs
submitted ``dirqueue_only`` (in ``queue/dq/``) must never be taken by it, however it
reads the queue, while dirqueue workers take them and keep the limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _perl import PERL_DRAIN, run_perl
from dirqueue import DirQueue, limits
from dirqueue._deferred import promote_due

pytestmark = pytest.mark.timeout(120)

#: The Perl module's three ways of reading queue/: by readdir, sorted, by fan-out.
DRAINS = {
    "unordered": PERL_DRAIN.replace("dir => $ARGV[0]", "dir => $ARGV[0], ordered => 0"),
    "ordered": PERL_DRAIN,
    "fanout": PERL_DRAIN.replace("dir => $ARGV[0]", "dir => $ARGV[0], queue_fanout => 1"),
}


@pytest.mark.parametrize("reading", sorted(DRAINS))
@pytest.mark.parametrize("fanout", [False, True])
def test_perl_never_takes_a_dirqueue_only_job(tmp_path: Path, reading: str, fanout: bool) -> None:
    queue = DirQueue(tmp_path / "q", queue_fanout=fanout)
    plain = [queue.enqueue_string(b"p") for _ in range(3)]
    limits.set_limit(queue, "gpu", 1)
    hidden = [queue.enqueue_string(b"g", group="gpu", dirqueue_only=True) for _ in range(4)]
    # Put off (as a rate's deferral puts one off) and back: to queue/dq/, still hidden.
    later = queue.enqueue_string(b"d", group="gpu", dirqueue_only=True, delay=0.01)
    time.sleep(0.05)
    assert promote_due(queue.config)[0] == 1
    assert (tmp_path / "q" / "queue" / "dq" / later).exists()
    taken = run_perl(DRAINS[reading], str(queue.dir)).split()
    perl_fanout = reading == "fanout"
    # A Perl fan-out reader takes only jobs in queue/X/, a plain one only those in
    # queue/ itself; neither ever takes a hidden one.
    assert set(taken) == (set(plain) if perl_fanout == fanout else set())
    got = []
    while (job := queue.pickup_queued_job()) is not None:
        got.append(job.jobid)
        job.finish()  # One at a time, as the gpu group's limit 1 says.
    assert set(got) >= {*hidden, later}
    assert not set(got) & set(taken)
    assert run_perl(DRAINS[reading], str(queue.dir)).split() == []


def test_a_group_job_not_hidden_is_seen_by_perl(tmp_path: Path) -> None:
    """The other side: without ``dirqueue_only`` a Perl worker takes a limited job, and
    ignores its limit (docs/limits.md says so)."""
    queue = DirQueue(tmp_path / "q")
    queue.enqueue_string(b"x")
    limits.set_limit(queue, "gpu", 1)
    jobs = [queue.enqueue_string(b"g", group="gpu") for _ in range(2)]
    holding = queue.pickup_queued_job()
    assert holding is not None
    taken = run_perl(PERL_DRAIN, str(queue.dir)).split()
    assert set(jobs) - {holding.jobid} <= set(taken)
