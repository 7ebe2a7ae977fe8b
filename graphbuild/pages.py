"""The web view's pages as HTML, rendered here from the stores' plain data: one
self-contained document each, no script, every value from a repository or a registry
escaped, and a Content-Security-Policy that allows nothing but the page's own style.

`graphbuild serve` serves them (web.py), each from the same data its JSON twin returns:
the search, an image, the graph view (a node's neighbourhood drawn as inline SVG),
the runs and the bases. The run page is also what `graphbuild report RUN --html OUT`
writes as a file for CI artifacts and mail (docs/web.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from itertools import pairwise
from typing import Any
from urllib.parse import quote, urlencode

from graphbuild import layout, refs
from graphbuild.errors import InvalidReference
from graphbuild.report import brief, duration, exposure_lines
from graphbuild.state import Run, RunNode

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1b1f24; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; text-align: left;
  border-bottom: 1px solid #d0d7de; vertical-align: top; }
code { font-size: .9em; overflow-wrap: anywhere; }
.succeeded, .passed, .deployed, .healthy { fill: #2da44e; color: #1a7f37; }
.failed, .unhealthy { fill: #cf222e; color: #cf222e; }
.blocked, .held, .manual { fill: #bf8700; color: #9a6700; }
.skipped, .unchanged, .pending, .nothing-to-deploy { fill: #8c959f; color: #57606a; }
.running { fill: #0969da; color: #0969da; }
svg text { font: 11px system-ui, sans-serif; fill: #1b1f24; }
nav { margin-bottom: 1em; } nav a { margin-right: 1em; } nav a[aria-current] { font-weight: bold; }
a { color: #0969da; } input[type=search] { width: 28em; }
span.up-to-date { color: #1a7f37; } span.stale, span.changed { color: #9a6700; }
span.missing, span.unknown { color: #cf222e; }
.node rect, .key { fill: #fff; stroke: #8c959f; stroke-dasharray: 4 2; background: #fff;
  border: 1px dashed #8c959f; }
.node.up-to-date rect, .key.up-to-date, .node.unchanged rect, .key.unchanged {
  fill: #dafbe1; stroke: #1a7f37; background: #dafbe1; border-color: #1a7f37; }
.node.stale rect, .key.stale, .node.changed rect, .key.changed {
  fill: #ffebe9; stroke: #cf222e; background: #ffebe9; border-color: #cf222e; }
.node.missing rect, .key.missing, .node.pinned-outdated rect, .key.pinned-outdated {
  fill: #fff8c5; stroke: #9a6700; background: #fff8c5; border-color: #9a6700; }
.node.new rect, .key.new, .node.pinned rect, .key.pinned {
  fill: #ddf4ff; stroke: #0969da; background: #ddf4ff; border-color: #0969da; }
.node.unknown rect, .key.unknown { fill: #eaeef2; stroke: #57606a; background: #eaeef2;
  border-color: #57606a; }
.node.up-to-date rect, .node.unchanged rect, .node.stale rect, .node.changed rect,
.node.missing rect, .node.pinned-outdated rect, .node.new rect, .node.pinned rect,
.node.unknown rect { stroke-dasharray: none; }
.node.focus rect { stroke-width: 3; }
.key { display: inline-block; width: 1.6em; height: .9em; margin: 0 .3em 0 1em;
  vertical-align: middle; border-style: solid; }
.edge path { fill: none; stroke: #57606a; stroke-width: 1.2; }
.edge.copy path, .edge.mount path, .edge.syntax path { stroke-dasharray: 5 3; }
svg .edge text { font-size: 9px; fill: #57606a; }
#arrow path { fill: #57606a; stroke: none; }
"""
ROW, LABEL, WIDTH = 18, 320, 560  # the timeline: a row per build, its label, the bars' width


