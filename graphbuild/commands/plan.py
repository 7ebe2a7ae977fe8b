"""`graphbuild plan`: what a sweep would rebuild, in which waves and why; builds nothing."""

from __future__ import annotations

from graphbuild import errors, graph, indexdb, pipeline, plan, queries, report
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, as_json: bool, updated: list[str], concurrency: int) -> int:
    if updated:  # what-if, offline: no registry is asked
        db = queries.open_index(config)
        result = plan.updated(graph.load(db), indexdb.match_all(db, updated))
    else:  # exactly what a sweep would do now (rule 8): it syncs first too
        g = pipeline.fresh(config).graph
        result = pipeline.plan(config, g, pipeline.check(config, g, concurrency))
    show(result, as_json)
    return errors.OK


def show(result: plan.Plan, as_json: bool) -> None:
    if as_json:
        report.emit_json(
            {
                "waves": result.waves,
                "steps": [step.__dict__ for step in result.steps],
                "counts": result.counts(),
                "unknown": result.unknown,
            }
        )
        return
    if not result.steps:
        print("Nothing to rebuild.")
    for wave, nodes in enumerate(result.waves):
        print(f"Wave {wave}")
        by_node = {s.node: s for s in result.steps}
        report.table(
            ["  IMAGE", "REASON", "WHY"],
            [(f"  {short(n)}", by_node[n].reason, report.brief(by_node[n].detail)) for n in nodes],
        )
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(result.counts().items()))
    if result.steps:
        print(f"\n{len(result.steps)} images in {len(result.waves)} waves: {counts}.")
    if result.unknown:
        print(f"{len(result.unknown)} images could not be judged (see graphbuild check).")
