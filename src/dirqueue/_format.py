"""The IPC::DirQueue 1.x on-disk format: job names, paths and control files.

This module is the one place that knows how a queue directory is laid out. Everything
else asks it for a path or hands it bytes to parse; nothing else spells a path by hand.
See ``shared/FORMAT.md`` for the format itself.
"""

from __future__ import annotations

import binascii
import os
import re
import time
from dataclasses import dataclass, field
from typing import Final

from .errors import CorruptJobError, InvalidMetadataError, InvalidPriorityError

__all__ = [
    "CONTROL_FILE_MAX_BYTES",
    "DEFAULT_PRIORITY",
    "METADATA_MAX_BYTES",
    "ControlFile",
    "Layout",
    "data_location",
    "host_tag",
    "is_job_name",
    "make_job_id",
    "parse_control",
    "parse_job_id",
    "validate_metadata",
    "validate_priority",
]

DEFAULT_PRIORITY: Final = 50

#: A control file larger than this is refused as corrupt instead of read into memory.
#: Real ones are a few hundred bytes; the limit leaves room for generous metadata.
CONTROL_FILE_MAX_BYTES: Final = 1 << 20
#: The most metadata (names, values and their ``": "`` and newlines, in UTF-8) one job
#: may carry: what is left of :data:`CONTROL_FILE_MAX_BYTES` after the system fields,
#: whose QDFN path can be up to PATH_MAX (4096) bytes.
METADATA_MAX_BYTES: Final = CONTROL_FILE_MAX_BYTES - 8192

_TAG_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_"
_TAG_CHARS: Final = frozenset(_TAG_ALPHABET)
_JOB_ID_RE: Final = re.compile(
    r"(?P<pri>[0-9]{2})\.(?P<stamp>[0-9]{20})\.(?P<tag>[A-Za-z0-9+_]+)(?:\.(?P<pid>[0-9]+)\.(?P<rand>[0-9]+))?"
)
_SYSTEM_KEY_RE: Final = re.compile(r"Q[A-Z]{3}")

# System fields of a control file, in the order the Perl module writes them.
QDFN: Final = "QDFN"
QDSB: Final = "QDSB"
QSTT: Final = "QSTT"
QSTM: Final = "QSTM"
QSHN: Final = "QSHN"


def host_tag(text: str) -> str:
    """The short tag the Perl module derives from ``hostname + str(pid)``.

    A 16-bit byte sum, printed in decimal, uuencoded, and mapped onto a filename-safe
    alphabet (FORMAT.md, "Job names").
    """
    checksum = sum(text.encode("utf-8")) % 65536
    encoded = binascii.b2a_uu(str(checksum).encode("ascii"), backtick=True).decode("ascii")
    return "".join(_TAG_ALPHABET[ord(ch) - 0x20] for ch in encoded if " " <= ch <= "_")


def make_job_id(
    priority: int,
    hostname: str,
    pid: int,
    *,
    now_ns: int | None = None,
    collision_suffix: int | None = None,
) -> tuple[str, int, int]:
    """A new job id, with the submission time it encodes as ``(id, secs, usecs)``.

    ``collision_suffix`` is the random number added (with the pid) after a name clash.
    """
    if now_ns is None:
        now_ns = time.time_ns()
    secs, rest = divmod(now_ns, 1_000_000_000)
    usecs = rest // 1000
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(secs))
    jobid = f"{priority:02d}.{stamp}{usecs:06d}.{host_tag(hostname + str(pid))}"
    if collision_suffix is not None:
        jobid += f".{pid}.{collision_suffix}"
    return jobid, secs, usecs


#: ``match_job_name(name)`` is truthy when ``name`` is shaped like a job id: the bare
#: regex method, for loops over a whole queue directory where a call costs.
match_job_name: Final = _JOB_ID_RE.fullmatch


def is_job_name(name: str) -> bool:
    """True when ``name`` is shaped like a job id (what a reader picks up)."""
    return _JOB_ID_RE.fullmatch(name) is not None


def parse_job_id(jobid: str) -> int:
    """Check a job id and return its priority; raise :class:`CorruptJobError` if malformed."""
    match = _JOB_ID_RE.fullmatch(jobid)
    if match is None:
        raise CorruptJobError(
            f"{jobid!r} is not a job id: expected PP.YYYYMMDDhhmmssuuuuuu.TAG[.PID.RAND]",
            jobid,
        )
    return int(match.group("pri"))


def data_location(jobid: str) -> tuple[str, str, str]:
    """``(C1, C2, BASE)``: where job ``jobid``'s data lives, as ``data/C1/C2/BASE``."""
    if len(jobid) > 2 and jobid[-1] in _TAG_CHARS and jobid[-2] in _TAG_CHARS:
        return jobid[-2], jobid[-1], jobid[:-2]
    return "0", "0", jobid


