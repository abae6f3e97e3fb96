"""``unique_while``: how long a unique job holds its key. ``"active"`` (the default):
until the job has ended, so an enqueue while it runs enqueues nothing.
``"queued"``: only until a worker starts it (its lock in active/, a Perl worker's
too), so an enqueue while it runs queues one new job, and the first job's end leaves
the new job's key alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _perl import PERL_LIB, needs_perl
from dirqueue import DirQueue
from dirqueue._keys import holder_of
from dirqueue._layout import Layout
from dirqueue.tasks import TaskQueue

pytestmark = pytest.mark.timeout(60)

#: Takes one job, prints its id, and holds it until a line comes on stdin; then
#: finishes it (or, told "keep", leaves it held and exits: the lock stays).
HOLDER = """
import sys
from dirqueue import DirQueue
q = DirQueue(sys.argv[1])
job = q.pickup_queued_job()
print(job.jobid, flush=True)
sys.stdin.readline()
job.finish()
print("finished", flush=True)
"""


def _holder(qdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(qdir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def _key_job(q: DirQueue, key: str) -> str | None:
    holder = holder_of(q.config, Layout.key_name(key))
    return None if holder is None else holder.jobid


def test_queued_frees_the_key_when_another_process_starts_the_job(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="k", unique_while="queued")
    assert q.enqueue_string("b", unique_key="k", unique_while="queued") == first  # Queued.
    holder = _holder(tmp_path / "q")
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == first  # Running, in another process.
        # Free, and nothing wrong: fsck has nothing to say of the key.
        assert [f.kind.value for f in q.fsck(min_age=0).findings] == []
        second = q.enqueue_string("c", unique_key="k", unique_while="queued")
        assert second != first
        assert second.existing is False  # type: ignore[attr-defined]
        assert q.enqueue_string("d", unique_key="k", unique_while="queued") == second
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "finished"
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # The first job's end left the second job's key alone.
    assert _key_job(q, "k") == second
    assert q.enqueue_string("e", unique_key="k", unique_while="queued") == second
    assert [job.jobid for job in q.jobs()] == [second]


def test_active_the_default_holds_the_key_while_another_process_runs_the_job(
    tmp_path: Path,
) -> None:
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="k")
    holder = _holder(tmp_path / "q")
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == first
        assert q.enqueue_string("b", unique_key="k") == first  # Running: still held.
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "finished"
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    fresh = q.enqueue_string("c", unique_key="k")
    assert fresh != first


PERL_HOLDER = """
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
my $job = $q->pickup_queued_job() or die "no job";
$| = 1;
print $job->{jobid}, "\\n";
my $line = <STDIN>;
$job->finish();
print "finished\\n";
"""


def test_queued_frees_the_key_when_a_perl_worker_starts_the_job(tmp_path: Path) -> None:
    """The Perl module knows nothing of keys; its lock in active/ is what frees the
    key, and its finish leaves the key to the job enqueued meanwhile."""
    needs_perl()
    q = DirQueue(tmp_path / "q")
    first = q.enqueue_string("a", unique_key="k", unique_while="queued")
    perl = subprocess.Popen(
        ["perl", f"-I{PERL_LIB}", "-MIPC::DirQueue", "-e", PERL_HOLDER, str(tmp_path / "q")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert perl.stdout is not None
        assert perl.stdin is not None
        assert perl.stdout.readline().strip() == first
        second = q.enqueue_string("b", unique_key="k", unique_while="queued")
        assert second != first
        perl.stdin.write("go\n")
        perl.stdin.flush()
        assert perl.stdout.readline().strip() == "finished"
    finally:
        perl.kill()
        perl.communicate(timeout=30)
    assert q.enqueue_string("c", unique_key="k", unique_while="queued") == second


def test_a_task_option_and_the_cli_take_it(tmp_path: Path) -> None:
    tq = TaskQueue(tmp_path / "tq")

    @tq.task(name="unique-while.echo", unique=True, unique_while="queued")
    def echo(x: int) -> int:
        return x

    first = echo.submit(1)
    assert echo.submit(1).jobid == first.jobid
    job = tq.pickup_queued_job()
    assert job is not None
    assert echo.submit(1).jobid != first.jobid  # Started: a new call is queued.

    dq = [sys.executable, "-m", "dirqueue", "submit", "--dir", str(tmp_path / "q"),
          "--unique", "k", "--unique-while", "queued", "-"]  # fmt: skip
    ids = [subprocess.run(dq, input="x", capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip() for _ in range(2)]  # fmt: skip
    assert ids[0] == ids[1]
    q = DirQueue(tmp_path / "q")
    started = q.pickup_queued_job()
    assert started is not None
    again = subprocess.run(dq, input="y", capture_output=True, text=True, check=True, timeout=60)
    assert again.stdout.strip() != ids[0]
    assert "not submitted" not in again.stderr


def test_a_bad_value_is_refused(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(ValueError, match=r"unique_while must be 'active' .* or 'queued'"):
        q.enqueue_string("a", unique_key="k", unique_while="running")  # type: ignore[arg-type]
    assert list(q.jobs()) == []
