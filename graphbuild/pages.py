"""The web view's pages as HTML, rendered here from the stores' plain data: one
self-contained document each, no script, every value from a repository or a registry
escaped, and a Content-Security-Policy that allows nothing but the page's own style.

The run page, which `graphbuild report RUN --html OUT` writes as a file for CI artifacts and
mail, and the graph view, a node's neighbourhood drawn as inline SVG (docs/web.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from itertools import pairwise
from typing import Any
from urllib.parse import quote

from graphbuild import layout, refs
from graphbuild.errors import InvalidReference
from graphbuild.report import duration, exposure_lines
from graphbuild.state import Run, RunNode

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1b1f24; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; text-align: left;
  border-bottom: 1px solid #d0d7de; vertical-align: top; }
code { font-size: .9em; word-break: break-all; }
.succeeded, .passed, .deployed, .healthy { fill: #2da44e; color: #1a7f37; }
.failed, .unhealthy { fill: #cf222e; color: #cf222e; }
.blocked, .held, .manual { fill: #bf8700; color: #9a6700; }
.skipped, .unchanged, .pending, .nothing-to-deploy { fill: #8c959f; color: #57606a; }
.running { fill: #0969da; color: #0969da; }
svg text { font: 11px system-ui, sans-serif; fill: #1b1f24; }
nav a { margin-right: .8em; } nav a[aria-current] { font-weight: bold; }
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


def run_page(run: Run) -> str:
    """A run as one HTML page: its builds on a timeline by wave, each image's outcome and
    reason, its gates, what it held back, each ring's deploys, the exposure it ended."""
    title = f"graphbuild {run.kind} {run.id}: {run.status}"
    parts = [
        f"<h1>{_text(title)}</h1>",
        _facts([("status", run.status), ("reason", run.reason or ""),
                ("started", run.started), ("finished", run.finished or "not finished")]),
        "<h2>Timeline</h2>",
        timeline(run.nodes),
        "<h2>Images</h2>",
        _table(["wave", "image", "outcome", "reason", "digest", "attempts", "log"],
               [(n.wave, _code(n.node), _status(n.status, n.error), f"{n.reason}: {n.detail}",
                 _code(n.digest or ""), n.attempts, (n.log or "").rsplit("/", 1)[-1])
                for n in run.nodes]),
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
    return _document(title, "\n".join(parts))


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


def _document(title: str, body: str) -> str:
    """A whole page whose policy allows only its own style: the hash of that style, no
    script, no image or font from anywhere, nothing fetched."""
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    policy = f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in pairs if v)
    return f"<table>{rows}</table>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Cells are text, escaped here, except what `_code` and `_status` already made safe."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Safe) else _text(str(c))}</td>"
                         for c in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


class _Safe(str):
    """HTML made here from escaped values."""


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
    counted = f"{len(nodes)} nodes, {len(edges)} edges."
    if len(nodes) > MOST_NODES:
        parts.append(f"<p>{_text(counted)} More than {MOST_NODES:,} nodes are not drawn: choose "
                     "a focus (an image or a base) or a smaller depth.</p>")  # fmt: skip
    elif not nodes:
        parts.append("<p>Nothing to draw: the graph is empty.</p>")
    else:
        keys = "".join(f'<span class="key {k}"></span>{_text(label)}' for k, label in LEGEND)
        parts += [f"<p>{_text(counted)}</p>", f"<p>{keys}</p>",
                  _graph_svg(nodes, edges, freshness, _focused(nodes, focus), depth)]  # fmt: skip
    return _document(title, "\n".join(parts))


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
