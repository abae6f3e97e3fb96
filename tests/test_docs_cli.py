"""The docs keep up with the CLI: every subcommand, option and JSON key is documented.

Reads README.md and docs/*.md. A subcommand's options must appear in the section about
that subcommand (a heading naming ``dq SUBCOMMAND``), not just anywhere.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dirqueue import DirQueue, FailedStore, Job, Worker, cli, list_jobs, queue_stats
from dirqueue.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("dq has no subcommands")


def sections(name: str) -> str:
    """The text under every heading that names ``dq NAME``, up to the next heading of
    the same or a higher level."""
    found = []
    heading = re.compile(r"^(#+) .*\bdq " + re.escape(name) + r"\b", re.MULTILINE)
    for path in DOCS:
        text = path.read_text()
        for match in heading.finditer(text):
            level = len(match.group(1))
            rest = text[match.end():]
            end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
            found.append(rest[: end.start()] if end else rest)
    return "\n".join(found)


def all_docs() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def test_there_are_docs() -> None:
    assert (ROOT / "docs" / "cli.md") in DOCS


@pytest.mark.parametrize("name", sorted(subparsers()))
def test_every_subcommand_has_a_section_with_all_its_options(name: str) -> None:
    text = sections(name)
    assert text, f"no heading names 'dq {name}' in README.md or docs/*.md"
    missing = []
    for action in subparsers()[name]._actions:
        for option in action.option_strings:
            if (
                option.startswith("--")
                and option not in ("--help", "--dir", "--fanout")
                and not re.search(re.escape(option) + r"\b", text)
            ):
                missing.append(option)
        if not action.option_strings and action.dest not in ("help",):
            metavar = str(action.metavar or action.dest.upper()).split()[0]
            if metavar not in text:
                missing.append(metavar)
    assert not missing, f"dq {name}: undocumented {missing}"


def test_options_every_subcommand_shares_are_documented() -> None:
    text = all_docs()
    for option in ("--dir", "--fanout", "--help", "--version"):
        assert option in text


def test_perl_tool_names_are_documented() -> None:
    text = all_docs()
    for tool in ("dq-submit", "dq-deque", "dq-server", "dq-list"):
        assert tool in text
    assert "python -m dirqueue" in text


def test_json_keys_are_documented(tmp_path: Path) -> None:
    q = DirQueue(tmp_path / "q")
    q.enqueue_string("x", {"k": "v"})
    q.enqueue_string("y")

    def boom(job: Job) -> None:
        raise ValueError("no")

    Worker(q, boom, max_attempts=1).run_once()
    keys = set(queue_stats(q).as_dict())
    keys |= set(next(iter(list_jobs(q))).as_dict())
    keys |= set(next(iter(FailedStore(q).jobs())).as_dict())
    keys |= set(Worker(q, boom).report.as_dict())
    Path(q.layout.tmp_dir, "left.ctrl").write_text("debris")
    report = q.fsck(min_age=0)
    keys |= set(report.to_dict()) | set(report.findings[0].to_dict())
    text = all_docs()
    missing = sorted(k for k in keys if f'"{k}"' not in text)
    assert not missing, f"JSON keys not documented: {missing}"


def test_exit_codes_are_documented() -> None:
    text = sections("list") + all_docs()
    for code in (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_NO_JOB):
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), f"exit status {code}"
