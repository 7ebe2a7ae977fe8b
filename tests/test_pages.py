"""The run page: one self-contained HTML document, every value escaped, its builds on a
timeline by wave. Read back with Python's own HTML parser (a browser test comes with
`graphbuild serve`)."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser

from graphbuild import pages
from graphbuild.state import DeployRecord, GateRecord, HeldRecord, RingRecord, Run, RunNode

from .site import graphbuild

D = "sha256:" + "ab" * 32
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr", "th",
           "td", "code", "span", "svg", "g", "text", "rect", "p", "ul", "li", "thead", "tbody",
           "nav", "a", "form", "input", "button", "section", "select", "option"}  # fmt: skip


class Page(HTMLParser):
    """Every element with its attributes, the text, and the style block as written."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.style, self._in_style = "", False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        self.text.append(data)

    def all(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.elements if t == tag and (cls is None or a.get("class") == cls)]


def node(name: str, wave: int, status: str, start: str | None, end: str | None,
         **more: object) -> RunNode:  # fmt: skip
    return RunNode(name, wave, "base-changed", "moved", [name], status, 1,
                   f"2026-12-06T10:{start}+00:00" if start else None,
                   f"2026-12-06T10:{end}+00:00" if end else None, **more)  # fmt: skip


def run_of(nodes: list[RunNode], reason: str | None = None, **more: object) -> Run:
    return Run("20261206-100000-abcd", "sweep", reason, "2026-12-06T10:00:00+00:00",
               "2026-12-06T10:09:00+00:00", "failed", {}, nodes, **more)  # fmt: skip


def test_repository_content_is_text_on_the_page_never_markup():
    nodes = [node("r.test/base:1", 0, "failed", "00:00", "01:00", error=HOSTILE,
                  log=f"/w/runs/1/{HOSTILE}.log")]  # fmt: skip
    nodes[0].detail = HOSTILE
    page = pages.run_page(run_of(
        nodes, reason=HOSTILE,
        gates=[GateRecord("r.test/base:1", HOSTILE, D, "failed", HOSTILE, [])],
        held=[HeldRecord("r.test/base:1", D, HOSTILE, "r.test/base:1", "w", HOSTILE, "dev")],
        rings=[RingRecord("dev", "failed", HOSTILE)],
        deploys=[DeployRecord("dev", "w", HOSTILE, "r.test/base:1", f"r.test/base:1@{D}",
                              "gitops", "failed", HOSTILE)],
    ))  # fmt: skip
    parsed = Page(page)
    assert {tag for tag, _ in parsed.elements} <= ALLOWED
    assert not [(t, k) for t, a in parsed.elements for k in a if k.startswith("on")]
    text = "".join(parsed.text)
    assert text.count(HOSTILE) >= 8  # shown, as the text it is, wherever it was
    assert "<script" not in page and "<img" not in page


def test_the_page_allows_nothing_but_its_own_style():
    parsed = Page(pages.run_page(run_of([])))
    (policy,) = [a["content"] for t, a in parsed.elements
                 if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]  # fmt: skip
    digest = base64.b64encode(hashlib.sha256(parsed.style.encode()).digest()).decode()
    assert policy is not None and policy.startswith("default-src 'none';")
    assert f"style-src 'sha256-{digest}'" in policy and "script-src" not in policy


def test_the_timeline_has_a_bar_per_build_in_wave_order_placed_by_time():
    nodes = [
        node("r.test/app:1", 1, "succeeded", "02:00", "03:00"),
        node("r.test/base:1", 0, "succeeded", "00:00", "02:00"),
        node("r.test/solo:1", 0, "failed", "00:30", "01:00"),
        node("r.test/late:1", 2, "blocked", None, None),  # never started: listed, no bar
    ]
    parsed = Page(pages.run_page(run_of(nodes)))
    bars = parsed.all("g", "bar")
    assert [(b["data-wave"], b["data-node"]) for b in bars] == [
        ("0", "r.test/base:1"), ("0", "r.test/solo:1"), ("1", "r.test/app:1")]  # fmt: skip
    rects = [a for t, a in parsed.elements if t == "rect"]
    x = [float(r["x"] or 0) for r in rects]
    width = [float(r["width"] or 0) for r in rects]
    assert x[0] < x[1] < x[2]  # by start time
    assert abs(width[0] - 2 * width[2]) < 0.5  # base took twice as long as app
    assert [r["class"] for r in rects] == ["succeeded", "failed", "succeeded"]
    assert "r.test/late:1" in "".join(parsed.text)


def test_report_html_writes_a_run_page_and_an_unknown_run_is_named(project):
    from graphbuild.state import State

    with State(project / ".graphbuild") as state:
        run = state.create_run("sweep", None, {}, [RunNode("r.test/base:1", 0, "stale", "", [])])
        state.finish_run(run, "succeeded")
    done = graphbuild("report", run, "--html", "out.html", cwd=project)
    assert done.returncode == 0, done.stderr
    written = (project / "out.html").read_text()
    assert f"graphbuild sweep {run}: succeeded" in "".join(Page(written).text)
    assert graphbuild("report", run, "--html", "-", cwd=project).stdout == written
    markdown = graphbuild("report", run, cwd=project)
    assert markdown.stdout.startswith(f"# graphbuild sweep {run}\n")
    missing = graphbuild("report", "nope", "--html", "x.html", cwd=project)
    assert missing.returncode == 2 and "there is no run with ID 'nope'" in missing.stderr
    assert not (project / "x.html").exists()
