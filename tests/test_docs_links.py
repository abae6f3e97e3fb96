"""The repository stands on its own: its docs link only to files inside it.

Every ``*.md`` of the checkout (``.venv`` and other tool directories aside) is read.
None may point into ``../shared`` (the team's scratch space beside a checkout, which a
clone does not have), and every relative link in them must name a file of the
repository and, when it has one, a heading that exists in that file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Directories that tools make inside the checkout; their files are not ours.
SKIP_DIRS = {".venv", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
SKIP_DIRS |= {"build", "node_modules"}


def markdown_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts)
    )


MARKDOWN = markdown_files()
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
#: ``../shared``, ``../../shared/`` and so on, and the old top-level names in it.
SHARED = re.compile(r"(?:\.\./)+shared\b|\bshared/(?:FORMAT|STYLE)\.md|\bshared/multihost\b")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def links(path: Path) -> list[str]:
    text = without_code_blocks(path.read_text("utf-8"))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # https:, mailto:


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # A link keeps its text.
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6} +(.+?) *#* *$", without_code_blocks(path.read_text("utf-8")),
                             re.MULTILINE):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_the_docs_are_found() -> None:
    names = {rel(p) for p in MARKDOWN}
    assert {"README.md", "docs/format.md", "docs/cli.md", "tests/multihost/README.md"} <= names
    assert not any(name.startswith(".venv") for name in names)


def test_slugs_follow_github() -> None:
    assert slug("Compatibility with IPC::DirQueue") == "compatibility-with-ipcdirqueue"
    assert slug("How it works, and what it promises") == "how-it-works-and-what-it-promises"
    assert slug("### `corrupt/`".lstrip("# ")) == "corrupt"
    assert slug("Breaking a stale lock: the `.breaking` token") == (
        "breaking-a-stale-lock-the-breaking-token"
    )


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_no_markdown_file_points_into_shared(path: Path) -> None:
    bad = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if SHARED.search(line)
    ]
    assert not bad, f"{rel(path)} refers into ../shared (link into the repository instead): {bad}"


@pytest.mark.parametrize("path", MARKDOWN, ids=rel)
def test_every_relative_link_names_a_file_and_heading_in_the_repository(path: Path) -> None:
    broken = []
    for target in links(path):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {rel(dest)}")
    assert not broken, f"{rel(path)} has broken links: {broken}"


def test_the_link_checker_sees_links() -> None:
    readme = links(ROOT / "README.md")
    assert "docs/format.md" in readme
    assert "docs/cli.md" in readme
    assert "https://metacpan.org/pod/IPC::DirQueue" in readme


def test_the_multihost_test_bed_is_in_the_repository() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert re.search(r"^MULTIHOST \?= tests/multihost$", makefile, re.MULTILINE)
    assert "../shared/multihost" not in makefile + ci
    bed = ROOT / "tests" / "multihost"
    for script in ("setup-gluster.sh", "setup-nfs-ganesha.sh", "teardown.sh", "nfsfuse.py"):
        assert (bed / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert (bed / "fsp-lib.sh").is_file()
