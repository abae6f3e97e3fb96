"""``dq web`` over HTTP: every page, the filters and pages of jobs, escaping of what a
job supplies, the read-only rule, the token and CSRF checks, a missing queue.

Each test runs a real ``dq web`` process on 127.0.0.1 (tests/_web.py) and talks to it
with urllib, as a browser with JavaScript off would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from _web import SRC, dq_web, dq_web_as, fail_one, fill
from dirqueue import DirQueue
from dirqueue._results import keep_answer
from dirqueue.failed import FailedStore

pytestmark = pytest.mark.timeout(60)


def counts(body: str) -> dict[str, int]:
    """The overview's tiles, by state."""
    return {
        key: int(n.replace(",", ""))
        for key, n in re.findall(r'data-count="(\w+)">([\d,]+)<', body)
    }


def job_links(body: str) -> list[str]:
    return re.findall(r'href="/q/\d+/job/([^"]+)"', body)


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    return DirQueue(tmp_path / "q", create=True)


def test_overview_counts_each_state_and_says_what_is_missing(q: DirQueue, tmp_path: Path) -> None:
    fill(q, 3)
    q.enqueue_string(b"later", delay=3600)
    fail_one(q, "ValueError: no")
    held = q.pickup_queued_job()  # Active, with this process's live lock.
    assert held is not None
    with held, dq_web(q.dir, tmp_path / "nowhere") as web:
        status, headers, body = web.request("/")
        assert status == 200
        assert counts(body) == {
            "queued": 2, "active": 1, "stale": 0, "deferred": 1, "failed": 1, "results": 0,
        }
        assert "Oldest waiting" in body
        assert "Workers by host" in body
        assert f"pid {os.getpid()}" in body
        # The missing queue: its own section says so, the page is still served.
        assert "nowhere" in body
        assert "No queue at" in body
        assert "Traceback" not in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        # Its pages answer 404 with the reason in words.
        status, _, body = web.request("/q/1/jobs")
        assert status == 404
        assert "No queue at" in body
        assert "Traceback" not in body
        status, _, live = web.request("/live/0")
        assert status == 200
        assert counts(live)["queued"] == 2


def test_jobs_page_filters_by_state_priority_metadata_and_task(q: DirQueue) -> None:
    alice = [q.enqueue_string(b"a", {"owner": "alice"}, priority=10) for _ in range(2)]
    bob = q.enqueue_string(b"b", {"owner": "bob", "task": "app.add"}, priority=60)
    later = q.enqueue_string(b"c", {"owner": "carol"}, delay=3600)
    failed = fail_one(q, "boom", owner="dave")
    with dq_web(q.dir) as web:
        def ids(query: str) -> list[str]:
            status, _, body = web.request(f"/q/0/jobs?{query}")
            assert status == 200, body
            return job_links(body)

        assert set(ids("")) == {*alice, bob, later, failed}
        assert ids("state=queued") == [*alice, bob]
        assert ids("state=deferred") == [later]
        assert ids("state=failed") == [failed]
        assert ids("priority=60") == [bob]
        assert ids("meta=owner%3Dalice") == alice
        assert ids("meta=task") == [bob]
        assert ids("task=app.add") == [bob]
        assert ids("meta=owner%3Ddave&state=failed") == [failed]
        assert ids("meta=owner%3Dnobody") == []
        status, _, body = web.request("/q/0/jobs?state=bogus")
        assert status == 400
        assert "state is one of" in body
        status, _, _ = web.request("/q/0/jobs?priority=100")
        assert status == 400


def test_jobs_are_paginated(q: DirQueue) -> None:
    made = fill(q, 120)
    with dq_web(q.dir) as web:
        seen: list[str] = []
        path = "/q/0/jobs"
        pages = 0
        while path:
            status, _, body = web.request(path)
            assert status == 200
            rows = job_links(body)
            assert len(rows) <= 50
            seen += rows
            pages += 1
            nxt = re.search(r'rel="next" href="([^"]+)"', body)
            path = nxt.group(1).replace("&amp;", "&") if nxt else ""
        assert pages == 3
        assert seen == sorted(made)
        _, _, body = web.request("/q/0/jobs?start=50")
        assert "51 to 100 of 120" in body


