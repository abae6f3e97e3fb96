"""Numbers that are not numbers of seconds (nan, the infinities, 1e300) are refused
where they enter, in the API and in dq's options alike, with an error that names the
parameter and the range allowed.

Before, ``active_file_lifetime=nan`` made a live worker's fresh lock look stale at
once, ``delay=nan`` queued a job at once, ``idle_timeout=nan`` never came, and
``inf``/``1e300`` ended in an OverflowError traceback.
"""

from __future__ import annotations

import datetime
import io
import math
import os
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from dirqueue import DirQueue, DirQueueError, InvalidNumberError, Job, Worker
from dirqueue.cli import EXIT_USAGE, main
from durability_checks import deferred_jobs

pytestmark = pytest.mark.timeout(60)

NAN, INF = math.nan, math.inf


def _ok(job: Job) -> None:
    pass


_Raises = AbstractContextManager[pytest.ExceptionInfo[InvalidNumberError]]


def _refused(name: str, allowed: str) -> _Raises:
    return pytest.raises(InvalidNumberError, match=rf"^{name} must be {allowed}.*, not ")


@pytest.mark.parametrize("value", [NAN, INF, -INF, 0, -1, 1e300, True, "600"])
def test_active_file_lifetime(tmp_path: Path, value: object) -> None:
    with _refused("active_file_lifetime", "a number of seconds more than 0"):
        DirQueue(tmp_path / "q", active_file_lifetime=value)  # type: ignore[arg-type]
    q = DirQueue(tmp_path / "q", active_file_lifetime=30)
    with _refused("active_file_lifetime", "a number of seconds more than 0"):
        q.active_file_lifetime = value  # type: ignore[assignment]
    assert q.active_file_lifetime == 30
    assert q.config.active_file_lifetime == 30


@pytest.mark.parametrize("delay", [NAN, INF, 1e300, -1, 10 * 366 * 86400])
def test_delay(tmp_path: Path, delay: float) -> None:
    q = DirQueue(tmp_path / "q", create=True)
    with _refused("delay", "a number of seconds from 0 to 315360000"):
        q.enqueue_string("x", delay=delay)
    with _refused("delay", "a number of seconds from 0"):
        q.enqueue_many(["x"], delay=delay)
    assert q.pickup_queued_job() is None
    assert deferred_jobs(q) == set()


@pytest.mark.parametrize(
    "when", [NAN, INF, 1e30, -1.0, datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)]
)
def test_not_before(tmp_path: Path, when: float | datetime.datetime) -> None:
    q = DirQueue(tmp_path / "q", create=True)
    with _refused("not_before", "a time in seconds since the epoch from 0 to 4102444800"):
        q.enqueue_string("x", not_before=when)
    assert q.pickup_queued_job() is None
    assert deferred_jobs(q) == set()


@pytest.mark.parametrize("delay", [NAN, INF, 1e300])
def test_retry_later_delay(tmp_path: Path, delay: float) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x")
    job = q.pickup_queued_job()
    assert job is not None
    with _refused("delay", "a number of seconds from 0"):
        job.retry_later(delay)
    assert job.is_active  # Refused before anything was done: still ours.
    assert deferred_jobs(q) == set()
    job.retry_later(-5)  # As documented: at once.
    again = q.pickup_queued_job()
    assert again is not None
    again.finish()


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("retry_delay", NAN, "a number of seconds from 0"),
        ("retry_delay", INF, "a number of seconds from 0"),
        ("retry_delay_max", NAN, "a number of seconds more than 0"),
        ("retry_delay_max", INF, "a number of seconds more than 0"),
        ("idle_timeout", NAN, "a number of seconds from 0"),
        ("idle_timeout", 1e300, "a number of seconds from 0"),
        ("timeout", NAN, "a number of seconds more than 0"),
        ("poll_interval", NAN, "a number of seconds more than 0"),
        ("poll_interval", INF, "a number of seconds more than 0"),
    ],
)
def test_worker_options(tmp_path: Path, option: str, value: float, allowed: str) -> None:
    q = DirQueue(tmp_path / "q")
    with _refused(option, allowed):
        Worker(q, _ok, **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "value"), [("timeout", NAN), ("poll_interval", INF)])
def test_wait_for_queued_job(tmp_path: Path, option: str, value: float) -> None:
    q = DirQueue(tmp_path / "q")
    with pytest.raises(InvalidNumberError, match=option):
        q.wait_for_queued_job(**{option: value})  # type: ignore[arg-type]


def test_the_error_is_a_value_error_and_names_what_was_given(tmp_path: Path) -> None:
    with pytest.raises(InvalidNumberError, match="nan") as caught:
        DirQueue(tmp_path / "q").enqueue_string("x", delay=NAN)
    assert issubclass(InvalidNumberError, ValueError)
    assert issubclass(InvalidNumberError, DirQueueError)
    assert caught.value.name == "delay"
    assert isinstance(caught.value.value, float)
    assert math.isnan(caught.value.value)
    assert "315360000" in caught.value.allowed


def dq(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err)
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["submit", "--delay", "nan"], "--delay"),
        (["submit", "--delay", "inf"], "--delay"),
        (["submit", "--delay", "1e300"], "--delay"),
        (["submit", "--at", "1e30"], "--at"),
        (["submit", "--at", "nan"], "--at"),
        (["server", "--idle-timeout", "nan"], "--idle-timeout"),
        (["server", "--poll-interval", "inf"], "--poll-interval"),
        (["server", "--retry-delay", "nan"], "--retry-delay"),
        (["server", "--retry-delay-max", "inf"], "--retry-delay-max"),
        (["server", "--timeout", "nan"], "--timeout"),
        (["deque", "--wait", "nan"], "--wait"),
    ],
)
def test_dq_options(tmp_path: Path, args: list[str], option: str) -> None:
    qdir = str(tmp_path / "q")
    command = [args[0], "--dir", qdir, *args[1:]]
    if args[0] != "submit":
        command += ["--", "true"]
    code, err = dq(*command)
    assert code == EXIT_USAGE
    assert "Traceback" not in err
    assert f"argument {option}: {args[-1]!r} is out of range: use " in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(qdir) or deferred_jobs(DirQueue(qdir)) == set()
