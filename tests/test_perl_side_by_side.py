"""The Perl module and dirqueue on one local queue at once: producers of both kinds,
then consumers of both kinds draining it together.

On a local filesystem dirqueue writes a job's data in place and names its locks from
unnamed files; the Perl module writes both in tmp/ and links them. Each must still see
the other's locks and jobs as its own: every job taken exactly once, with its data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _perl import PERL_LIB, needs_perl, run_perl
from dirqueue import DirQueue

pytestmark = pytest.mark.timeout(120)

JOBS_EACH = 200

#: Enqueues N jobs whose data is "perl-I".
PERL_ENQUEUE = r"""
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
for my $i (1 .. $ARGV[1]) { $q->enqueue_string("perl-$i") or die "enqueue failed"; }
"""

#: Takes every job it can; prints "JOBID DATA" for each, then finishes it.
PERL_TAKE = r"""
$| = 1;
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
while (my $job = $q->pickup_queued_job()) {
    print $job->{jobid}, " ", $job->get_data(), "\n";
    select(undef, undef, undef, 0.005);  # a little work, so that all four take part
    $job->finish();
}
"""

PYTHON_TAKE = r"""
import sys, time
from dirqueue import DirQueue
q = DirQueue(sys.argv[1])
while (job := q.pickup_queued_job()) is not None:
    print(job.jobid, job.get_data().decode(), flush=True)
    time.sleep(0.005)  # a little work, so that all four take part
    job.finish()
"""


def test_perl_and_dirqueue_consumers_take_every_job_once(tmp_path: Path) -> None:
    needs_perl()
    q = DirQueue(tmp_path / "q")
    expected = {q.enqueue_string(f"py-{i}"): f"py-{i}" for i in range(1, JOBS_EACH + 1)}
    run_perl(PERL_ENQUEUE, q.dir, str(JOBS_EACH))
    perl_jobs = {job.jobid for job in q.jobs()} - expected.keys()
    assert len(perl_jobs) == JOBS_EACH
    consumers = [
        ["perl", f"-I{PERL_LIB}", "-MIPC::DirQueue", "-e", PERL_TAKE, q.dir],
        [sys.executable, "-c", PYTHON_TAKE, q.dir],
        ["perl", f"-I{PERL_LIB}", "-MIPC::DirQueue", "-e", PERL_TAKE, q.dir],
        [sys.executable, "-c", PYTHON_TAKE, q.dir],
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in consumers
    ]
    outputs: list[str] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, f"{proc.args[0]} failed: {err}"
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    taken: dict[str, list[str]] = {}
    by_kind = {"perl": 0, "python": 0}
    for cmd, out in zip(consumers, outputs, strict=True):
        for line in out.splitlines():
            jobid, data = line.split(" ", 1)
            taken.setdefault(jobid, []).append(data)
            by_kind["perl" if cmd[0] == "perl" else "python"] += 1
    assert sorted(taken) == sorted([*expected, *perl_jobs])  # every job, none twice
    assert all(len(datas) == 1 for datas in taken.values())
    for jobid, data in expected.items():
        assert taken[jobid] == [data]
    assert sorted(d for j, (d,) in taken.items() if j in perl_jobs) == sorted(
        f"perl-{i}" for i in range(1, JOBS_EACH + 1)
    )
    assert list(q.jobs()) == []
    assert sorted(p.name for p in (Path(q.dir) / "active").iterdir()) == []
    # Both kinds took part (the queue is deep enough that neither drains it alone).
    assert by_kind["perl"] > 0
    assert by_kind["python"] > 0