def test_job_page_shows_metadata_data_error_and_lock(q: DirQueue) -> None:
    jobid = q.enqueue_string(b"hello data\n", {"owner": "alice", "task": "app.add"})
    failed = fail_one(q, "ValueError: bad input", "Traceback (most recent call last):\n  x\n")
    held = q.pickup_queued_job()
    assert held is not None
    assert held.jobid == jobid
    try:
        with dq_web(q.dir) as web:
            status, _, body = web.request(f"/q/0/job/{jobid}")
            assert status == 200
            assert "alice" in body
            assert "app.add" in body
            assert "hello data" in body
            assert "lock owner" in body
            assert "active" in body
            status, _, body = web.request(f"/q/0/job/{failed}")
            assert status == 200
            assert "ValueError: bad input" in body
            assert "most recent call last" in body
            # Ids may hold '+' (written %2B in links): the id is read unquoted.
            quoted = jobid.replace(".", "%2E")
            assert web.request(f"/q/0/job/{quoted}")[0] == 200
            status, _, body = web.request("/q/0/job/50.20260101000000000000.AAAAA")
            assert status == 404
            assert "No job" in body
            status, _, body = web.request("/q/0/job/..%2F..%2Fetc")
            assert status == 404
    finally:
        held.return_to_queue()


def test_failed_page_groups_reasons(q: DirQueue) -> None:
    for _ in range(3):
        fail_one(q, "KeyError: 'x'")
    fail_one(q, "TimeoutError")
    with dq_web(q.dir) as web:
        status, _, body = web.request("/q/0/failed")
        assert status == 200
        assert "4 failed jobs, 2 reasons" in body
        assert body.index("KeyError") < body.index("TimeoutError")  # Largest group first.
        assert "Read-only" in body
        assert "<form" not in body


HOSTILE = {
    "script": "<script>window.pwned=1</script>",
    "img": '"><img src=x onerror="window.pwned=2">',
    "term": "\x1b[2J\x1b]0;owned\x07",
    "bidi": "invoice\u202efdp.exe",
    "big": "A" * 1_000_000,
}


def test_job_supplied_strings_are_escaped_and_cut(q: DirQueue) -> None:
    jobid = q.enqueue_string(b"<script>alert(1)</script>\x1b[31m", HOSTILE)
    failed = fail_one(q, "<b>bold</b>\x1b[1m", "<script>x</script>", **HOSTILE)
    with dq_web(q.dir) as web:
        for path in ("/", f"/q/0/job/{jobid}", f"/q/0/job/{failed}", "/q/0/jobs",
                     "/q/0/failed", "/q/0/jobs?state=failed"):
            status, _, body = web.request(path)
            assert status == 200, path
            assert "<script>" not in body.replace('<script src="/static/dq.js" defer>', ""), path
            assert "<img" not in body
            assert "<b>bold" not in body, path
            assert "\x1b" not in body
            assert "\u202e" not in body
            assert "\x07" not in body, path
            assert len(body) < 200_000, f"{path}: {len(body)} characters"
        _, _, body = web.request(f"/q/0/job/{jobid}")
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in body
        assert '<span class="esc">\\x1b</span>' in body
        assert '<span class="esc">\\u202e</span>' in body
        assert "more characters" in body  # The 1 MB value, cut.


def test_read_only_refuses_every_action(q: DirQueue) -> None:
    failed = fail_one(q, "boom")
    with dq_web(q.dir) as web:
        status, _, body = web.request("/q/0/requeue", data={"jobid": failed})
        assert status == 403
        assert "read-only" in body
        status, _, _ = web.request(f"/login?token={'x' * 32}")
        assert status == 403
    assert FailedStore(q).count() == 1


def test_actions_need_the_token_csrf_value_and_our_origin(q: DirQueue) -> None:
    failed = fail_one(q, "boom")
    gone = fail_one(q, "boom")
    waiting = q.enqueue_string(b"w")
    with dq_web(q.dir, actions=True) as web:
        cookie = web.login_cookie()
        _, _, page = web.request("/q/0/failed", headers={"Cookie": cookie})
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        # Without the cookie (another site's request carries none: SameSite=Strict).
        status, _, body = web.request("/q/0/requeue", data={"jobid": failed, "csrf": csrf[1]})
        assert status == 403
        assert "token" in body
        # Without the form's CSRF value, or with a wrong one.
        for form in ({"jobid": failed}, {"jobid": failed, "csrf": "0" * 32}):
            status, _, _ = web.request("/q/0/requeue", data=form, headers={"Cookie": cookie})
            assert status == 403
        # From another origin.
        status, _, _ = web.request(
            "/q/0/requeue", data={"jobid": failed, "csrf": csrf[1]},
            headers={"Cookie": cookie, "Origin": "http://evil.example"},
        )
        assert status == 403
        status, _, _ = web.request(
            "/q/0/requeue", data={"jobid": failed, "csrf": csrf[1]},
            headers={"Cookie": cookie, "Sec-Fetch-Site": "cross-site"},
        )
        assert status == 403
        # A name that is not ours in Host (DNS rebinding).
        status, _, _ = web.request("/", headers={"Host": "evil.example"})
        assert status == 400
        assert FailedStore(q).count() == 2
        # Everything right: requeued through the engine, back in queue/.
        status, headers, _ = web.request(
            "/q/0/requeue", data={"jobid": failed, "csrf": csrf[1]},
            headers={"Cookie": cookie, "Origin": web.url.rstrip("/")},
        )
        assert status == 303
        assert headers["Location"] == "/q/0/failed?did=requeued&n=1"
        assert [job.jobid for job in q.jobs() if job.jobid == failed] == [failed]
        status, _, _ = web.request(
            "/q/0/purge", data={"jobid": gone, "csrf": csrf[1]}, headers={"Cookie": cookie}
        )
        assert status == 303
        assert FailedStore(q).count() == 0
        status, _, _ = web.request(
            "/q/0/cancel", data={"jobid": waiting, "csrf": csrf[1]}, headers={"Cookie": cookie}
        )
        assert status == 303
        assert waiting not in {job.jobid for job in q.jobs()}
        # The message after a redirect is ours in fixed words, whatever the query says.
        _, _, body = web.request("/q/0/failed?did=<script>&n=1")
        assert "<script>" not in body.replace('<script src="/static/dq.js" defer>', "")


