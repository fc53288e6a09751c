"""The README and the documents it links are complete in a fresh clone.

Every relative link resolves to a file of the repository (and every ``#anchor`` to a heading
of it), every repository path quoted in backticks exists, every page of ``docs/`` is
reachable from the README, and nothing sends the reader outside the repository to the
project's internal notes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# Top-level entries whose paths a document may quote: a quoted `tools/bench/x.py` must exist.
REPO_TOPS = ("tipcshm", "workers", "cli", "tests", "tools", "docs", "examples", ".ci")
QUOTED_PATH = re.compile(rf"^(?:{'|'.join(re.escape(t) for t in REPO_TOPS)})(?:/[\w.-]+)*/?$")
OUTSIDE = ("../shared", "/work/shared", "shared/tools", "ARCHITECTURE.md", "STYLE.md")


def _linked_documents() -> list[Path]:
    """README.md and every Markdown file of the repository reachable from it by links."""
    seen: list[Path] = []
    todo = [ROOT / "README.md"]
    while todo:
        doc = todo.pop()
        if doc in seen:
            continue
        seen.append(doc)
        for target in LINK.findall(doc.read_text()):
            path = _target_path(doc, target)
            if path is not None and path.suffix == ".md" and path.is_file():
                todo.append(path)
    return seen


def _target_path(doc: Path, target: str) -> Path | None:
    """The file a relative link points at (None for links to the web or within the page)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return (doc.parent / target.split("#", 1)[0]).resolve()


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", doc.read_text(), re.M)}


DOCUMENTS = _linked_documents()


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


def test_every_page_of_docs_is_reachable_from_the_readme() -> None:
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [p for p in pages if p not in DOCUMENTS] == []
    assert {"architecture.md", "design.md", "testing.md"} <= {p.name for p in pages}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_links_resolve_inside_the_repository(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        anchor = target.split("#", 1)[1] if "#" in target else None
        path = _target_path(doc, target)
        if path is None:
            if target.startswith("#") and anchor not in _anchors(doc):
                broken.append(f"{target}: no such heading")
            continue
        if not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor is not None and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading in {_rel(path)}")
    assert broken == [], f"{_rel(doc)}: {broken}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_quoted_repository_paths_exist(doc: Path) -> None:
    missing = [
        span
        for span in CODE_SPAN.findall(doc.read_text())
        if QUOTED_PATH.match(span) and "/" in span and not (ROOT / span).exists()
    ]
    assert missing == [], f"{_rel(doc)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_nothing_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert [s for s in OUTSIDE if s in text] == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The patterns above find links, anchors and quoted paths (so the tests can fail)."""
    text = "See [a](docs/x.md#the-part), [web](https://example.org), `tools/bench/nope.py`.\n"
    assert LINK.findall(text) == ["docs/x.md#the-part", "https://example.org"]
    assert [s for s in CODE_SPAN.findall(text) if QUOTED_PATH.match(s)] == ["tools/bench/nope.py"]
    assert _target_path(ROOT / "README.md", "https://example.org") is None
    assert _slug("Trust, crashes and full memory") == "trust-crashes-and-full-memory"
    assert _slug("`tipcshm stat`") == "tipcshm-stat"
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n## Reading a node: `tipcshm stat`\n")
    assert _anchors(page) == {"title", "reading-a-node-tipcshm-stat"}