def validate_priority(priority: object) -> int:
    """Return ``priority`` if it is an int in 0..99, else raise :class:`InvalidPriorityError`."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidPriorityError(
            f"priority must be an integer from 0 to 99, not {priority!r}", priority
        )
    if not 0 <= priority <= 99:
        raise InvalidPriorityError(
            f"priority {priority} is out of range: use 0 (runs first) to 99 (runs last)",
            priority,
        )
    return priority


def validate_metadata(metadata: object) -> dict[str, str]:
    """Check metadata against the format's rules and return it as a new dict.

    Raises :class:`InvalidMetadataError` naming the first bad name or value.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidMetadataError(
            f"metadata must be a dict of str to str, not {type(metadata).__name__}"
        )
    checked: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidMetadataError(
                f"metadata name {key!r} is a {type(key).__name__}: names must be str", key
            )
        if not isinstance(value, str):
            raise InvalidMetadataError(
                f"metadata value for {key!r} is a {type(value).__name__}: values must be str"
                " (convert numbers with str())",
                key,
            )
        for what, text in (("name", key), ("value", value)):
            if "\n" in text or "\0" in text:
                raise InvalidMetadataError(
                    f"metadata {what} of {key!r} contains a newline or NUL:"
                    " control files hold one line per item, so remove them",
                    key,
                )
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidMetadataError(
                    f"metadata {what} of {key!r} is not valid Unicode (lone surrogate):"
                    " decode the bytes it came from properly",
                    key,
                ) from None
        if ":" in key:
            raise InvalidMetadataError(
                f"metadata name {key!r} contains ':', which separates names from values:"
                " rename it",
                key,
            )
        if len(key) == 4 and key.startswith("Q"):
            raise InvalidMetadataError(
                f"metadata name {key!r} is reserved: 4-character names starting with 'Q'"
                " are system fields; rename it",
                key,
            )
        # Encoded size of the line "key: value\n"; checked as we go so that a huge
        # dict fails at the item that crosses the limit.
        total += len(key.encode("utf-8")) + len(value.encode("utf-8")) + 3
        if total > METADATA_MAX_BYTES:
            raise InvalidMetadataError(
                f"metadata is over the {METADATA_MAX_BYTES}-byte limit at item {key!r}:"
                " control files are kept small; put large values in the job's data",
                key,
            )
        checked[key] = value
    return checked


@dataclass
class ControlFile:
    """The parsed contents of a control file (``queue/NAME``)."""

    data_path: str | None = None
    size_bytes: int | None = None
    submitted_secs: int = 0
    submitted_usecs: int = 0
    hostname: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: System fields (``Q`` + three capitals) other than the five above, kept as read.
    extra_system: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Serialize in the Perl module's field order."""
        lines = [f"{QDFN}: {self.data_path}\n", f"{QDSB}: {self.size_bytes}\n"]
        lines.append(f"{QSTT}: {self.submitted_secs}\n")
        lines.append(f"{QSTM}: {self.submitted_usecs}\n")
        lines.append(f"{QSHN}: {self.hostname}\n")
        lines.extend(f"{key}: {value}\n" for key, value in self.extra_system.items())
        lines.extend(f"{key}: {value}\n" for key, value in self.metadata.items())
        return "".join(lines).encode("utf-8")


def _int_field(value: str, key: str, where: str | None) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise CorruptJobError(
            f"control file field {key} is {value!r}, not a whole number", where
        ) from None


def _set_system_field(ctrl: ControlFile, key: str, value: str, where: str | None) -> None:
    """Store one ``Q...`` line of a control file in ``ctrl``."""
    if key == QDFN:
        ctrl.data_path = value
    elif key == QDSB:
        ctrl.size_bytes = _int_field(value, key, where)
    elif key == QSTT:
        ctrl.submitted_secs = _int_field(value, key, where)
    elif key == QSTM:
        ctrl.submitted_usecs = _int_field(value, key, where)
    elif key == QSHN:
        ctrl.hostname = value
    else:
        ctrl.extra_system[key] = value


def parse_control(raw: bytes, where: str | None = None) -> ControlFile:
    """Parse a control file's bytes; raise :class:`CorruptJobError` if it is not one.

    Bytes that are not UTF-8 are replaced (U+FFFD) rather than refused, since the Perl
    module writes whatever bytes it was given.
    """
    if len(raw) > CONTROL_FILE_MAX_BYTES:
        raise CorruptJobError(
            f"control file is {len(raw)} bytes, over the {CONTROL_FILE_MAX_BYTES}-byte limit",
            where,
        )
    if b"\0" in raw:
        raise CorruptJobError("control file contains NUL bytes: it is not a text file", where)
    text = raw.decode("utf-8", errors="replace")
    ctrl = ControlFile()
    seen_time = False
    for line in text.split("\n"):
        if line == "":
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            # The Perl module skips lines without ": "; so do we.
            continue
        if _SYSTEM_KEY_RE.fullmatch(key):
            _set_system_field(ctrl, key, value, where)
            seen_time = seen_time or key == QSTT
        else:
            ctrl.metadata[key] = value
    if ctrl.data_path is None:
        raise CorruptJobError("control file has no QDFN (data file) line", where)
    if not seen_time:
        raise CorruptJobError("control file has no QSTT (submission time) line", where)
    return ctrl


