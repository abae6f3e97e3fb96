"""Metadata: every valid item survives enqueue -> pickup exactly; every invalid one is
refused before anything is written."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import files_under
from dirqueue import DirQueue, DirQueueError, InvalidMetadataError

# Text that may appear in a control file line: anything but newline, NUL and lone
# surrogates (which have no UTF-8 form).
line_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\n\0")
line_text = st.text(alphabet=line_chars)
# docs/format.md's rules, and no others. The empty name is refused on the way in (the
# CLI always refused it, and it is a slip, not a name), though read as the Perl module
# reads it: see test_an_empty_name_written_by_another_program_is_read.
valid_names = line_text.filter(
    lambda name: name != "" and ":" not in name and not (len(name) == 4 and name[0] == "Q")
)
valid_values = line_text
valid_metadata = st.dictionaries(valid_names, valid_values, max_size=8)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(metadata=valid_metadata, data=st.binary(max_size=64))
def test_valid_metadata_round_trips_exactly(
    queue: DirQueue, metadata: dict[str, str], data: bytes
) -> None:
    jobid = queue.enqueue_string(data, metadata)
    listed = [job for job in queue.jobs() if job.jobid == jobid]
    assert len(listed) == 1
    assert listed[0].metadata == metadata
    job = queue.pickup_queued_job(jobid)
    assert job is not None
    assert job.metadata == metadata
    assert job.get_data() == data
    job.finish()


@pytest.mark.parametrize(
    "metadata",
    [
        {"with space": "a: b: c", "key=with=equals": "x=y"},
        {"name": "Zoë 東京 \U0001f600", "carriage": "a\rb", "tab\t": "\t"},
        {"empty value": ""},
        {"  padded  ": "  padded  "},
        {"QDFNX": "5 chars, so not a system field", "Q": "1 char", "qdfn": "lower case"},
        {"QDF": "3 chars", "QDFNE": "x", "Q12": "x"},
        {"long": "v" * 100_000},
    ],
)
def test_awkward_but_valid_metadata_round_trips(queue: DirQueue, metadata: dict[str, str]) -> None:
    queue.enqueue_string("x", metadata)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.metadata == metadata
    job.finish()


# One invalid item, and the key it is filed under.
invalid_items = st.one_of(
    # A newline or NUL in a name.
    st.tuples(
        st.builds(lambda a, c, b: a + c + b, valid_names, st.sampled_from("\n\0"), line_text),
        valid_values,
    ),
    # A newline or NUL in a value.
    st.tuples(
        valid_names,
        st.builds(lambda a, c, b: a + c + b, line_text, st.sampled_from("\n\0"), line_text),
    ),
    # An empty name.
    st.tuples(st.just(""), valid_values),
    # A ':' in a name.
    st.tuples(st.builds(lambda a, b: a + ":" + b, line_text, line_text), valid_values),
    # Four characters starting with Q: reserved for system fields.
    st.tuples(
        st.builds(lambda rest: "Q" + rest, st.text(alphabet=line_chars, min_size=3, max_size=3)),
        valid_values,
    ),
    # A name or value that is not a str.
    st.tuples(st.one_of(st.integers(), st.binary(min_size=1), st.none()), valid_values),
    st.tuples(valid_names, st.one_of(st.integers(), st.binary(), st.none(), st.floats())),
)


@PROPERTY
@given(good=valid_metadata, bad=invalid_items, where=st.integers(min_value=0, max_value=8))
def test_invalid_metadata_is_refused_naming_the_key_and_writes_nothing(
    tmp_path: Path, good: dict[str, str], bad: tuple[object, object], where: int
) -> None:
    bad_key, bad_value = bad
    items = list(good.items())
    items.insert(min(where, len(items)), bad)  # type: ignore[arg-type]
    metadata = dict(items)
    if metadata.get(bad_key) is not bad_value:  # type: ignore[call-overload]
        return  # The good part reused the bad key; nothing to test.

    qdir = Path(tempfile.mkdtemp(dir=tmp_path)) / "q"  # tmp_path is shared by examples.
    queue = DirQueue(qdir)
    existing = queue.enqueue_string("already here")
    before = files_under(qdir)
    with pytest.raises(InvalidMetadataError) as info:
        queue.enqueue_string("data", metadata)
    err = info.value
    assert isinstance(err, DirQueueError)
    assert isinstance(err, ValueError)
    assert err.key == bad_key
    assert repr(bad_key) in str(err)
    assert files_under(qdir) == before
    assert [job.jobid for job in queue.jobs()] == [existing]


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"a\nb": "v"}, "a\nb"),
        ({"k": "line1\nline2"}, "k"),
        ({"nul\0": "v"}, "nul\0"),
        ({"k": "v\0"}, "k"),
        ({"a:b": "v"}, "a:b"),
        ({"": "v"}, ""),
        ({"QDFN": "/etc/passwd"}, "QDFN"),
        ({"Qxyz": "v"}, "Qxyz"),
        ({"QSHN": "spoofed"}, "QSHN"),
        ({7: "v"}, 7),
        ({"k": 7}, "k"),
        ({"k": None}, "k"),
        ({"k": b"bytes"}, "k"),
        ({"k": "\ud800"}, "k"),
    ],
)
def test_each_metadata_rule_fails_the_whole_enqueue_in_every_form(
    qdir: Path, tmp_path: Path, metadata: dict[str, str], key: object
) -> None:
    queue = DirQueue(qdir)
    source = tmp_path / "source"
    source.write_bytes(b"x")
    fh = source.open("rb")
    forms: list[Callable[[], str]] = [
        lambda: queue.enqueue_string("x", metadata),
        lambda: queue.enqueue_file(source, metadata),
        lambda: queue.enqueue_fh(fh, metadata),
        lambda: queue.enqueue_sub(iter([b"x", None]).__next__, metadata),
        lambda: queue.enqueue_iter([b"x"], metadata),
    ]
    with fh:
        for enqueue in forms:
            with pytest.raises(InvalidMetadataError) as info:
                enqueue()
            assert isinstance(info.value, ValueError)
            assert info.value.key == key
    assert not qdir.exists() or files_under(qdir) == []


@pytest.mark.parametrize("metadata", [["k", "v"], "k: v", [("k", "v")]])
def test_metadata_that_is_not_a_dict_is_refused(queue: DirQueue, metadata: object) -> None:
    with pytest.raises(InvalidMetadataError, match="dict"):
        queue.enqueue_string("x", metadata)  # type: ignore[arg-type]


def test_no_metadata_is_an_empty_dict(queue: DirQueue) -> None:
    queue.enqueue_string("x")
    queue.enqueue_string("y", None)
    queue.enqueue_string("z", {})
    for _ in range(3):
        job = queue.pickup_queued_job()
        assert job is not None
        assert job.metadata == {}
        job.finish()


def test_an_empty_name_written_by_another_program_is_read(queue: DirQueue) -> None:
    # The Perl module writes whatever it is given, ": v" included, and reads that line
    # as the item "" -> "v": so does dirqueue, although it writes no such line itself.
    queue.enqueue_string("x", {"k": "v"})
    (job,) = queue.jobs()
    control = Path(job.queue_path)
    control.write_text(control.read_text().replace("k: v\n", ": v\n"))
    taken = queue.pickup_queued_job()
    assert taken is not None
    assert taken.metadata == {"": "v"}
    taken.finish()
