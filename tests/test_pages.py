"""The run page: one self-contained HTML document, every value escaped, its builds on a
timeline by wave. Read back with Python's own HTML parser (a browser test comes with
`graphbuild serve`)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from itertools import pairwise
from urllib.parse import quote

from graphbuild import config, pages, queries
from graphbuild.state import DeployRecord, GateRecord, HeldRecord, RingRecord, Run, RunNode

from .site import graphbuild

D = "sha256:" + "ab" * 32
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr", "th",
           "td", "code", "span", "svg", "g", "text", "rect", "p", "ul", "li", "thead", "tbody",
           "nav", "a", "form", "input", "button", "section", "select", "option", "path", "defs",
           "marker"}  # fmt: skip


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


# ---------------------------------------------------------------- the graph view


def image(name: str) -> dict[str, object]:
    return {"id": name, "kind": "image", "image": name.rsplit(":", 1)[0], "tags": [name]}


def base(name: str) -> dict[str, object]:
    return {"id": name, "kind": "external", "name": name.rsplit(":", 1)[0], "pinned": False}


def edge(source: str, target: str, kind: str = "from") -> dict[str, object]:
    return {"source": source, "target": target, "kind": kind, "repo": "r", "line": 1}


EVIL = f"r.test/evil:1{HOSTILE}"  # not a valid reference: the page must not care
DOC = {
    "nodes": [base("docker.io/library/debian:12"), image("r.test/base:1"),
              image("r.test/app:1"), image(EVIL), base('ghcr.io/o/"tool":1')],
    "edges": [edge("docker.io/library/debian:12", "r.test/base:1"),
              edge("r.test/base:1", "r.test/app:1"),
              edge('ghcr.io/o/"tool":1', "r.test/app:1", "copy"),
              edge("r.test/base:1", EVIL, HOSTILE)],
}  # fmt: skip
FRESH = {"docker.io/library/debian:12": "changed", "r.test/base:1": "stale",
         "r.test/app:1": "up-to-date", EVIL: HOSTILE}  # fmt: skip


def drawn(parsed: Page) -> tuple[list[dict[str, str | None]], list[dict[str, str | None]]]:
    nodes = [a for t, a in parsed.elements if t == "g" and "node" in (a.get("class") or "").split()]
    edges = [a for t, a in parsed.elements if t == "g" and "edge" in (a.get("class") or "").split()]
    return nodes, edges


def test_the_graph_view_draws_every_node_and_edge_coloured_by_freshness():
    page = pages.graph_page(DOC, FRESH, "r.test/base:1", 2)
    parsed = Page(page)
    (svg,) = [a for t, a in parsed.elements if t == "svg" and a.get("id") == "graph"]
    nodes, edges = drawn(parsed)
    assert [n["data-id"] for n in nodes] == [n["id"] for n in DOC["nodes"]]
    assert [(e["data-source"], e["data-target"], e["data-kind"]) for e in edges] == [
        (e["source"], e["target"], e["kind"]) for e in DOC["edges"]]  # fmt: skip
    classes = {n["data-id"]: (n["class"] or "").split() for n in nodes}
    assert classes["docker.io/library/debian:12"] == ["node", "changed", "external"]
    assert classes["r.test/base:1"] == ["node", "stale", "image", "focus"]
    assert classes["r.test/app:1"] == ["node", "up-to-date", "image"]
    assert classes['ghcr.io/o/"tool":1'] == ["node", "unchecked", "external"]
    assert [e["class"] for e in edges][:3] == ["edge from", "edge from", "edge copy"]
    assert [t for t, _ in parsed.elements].count("path") == len(DOC["edges"]) + 1  # + the arrow
    text = "".join(parsed.text)
    assert "r.test/base:1: stale" in text and "copy" in text
    assert float(svg["width"] or 0) > 0 and float(svg["height"] or 0) > 0


def test_the_graph_view_shows_repository_content_as_text_and_links_it_encoded():
    page = pages.graph_page(DOC, FRESH, EVIL, None, note=HOSTILE)
    parsed = Page(page)
    assert {tag for tag, _ in parsed.elements} <= ALLOWED
    assert not [(t, k) for t, a in parsed.elements for k in a if k.startswith("on")]
    assert "<script" not in page and "<img" not in page
    text = "".join(parsed.text)
    assert f"{EVIL}: {HOSTILE}" in text  # the node's title: its id and status, as text
    assert text.count(HOSTILE) >= 4  # the note, the heading, the title, the edge's kind
    hrefs = [a["href"] or "" for t, a in parsed.elements if t == "a"]
    assert f"/image?ref={quote(EVIL, safe='')}" in hrefs
    assert "/graph?focus=ghcr.io%2Fo%2F%22tool%22%3A1" in hrefs  # a base refocuses the graph
    assert f"/graph?focus={quote(EVIL, safe='')}&depth=1" in hrefs  # the depth links
    site = {"/", "/bases", "/graph", "/runs", "/metrics"}  # the served page's own links
    for href in set(hrefs) - site:
        assert re.fullmatch(r"/(image|graph)\?[A-Za-z0-9%._~=&-]*", href), href


def test_the_graph_view_links_each_depth_and_marks_the_current_one():
    parsed = Page(pages.graph_page(DOC, {}, "debian", 2))
    links = [(a["href"], a.get("aria-current")) for t, a in parsed.elements
             if t == "a" and (a["href"] or "").startswith("/graph?focus=debian")]  # fmt: skip
    at = "/graph?focus=debian"
    assert links == [(f"{at}&depth=1", None), (f"{at}&depth=2", "page"), (f"{at}&depth=3", None),
                     (at, None)]  # fmt: skip
    classes = {n["data-id"]: (n["class"] or "").split() for n in drawn(parsed)[0]}
    assert "focus" in classes["docker.io/library/debian:12"]  # debian, any tag
    assert not any("focus" in c for n, c in classes.items() if n != "docker.io/library/debian:12")
    (policy,) = [a["content"] for t, a in parsed.elements
                 if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]  # fmt: skip
    # served: its focus form may submit to its own server, and nowhere else
    assert policy is not None and "form-action 'self'" in policy and "script-src" not in policy


def test_the_graph_view_draws_nothing_over_its_limit_and_says_why():
    many = {"nodes": [image(f"r.test/i{n}:1") for n in range(pages.MOST_NODES + 1)], "edges": []}
    parsed = Page(pages.graph_page(many, {}, None, None))
    assert not [a for t, a in parsed.elements if t == "svg" and a.get("id") == "graph"]
    assert drawn(parsed) == ([], [])
    text = " ".join("".join(parsed.text).split())
    assert f"{pages.MOST_NODES + 1} nodes" in text and "focus" in text and "depth" in text
    most = {"nodes": many["nodes"][:-1], "edges": []}
    assert len(drawn(Page(pages.graph_page(most, {}, None, None)))[0]) == pages.MOST_NODES


def test_the_graph_view_of_a_synced_fleet_draws_what_graph_json_says(project):
    assert graphbuild("sync", cwd=project).returncode == 0
    document = queries.graph(queries.open_index(config.load(project / "repos.yaml")), "r.test/app")
    shown = json.loads(graphbuild("graph", "--focus", "r.test/app", cwd=project).stdout)
    assert shown == document
    nodes, edges = drawn(Page(pages.graph_page(document, {"r.test/app:latest": "stale"},
                                               "r.test/app", None)))  # fmt: skip
    assert [n["data-id"] for n in nodes] == [
        "docker.io/library/debian:bookworm-slim", "r.test/app:latest", "r.test/base:1"]  # fmt: skip
    assert len(edges) == len(document["edges"]) == 2
    assert (nodes[1]["class"] or "").split() == ["node", "stale", "image", "focus"]


def test_a_graph_of_few_nodes_but_long_edges_is_not_laid_out():
    """300 images in a chain, each also copying from the first: few nodes, but edges that
    cross 44,000 layers in all. Drawing them took the server seconds and made a 4 MB page;
    the page now says why it draws nothing, before any layout."""
    ids = [f"r.test/d{i:04d}:1" for i in range(300)]
    edges = [{"source": a, "target": b, "kind": "from"} for a, b in pairwise(ids)]
    edges += [{"source": ids[0], "target": b, "kind": "copy"} for b in ids[2:]]
    doc = {"nodes": [image(n) for n in ids], "edges": edges}
    parsed = Page(pages.graph_page(doc, {}, ids[0], 1))
    assert drawn(parsed) == ([], [])
    text = " ".join("".join(parsed.text).split())
    assert "cross more than 20,000 layers" in text and "focus" in text
    fewer = {"nodes": doc["nodes"][:100], "edges": [e for e in edges if e["target"] in ids[:100]]}
    assert len(drawn(Page(pages.graph_page(fewer, {}, ids[0], 1)))[0]) == 100
