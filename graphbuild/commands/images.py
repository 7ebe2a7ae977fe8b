"""`graphbuild images`: every image the fleet builds, where from, and on what."""

from __future__ import annotations

from graphbuild import errors, graph, report
from graphbuild.commands import ensure
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, as_json: bool) -> int:
    g = graph.load(ensure(config))
    rows = []
    for node, attrs in sorted(g.nodes(data=True)):
        if attrs["kind"] != graph.IMAGE:
            continue
        bases = sorted(g.predecessors(node))
        rows.append({"id": node, **attrs, "bases": bases})
    if as_json:
        report.emit_json(rows)
        return errors.OK
    report.table(
        ["IMAGE", "ALSO TAGGED", "REPO:DOCKERFILE", "BUILT ON", "UNRESOLVED"],
        [
            (
                short(r["id"]),
                ", ".join(t.rsplit(":", 1)[1] for t in r["tags"][1:]),
                f"{r['repo']}:{r['dockerfile']}",
                ", ".join(short(b) for b in r["bases"]),
                len(r["unresolved"]) or "",
            )
            for r in rows
        ],
    )
    return errors.OK