def run_page(run: Run, served: bool = False) -> str:
    """A run as one HTML page: its builds on a timeline by wave, each image's outcome and
    reason, its gates, what it held back, each ring's deploys, the exposure it ended.
    Served, each build's log is a link; as a file, its name in the workspace."""
    title = f"graphbuild {run.kind} {run.id}: {run.status}"
    parts = [
        f"<h1>{_text(title)}</h1>",
        _facts([("status", run.status), ("reason", run.reason or ""),
                ("started", run.started), ("finished", run.finished or "not finished")]),
        "<h2>Timeline</h2>",
        timeline(run.nodes),
        "<h2>Images</h2>",
        _table(["wave", "image", "outcome", "reason", "digest", "attempts", "log"],
               [(n.wave, _image(n.node) if served else _code(n.node), _status(n.status, n.error),
                 brief(f"{n.reason}: {n.detail}"), _digest(n.digest), n.attempts,
                 _log(run.id, n.log, served)) for n in run.nodes]),
    ]  # fmt: skip
    if run.gates:
        gates = [(_code(g.node), g.gate, _status(g.status), g.summary) for g in run.gates]
        parts += ["<h2>Gates</h2>", _table(["image", "gate", "result", "summary"], gates)]
    if run.held:
        parts += ["<h2>Held back</h2>", _table(
            ["image", "workload", "ring", "digest", "reason"],
            [(_code(h.node), h.name or "", h.ring or "", _code(h.digest), h.reason)
             for h in run.held])]  # fmt: skip
    if run.rings:
        parts += ["<h2>Deploys</h2>", _table(
            ["ring", "status", "detail"],
            [(r.ring, _status(r.status), r.detail) for r in run.rings]), _table(
            ["ring", "workload", "image", "outcome", "detail"],
            [(d.ring, d.name, _code(d.reference), _status(d.status), d.detail)
             for d in run.deploys])]  # fmt: skip
    if run.exposures:
        items = "".join(f"<li>{_text(line)}</li>" for line in exposure_lines(run))
        parts += ["<h2>Exposure ended</h2>", f"<ul>{items}</ul>"]
    return _document(title, "\n".join(parts), served)


def _log(run: str, log: str | None, served: bool) -> object:
    name = (log or "").rsplit("/", 1)[-1]
    return _link(f"/runs/{quote(run, safe='')}/logs/{quote(name, safe='')}", name) if (
        served and name) else name  # fmt: skip


# ---------------------------------------------------------------- the served pages


def search_page(
    ref: str,
    rows: Sequence[Mapping[str, Any]],
    links: Mapping[str, str],
    near: Sequence[str] = (),
) -> str:
    """The `uses` answer for `ref`: each image by depth with the line that pulls it in (a link
    where repos.yaml gives the repository a `browse` URL), then the workloads by ring. When
    `ref` names nothing, the nodes whose names hold it (`near`)."""
    form = ('<form action="/" method="get"><input type="search" name="ref" '
            f'value="{_attr(ref)}" placeholder="python:3.12, registry/team/app" autofocus> '
            "<button>Which images use it?</button></form>")  # fmt: skip
    parts = ["<h1>Which images use a base?</h1>", form]
    if ref and not rows and near:
        items = "".join(f"<li>{_search_link(n)}</li>" for n in near)
        parts.append(f"<p>{_text(ref)} is not in the graph. Did you mean:</p>"
                     f'<ul id="near">{items}</ul>')  # fmt: skip
    elif ref and not rows:
        parts.append(f"<p>No image is built on {_text(ref)}.</p>")
    if rows:
        parts += [
            f"<h2>{len(rows)} image{'s' if len(rows) != 1 else ''} built on {_text(ref)}</h2>",
            _table(["depth", "image", "built on", "as", "where"],
                   [(r["depth"], _image(r["image"]), _code(r["base"]), r["kind"],
                     _where(links, r["repo"], r["dockerfile"], r["line"])) for r in rows],
                   "uses"),
        ]  # fmt: skip
        running = sorted((w["ring"], w["name"], r["image"], w["where"])
                         for r in rows for w in r["workloads"])  # fmt: skip
        if running:
            parts += ["<h2>Workloads that run them</h2>", _table(
                ["ring", "workload", "runs", "where"],
                [(ring, name, _image(image), where) for ring, name, image, where in running],
                "workloads")]  # fmt: skip
    return _document(f"uses {ref}" if ref else "graphbuild", "\n".join(parts), True)


def image_page(images: Sequence[Mapping[str, Any]], links: Mapping[str, str]) -> str:
    """`show REF`: each image REF names, as one section."""
    sections = [_image_section(image, links, f"-{i + 1}" if i else "")
                for i, image in enumerate(images)]  # fmt: skip
    title = images[0]["id"] if len(images) == 1 else f"{len(images)} images"
    return _document(title, "\n".join(sections), True)


