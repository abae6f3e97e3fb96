"""The pieces of the on-disk format in ``_format``: host tags, job names, data locations
and control files, checked against docs/format.md's vectors and by round-trip properties."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dirqueue import CorruptJobError
from dirqueue._format import (
    ControlFile,
    data_location,
    host_tag,
    is_job_name,
    make_job_id,
    parse_control,
    parse_job_id,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_"
JOB_ID = re.compile(r"([0-9]{2})\.([0-9]{14})([0-9]{6})\.([A-Za-z0-9+_]+)(?:\.([0-9]+)\.([0-9]+))?")


def reference_tag(checksum: int) -> str:
    """docs/format.md's host tag for a byte sum, written out longhand (no binascii).

    Perl's ``pack("u", text)``: a length character, then each 3-byte group as four
    6-bit values, each written as ``chr(32 + v)`` except that 0 is a backtick; then the
    characters from ' ' to '_' map onto ALPHABET and backticks and the newline vanish.
    """
    text = str(checksum).encode("ascii")
    values: list[int] = [len(text)]
    padded = text + b"\0" * (-len(text) % 3)
    for i in range(0, len(padded), 3):
        group = int.from_bytes(padded[i : i + 3], "big")
        values.extend((group >> shift) & 63 for shift in (18, 12, 6, 0))
    return "".join(ALPHABET[v] for v in values if v != 0)


def text_with_byte_sum(total: int) -> str:
    """An ASCII string whose bytes add up to ``total``."""
    full, rest = divmod(total, 127)
    return "\x7f" * full + chr(rest)


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("host1234", "DNjQ4"),
        ("vm4242", "DNDMx"),
        ("a", "COTc"),
        ("", "BM"),
        ("example.org99999", "EMTQwNw"),
    ],
)
def test_host_tag_vectors_from_the_perl_module(text: str, tag: str) -> None:
    assert host_tag(text) == tag
    assert reference_tag(sum(text.encode())) == tag


@pytest.mark.parametrize(
    ("checksum", "tag"), [(1, "BMQ"), (10, "CMT"), (4096, "END5Ng"), (65535, "FNjU1MzU")]
)
def test_host_tag_vectors_by_checksum(checksum: int, tag: str) -> None:
    text = text_with_byte_sum(checksum)
    assert sum(text.encode()) == checksum
    assert host_tag(text) == tag


def test_host_tag_matches_the_longhand_encoding_for_every_checksum() -> None:
    for checksum in range(65536):
        assert host_tag(text_with_byte_sum(checksum)) == reference_tag(checksum), checksum


@given(st.text())
def test_host_tag_depends_only_on_the_utf8_byte_sum_mod_65536(text: str) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # Lone surrogates: no hostname has them.
    tag = host_tag(text)
    assert tag == reference_tag(sum(raw) % 65536)
    assert set(tag) <= set(ALPHABET)


# Submission times the 14-digit stamp can hold: 1970 up to the end of 9999.
times_ns = st.integers(min_value=0, max_value=253402300799_999_999_999)


@given(
    priority=st.integers(min_value=0, max_value=99),
    hostname=st.from_regex(r"[A-Za-z0-9.-]{1,63}", fullmatch=True),
    pid=st.integers(min_value=1, max_value=4_194_304),
    now_ns=times_ns,
    suffix=st.none() | st.integers(min_value=0, max_value=65535),
)
def test_job_ids_encode_priority_time_and_tag_and_parse_back(
    priority: int, hostname: str, pid: int, now_ns: int, suffix: int | None
) -> None:
    jobid, secs, usecs = make_job_id(
        priority, hostname, pid, now_ns=now_ns, collision_suffix=suffix
    )
    match = JOB_ID.fullmatch(jobid)
    assert match is not None, jobid
    pri, stamp, micro, tag, id_pid, rand = match.groups()
    assert int(pri) == priority == parse_job_id(jobid)
    assert is_job_name(jobid)
    assert (secs, usecs) == (now_ns // 10**9, now_ns // 1000 % 10**6)
    when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    assert int(when.timestamp()) == secs
    assert int(micro) == usecs
    assert tag == host_tag(hostname + str(pid))
    if suffix is None:
        assert id_pid is None
        assert rand is None
    else:
        assert (int(id_pid), int(rand)) == (pid, suffix)


@given(
    a=st.tuples(st.integers(0, 99), times_ns),
    b=st.tuples(st.integers(0, 99), times_ns),
)
def test_name_order_is_priority_then_submission_time(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    id_a, secs_a, usecs_a = make_job_id(a[0], "host", 1, now_ns=a[1])
    id_b, secs_b, usecs_b = make_job_id(b[0], "host", 1, now_ns=b[1])
    key_a = (a[0], secs_a, usecs_a)
    key_b = (b[0], secs_b, usecs_b)
    assert (id_a < id_b) == (key_a < key_b)
    assert (id_a == id_b) == (key_a == key_b)


def test_make_job_id_uses_the_current_time_by_default() -> None:
    before = dt.datetime.now(dt.timezone.utc).timestamp()
    _jobid, secs, usecs = make_job_id(50, "host", 1)
    after = dt.datetime.now(dt.timezone.utc).timestamp()
    assert before - 0.001 <= secs + usecs / 1e6 <= after + 0.001


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "50",
        "5.20261128043411847158.DND",
        "50.2026112804341184715.DND",
        "50.20261128043411847158.",
        "50.20261128043411847158.DN-D",
        "50.20261128043411847158.DND.12",
        "50.20261128043411847158.DND.12.x",
        "x0.20261128043411847158.DND",
        "README",
    ],
)
def test_malformed_job_ids_are_refused(bad: str) -> None:
    assert not is_job_name(bad)
    with pytest.raises(CorruptJobError) as info:
        parse_job_id(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.path == bad


def test_data_location_example_from_format_md() -> None:
    assert data_location("50.20261128043411847158.DNDQ4") == (
        "Q",
        "4",
        "50.20261128043411847158.DND",
    )


@pytest.mark.parametrize("name", ["ab-", "a.", "x", "ab", "tag-!"])
def test_data_location_without_two_tag_characters_at_the_end(name: str) -> None:
    assert data_location(name) == ("0", "0", name)


@given(
    priority=st.integers(0, 99),
    pid=st.integers(1, 10**7),
    now_ns=times_ns,
    suffix=st.none() | st.integers(0, 65535),
)
def test_data_location_splits_off_the_last_two_characters(
    priority: int, pid: int, now_ns: int, suffix: int | None
) -> None:
    jobid, _, _ = make_job_id(priority, "h", pid, now_ns=now_ns, collision_suffix=suffix)
    c1, c2, base = data_location(jobid)
    if jobid[-2] in ALPHABET and jobid[-1] in ALPHABET:
        assert (base, c1, c2) == (jobid[:-2], jobid[-2], jobid[-1])
    else:  # e.g. a collision suffix ".1.0": the '.' is no tag character.
        assert (c1, c2, base) == ("0", "0", jobid)


line_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\n\0")
)
metadata_names = line_text.filter(
    lambda name: ":" not in name and not (len(name) == 4 and name[0] == "Q")
)
extra_system_keys = st.from_regex(r"Q[A-Z]{3}", fullmatch=True).filter(
    lambda key: key not in {"QDFN", "QDSB", "QSTT", "QSTM", "QSHN"}
)
control_files = st.builds(
    ControlFile,
    data_path=line_text,
    size_bytes=st.integers(min_value=0, max_value=2**63),
    submitted_secs=st.integers(min_value=0, max_value=2**40),
    submitted_usecs=st.integers(min_value=0, max_value=999_999),
    hostname=line_text,
    metadata=st.dictionaries(metadata_names, line_text, max_size=6),
    extra_system=st.dictionaries(extra_system_keys, line_text, max_size=2),
)


@given(control_files)
def test_control_file_serialize_then_parse_round_trips(control: ControlFile) -> None:
    raw = control.to_bytes()
    assert parse_control(raw) == control
    # One line per field, each ending in a newline, system fields first, in order.
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == ""
    assert [line.split(": ", 1)[0] for line in lines[:5]] == [
        "QDFN",
        "QDSB",
        "QSTT",
        "QSTM",
        "QSHN",
    ]
    assert len(lines) - 1 == 5 + len(control.extra_system) + len(control.metadata)


def test_control_file_bytes_exactly() -> None:
    control = ControlFile(
        data_path="/q/data/M/z/50.20261128043419191728.DND",
        size_bytes=12,
        submitted_secs=1795840459,
        submitted_usecs=191728,
        hostname="vm",
        metadata={"color": "blue", "with space": "a: b: c"},
    )
    assert control.to_bytes() == (
        b"QDFN: /q/data/M/z/50.20261128043419191728.DND\n"
        b"QDSB: 12\n"
        b"QSTT: 1795840459\n"
        b"QSTM: 191728\n"
        b"QSHN: vm\n"
        b"color: blue\n"
        b"with space: a: b: c\n"
    )


@given(st.binary(max_size=300))
def test_parsing_arbitrary_bytes_either_works_or_raises_corrupt_job_error(raw: bytes) -> None:
    try:
        control = parse_control(raw, "somewhere")
    except CorruptJobError as err:
        error: CorruptJobError | None = err
    else:
        error = None
        assert control.data_path is not None
    assert error is None or error.path == "somewhere"


def test_parse_control_tolerates_bytes_that_are_not_utf8() -> None:
    raw = b"QDFN: /q/data/0/0/x\nQSTT: 1\nname: caf\xe9\n\xff\xfe: v\n"
    control = parse_control(raw)
    assert control.metadata == {"name": "caf\ufffd", "\ufffd\ufffd": "v"}


@pytest.mark.parametrize(
    "raw",
    [
        b"QDSB: 1\nQSTT: 1\n",  # No QDFN.
        b"QDFN: /x\nQDSB: 1\n",  # No QSTT.
        b"QDFN: /x\nQSTT: soon\n",
        b"QDFN: /x\nQSTT: 1\nQDSB: big\n",
        b"QDFN: /x\nQSTT: 1\x00\n",
        b"",
    ],
)
def test_control_files_missing_or_garbling_system_fields_are_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptJobError):
        parse_control(raw)


def test_parse_control_skips_lines_without_separator_and_splits_at_the_first() -> None:
    control = parse_control(b"junk line\nQDFN: /x\nQSTT: 5\nk: v: w\nk2:novalue\n")
    assert control.data_path == "/x"
    assert control.submitted_secs == 5
    assert control.metadata == {"k": "v: w"}