def test_unknown_pages_and_methods(q: DirQueue) -> None:
    with dq_web(q.dir) as web:
        assert web.request("/nope")[0] == 404
        assert web.request("/q/7/jobs")[0] == 404
        assert web.request("/static/dq.js")[0] == 200
        assert web.request("/static/../dq.js")[0] == 404


def test_a_done_job_shows_its_kept_result(q: DirQueue) -> None:
    jobid = q.enqueue_string(b"2 3", {"task": "app.add"})
    job = q.pickup_queued_job()
    assert job is not None
    keep_answer(q.config, jobid, {"sum": "<b>5</b>"}, 1, 3600)
    job.finish()
    with dq_web(q.dir) as web:
        status, _, body = web.request(f"/q/0/job/{jobid}")
        assert status == 200
        assert "Result" in body
        assert "&lt;b&gt;5&lt;/b&gt;" in body
        assert 'class="badge done"' in body
        _, _, overview = web.request("/")
        assert counts(overview)["results"] == 1
        _, _, listed = web.request("/q/0/jobs?state=done")
        assert job_links(listed) == [jobid]


def test_ctrl_c_stops_it_with_status_0(q: DirQueue) -> None:
    with dq_web(q.dir) as web:
        assert web.request("/")[0] == 200
        assert web.proc is not None
        web.proc.send_signal(signal.SIGINT)
        assert web.proc.wait(timeout=20) == 0


def test_bad_bind_and_no_queue_are_usage_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DQ_DIR"}
    env["PYTHONPATH"] = SRC
    bad = subprocess.run(
        [sys.executable, "-m", "dirqueue", "web", "--dir", str(tmp_path), "--bind", "nope"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )
    assert bad.returncode == 2
    assert "give HOST:PORT" in bad.stderr
    none = subprocess.run(
        [sys.executable, "-m", "dirqueue", "web"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )
    assert none.returncode == 2
    assert "--dir" in none.stderr


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run dq web as another user")
def test_an_unreadable_queue_is_a_message_not_a_traceback() -> None:
    parent = tempfile.mkdtemp(prefix="dq-web-unreadable-")
    try:
        os.chmod(parent, 0o755)  # noqa: S103 - pytest's tmp_path is root's alone; not this
        q = DirQueue(os.path.join(parent, "q"), create=True)
        fill(q, 2)
        os.chmod(q.dir, 0o700)  # The queue: root's alone.
        with dq_web_as(NOBODY, q.dir) as web:
            status, _, body = web.request("/")
            assert status == 200
            assert f"Cannot read {q.dir}: permission denied" in body
            assert "run dq web as a user who can read it" in body
            assert 'data-count="queued"' not in body
            status, _, body = web.request("/q/0/jobs")
            assert status == 503
            assert "permission denied" in body
            assert "Traceback" not in body
            status, _, body = web.request("/q/0/failed")
            assert status == 503
            assert "Traceback" not in body
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_a_dead_workers_lock_is_marked_stale(q: DirQueue) -> None:
    jobid = q.enqueue_string(b"x")
    # A worker that takes the job and dies holding it (no finish, no return).
    subprocess.run(
        [sys.executable, "-c",
         "import os, sys; from dirqueue import DirQueue;"
         " job = DirQueue(sys.argv[1]).pickup_queued_job(); os._exit(0 if job else 1)",
         str(q.dir)],
        env={**os.environ, "PYTHONPATH": SRC}, timeout=30, check=True,
    )
    with dq_web(q.dir) as web:
        _, _, body = web.request("/")
        assert counts(body)["stale"] == 1
        assert counts(body)["active"] == 0
        assert '<span class="badge stale">1 stale</span>' in body
        _, _, listed = web.request("/q/0/jobs?state=stale")
        assert job_links(listed) == [jobid]
        _, _, page = web.request(f"/q/0/job/{jobid}")
        assert "badge stale" in page
        assert "is dead" in page
