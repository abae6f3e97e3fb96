"""The IPC::DirQueue 1.x on-disk format: job names, control files and lock files.

This module builds and parses the contents of the queue's files; :mod:`dirqueue._layout`
holds every path and file name. See ``docs/format.md`` for the format itself.
"""

from __future__ import annotations

import binascii
import dataclasses
import functools
import re
import time
from dataclasses import dataclass, field
from typing import Final

from .errors import CorruptJobError, InvalidMetadataError, InvalidPriorityError

__all__ = [
    "ATTEMPTS_KEY",
    "CONTROL_FILE_MAX_BYTES",
    "COUNTED_RUN_KEY",
    "DEFAULT_PRIORITY",
    "LAST_ERROR_KEY",
    "METADATA_MAX_BYTES",
    "ControlFile",
    "LockInfo",
    "attempts_of",
    "counted_run_of",
    "data_location",
    "format_lock",
    "host_tag",
    "is_job_name",
    "last_error_of",
    "make_job_id",
    "parse_control",
    "parse_job_id",
    "parse_lock",
    "parse_lock_file",
    "run_of",
    "validate_metadata",
    "validate_priority",
    "with_attempts",
    "with_counted_run",
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
#: The first five lines of a control file as every writer of the format writes them.
_COMMON_START: Final = re.compile(
    "QDFN: ([^\n]*)\nQDSB: ([0-9]+)\nQSTT: ([0-9]+)\nQSTM: ([0-9]+)\nQSHN: ([^\n]*)\n"
)

# System fields of a control file, in the order the Perl module writes them.
QDFN: Final = "QDFN"
QDSB: Final = "QDSB"
QSTT: Final = "QSTT"
QSTM: Final = "QSTM"
QSHN: Final = "QSHN"


@functools.lru_cache(maxsize=64)
def host_tag(text: str) -> str:
    """The short tag the Perl module derives from ``hostname + str(pid)``.

    A 16-bit byte sum, printed in decimal, uuencoded, and mapped onto a filename-safe
    alphabet (``docs/format.md``, "Job names").
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
    jobid = f"{priority:02d}.{_stamp(secs)}{usecs:06d}.{host_tag(hostname + str(pid))}"
    if collision_suffix is not None:
        jobid += f".{pid}.{collision_suffix}"
    return jobid, secs, usecs


@functools.lru_cache(maxsize=4)
def _stamp(secs: int) -> str:
    """``YYYYMMDDhhmmss`` (UTC) of ``secs``: one per second, not one per job."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(secs))


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
        if not key:
            # The format would carry it (": value"), but an empty name is a slip (a
            # parse gone wrong), and dq submit --meta refuses it: so does the API.
            raise InvalidMetadataError(
                f"metadata name {key!r} is empty: give each item a name, like 'owner'", key
            )
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
    #: The bytes this was parsed from, if it was: see :meth:`to_bytes`.
    source: bytes | None = field(default=None, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        """Serialize in the Perl module's field order.

        A control file that was read keeps, for every field whose value is unchanged,
        its line's very bytes: a value the Perl module wrote in Latin-1 (which we read
        with U+FFFD in place of the bytes that are not UTF-8) must not come back
        altered (``Z\\xfcrich`` as ``Z\\xef\\xbf\\xbdrich``) when a worker rewrites
        the file to count an attempt.
        """
        if self.source is None:
            # A new control file (every enqueue): one string, encoded once.
            text = (
                f"{QDFN}: {self.data_path}\n{QDSB}: {self.size_bytes}\n"
                f"{QSTT}: {self.submitted_secs}\n{QSTM}: {self.submitted_usecs}\n"
                f"{QSHN}: {self.hostname}\n"
            )
            if self.extra_system or self.metadata:
                text += "".join(
                    f"{key}: {value}\n"
                    for fields in (self.extra_system, self.metadata)
                    for key, value in fields.items()
                )
            return text.encode("utf-8")
        lines = [f"{QDFN}: {self.data_path}\n", f"{QDSB}: {self.size_bytes}\n"]
        lines.append(f"{QSTT}: {self.submitted_secs}\n")
        lines.append(f"{QSTM}: {self.submitted_usecs}\n")
        lines.append(f"{QSHN}: {self.hostname}\n")
        lines.extend(f"{key}: {value}\n" for key, value in self.extra_system.items())
        lines.extend(f"{key}: {value}\n" for key, value in self.metadata.items())
        as_read = _lines_as_read(self.source)
        return b"".join(as_read.get(line) or line.encode("utf-8") for line in lines)


def _lines_as_read(raw: bytes) -> dict[str, bytes]:
    """Each line of control file ``raw`` as :func:`parse_control` decodes it (with a
    newline), mapped to its bytes as they were."""
    kept: dict[str, bytes] = {}
    for line in raw.split(b"\n"):
        if line:
            kept[line.decode("utf-8", errors="replace") + "\n"] = line + b"\n"
    return kept


#: The control-file field that counts a job's failed attempts (dirqueue's own; the Perl
#: module reads it as metadata and leaves it alone).
ATTEMPTS_KEY: Final = "QATT"
#: The control-file field that holds a job's last failure, one line.
LAST_ERROR_KEY: Final = "QERR"


def attempts_of(control: ControlFile) -> int:
    """How many attempts at a job have failed so far (0 when never)."""
    raw = control.extra_system.get(ATTEMPTS_KEY, "0")
    try:
        return max(0, int(raw.strip()))
    except ValueError:
        return 0  # Garbled by hand: count afresh rather than refuse the job.


def last_error_of(control: ControlFile) -> str:
    """The job's last failure as recorded in its control file ("" when none)."""
    return control.extra_system.get(LAST_ERROR_KEY, "")


def with_attempts(control: ControlFile, attempts: int, error: str | None = None) -> ControlFile:
    """``control`` with its attempt count (and, if given, its last error) replaced."""
    extra = {**control.extra_system, ATTEMPTS_KEY: str(attempts)}
    if error is not None:
        # One line, within the format's rules: no newline or NUL in a value.
        extra[LAST_ERROR_KEY] = " ".join(error.replace("\0", " ").split())[:500]
    return dataclasses.replace(control, extra_system=extra)


#: The control-file field naming the run whose failed attempt ``QATT`` counted last:
#: its lock's owner as ``HOST PID BOOT START`` (see :func:`run_of`). A worker killed
#: between recording its attempt and letting go of the job leaves its lock behind; the
#: dequeuer that breaks it finds this run named here and does not count it again.
COUNTED_RUN_KEY: Final = "QRUN"


def run_of(host: str | None, pid: int | None, boot: str | None, start: int | None) -> str:
    """A lock owner's run as :data:`COUNTED_RUN_KEY` names it (one line, no NUL)."""
    text = f"{host} {pid} {boot or '-'} {start if start is not None else '-'}"
    return " ".join(text.replace("\0", " ").split())


def counted_run_of(control: ControlFile) -> str:
    """The run whose attempt the job's count last included ("" when none is named)."""
    return control.extra_system.get(COUNTED_RUN_KEY, "")


def with_counted_run(control: ControlFile, run: str) -> ControlFile:
    """``control`` naming ``run`` as the one whose attempt its count includes."""
    return dataclasses.replace(control, extra_system={**control.extra_system,
                                                      COUNTED_RUN_KEY: run})


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
    module writes whatever bytes it was given; written back, an unchanged line keeps
    its bytes (:meth:`ControlFile.to_bytes`).
    """
    if len(raw) > CONTROL_FILE_MAX_BYTES:
        raise CorruptJobError(
            f"control file is {len(raw)} bytes, over the {CONTROL_FILE_MAX_BYTES}-byte limit",
            where,
        )
    if b"\0" in raw:
        raise CorruptJobError("control file contains NUL bytes: it is not a text file", where)
    text = raw.decode("utf-8", errors="replace")
    common = _COMMON_START.match(text)
    if common is None:
        ctrl = ControlFile(source=raw)
        seen_time = False
    else:
        # The five lines every enqueue writes, first and in this order: read in one
        # match (a pickup's control file is mostly these); the lines after them as
        # any line is, so a later line of the same name still wins.
        path, size, secs, usecs, host = common.groups()
        ctrl = ControlFile(path, int(size), int(secs), int(usecs), host, source=raw)
        seen_time = True
        text = text[common.end() :]
    for line in text.split("\n"):
        if line == "":
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            # The Perl module skips lines without ": "; so do we.
            continue
        if len(key) == 4 and key[0] == "Q" and _SYSTEM_KEY_RE.fullmatch(key):
            _set_system_field(ctrl, key, value, where)
            seen_time = seen_time or key == QSTT
        else:
            ctrl.metadata[key] = value
    if ctrl.data_path is None:
        raise CorruptJobError("control file has no QDFN (data file) line", where)
    if not seen_time:
        raise CorruptJobError("control file has no QSTT (submission time) line", where)
    return ctrl


@dataclass(frozen=True)
class LockInfo:
    """What an active lock file says about its owner.

    The Perl module writes and reads ``HOST\nPID\n``. dirqueue adds lines the Perl
    module never reads: ``heartbeat`` (the owner touches the lock well inside the
    lifetime while it lives) and ``owner boot=... pidns=... start=...`` (what proves
    the owner dead on its own host; see :mod:`dirqueue._identity`).
    """

    host: str | None = None
    pid: int | None = None
    heartbeat: bool = False
    boot: str | None = None
    pidns: str | None = None
    start: int | None = None


_OWNER_PREFIX: Final = "owner "
_LOCK_READ_MAX: Final = 4096


def parse_lock_file(raw: bytes) -> LockInfo:
    """Parse an active lock file; anything unreadable is left None (never raises)."""
    lines = raw[:_LOCK_READ_MAX].decode("utf-8", errors="replace").split("\n")
    host = lines[0] if lines and lines[0] else None
    pid: int | None = None
    if len(lines) > 1:
        try:
            pid = int(lines[1].strip())
        except ValueError:
            pid = None
    heartbeat = False
    owner: dict[str, str] = {}
    for line in lines[2:]:
        if line.strip() == "heartbeat":
            heartbeat = True
        elif line.startswith(_OWNER_PREFIX):
            for word in line[len(_OWNER_PREFIX) :].split():
                key, _, value = word.partition("=")
                owner[key] = value
    start: int | None = None
    if owner.get("start", "").isdigit():
        start = int(owner["start"])
    return LockInfo(
        host=host,
        pid=pid,
        heartbeat=heartbeat,
        boot=owner.get("boot") or None,
        pidns=owner.get("pidns") or None,
        start=start,
    )


def parse_lock(raw: bytes) -> tuple[str | None, int | None]:
    """``(host, pid)`` from an active lock file's first two lines; None where unreadable."""
    info = parse_lock_file(raw)
    return info.host, info.pid


def format_lock(
    host: str,
    pid: int,
    heartbeat: bool = False,
    *,
    boot: str | None = None,
    pidns: str | None = None,
    start: int | None = None,
) -> bytes:
    """An active lock file's contents (see :class:`LockInfo`): ``HOST\nPID\n``, then
    ``heartbeat\n`` if promised, then the owner line if anything is known of it."""
    text = f"{host}\n{pid}\n"
    if heartbeat:
        text += "heartbeat\n"
    words = [
        f"{key}={value}"
        for key, value in (("boot", boot), ("pidns", pidns), ("start", start))
        if value is not None
    ]
    if words:
        text += _OWNER_PREFIX + " ".join(words) + "\n"
    return text.encode("utf-8", errors="replace")
