"""Where everything lives in a queue directory: every path and every file name.

The one module that joins queue paths or makes (and parses) the names of files in
``tmp/``, ``corrupt/`` and ``failed/``; nothing else spells a path by hand. The format
of those paths is described in ``docs/format.md``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import time
from typing import Final

from ._format import data_location, is_job_name

__all__ = ["Layout", "TmpLockName"]


class TmpLockName:
    """The parts of a pickup's tmp lock name, ``NAME.TIME.HOST.PID.active``."""

    SUFFIX: Final = ".active"

    #: The ``NAME`` of a queue object's lock file (see
    #: :class:`dirqueue._lockfile.LockFileKeeper`): ``lock.TIME.HOST.PID.active``. No job id
    #: begins with a letter.
    LOCK_FILE: Final = "lock"

    @staticmethod
    def is_lock_file(name: str) -> bool:
        """True for a queue object's lock file, which every job it takes is linked to."""
        return name.startswith(TmpLockName.LOCK_FILE + ".") and name.endswith(
            TmpLockName.SUFFIX
        )

    @staticmethod
    def owner(name: str, host: str) -> int | None:
        """The pid in tmp lock ``name`` if it was made by ``host``, else None.

        The host name may itself hold dots, so it is matched whole.
        """
        if not name.endswith(TmpLockName.SUFFIX):
            return None
        rest, _, pid_text = name[: -len(TmpLockName.SUFFIX)].rpartition(".")
        if not pid_text.isdigit() or not rest.endswith("." + host):
            return None
        return int(pid_text)