def parse_lock(raw: bytes) -> tuple[str | None, int | None]:
    """``(host, pid)`` from an active lock file's ``HOST\\nPID\\n``; None where unreadable."""
    lines = raw.decode("utf-8", errors="replace").split("\n")
    host = lines[0] if lines and lines[0] else None
    pid: int | None = None
    if len(lines) > 1:
        try:
            pid = int(lines[1].strip())
        except ValueError:
            pid = None
    return host, pid


def format_lock(host: str, pid: int, heartbeat: bool = False) -> bytes:
    """An active lock file's contents: ``HOST\nPID\n``, plus ``heartbeat\n`` when the
    owner promises to keep the lock fresh (readers of the 1.x format read two lines)."""
    return f"{host}\n{pid}\n{'heartbeat' + chr(10) if heartbeat else ''}".encode()


def lock_promises_heartbeat(raw: bytes) -> bool:
    """True if a lock file's third line is ``heartbeat`` (see :func:`format_lock`)."""
    lines = raw.split(b"\n")
    return len(lines) > 2 and lines[2].strip() == b"heartbeat"


class Layout:
    """The paths of one queue directory. The only code that joins queue paths."""

    QUEUE: Final = "queue"
    DATA: Final = "data"
    ACTIVE: Final = "active"
    TMP: Final = "tmp"
    #: Where corrupt jobs are moved aside, with a ``.reason`` file each. The Perl module
    #: reads only the four directories above, so it ignores this one.
    CORRUPT: Final = "corrupt"
    REASON_SUFFIX: Final = ".reason"
    #: The stale-lock breaker's token in ``tmp/`` (see :meth:`breaker_token_path`).
    BREAKER_SUFFIX: Final = ".breaking"
    #: Jobs that failed ``max_attempts`` times (dirqueue only; the Perl module never
    #: looks here). One directory per job: see :meth:`failed_job_dir`.
    FAILED: Final = "failed"
    FANOUT_DIGITS: Final = "0123456789abcdef"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        text = os.fspath(directory)
        if not text:
            raise ValueError("queue directory must not be empty: pass a path such as 'spool/q'")
        # "DIR as given" goes into QDFN, so keep relative paths relative; drop only a
        # trailing slash, which would double up in the paths we write.
        self.dir = text.rstrip("/") or "/"
        self.queue_dir = os.path.join(self.dir, self.QUEUE)
        self.data_dir = os.path.join(self.dir, self.DATA)
        self.active_dir = os.path.join(self.dir, self.ACTIVE)
        self.tmp_dir = os.path.join(self.dir, self.TMP)
        self.corrupt_dir = os.path.join(self.dir, self.CORRUPT)
        self.failed_dir = os.path.join(self.dir, self.FAILED)

    def queue_path(self, jobid: str, fanout: str | None = None) -> str:
        """``queue/NAME``, or ``queue/X/NAME`` with a fan-out digit."""
        if fanout is None:
            return os.path.join(self.queue_dir, jobid)
        return os.path.join(self.queue_dir, fanout, jobid)

    def data_path(self, jobid: str) -> str:
        """``data/C1/C2/BASE``, found from the job id alone."""
        c1, c2, base = data_location(jobid)
        return os.path.join(self.data_dir, c1, c2, base)

    def data_subdirs(self, jobid: str) -> tuple[str, str]:
        """The two directories above job ``jobid``'s data file, outermost first."""
        c1, c2, _ = data_location(jobid)
        return os.path.join(self.data_dir, c1), os.path.join(self.data_dir, c1, c2)

    def data_components(self, jobid: str) -> tuple[str, str, str, str]:
        """``("data", C1, C2, BASE)``: the data file's path relative to ``DIR``, split.

        Code that must not follow a symlink planted in the queue walks these one
        directory at a time (see :func:`dirqueue._fs.open_dir_nofollow`).
        """
        c1, c2, base = data_location(jobid)
        return self.DATA, c1, c2, base

    def corrupt_path(self, name: str) -> str:
        """``corrupt/NAME``: where a corrupt job's files are moved aside."""
        return os.path.join(self.corrupt_dir, name)

    def active_path(self, jobid: str) -> str:
        """``active/NAME``: the lock of a job being worked on."""
        return os.path.join(self.active_dir, jobid)

    def tmp_path(self, name: str) -> str:
        """A file under ``tmp/``."""
        return os.path.join(self.tmp_dir, name)

    def breaker_token_path(self, jobid: str) -> str:
        """``tmp/NAME.breaking``: held by whoever is breaking job NAME's stale lock
        (dirqueue only; the Perl module never reads tmp/)."""
        return os.path.join(self.tmp_dir, jobid + self.BREAKER_SUFFIX)

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

    def failed_staging_dir(self, jobid: str, purpose: str, token: str) -> str:
        """``failed/.NAME.PURPOSE.TOKEN``: a failed job's directory while it is moved.

        Dot names are never listed, so a half-built or half-removed entry is invisible.
        ``TOKEN`` (pid and time) keeps two movers, even threads of one process, apart.
        """
        return os.path.join(self.failed_dir, f".{jobid}.{purpose}.{token}")

    def jobid_from_path(self, path: str) -> str:
        """The job id named by a queue path or given as a bare id."""
        return os.path.basename(path.rstrip("/"))
