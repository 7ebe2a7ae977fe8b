"""`graphbuild rebuild REF...`: the on-call path: rebuild now, whatever the digests say."""

from __future__ import annotations

from graphbuild import errors, execute, graph, graphdb, plan
from graphbuild.commands import ensure
from graphbuild.commands.check import checked
from graphbuild.commands.sweep import build
from graphbuild.config import Config
from graphbuild.state import sweep_lock


def run(
    config: Config,
    names: list[str],
    *,
    reason: str,
    downstream: bool,
    depth: int | None,
    settings: execute.RunSettings,
    as_json: bool,
) -> int:
    db = ensure(config)
    nodes = []
    for name in names:
        found = graphdb.match(db, name)
        if not found:
            raise errors.NotFound(f"{name} is not in the graph; see `graphbuild images`")
        nodes += found
    g = graph.load(db)
    with sweep_lock(config.workspace, wait=True, on_wait=None):
        digests = checked(config, g).digests  # what the parents outside the rebuild are now
        steps = plan.forced(g, nodes, reason, downstream, depth, digests)
        return build(config, g, steps, "rebuild", reason, settings, as_json)
