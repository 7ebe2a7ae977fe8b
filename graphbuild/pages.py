"""The web view's pages as HTML, rendered here from the stores' plain data: one
self-contained document each, no script, every value from a repository or a registry
escaped, and a Content-Security-Policy that allows nothing but the page's own style.

So far the run page, which `graphbuild report RUN --html OUT` writes as a file for CI
artifacts and mail (docs/web.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

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