def _image_section(image: Mapping[str, Any], links: Mapping[str, str], suffix: str) -> str:
    """One image; `suffix` keeps its tables' ids apart from the sections before it."""
    fresh = image["freshness"]
    if fresh is None:
        verdict: object = "not checked yet"
    else:
        stale = fresh["status"] == "stale" and len(fresh["chain"]) > 1  # what makes it so
        why = " ← ".join(fresh["chain"]) if stale else fresh["detail"]
        verdict = _Safe(f"{_status(fresh['status'])} {_text(fresh['reason'])} "
                        f"{_text(why)} (checked {_text(fresh['checked'][:19])})")  # fmt: skip
    graph = f"/graph?{urlencode({'focus': image['id'], 'depth': 2})}"
    parts = [
        f'<section class="image" data-id="{_attr(image["id"])}">',
        f"<h1>{_text(image['id'])}</h1>",
        _facts_safe([
            ("tags", ", ".join(image["tags"])),
            ("built from", _where(links, image["repo"], image["dockerfile"], None)),
            ("digest", _code(image["digest"] or "none known")),
            ("freshness", verdict),
            ("graph", _link(graph, "its neighbourhood")),
        ]),
        "<h2>Built on</h2>",
        _table(["depth", "base", "as", "where"],
               [(p["depth"], _image(p["base"]) if not p["external"] else _code(p["base"]),
                 p["kind"], _where(links, p["repo"], p["dockerfile"], p["line"]))
                for p in image["parents"]], "parents" + suffix)
        if image["parents"] else "<p>Nothing.</p>",
        "<h2>Built on it</h2>",
        _table(["image", "as", "where"],
               [(_image(c["image"]), c["kind"], _where(links, c["repo"], c["dockerfile"],
                 c["line"])) for c in image["children"]], "children" + suffix)
        if image["children"] else "<p>No image.</p>",
    ]  # fmt: skip
    if image["builds"]:
        parts += ["<h2>Last builds</h2>", _table(
            ["built", "digest", "run"],
            [(b["built_at"][:19], _digest(b["digest"]),
              _link(f"/runs/{quote(b['run'], safe='')}", b["run"]) if b["run"] else "")
             for b in image["builds"]], "builds" + suffix)]  # fmt: skip
    if image["gates"]:
        parts += ["<h2>Gates on its last build</h2>", _table(
            ["gate", "result", "summary", "run"],
            [(g["gate"], _status(g["status"]), g["summary"], g["run"]) for g in image["gates"]],
            "gates" + suffix)]  # fmt: skip
    running = [(w["ring"], w["name"], w["where"]) for w in image["workloads"]]
    parts += ["<h2>Where it runs</h2>",
              _table(["ring", "workload", "where"], running, "workloads" + suffix) if running
              else "<p>No workload graphbuild knows runs it.</p>", "</section>"]  # fmt: skip
    return "\n".join(parts)


def runs_page(runs: Sequence[Mapping[str, Any]]) -> str:
    """`runs`: the latest runs, each a link to its page."""
    rows = [(_link(f"/runs/{quote(r['id'], safe='')}", r["id"]), r["kind"],
             _status(r["status"]), r["started"][:19], (r["finished"] or "")[:19],
             r["reason"] or "") for r in runs]  # fmt: skip
    table = _table(["run", "kind", "status", "started", "finished", "reason"], rows, "runs")
    body = table if runs else "<p>No run yet.</p>"
    return _document("graphbuild runs", f"<h1>Runs</h1>\n{body}", True)


def bases_page(rows: Sequence[Mapping[str, Any]]) -> str:
    """`bases`: every external base, how much is built on it, pinned or floating, and the
    last check's word on it with when its tag was first seen at its digest."""
    table = _table(
        ["base", "pinned", "images", "all downstream", "as", "last check", "at this digest since"],
        [(_search_link(r["id"]), "pinned" if r["pinned"] else "floating",
          r["images"], r["all_images"], ", ".join(r["kinds"]), _status(r["status"] or "unchecked"),
          (r["since"] or "")[:19]) for r in rows], "bases")  # fmt: skip
    return _document("graphbuild bases", f"<h1>External bases</h1>\n{table}", True)


def graph_start(count: int) -> str:
    """/graph without a focus: the whole graph is drawn only when asked for."""
    form = _focus_form()
    whole = _link("/graph?all=1", f"draw all {count} nodes")
    return _document("graphbuild graph", f"<h1>The graph</h1>\n{form}\n<p>The graph has "
                     f"{count} nodes. Choose one to draw its neighbourhood, or {whole}.</p>",
                     True)  # fmt: skip


