"""Every reader of ``queue/`` treats symlinks alike (issue 9): pickup, ``jobs()``, the
waiting ids, ``dq stats`` and ``dq fsck`` all list the queue through the one scanner.

The queue here holds a real job, a fan-out directory ``queue/a`` that is a symlink to
another queue's ``queue/`` (holding that queue's job), and a job name that is a symlink
to a control file elsewhere (its data file is in place: only the symlink is wrong).
What a user checks: no reader reports or takes the other queue's job, none reads
through the symlinked control file, and the other queue's jobs stay intact.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from _helpers import logs_warning
from dirqueue import DirQueue, list_jobs, queue_stats
from dirqueue.repair import FindingKind
from dirqueue.stats import waiting_job_ids
from durability_checks import assert_no_half_jobs

pytestmark = pytest.mark.timeout(30)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.q = DirQueue(tmp_path / "q")
        self.real = self.q.enqueue_string(b"ours", {"who": "q"})
        # Another queue, whose queue/ the symlinked fan-out directory leads to.
        self.other = DirQueue(tmp_path / "other")
        self.behind_fanout = self.other.enqueue_string(b"not yours", {"who": "other"})
        os.symlink(self.other.layout.queue_dir, os.path.join(self.q.layout.queue_dir, "a"))
        # A third queue's job, whose control file the symlinked job name points at.
        self.elsewhere = DirQueue(tmp_path / "elsewhere")
        self.linked = self.elsewhere.enqueue_string(b"elsewhere", {"who": "elsewhere"})
        target = self.elsewhere.layout.queue_path(self.linked)
        data = self.q.layout.data_path(self.linked)
        os.makedirs(os.path.dirname(data), exist_ok=True)
        shutil.copyfile(self.elsewhere.layout.data_path(self.linked), data)
        self.symlink = self.q.layout.queue_path(self.linked)
        os.symlink(target, self.symlink)
        self.other_before = assert_no_half_jobs(self.other)
        self.elsewhere_before = assert_no_half_jobs(self.elsewhere)

    def others_intact(self) -> None:
        assert assert_no_half_jobs(self.other) == self.other_before
        assert assert_no_half_jobs(self.elsewhere) == self.elsewhere_before
        assert os.listdir(self.other.layout.active_dir) == []
        assert os.listdir(self.elsewhere.layout.active_dir) == []


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_jobs_and_stats_list_only_the_real_job(setup: Setup) -> None:
    q = setup.q
    corrupt = rf"skipping corrupt job {re.escape(setup.symlink)}: .*symlink"
    with logs_warning(corrupt):
        listed = [job.jobid for job in q.jobs()]
    assert listed == [setup.real]
    with logs_warning("skipping corrupt job"):
        states = {info.job.jobid: info.state for info in list_jobs(q)}
    assert states == {setup.real: "queued"}
    with logs_warning("skipping corrupt job"):
        stats = queue_stats(q)
    assert (stats.queued, stats.active, stats.stale) == (1, 0, 0)
    # The cheap names-only view: never the job behind the symlinked fan-out directory.
    # (The symlinked name is in queue/ until a pickup moves it aside.)
    assert setup.behind_fanout not in waiting_job_ids(q)
    assert setup.real in waiting_job_ids(q)
    assert set(waiting_job_ids(q)) <= {setup.real, setup.linked}
    setup.others_intact()


def test_pickup_takes_the_real_job_and_moves_the_symlink_aside(setup: Setup) -> None:
    q = setup.q
    # The job behind the symlinked fan-out directory cannot be taken by name either.
    assert q.pickup_queued_job(setup.behind_fanout) is None
    job = q.pickup_queued_job()  # The real job sorts first (it was enqueued first).
    assert job is not None
    assert (job.jobid, job.get_data()) == (setup.real, b"ours")
    job.finish()
    with logs_warning(rf"skipping corrupt job {re.escape(setup.symlink)}"):
        job = q.pickup_queued_job()
    assert job is None
    # Moved aside (the symlink itself, never its target), with a reason.
    assert not os.path.lexists(setup.symlink)
    aside = q.layout.corrupt_path(setup.linked)
    assert os.path.islink(aside)
    assert "symlink" in Path(q.layout.corrupt_path(setup.linked + ".reason")).read_text()
    # Now every view agrees the queue is empty.
    assert waiting_job_ids(q) == []
    assert list(q.jobs()) == []
    assert queue_stats(q).total == 0
    setup.others_intact()


def test_fsck_reports_both_symlinks_and_nothing_behind_them(setup: Setup) -> None:
    q = setup.q
    report = q.fsck(min_age=0)
    assert report.jobs_checked == 2  # The real job and the symlinked name; not "other"'s.
    found = sorted((f.kind, f.path) for f in report.findings)
    assert found == sorted(
        [
            (FindingKind.SYMLINK, os.path.join(q.layout.queue_dir, "a")),
            (FindingKind.CORRUPT_CONTROL, setup.symlink),
        ]
    )
    assert all(not f.path.startswith(setup.other.dir) for f in report.findings)
    setup.others_intact()

    # repair removes the fan-out symlink (never what it points at) and moves the
    # symlinked control file aside; the real job is untouched.
    report = q.repair(min_age=0)
    assert report.ok
    assert not os.path.lexists(os.path.join(q.layout.queue_dir, "a"))
    assert not os.path.lexists(setup.symlink)
    assert [job.jobid for job in q.jobs()] == [setup.real]
    assert q.fsck(min_age=0).clean
    setup.others_intact()
    job = setup.other.pickup_queued_job()
    assert job is not None
    assert (job.jobid, job.get_data()) == (setup.behind_fanout, b"not yours")
    job.finish()
