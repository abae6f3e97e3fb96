"""Every way of enqueueing stores exactly the bytes given, and a pickup gives them back."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dirqueue import DirQueue


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def take_only_job(queue: DirQueue, jobid: str) -> bytes:
    """Pick up the one job in the queue, check it is ``jobid``, finish it, return its data."""
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    data = job.get_data()
    assert job.get_data_size_bytes() == len(data)
    job.finish()
    assert queue.pickup_queued_job() is None
    return data


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("plain ascii", b"plain ascii"),
        ("Zoë 東京 \U0001f600", "Zoë 東京 \U0001f600".encode()),
        (b"\x00\xff\x80binary\r\n", b"\x00\xff\x80binary\r\n"),
        (bytearray(b"a bytearray"), b"a bytearray"),
    ],
    ids=["ascii-str", "unicode-str", "bytes", "bytearray"],
)
def test_enqueue_string_stores_str_as_utf8_and_bytes_verbatim(
    queue: DirQueue, given: str | bytes, stored: bytes
) -> None:
    jobid = queue.enqueue_string(given)
    assert take_only_job(queue, jobid) == stored


def test_enqueue_string_rejects_other_types(queue: DirQueue) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        queue.enqueue_string(12345)  # type: ignore[arg-type]


def test_enqueue_file_copies_the_file(queue: DirQueue, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    payload = bytes(range(256)) * 1000
    source.write_bytes(payload)
    jobid = queue.enqueue_file(source)
    # A copy, not a link: changing the source afterwards does not change the job.
    source.write_bytes(b"changed")
    assert take_only_job(queue, jobid) == payload


def test_enqueue_file_accepts_a_str_path(queue: DirQueue, tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"by str path")
    jobid = queue.enqueue_file(str(source))
    assert take_only_job(queue, jobid) == b"by str path"


def test_enqueue_fh_binary_file_object(queue: DirQueue, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    payload = os.urandom(200_000)
    source.write_bytes(payload)
    with source.open("rb") as fh:
        jobid = queue.enqueue_fh(fh)
    assert take_only_job(queue, jobid) == payload


def test_enqueue_fh_reads_from_the_current_position(queue: DirQueue) -> None:
    fh = io.BytesIO(b"skip-this|keep this")
    fh.seek(len(b"skip-this|"))
    jobid = queue.enqueue_fh(fh)
    assert take_only_job(queue, jobid) == b"keep this"


def test_enqueue_fh_text_file_object_is_stored_as_utf8(queue: DirQueue, tmp_path: Path) -> None:
    text = "línea uno\nzweite Zeile ß\n第三行\n" * 5000
    source = tmp_path / "source.txt"
    source.write_text(text, encoding="utf-8")
    with source.open("r", encoding="utf-8", newline="") as fh:
        jobid = queue.enqueue_fh(fh)
    assert take_only_job(queue, jobid) == text.encode("utf-8")


def test_enqueue_fh_stringio(queue: DirQueue) -> None:
    jobid = queue.enqueue_fh(io.StringIO("from a StringIO ✓"))
    assert take_only_job(queue, jobid) == "from a StringIO ✓".encode()


def chunk_source(chunks: list[str | bytes | None]) -> Callable[[], str | bytes | None]:
    """A callable that returns ``chunks`` one per call, then fails if called again."""
    it = iter(chunks)

    def next_chunk() -> str | bytes | None:
        return next(it)  # StopIteration here would mean the queue read past None.

    return next_chunk


def test_enqueue_sub_concatenates_chunks_until_none(queue: DirQueue) -> None:
    source = chunk_source([b"one,", "two ✓,", b"", "", b"three", None])
    jobid = queue.enqueue_sub(source)
    assert take_only_job(queue, jobid) == "one,two ✓,three".encode()


def test_enqueue_sub_stops_at_the_first_none(queue: DirQueue) -> None:
    calls = 0

    def source() -> bytes | None:
        nonlocal calls
        calls += 1
        return b"x" if calls <= 3 else None

    jobid = queue.enqueue_sub(source)
    assert take_only_job(queue, jobid) == b"xxx"
    assert calls == 4


def test_enqueue_sub_with_only_empty_chunks_stores_empty_data(queue: DirQueue) -> None:
    jobid = queue.enqueue_sub(chunk_source([b"", "", b"", None]))
    assert take_only_job(queue, jobid) == b""


def test_enqueue_iter_generator_and_list(queue: DirQueue) -> None:
    def gen() -> Iterator[bytes | str]:
        yield b"gen-"
        yield ""
        yield "erator"

    first = queue.enqueue_iter(gen())
    assert take_only_job(queue, first) == b"gen-erator"
    second = queue.enqueue_iter([b"li", "st", memoryview(b"!")])
    assert take_only_job(queue, second) == b"list!"


@pytest.mark.parametrize(
    "enqueue",
    [
        lambda q, p: q.enqueue_string(b""),
        lambda q, p: q.enqueue_string(""),
        lambda q, p: q.enqueue_file(p),
        lambda q, p: q.enqueue_fh(io.BytesIO(b"")),
        lambda q, p: q.enqueue_sub(lambda: None),
        lambda q, p: q.enqueue_iter([]),
    ],
    ids=["string-bytes", "string-str", "file", "fh", "sub", "iter"],
)
def test_empty_data_round_trips(
    queue: DirQueue, tmp_path: Path, enqueue: Callable[[DirQueue, Path], str]
) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    jobid = enqueue(queue, empty)
    job = queue.pickup_queued_job()
    assert job is not None
    assert job.jobid == jobid
    assert job.get_data() == b""
    assert job.get_data_size_bytes() == 0
    assert os.path.getsize(job.get_data_path()) == 0
    job.finish()


def test_large_data_round_trips_through_every_form(queue: DirQueue, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # Not a multiple of any buffer size.
    digest = hashlib.sha256(payload).hexdigest()
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    step = 100_000
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
    feed = iter([*pieces, None])
    ids = [
        queue.enqueue_string(payload),
        queue.enqueue_file(source),
        queue.enqueue_fh(io.BytesIO(payload)),
        queue.enqueue_sub(lambda: next(feed)),
        queue.enqueue_iter(iter(pieces)),
    ]
    for jobid in ids:
        job = queue.pickup_queued_job(jobid)
        assert job is not None
        assert job.get_data_size_bytes() == len(payload)
        assert hashlib.sha256(job.get_data()).hexdigest() == digest
        job.finish()
    assert list(queue.jobs()) == []


def test_small_buf_size_still_copies_everything(qdir: Path, tmp_path: Path) -> None:
    queue = DirQueue(qdir, buf_size=7)
    source = tmp_path / "source.bin"
    payload = os.urandom(10_000)
    source.write_bytes(payload)
    jobid = queue.enqueue_file(source)
    assert take_only_job(queue, jobid) == payload


def test_metadata_and_priority_go_with_every_form(queue: DirQueue, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"f")
    meta = {"kind": "test", "n": "1"}
    jobids = [
        queue.enqueue_string("s", meta, 10),
        queue.enqueue_file(source, meta, priority=11),
        queue.enqueue_fh(io.BytesIO(b"h"), metadata=meta, priority=12),
        queue.enqueue_sub(chunk_source(["c", None]), meta, 13),
        queue.enqueue_iter(["i"], meta, 14),
    ]
    for jobid, expected_priority in zip(jobids, range(10, 15), strict=True):
        job = queue.pickup_queued_job()
        assert job is not None
        assert job.jobid == jobid
        assert job.priority == expected_priority
        assert job.metadata == meta
        job.finish()


chunks_strategy = st.lists(
    st.one_of(st.binary(max_size=300), st.text(max_size=100).filter(_encodable)), max_size=12
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=chunks_strategy)
def test_any_chunking_stores_the_concatenation(queue: DirQueue, chunks: list[str | bytes]) -> None:
    expected = b"".join(c.encode("utf-8") if isinstance(c, str) else c for c in chunks)
    feed = iter([*chunks, None])
    by_sub = queue.enqueue_sub(lambda: next(feed))
    by_iter = queue.enqueue_iter(chunks)
    for jobid in (by_sub, by_iter):
        job = queue.pickup_queued_job(jobid)
        assert job is not None
        assert job.get_data() == expected
        assert job.get_data_size_bytes() == len(expected)
        job.finish()
