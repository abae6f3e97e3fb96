"""Another local user against root's dq (issue 19, items 8-10).

The attacker is a real process of another uid (a forked child that has dropped to
:data:`ATTACKER`), able to write into a queue shared with root; root's side is a real
``dq`` process or a live queue object. Each test shows that what the attacker plants
changes nothing root does: it reads no file but the job's, writes nowhere but the
queue, and runs no code but what it was told to run. They need root (to become another
user) and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dirqueue import DirQueue

pytestmark = pytest.mark.timeout(60)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")

GROUP = 61010
ATTACKER = 61011
DQ = str(Path(sys.executable).parent / "dq")


@contextlib.contextmanager
def as_attacker(body: Callable[[], None]) -> Iterator[int]:
    """Run ``body`` in a child of uid ATTACKER (group GROUP) while the block runs; the
    child's exit code is checked at the end (it is killed if it has not exited)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([GROUP])
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            os.umask(0o002)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        yield pid
    finally:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker's part failed (see stderr)"


def run_as_attacker(body: Callable[[], None]) -> None:
    with as_attacker(body):
        pass


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the attacker can reach, outside pytest's own (which another pytest
    run of root may make 0700 again at any moment)."""
    path = Path(tempfile.mkdtemp(prefix="dq-hostile-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shared_queue_dir(base: Path) -> Path:
    """A queue directory root and the attacker's group may both write (the set-up
    docs/durability.md gives for a shared queue)."""
    qdir = base / "shared"
    qdir.mkdir()
    os.chown(qdir, 0, GROUP)
    qdir.chmod(0o2775)
    return qdir


def wait_for_path(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def dq_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQ_")}
    env.update(extra)
    return env


# -- item 10: code from the working directory -------------------------------------------

PLANTED = "import os\ndef handle(job):\n    open(os.environ['MARK'], 'a').write('planted\\n')\n"
INSTALLED = "import os\ndef handle(job):\n    open(os.environ['MARK'], 'a').write('installed\\n')\n"


@needs_root
@pytest.mark.parametrize("how", ["dq", "python -m dirqueue"])
def test_a_handler_module_planted_in_the_current_directory_is_not_run(
    base: Path, tmp_path: Path, how: str
) -> None:
    qdir = shared_queue_dir(base)
    site = tmp_path / "site"  # Where root installed its handler module.
    site.mkdir()
    (site / "mytasks.py").write_text(INSTALLED)
    DirQueue(qdir).enqueue_string("job")
    run_as_attacker(lambda: (qdir / "mytasks.py").write_text(PLANTED))
    mark = tmp_path / "mark"
    argv = [DQ] if how == "dq" else [sys.executable, "-m", "dirqueue"]
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [*argv, "server", "--dir", ".", "--until-empty", "--handler", "mytasks:handle"],
        cwd=qdir, env=dq_env(MARK=str(mark), PYTHONPATH=pythonpath),
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "installed\n"


def test_a_handler_file_named_by_its_path_is_run(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("job")
    (tmp_path / "mytasks.py").write_text(INSTALLED)
    mark = tmp_path / "mark"
    done = subprocess.run(
        [DQ, "server", "--dir", "q", "--until-empty", "--handler", "./mytasks.py:handle"],
        cwd=tmp_path, env=dq_env(MARK=str(mark)),
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "installed\n"


# -- item 8: a command reads any file ------------------------------------------------------

# The command lets the attacker act between the worker's look at the data file and its
# own open of it (the moment inotify shows an attacker, forced here): it announces that
# it runs, waits until the attacker has swapped the data file for a symlink, then reads
# what it was given, by its argument and by DQ_DATA.
GATED_CAT = (
    'touch "$GATE"; n=0; while [ ! -e "$SWAPPED" ] && [ $n -lt 1500 ]; do sleep 0.01;'
    ' n=$((n+1)); done; cat "$1"; echo; cat "$DQ_DATA"'
)


@needs_root
@pytest.mark.parametrize("subcommand", ["deque", "server"])
def test_a_command_reads_its_job_not_a_file_swapped_in_for_it(
    base: Path, tmp_path: Path, subcommand: str
) -> None:
    qdir = shared_queue_dir(base)
    secret = tmp_path / "secret"
    secret.write_text("root's secret")
    secret.chmod(0o600)
    flags = base / "flags"
    flags.mkdir(mode=0o777)
    flags.chmod(0o777)
    gate, swapped = flags / "gate", flags / "swapped"
    jobid_file = flags / "jobid"

    def submit_then_swap() -> None:
        q = DirQueue(qdir)
        jobid_file.write_text(q.enqueue_string("the job's own data"))
        wait_for_path(gate)
        data = q.layout.data_path(jobid_file.read_text())
        os.rename(data, data + ".kept")
        os.symlink(secret, data)
        swapped.touch()

    argv = [DQ, subcommand, "--dir", str(qdir)]
    if subcommand == "server":
        argv += ["--until-empty", "-q"]
    with as_attacker(submit_then_swap):
        wait_for_path(jobid_file)
        while not jobid_file.read_text():
            time.sleep(0.005)
        done = subprocess.run(
            [*argv, "--", "sh", "-c", GATED_CAT, "sh"],
            env=dq_env(GATE=str(gate), SWAPPED=str(swapped)),
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert swapped.exists(), done.stderr
    assert "secret" not in done.stdout
    assert done.stdout.splitlines() == ["the job's own data", "the job's own data"]
    assert done.returncode == 0, done.stderr


# -- item 9: files written outside the queue ---------------------------------------------


def root_only_dir(base: Path) -> Path:
    """A directory of root's that the attacker would like root to write into; its mtime
    set far back, so that any name made or removed in it shows."""
    target = base / "rootdir"
    target.mkdir()
    target.chmod(0o755)
    os.utime(target, (1_000_000, 1_000_000))
    return target


def untouched(target: Path) -> bool:
    return os.listdir(target) == [] and target.stat().st_mtime == 1_000_000


def first_use(q: DirQueue) -> None:
    """What a live producer and worker have done before the attack: a job through, and
    an idle pickup (which lets go of the worker's lock file in tmp/)."""
    q.enqueue_string("before")
    job = q.pickup_queued_job()
    assert job is not None
    job.finish()
    assert q.pickup_queued_job() is None


def one_job_through(q: DirQueue) -> None:
    jobid = q.enqueue_string("after", {"k": "v"})
    job = q.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    job.update_control(job.control)  # A rewritten control file is made in tmp/ too.
    job.finish()


@needs_root
@pytest.mark.parametrize("subdir", ["tmp", "active"])
@pytest.mark.parametrize("how", ["moved", "removed"])
def test_a_live_queue_object_writes_nothing_through_a_subdirectory_swapped_for_a_symlink(
    base: Path, subdir: str, how: str
) -> None:
    qdir = shared_queue_dir(base)
    target = root_only_dir(base)
    old = os.umask(0o002)
    try:
        q = DirQueue(qdir, active_file_lifetime=1)
        first_use(q)

        def swap() -> None:
            if how == "moved":
                os.rename(qdir / subdir, qdir / f"{subdir}.moved")
            else:
                os.rmdir(qdir / subdir)
            os.symlink(target, qdir / subdir)

        run_as_attacker(swap)
        if how == "moved":
            # The queue object's directories are the ones it opened: the jobs go on
            # through them (in tmp.moved/ or active.moved/).
            one_job_through(q)
        else:
            # Its directory is gone, and what is in its place is refused.
            with pytest.raises(OSError, match=r"symlink|symbolic link"):
                one_job_through(q)
        assert untouched(target), os.listdir(target)
        # A queue object made after the swap refuses the symlink.
        with pytest.raises(OSError, match="symlink"):
            DirQueue(qdir).enqueue_string("refused")
        assert untouched(target), os.listdir(target)
    finally:
        os.umask(old)


@needs_root
@pytest.mark.parametrize("subdir", ["tmp", "active"])
def test_a_live_queue_object_recovers_once_repair_removes_a_symlinked_subdirectory(
    base: Path, subdir: str
) -> None:
    qdir = shared_queue_dir(base)
    target = root_only_dir(base)
    old = os.umask(0o002)
    try:
        q = DirQueue(qdir)
        first_use(q)

        def swap() -> None:
            os.rmdir(qdir / subdir)
            os.symlink(target, qdir / subdir)

        run_as_attacker(swap)
        fixed = subprocess.run(
            [DQ, "fsck", "--dir", str(qdir), "--repair"],
            env=dq_env(), capture_output=True, text=True, timeout=30, check=False,
        )
        assert not (qdir / subdir).is_symlink(), fixed.stdout + fixed.stderr
        # The same queue object, not restarted, works again: the directory is made anew.
        one_job_through(q)
        assert (qdir / subdir).is_dir()
        assert untouched(target), os.listdir(target)
        assert list(q.jobs()) == []
    finally:
        os.umask(old)
