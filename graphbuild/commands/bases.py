"""`graphbuild bases`: the external bases the fleet pulls, and how much is built on each."""

from __future__ import annotations

import networkx as nx

from graphbuild import errors, graph, report
from graphbuild.commands import ensure
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, as_json: bool) -> int:
    g = graph.load(ensure(config))
    rows = []
    for node, attrs in sorted(g.nodes(data=True)):
        if attrs["kind"] != graph.EXTERNAL:
            continue
        rows.append(
            {
                "id": node,
                "pinned": attrs["pinned"],
                "images": len(list(g.successors(node))),
                "all_images": len(nx.descendants(g, node)),
                "kinds": sorted({g.edges[node, c]["kind"] for c in g.successors(node)}),
            }
        )
    if as_json:
        report.emit_json(rows)
        return errors.OK
    report.table(
        ["BASE", "PINNED", "IMAGES", "ALL DOWNSTREAM", "AS"],
        [
            (
                short(r["id"]),
                "pinned" if r["pinned"] else "floating",
                r["images"],
                r["all_images"],
                ",".join(r["kinds"]),
            )
            for r in rows
        ],
    )
    return errors.OK
