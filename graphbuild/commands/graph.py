"""`graphbuild graph`: the graph, or one node's neighbourhood, as JSON, DOT or Mermaid."""

from __future__ import annotations

import sys

from graphbuild import errors, graph, graphdb, report
from graphbuild.commands import ensure
from graphbuild.config import Config

FORMATS = ("json", "dot", "mermaid")


def run(config: Config, fmt: str, focus: str | None) -> int:
    if fmt not in FORMATS:
        raise errors.GraphbuildError(f"--format must be one of {', '.join(FORMATS)}")
    db = ensure(config)
    g = graph.load(db)
    if focus is not None:
        starts = graphdb.match(db, focus)
        if not starts:
            raise errors.NotFound(f"{focus} is not in the graph")
        g = graph.focus(g, starts)
    if fmt == "json":
        report.emit_json(graph.to_json(g))
    else:
        sys.stdout.write(graph.to_dot(g) if fmt == "dot" else graph.to_mermaid(g))
    return errors.OK
