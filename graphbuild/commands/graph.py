"""`graphbuild graph`: the graph, or one node's neighbourhood, as JSON, DOT or Mermaid."""

from __future__ import annotations

import sys

from graphbuild import errors, queries, report
from graphbuild.config import Config

FORMATS = ("json", "dot", "mermaid")


def run(config: Config, fmt: str, focus: str | None, depth: int | None) -> int:
    if fmt not in FORMATS:
        raise errors.GraphbuildError(f"--format must be one of {', '.join(FORMATS)}")
    if depth is not None and focus is None:  # before the index is opened (and maybe synced)
        raise errors.GraphbuildError("--depth needs --focus: the node the depth counts from")
    document = queries.graph(queries.open_index(config), focus, depth)
    if fmt == "json":
        report.emit_json(document)
    else:
        sys.stdout.write(queries.dot(document) if fmt == "dot" else queries.mermaid(document))
    return errors.OK