def _focus_form() -> str:
    return ('<form action="/graph" method="get"><input type="search" name="focus" '
            'placeholder="an image or a base" autofocus> <select name="depth">'
            + "".join(f'<option{" selected" if d == 2 else ""}>{d}</option>' for d in DEPTHS)
            + '<option value="all">all</option></select> <button>Draw</button></form>')  # fmt: skip


def error_page(status: int, message: str) -> str:
    return _document(f"{status}", f"<h1>{status}</h1><p>{_text(message)}</p>", True)


def _search_link(node: str) -> _Safe:
    return _link(f"/?{urlencode({'ref': node})}", node, code=True)


def _image(node: str) -> _Safe:
    return _link(f"/image?{urlencode({'ref': node})}", node, code=True)


def _where(links: Mapping[str, str], repo: str, path: str, line: int | None) -> object:
    """`repo:path:line`, a link where the repository has a `browse` URL template."""
    text = f"{repo}:{path}" + (f":{line}" if line is not None else "")
    template = links.get(repo)
    if template is None:
        return _code(text)
    return _link(template.format(path=quote(path), line=line or 1), text, code=True)


def _link(href: str, text: str, code: bool = False) -> _Safe:
    inner = f"<code>{_text(text)}</code>" if code else _text(text)
    return _Safe(f'<a href="{_attr(href)}">{inner}</a>')


def _facts_safe(pairs: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_text(k)}</th><td>{v if isinstance(v, _Safe) else _text(str(v))}"
                   "</td></tr>" for k, v in pairs if v)  # fmt: skip
    return f"<table>{rows}</table>"


def timeline(nodes: Sequence[RunNode]) -> str:
    """One bar per build from its start to its end, grouped by wave, coloured by outcome, as
    inline SVG; images that never started are listed under it."""
    timed = sorted((n for n in nodes if n.started and n.finished),
                   key=lambda n: (n.wave, n.started or "", n.node))  # fmt: skip
    rest = [n for n in nodes if not (n.started and n.finished)]
    if not timed:
        bars = "<p>No build ran.</p>"
    else:
        start = min(_time(n.started) for n in timed)
        span = max(_time(n.finished) for n in timed) - start or 1.0
        rows = []
        for i, node in enumerate(timed):
            left = (_time(node.started) - start) / span * WIDTH
            width = max((_time(node.finished) - _time(node.started)) / span * WIDTH, 2.0)
            took = duration(_time(node.finished) - _time(node.started))
            label = f"wave {node.wave} · {node.node}"
            rows.append(
                f'<g class="bar" data-wave="{node.wave}" data-node="{_attr(node.node)}">'
                f'<text x="0" y="{i * ROW + 13}">{_text(_clip(label))}</text>'
                f'<rect class="{_attr(node.status)}" x="{LABEL + left:.1f}" y="{i * ROW + 3}" '
                f'width="{width:.1f}" height="{ROW - 6}"><title>{_text(node.node)}: '
                f"{_text(node.status)} in {_text(took)}</title></rect></g>"
            )
        height = len(timed) * ROW
        bars = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + WIDTH}" '
                f'height="{height}" role="img" aria-label="builds by wave">'
                + "".join(rows) + "</svg>")  # fmt: skip
    if rest:
        waiting = [(n.wave, _code(n.node), _status(n.status, n.error)) for n in rest]
        bars += _table(["wave", "image", "outcome"], waiting)
    return bars


NAV = (
    '<nav><a href="/">Search</a><a href="/bases">Bases</a><a href="/graph">Graph</a>'
    '<a href="/runs">Runs</a><a href="/metrics">Metrics</a></nav>'
)


def policy(served: bool) -> str:
    """The page's Content-Security-Policy: only its own style, by hash; no script, nothing
    fetched; a served page's search form may submit to its own server. (The server's
    header adds frame-ancestors, which a browser takes from a header only.)"""
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    forms = "'self'" if served else "'none'"
    return f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action {forms}"


