"""When failed/ is not what it should be: the failed store writes nothing outside it,
and a worker that cannot record a failure neither dies nor runs the job again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import dirqueue._fs
import dirqueue.failed
from _helpers import wait_for
from dirqueue import DirQueue, FailedStore, QueueIOError
from dirqueue._fs import ensure_dir_nofollow
from dirqueue.failed import attempts_of

DQ = str(Path(sys.executable).parent / "dq")


def test_failed_swapped_for_a_symlink_after_its_check_leads_nothing_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = DirQueue(tmp_path / "q")
    jobid = q.enqueue_string("private")
    outside = tmp_path / "outside"
    outside.mkdir()
    failed = tmp_path / "q" / "failed"
    failed.mkdir()

    def check_then_swap(root: str, parts: tuple[str, ...]) -> tuple[int, list[str]]:
        found = ensure_dir_nofollow(root, parts)
        if parts == ("failed",) and not failed.is_symlink():
            # Another user of the queue, the moment after failed/ was looked at.
            failed.rename(tmp_path / "q" / "failed.moved")
            failed.symlink_to(outside)
        return found

    job = q.pickup_queued_job()
    assert job is not None
    monkeypatch.setattr(dirqueue._fs, "ensure_dir_nofollow", check_then_swap)
    with contextlib.suppress(QueueIOError):
        FailedStore(q).add(job, "boom", attempts=3)
    assert list(outside.iterdir()) == [], "the failed store wrote through the symlink"
    # It went where failed/ was when it was opened.
    assert os.listdir(tmp_path / "q" / "failed.moved") == [jobid]


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_record_a_failure_defers_the_job_and_lives_on(
    tmp_path: Path,
) -> None:
    qdir = tmp_path / "q"
    q = DirQueue(qdir)
    jobid = q.enqueue_string("fails")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (qdir / "failed").symlink_to(elsewhere)  # Planted: failed/ cannot be written.
    log = tmp_path / "runs"
    proc = subprocess.Popen(
        [DQ, "server", "--dir", str(qdir), "--workers", "2", "--max-attempts", "2",
         "--poll-interval", "0.2", "--", "sh", "-c", 'echo run >> "$LOG"; exit 1', "sh"],
        env={**os.environ, "LOG": str(log)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: log.exists() and len(log.read_text().split()) >= 2, 20)
        # Time enough for the crash loop (a run every second or so) to show.
        assert not wait_for(lambda: len(log.read_text().split()) > 2, timeout=4), (
            f"the handler ran {len(log.read_text().split())} times: a crash loop"
        )
        assert (qdir / "deferred" / jobid).exists(), "the job was not deferred"
        assert proc.poll() is None, "the server exited"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert log.read_text().splitlines() == ["run", "run"]  # Never past its attempts.
    assert proc.returncode == 0, err
    assert "died" not in err, err  # No worker restarts.
    assert "could not be moved to failed/" in err
    assert list(elsewhere.iterdir()) == []
    control = dirqueue.failed.parse_control((qdir / "deferred" / jobid).read_bytes(), jobid)
    assert attempts_of(control) == 2