class Layout:
    """The paths of one queue directory."""

    QUEUE: Final = "queue"
    DATA: Final = "data"
    ACTIVE: Final = "active"
    TMP: Final = "tmp"
    #: The four directories of the IPC::DirQueue format, in the order they are made.
    SUBDIRS: Final = (QUEUE, DATA, ACTIVE, TMP)
    #: Where corrupt jobs are moved aside, with a ``.reason`` file each. The Perl module
    #: reads only the four directories above, so it ignores this one.
    CORRUPT: Final = "corrupt"
    REASON_SUFFIX: Final = ".reason"
    #: The stale-lock breaker's token in ``tmp/`` (see :meth:`breaker_token_name`).
    BREAKER_SUFFIX: Final = ".breaking"
    #: Jobs waiting for a time (a retry's back-off, or a delayed submission): their
    #: control files, each with its due time as its mtime. The Perl module never reads
    #: this directory, so no Perl worker takes a job early.
    DEFERRED: Final = "deferred"
    #: Jobs that failed ``max_attempts`` times (dirqueue only; the Perl module never
    #: looks here). One directory per job: see :meth:`failed_job_dir`.
    FAILED: Final = "failed"
    #: Jobs' answers (dirqueue only; the Perl module never looks here): one file per
    #: job, named by its job id, its mtime the time it expires. See :mod:`dirqueue._results`.
    RESULTS: Final = "results"
    #: Unique jobs' keys (dirqueue only; the Perl module never looks here): one file per
    #: key, named by a hash of it, naming the job that holds it. See :mod:`dirqueue._keys`.
    KEYS: Final = "keys"
    #: Jobs waiting for other jobs to end (dirqueue only): their control files, out of
    #: every worker's sight, Perl's included, as in ``deferred/``. See :mod:`dirqueue._deps`.
    WAITING: Final = "waiting"
    #: The supervising servers at work on the queue (dirqueue only; the Perl module
    #: never looks here): one file each, ``HOST.PID``. See :mod:`dirqueue._servers`.
    SERVERS: Final = "servers"
    #: Groups' limits (dirqueue only; the Perl module never looks here): one file per
    #: group, ``limits/GROUP``, and the slots (``slots/GROUP.K``) and rate tokens
    #: (``starts/GROUP.K.N``) that enforce them. See :mod:`dirqueue.limits`.
    LIMITS: Final = "limits"
    SLOTS: Final = "slots"
    STARTS: Final = "starts"
    FANOUT_DIGITS: Final = "0123456789abcdef"
    #: ``queue/dq/``: jobs for dirqueue workers only (``dirqueue_only=True``). The Perl
    #: module never reads it: without fan-out it takes only names in ``queue/`` that
    #: begin with a digit, with fan-out only ``queue/X/`` for a one-character X.
    #: dirqueue's scanner reads it as one more fan-out directory.
    DIRQUEUE_ONLY: Final = "dq"
    #: Every subdirectory of ``queue/`` that holds jobs.
    QUEUE_SUBDIRS: Final = (*FANOUT_DIGITS, DIRQUEUE_ONLY)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        text = os.fspath(directory)
        if not text:
            raise ValueError("queue directory must not be empty: pass a path such as 'spool/q'")
        # "DIR as given" goes into QDFN, so keep relative paths relative; drop only a
        # trailing slash, which would double up in the paths we write.
        self.dir = text.rstrip("/") or "/"
        # The paths of single files below are joined by hand (a job name never holds a
        # "/"): os.path.join costs more than the system call at ten per job.
        self.queue_dir = os.path.join(self.dir, self.QUEUE)
        self.data_dir = os.path.join(self.dir, self.DATA)
        self.active_dir = os.path.join(self.dir, self.ACTIVE)
        self.tmp_dir = os.path.join(self.dir, self.TMP)
        self.corrupt_dir = os.path.join(self.dir, self.CORRUPT)
        self.failed_dir = os.path.join(self.dir, self.FAILED)
        self.deferred_dir = os.path.join(self.dir, self.DEFERRED)
        self.results_dir = os.path.join(self.dir, self.RESULTS)
        self.keys_dir = os.path.join(self.dir, self.KEYS)
        self.waiting_dir = os.path.join(self.dir, self.WAITING)
        self.servers_dir = os.path.join(self.dir, self.SERVERS)
        self.limits_dir = os.path.join(self.dir, self.LIMITS)

    def path(self, *parts: str) -> str:
        """``DIR/parts...``: the path of a name relative to the queue directory."""
        return os.path.join(self.dir, *parts)

    # -- the four directories of the format -------------------------------------------

    def queue_path(self, jobid: str, fanout: str | None = None) -> str:
        """``queue/NAME``, or ``queue/X/NAME`` with a fan-out digit."""
        if fanout is None:
            return f"{self.queue_dir}/{jobid}"
        return f"{self.queue_dir}/{fanout}/{jobid}"

    @staticmethod
    def choose_fanout(queue_fanout: bool, dirqueue_only: bool = False) -> str | None:
        """The fan-out directory a job entering ``queue/`` goes into: a random digit,
        as the Perl module picks (a Perl fan-out worker reads only ``queue/X/``), or
        None without fan-out; ``queue/dq/`` for a job for dirqueue only. Every way into
        ``queue/`` asks here."""
        if dirqueue_only:
            return Layout.DIRQUEUE_ONLY
        return random.choice(Layout.FANOUT_DIGITS) if queue_fanout else None

    @staticmethod
    def queue_parts(fanout: str | None) -> tuple[str, ...]:
        """The directories from ``DIR`` to a control file: ``("queue",)`` or
        ``("queue", X)``."""
        return (Layout.QUEUE,) if fanout is None else (Layout.QUEUE, fanout)

    def data_path(self, jobid: str) -> str:
        """``data/C1/C2/BASE``, found from the job id alone."""
        c1, c2, base = data_location(jobid)
        return f"{self.data_dir}/{c1}/{c2}/{base}"

    def data_subdirs(self, jobid: str) -> tuple[str, str]:
        """The two directories above job ``jobid``'s data file, outermost first."""
        c1, c2, _ = data_location(jobid)
        return os.path.join(self.data_dir, c1), os.path.join(self.data_dir, c1, c2)

    @staticmethod
    @functools.lru_cache(maxsize=256)  # Asked four times for each job taken.
    def data_parts(jobid: str) -> tuple[tuple[str, str, str], str]:
        """``(("data", C1, C2), BASE)``: the directories from ``DIR`` to job ``jobid``'s
        data file, and its name there.

        Code that must not follow a symlink planted in the queue walks these one
        directory at a time (see :func:`dirqueue._fs.open_dir_nofollow`).
        """
        c1, c2, base = data_location(jobid)
        return (Layout.DATA, c1, c2), base

    def active_path(self, jobid: str) -> str:
        """``active/NAME``: the lock of a job being worked on."""
        return f"{self.active_dir}/{jobid}"

    def deferred_path(self, jobid: str) -> str:
        """``deferred/NAME``: a job's control file while it waits for its due time."""
        return f"{self.deferred_dir}/{jobid}"

    def result_path(self, jobid: str) -> str:
        """``results/NAME``: job ``jobid``'s answer, once it has one."""
        return f"{self.results_dir}/{jobid}"

    def waiting_path(self, jobid: str) -> str:
        """``waiting/NAME``: a dependant's control file while its parents run."""
        return f"{self.waiting_dir}/{jobid}"

    @staticmethod
    def key_name(key: str) -> str:
        """The name in ``keys/`` of unique key ``key``: a hash, so any text (slashes,
        dots, a thousand characters) makes one short, safe file name."""
        return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()[:40]

    def key_path(self, name: str) -> str:
        """``keys/HASH``: the key file of a unique job."""
        return f"{self.keys_dir}/{name}"

    @staticmethod
    def tmp_key_name(name: str, host: str, pid: int) -> str:
        """``k.HASH.TIME.HOST.PID.key``: a key file before it is linked into ``keys/``."""
        return f"k.{name}.{time.time_ns()}.{host}.{pid}.key"

    @staticmethod
    def key_token_name(name: str) -> str:
        """The name whose breaker token (``tmp/k.HASH.breaking``) guards key ``HASH``
        while it is released or broken."""
        return f"k.{name}"

    # -- groups' limits (see dirqueue.limits) -------------------------------------------

    def limit_path(self, group: str) -> str:
        """``limits/GROUP``: group ``group``'s limits."""
        return f"{self.limits_dir}/{group}"

    @staticmethod
    def tmp_limit_name(group: str, host: str, pid: int) -> str:
        """``l.GROUP.TIME.HOST.PID.limit``: a limit file before it is renamed into
        ``limits/``."""
        return f"l.{group}.{time.time_ns()}.{host}.{pid}.limit"

    @staticmethod
    def slot_name(group: str, slot: int) -> str:
        """``GROUP.K``: the name in ``slots/`` of group ``group``'s K-th slot."""
        return f"{group}.{slot}"

    @staticmethod
    def slot_token_name(group: str, slot: int) -> str:
        """The name whose breaker token (``tmp/s.GROUP.K.breaking``) guards a slot
        while a stale one is broken."""
        return f"s.{group}.{slot}"

    @staticmethod
    def start_name(group: str, token: int, use: int) -> str:
        """``GROUP.K.N``: the N-th use of group ``group``'s K-th rate token."""
        return f"{group}.{token}.{use}"

    @staticmethod
    def parse_start_name(name: str) -> tuple[str, int, int] | None:
        """``(GROUP, K, N)`` from a name in ``starts/``; None if it is not one."""
        group, _, rest = name.partition(".")
        token, _, use = rest.partition(".")
        if not group or not token.isdigit() or not use.isdigit():
            return None
        return group, int(token), int(use)

    @staticmethod
    def tmp_start_name(group: str, host: str, pid: int) -> str:
        """``r.GROUP.TIME.HOST.PID.start``: a rate token's use before it is linked."""
        return f"r.{group}.{time.time_ns()}.{host}.{pid}.start"

    def tmp_path(self, name: str) -> str:
        """A file under ``tmp/``."""
        return f"{self.tmp_dir}/{name}"

    @staticmethod
    def is_nfs_silly_rename(name: str) -> bool:
        """True for ``.nfsXXXX``: a file an NFS client unlinked while it was still open,
        kept under a hidden name until closed. It is no one's to list or remove."""
        return name.startswith(".nfs")

    # -- names in tmp/ ------------------------------------------------------------------

    @staticmethod
    def tmp_data_name(jobid: str) -> str:
        """``NAME.data``: a job's data while it is written."""
        return jobid + ".data"

    @staticmethod
    def tmp_control_name(jobid: str) -> str:
        """``NAME.ctrl``: a job's control file while it is written."""
        return jobid + ".ctrl"

    @staticmethod
    def tmp_lock_name(jobid: str, host: str, pid: int) -> str:
        """``NAME.TIME.HOST.PID.active``: a pickup's lock before it is linked (the Perl
        module's shape, so repair can tell whose it is)."""
        return f"{jobid}.{time.time_ns()}.{host}.{pid}{TmpLockName.SUFFIX}"

    @staticmethod
    def tmp_breaker_name(jobid: str, host: str, pid: int) -> str:
        """A stale-lock breaker's own file, linked to :meth:`breaker_token_name`."""
        return f"{jobid}.{time.time_ns()}.{host}.{pid}.breaker"

    @staticmethod
    def tmp_clock_name(host: str, pid: int, thread: int) -> str:
        """``clock.HOST.PID.THREAD``: a file written (and at once removed) to read the
        filesystem's clock (see :func:`dirqueue._judge.filesystem_now`). One per thread:
        two threads sharing one name removed each other's file before it was read."""
        return f"clock.{host}.{pid}.{thread}"

    @staticmethod
    def breaker_token_name(jobid: str) -> str:
        """``NAME.breaking``: held by whoever is breaking job NAME's stale lock
        (dirqueue only; the Perl module never reads tmp/)."""
        return jobid + Layout.BREAKER_SUFFIX

    def breaker_token_path(self, jobid: str) -> str:
        """``tmp/NAME.breaking``."""
        return os.path.join(self.tmp_dir, self.breaker_token_name(jobid))

    @staticmethod
    def tmp_rewrite_name(jobid: str, pid: int, purpose: str) -> str:
        """``NAME.TIME.PID.PURPOSE``: a control file rewritten for ``purpose``
        (``attempts``, ``requeue``) before it replaces or joins the queue's, or a
        job's answer (``result``) before it is renamed into ``results/``."""
        return f"{jobid}.{time.time_ns()}.{pid}.{purpose}"

    # -- servers/ -----------------------------------------------------------------------

    @staticmethod
    def server_entry_name(host: str, pid: int) -> str:
        """``HOST.PID``: a server's entry in ``servers/`` (in the host name, anything
        but letters, digits, ``_``, ``.`` and ``-`` becomes ``_``)."""
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}.{pid}"

    # -- corrupt/ -----------------------------------------------------------------------

    def corrupt_path(self, name: str) -> str:
        """``corrupt/NAME``: where a corrupt job's files are moved aside."""
        return os.path.join(self.corrupt_dir, name)

    @staticmethod
    def corrupt_stem(jobid: str, n: int) -> str:
        """The n-th name for job ``jobid`` in ``corrupt/`` (``NAME``, ``NAME.1``, ...)."""
        return jobid if n == 0 else f"{jobid}.{n}"

    @staticmethod
    def corrupt_data_name(stem: str) -> str:
        """``STEM.data``: a corrupt job's data, beside its control file."""
        return stem + ".data"

    @staticmethod
    def corrupt_reason_name(stem: str) -> str:
        """``STEM.reason``: why a job was moved aside, by whom, when."""
        return stem + Layout.REASON_SUFFIX

    # -- the failed-job store (dirqueue's own; see failed.py) ---------------------------

    FAILED_CONTROL: Final = "control"
    FAILED_DATA: Final = "data"
    FAILED_ERROR: Final = "error.json"

    def failed_job_dir(self, jobid: str) -> str:
        """``failed/NAME/``: a failed job's control file, data and error record."""
        return os.path.join(self.failed_dir, jobid)

    def failed_file(self, jobid: str, which: str) -> str:
        """One file of a failed job: ``FAILED_CONTROL``, ``FAILED_DATA`` or ``FAILED_ERROR``."""
        return os.path.join(self.failed_dir, jobid, which)

    @staticmethod
    def failed_staging_name(jobid: str, purpose: str, token: str) -> str:
        """``.NAME.PURPOSE.TOKEN``: a failed job's directory while it is moved.

        Dot names are never listed, so a half-built or half-removed entry is invisible.
        ``TOKEN`` (pid and time) keeps two movers, even threads of one process, apart.
        """
        return f".{jobid}.{purpose}.{token}"

    @staticmethod
    def failed_staging_job(name: str, purpose: str) -> str | None:
        """The job id of ``.NAME.PURPOSE.TOKEN`` (:meth:`failed_staging_name`), or None
        if ``name`` is not such a name."""
        mark = f".{purpose}."
        if not name.startswith(".") or mark not in name:
            return None
        jobid = name[1 : name.index(mark)]
        return jobid if is_job_name(jobid) else None

    def failed_staging_dir(self, jobid: str, purpose: str, token: str) -> str:
        """``failed/.NAME.PURPOSE.TOKEN`` (see :meth:`failed_staging_name`)."""
        return os.path.join(self.failed_dir, self.failed_staging_name(jobid, purpose, token))

    @staticmethod
    def jobid_from_path(path: str) -> str:
        """The job id named by a queue path or given as a bare id."""
        return os.path.basename(path.rstrip("/"))
