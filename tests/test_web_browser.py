"""``dq web`` in a real headless Chromium, driven by Playwright.

The browser is the system's (Debian's ``chromium``); Playwright downloads none. The
tests skip, saying why, where either is missing (``make test-browser``; ``.ci/run``
installs both). With ``DQ_WEB_SCREENSHOTS=DIR`` the run also saves the overview and a
job page there (``DQ_WEB_SCREENSHOTS=docs make test-browser`` refreshes docs/web.md's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _web import SRC, Web, dq_web, fail_one, fill
from dirqueue import DirQueue
from dirqueue.failed import FailedStore

CHROMIUM = os.environ.get("DQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install 'dirqueue[browser]')"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def q(tmp_path: Path) -> DirQueue:
    return DirQueue(tmp_path / "q", create=True)


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    """Save a screenshot of the whole page: in tmp_path, and in $DQ_WEB_SCREENSHOTS."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("DQ_WEB_SCREENSHOTS")
    if wanted:
        shutil.copy(path, Path(wanted) / name)


def _python(*code: str) -> list[str]:
    return [sys.executable, "-c", "\n".join(code)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _count(page: Any, state: str) -> int:
    return int(page.inner_text(f'[data-count="{state}"]').replace(",", ""))


def _wait_count(page: Any, state: str, value: int, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([s, v]) => { const e = document.querySelector(`[data-count=\"${s}\"]`);"
        " return e && Number(e.textContent.replace(/,/g, '')) === v; }",
        arg=[state, value], timeout=timeout,
    )


def test_overview_follows_a_queue_filled_and_drained_by_other_processes(
    q: DirQueue, page: Any, tmp_path: Path
) -> None:
    for reason in ("KeyError: 'customer'", "KeyError: 'customer'", "TimeoutError: 30s"):
        fail_one(q, reason, owner="billing")
    filler = drainer = None
    with dq_web(q.dir) as web:
        try:
            page.goto(web.url)
            assert _count(page, "queued") == 0
            assert _count(page, "failed") == 3
            page.evaluate("window.notReloaded = true")
            filler = subprocess.Popen(_python(
                "import sys, time; from dirqueue import DirQueue",
                f"q = DirQueue({str(q.dir)!r})",
                "for i in range(60):",
                "    q.enqueue_string(b'x' * 100, {'owner': 'alice', 'task': 'app.resize'})",
                "    time.sleep(0.02)",
            ), env=_env())
            assert filler.wait(timeout=60) == 0
            _wait_count(page, "queued", 60)
            # Two workers, each job a fifth of a second: the counts move while we look.
            drainer = subprocess.Popen(
                [sys.executable, "-m", "dirqueue", "server", "--dir", str(q.dir),
                 "--workers", "2", "--until-empty", "--keep-results", "-q",
                 "--", "sh", "-c", "sleep 0.2", "sh"],
                env=_env(), start_new_session=True,
            )
            page.wait_for_function(
                "() => Number(document.querySelector('[data-count=\"active\"]').textContent) > 0",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => { const n = Number(document.querySelector('[data-count=\"queued\"]')"
                ".textContent); return n > 0 && n < 50; }",
                timeout=30_000,
            )
            page.wait_for_timeout(1500)  # A few samples on the charts.
            _shot(page, tmp_path, "web-overview.png")
            assert drainer.wait(timeout=60) == 0
            _wait_count(page, "queued", 0)
            _wait_count(page, "active", 0)
            assert page.evaluate("window.notReloaded") is True  # Refreshed in place.
        finally:
            for proc in (filler, drainer):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)


def test_a_filter_and_a_job_page_work(q: DirQueue, page: Any, tmp_path: Path) -> None:
    fill(q, 5, owner="alice")
    bob = q.enqueue_string(b"resize 640x480\n", {"owner": "bob", "task": "app.resize"})
    failed = fail_one(
        q, "ValueError: image too large (8000x8000)",
        "Traceback (most recent call last):\n  File \"app/tasks.py\", line 42, in resize\n"
        "    check(size)\n  File \"app/tasks.py\", line 17, in check\n"
        "    raise ValueError(f'image too large ({w}x{h})')\n"
        "ValueError: image too large (8000x8000)\n",
        owner="carol", task="app.resize", source="s3://photos/2026/12/IMG_0042.jpg",
    )
    with dq_web(q.dir) as web:
        page.goto(f"{web.url}q/0/jobs")
        assert page.locator("table.jobs tbody tr").count() == 7
        page.fill('input[name="meta"]', "owner=bob")
        page.click('form.filters button[type="submit"]')
        page.wait_for_url("**/q/0/jobs?*meta=owner%3Dbob*")
        rows = page.locator("table.jobs tbody tr")
        assert rows.count() == 1
        page.click(f"text={bob}")
        page.wait_for_url(f"**/q/0/job/{bob}")
        assert "resize 640x480" in page.inner_text("pre.data")
        assert "bob" in page.inner_text("table.meta")
        page.goto(f"{web.url}q/0/job/{failed}")
        assert "image too large" in page.inner_text("p.error")
        _shot(page, tmp_path, "web-job.png")


def test_requeue_from_the_failed_page_and_refusals_without_the_token(
    q: DirQueue, browser: Any, page: Any
) -> None:
    failed = fail_one(q, "OSError: disk full", owner="alice")
    with dq_web(q.dir, actions=True) as web:
        # No token yet: the page offers no buttons, and a forged POST is refused.
        page.goto(f"{web.url}q/0/failed")
        assert "need the token" in page.inner_text("main")
        assert page.locator("form.act").count() == 0
        status = page.evaluate(
            "([u, id]) => fetch(u, {method: 'POST', headers: {'Content-Type':"
            " 'application/x-www-form-urlencoded'}, body: 'jobid=' + id + '&csrf=00'})"
            ".then(r => r.status)",
            [f"{web.url}q/0/requeue", failed],
        )
        assert status == 403
        # With the token: requeue moves the job back to the queue.
        page.goto(f"{web.url}login?token={web.token}")
        page.goto(f"{web.url}q/0/failed")
        csrf = page.get_attribute('input[name="csrf"]', "value")
        _cross_site_post_is_refused(browser, page, web, failed, csrf)
        assert FailedStore(q).count() == 1
        page.goto(f"{web.url}q/0/failed")
        with page.expect_navigation():
            page.click("form.act.small:not(.danger) button")
        assert page.url.endswith("/q/0/failed?did=requeued&n=1"), page.inner_text("main")
        assert "Requeued 1 job." in page.inner_text("p.done")
    assert FailedStore(q).count() == 0
    assert [job.jobid for job in q.jobs()] == [failed]


def _cross_site_post_is_refused(browser: Any, page: Any, web: Web, jobid: str, csrf: str) -> None:
    """A page of another origin posts our form, even with the right CSRF value, from the
    browser that holds the token: the SameSite cookie stays home and Origin is not ours."""
    form = (
        f'<form id="f" method="post" action="{web.url}q/0/requeue">'
        f'<input name="jobid" value="{jobid}"><input name="csrf" value="{csrf}"></form>'
    )
    page.goto("data:text/html," + urllib.parse.quote(form))  # An opaque origin: not ours.
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert "Refused" in page.inner_text("h1")


def test_hostile_metadata_never_runs_script(q: DirQueue, page: Any) -> None:
    hostile = {
        "a": "<script>window.pwned = 1; alert(1)</script>",
        "b": '"><img src=x onerror="window.pwned = 2; alert(2)">',
        "c": "</pre></td><svg onload=\"window.pwned = 3\">",
        "d": "javascript:alert(4)",
        "e": "\x1b]0;owned\x07 \u202etxt.exe",
    }
    jobid = q.enqueue_string(b"<script>window.pwned = 5</script>", hostile)
    failed = fail_one(q, "<img src=x onerror=alert(6)>", "<script>alert(7)</script>", **hostile)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with dq_web(q.dir) as web:
        for path in ("", "q/0/jobs", f"q/0/job/{jobid}", f"q/0/job/{failed}", "q/0/failed"):
            page.goto(web.url + path)
            page.wait_for_timeout(1200)  # Past a live refresh, and any image's error.
            assert page.evaluate("window.pwned") is None, path
        # The text shows, as text.
        page.goto(f"{web.url}q/0/job/{jobid}")
        assert "<script>window.pwned = 1; alert(1)</script>" in page.inner_text("table.meta")
    assert dialogs == []
