"""The JSON contracts docs/commands.md promises, read from the page and compared with the
code that writes them, and the links between the vulnerability pages."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from graphbuild import scanning, vulns

DOCS = Path(__file__).resolve().parent.parent / "docs"


def section(page: str, heading: str) -> str:
    """The text under the `## ` heading that starts with `heading`, up to the next one."""
    text = (DOCS / page).read_text()
    starts = [m.end() for m in re.finditer(rf"^## {re.escape(heading)}.*$", text, flags=re.M)]
    assert len(starts) == 1, f"{page}: one section {heading!r} expected, found {len(starts)}"
    return text[starts[0] :].split("\n## ", 1)[0]


def json_fields(text: str) -> list[str]:
    """The field names of the first `{"a", "b", ...}` after "`--json`:" in `text`."""
    after = text.split("`--json`:", 1)[1]
    found = re.search(r'\{("[a-z_]+"(?:, "[a-z_]+")*)\}', after)
    assert found, 'no {"field", ...} list after `--json`:'
    return re.findall(r'"([a-z_]+)"', found[1])


def test_scan_json_lists_exactly_the_fields_of_an_outcome():
    documented = json_fields(section("commands.md", "`graphbuild scan "))
    assert documented == [f.name for f in fields(scanning.Outcome)]


def test_vulns_json_lists_exactly_the_document_fields_in_order():
    text = section("commands.md", "`graphbuild vulns ")
    assert json_fields(text) == list(vulns.DOCUMENT)
    explained = re.findall(r"^- ((?:`[a-z_]+`(?:, )?)+):", text, flags=re.M)
    names = [name for item in explained for name in re.findall(r"`([a-z_]+)`", item)]
    assert names == list(vulns.DOCUMENT), "each field explained once, in order"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", ["vulnerabilities.md", "commands.md"])
def test_links_to_docs_pages_name_headings_that_exist(page):
    text = (DOCS / page).read_text()
    for target, fragment in re.findall(r"\]\(([a-z_]*\.md)?#([^)]+)\)", text):
        linked = (DOCS / (target or page)).read_text()
        headings = re.findall(r"^#+ (.+)$", linked, flags=re.M)
        assert fragment in {anchor(h) for h in headings}, f"{page}: {target}#{fragment}"