def _document(title: str, body: str, served: bool = False) -> str:
    """A whole page whose policy allows only its own style: the hash of that style, no
    script, no image or font from anywhere, nothing fetched. Served pages have the site's
    links; a written file has none (they would lead nowhere)."""
    if served:
        body = f"{NAV}\n{body}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy(served)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in pairs if v)
    return f"<table>{rows}</table>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], name: str = "") -> str:
    """Cells are text, escaped here, except what `_code` and `_status` already made safe;
    `name` is the table's id, for links and tests."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Safe) else _text(str(c))}</td>"
                         for c in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    ident = f' id="{_attr(name)}"' if name else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Safe(str):
    """HTML made here from escaped values."""


def _digest(digest: str | None) -> _Safe:
    """A digest cut to 12 hex digits, whole when hovered: the table stays readable."""
    if not digest:
        return _Safe("")
    return _Safe(f'<code title="{_attr(digest)}">{_text(brief(digest))}</code>')


def _code(value: str) -> _Safe:
    return _Safe(f"<code>{_text(value)}</code>")


def _status(status: str, error: str | None = None) -> _Safe:
    why = f": {_text(error)}" if error else ""
    return _Safe(f'<span class="{_attr(status)}">{_text(status)}</span>{why}')


def _text(value: str) -> str:
    return escape(value, quote=False)


def _attr(value: str) -> str:
    return escape(value, quote=True)


def _clip(label: str, most: int = 48) -> str:
    return label if len(label) <= most else "…" + label[-(most - 1) :]


def _time(stamp: str | None) -> float:
    assert stamp is not None
    return datetime.fromisoformat(stamp).timestamp()


# ---------------------------------------------------------------- the graph view

MOST_NODES = 2000  # more are not drawn: a page the browser can still draw and a person read
MOST_EDGES = 5000  # nor more edges,
MOST_POINTS = 20_000  # nor more points to place (docs/web.md: what a page may cost)
DEPTHS = (1, 2, 3)  # the depth links; and "all"
LEGEND = (
    ("up-to-date", "image up to date"), ("stale", "image stale"),
    ("missing", "image not in its registry"), ("unknown", "not known"),
    ("changed", "base changed"), ("unchanged", "base unchanged"), ("new", "base new"),
    ("pinned", "base pinned"), ("pinned-outdated", "base pinned, outdated"),
    ("unchecked", "not checked yet"),
)  # fmt: skip


def graph_page(
    document: Mapping[str, Sequence[Mapping[str, Any]]],
    freshness: Mapping[str, str],
    focus: str | None,
    depth: int | None,
    note: str = "",
    too_large: tuple[int, int] | None = None,
) -> str:
    """The graph view: `document` (the `graph --format json` data) drawn left to right as
    inline SVG, each node coloured by its status in `freshness` (`unchecked` when it has
    none) and linked to its page, each edge labelled by its kind; links to other depths."""
    where = f"around {focus}, depth {depth or 'all'}" if focus else "the whole graph"
    title = f"graphbuild graph: {where}"
    nodes, edges = document["nodes"], document["edges"]
    parts = [f"<h1>{_text(title)}</h1>"]
    if note:
        parts.append(f"<p>{_text(note)}</p>")
    if focus:
        parts.append(_depth_links(focus, depth))
    counts = too_large or (len(nodes), len(edges))  # too_large: counted, never loaded
    counted = f"{counts[0]} nodes, {counts[1]} edges."
    size = _too_large(nodes, edges, counts)
    if size:
        too_many = (f"<p>{_text(counted)} {_text(size)} are not drawn: choose a focus "
                    "(an image or a base) or a smaller depth.</p>")  # fmt: skip
        parts += [too_many, _focus_form()]
    elif not nodes:
        parts.append("<p>Nothing to draw: the graph is empty.</p>")
    else:
        keys = "".join(f'<span class="key {k}"></span>{_text(label)}' for k, label in LEGEND)
        parts += [f"<p>{_text(counted)}</p>", f"<p>{keys}</p>",
                  _graph_svg(nodes, edges, freshness, _focused(nodes, focus), depth)]  # fmt: skip
    return _document(title, "\n".join(parts), True)


def _too_large(
    nodes: Sequence[Mapping[str, Any]],
    edges: Sequence[Mapping[str, Any]],
    counts: tuple[int, int],
) -> str | None:
    """Why the graph is too large to draw, if it is: too many nodes or edges, or too many
    points to place (edges that span many layers; layout.points), each of which costs the
    server time and the page bytes. Counted before anything is laid out."""
    if counts[0] > MOST_NODES:
        return f"More than {MOST_NODES:,} nodes"
    if counts[1] > MOST_EDGES:
        return f"More than {MOST_EDGES:,} edges"
    ids = [str(n["id"]) for n in nodes]
    if layout.points(ids, [(str(e["source"]), str(e["target"])) for e in edges]) > MOST_POINTS:
        return f"Edges that cross more than {MOST_POINTS:,} layers in all"
    return None


def _depth_links(focus: str, depth: int | None) -> str:
    links = []
    for each in (*DEPTHS, None):
        href = f"/graph?focus={quote(focus, safe='')}" + (f"&depth={each}" if each else "")
        current = ' aria-current="page"' if each == depth else ""
        links.append(f'<a href="{_attr(href)}"{current}>depth {each or "all"}</a>')
    return f"<nav>{''.join(links)}</nav>"


def _focused(nodes: Sequence[Mapping[str, Any]], focus: str | None) -> set[str]:
    """The nodes `focus` names, as the query matched them: its id, or a repository (every
    tag), or a tag (an image's tag, a base's tag pinned or not), or a digest."""
    if not focus:
        return set()
    found = {str(n["id"]) for n in nodes if n["id"] == focus}
    try:
        ref = refs.parse(focus)
    except InvalidReference:
        return found
    for node in nodes:
        name = node.get("image") if node["kind"] == "image" else node.get("name")
        if name != ref.name:
            continue
        if ref.digest is not None:
            hit = node.get("digest") == ref.digest
        elif ref.tag is not None:
            hit = node.get("tag") == ref.tag or ref.tagged in node.get("tags", [])
        else:
            hit = True
        if hit:
            found.add(str(node["id"]))
    return found


def _graph_svg(
    nodes: Sequence[Mapping[str, Any]],
    edges: Sequence[Mapping[str, Any]],
    freshness: Mapping[str, str],
    focused: set[str],
    depth: int | None,
) -> str:
    """Edges first, so that boxes lie over their ends; every value escaped, every link a
    relative, URL-encoded one."""
    ids = [str(n["id"]) for n in nodes]
    placed = layout.layout(ids, [(str(e["source"]), str(e["target"])) for e in edges])
    width, height = placed.node_width, placed.node_height
    out = [
        f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{placed.width:.0f}" '
        f'height="{placed.height:.0f}" role="img" aria-label="the image graph">'
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>'
    ]
    for e in edges:
        source, target, kind = str(e["source"]), str(e["target"]), str(e["kind"])
        if source not in placed.positions or target not in placed.positions:
            continue
        (sx, sy), (tx, ty) = placed.positions[source], placed.positions[target]
        points = [(sx + width, sy + height / 2), *placed.routes[source, target],
                  (tx, ty + height / 2)]  # fmt: skip
        path = f"M{points[0][0]:.1f},{points[0][1]:.1f}" + "".join(
            f" C{(a + c) / 2:.1f},{b:.1f} {(a + c) / 2:.1f},{d:.1f} {c:.1f},{d:.1f}"
            for (a, b), (c, d) in pairwise(points)
        )
        (a, b), (c, d) = points[-2], points[-1]  # the label sits on the way into the image
        out.append(
            f'<g class="edge {_attr(kind)}" data-source="{_attr(source)}" '
            f'data-target="{_attr(target)}" data-kind="{_attr(kind)}">'
            f'<path d="{path}" marker-end="url(#arrow)"/>'
            f'<text x="{a + (c - a) * 0.6:.1f}" y="{b + (d - b) * 0.6 - 3:.1f}">'
            f"{_text(_clip(kind, 12))}</text></g>"
        )
    for n in nodes:
        node, kind = str(n["id"]), str(n["kind"])
        status = freshness.get(node, "unchecked")
        x, y = placed.positions[node]
        classes = f"node {status} {kind}" + (" focus" if node in focused else "")
        if kind == "image":
            href = f"/image?ref={quote(node, safe='')}"
        else:
            href = f"/graph?focus={quote(node, safe='')}" + (f"&depth={depth}" if depth else "")
        rounded = height / 2 if kind != "image" else 3
        out.append(
            f'<a href="{_attr(href)}"><g class="{_attr(classes)}" data-id="{_attr(node)}">'
            f"<title>{_text(node)}: {_text(status)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.0f}" height="{height:.0f}" '
            f'rx="{rounded:.0f}"/>'
            f'<text x="{x + 8:.1f}" y="{y + height / 2 + 4:.1f}">{_text(_clip(node, 34))}</text>'
            "</g></a>"
        )
    out.append("</svg>")
    return "".join(out)
