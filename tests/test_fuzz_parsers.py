"""Fuzzing the parsers of untrusted bytes: control files, job names, lock files.

Whatever bytes a file in the queue holds, a parser either returns a value or raises
CorruptJobError: never another exception, never a hang.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dirqueue import CorruptJobError
from dirqueue._format import (
    ControlFile,
    data_location,
    is_job_name,
    parse_control,
    parse_job_id,
    parse_lock,
    validate_metadata,
)

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=1500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

# Lines that look like control-file lines, to get past the first checks more often
# than random bytes would.
_KEYS = st.sampled_from(["QDFN", "QDSB", "QSTT", "QSTM", "QSHN", "QXYZ", "meta", "", "Q"])
_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.sampled_from(["9" * 5000, "-1", " 12 ", "1_000", "0x10", "١٢", "\x00", "\r"]),
)
_LINE = st.builds(
    lambda k, sep, v: f"{k}{sep}{v}", _KEYS, st.sampled_from([": ", ":", " ", ""]), _VALUES
)
_CONTROLISH = st.lists(_LINE, max_size=12).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
)
_NAMEISH = st.from_regex(
    r"[0-9]{2}\.[0-9]{20}\.[A-Za-z0-9+_]{1,8}(\.[0-9]{1,6}\.[0-9]{1,6})?.?", fullmatch=True
)


@FUZZ
@given(st.one_of(st.binary(max_size=2000), _CONTROLISH))
def test_parse_control_returns_or_raises_corrupt_job_error(raw: bytes) -> None:
    try:
        ctrl = parse_control(raw, "fuzz")
    except CorruptJobError as err:
        where = err.path
        assert where == "fuzz"
        return
    assert ctrl.data_path is not None
    assert isinstance(ctrl.submitted_secs, int)
    assert all("\n" not in k for k in ctrl.metadata)


@FUZZ
@given(st.one_of(st.text(max_size=80), _NAMEISH))
def test_job_name_parsers_return_or_raise_corrupt_job_error(name: str) -> None:
    ok = is_job_name(name)
    try:
        priority = parse_job_id(name)
    except CorruptJobError:
        assert not ok
        return
    assert ok
    assert 0 <= priority <= 99
    c1, c2, base = data_location(name)
    # A job id's data never leaves data/: no separators, no dot-dot components.
    for part in (c1, c2, base):
        assert "/" not in part
        assert part not in ("", ".", "..")


@FUZZ
@given(st.binary(max_size=200))
def test_parse_lock_never_raises(raw: bytes) -> None:
    host, pid = parse_lock(raw)
    assert host is None or isinstance(host, str)
    assert pid is None or isinstance(pid, int)


@FUZZ
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6))
def test_valid_metadata_round_trips_through_a_control_file(meta: dict[str, str]) -> None:
    try:
        checked = validate_metadata(meta)
    except ValueError:
        return
    ctrl = ControlFile(data_path="q/data/a/b/c", size_bytes=1, submitted_secs=5, hostname="h",
                       metadata=checked)
    back = parse_control(ctrl.to_bytes())
    assert back.metadata == checked


def test_huge_digit_field_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptJobError):
        parse_control(b"QDFN: x\nQSTT: " + b"9" * 100_000 + b"\n")
