"""`graphbuild plan`: what a sweep would rebuild, in which waves and why; builds nothing."""

from __future__ import annotations

from graphbuild import errors, graph, indexdb, pipeline, plan, queries, report
from graphbuild.config import Config
from graphbuild.console import plural
from graphbuild.report import short


def run(config: Config, as_json: bool, updated: list[str], concurrency: int) -> int:
    """Exit 1 when the plan may be missing something: a registry did not answer, or the sync
    had errors (what they concern is not in the graph)."""
    if updated:  # what-if, offline: no registry is asked
        db = queries.open_index(config)
        result = plan.updated(graph.load(db), indexdb.match_all(db, updated))
        show(result, as_json)
        return errors.OK
    now = pipeline.fresh(config)  # exactly what a sweep would do now (rule 8): it syncs first
    checked = pipeline.check(config, now.graph, concurrency)
    unanswered = checked.unanswered()
    show(pipeline.plan(config, now.graph, checked), as_json, bool(unanswered))
    return errors.FAILED if now.failed or unanswered else errors.OK


def show(result: plan.Plan, as_json: bool, incomplete: bool = False) -> None:
    """The plan; `incomplete`: a registry did not answer, so "nothing" is not the answer."""
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
    if not result.steps:  # "nothing" only when every registry answered
        print("Nothing to rebuild among the images that could be judged."
              if incomplete else "Nothing to rebuild.")  # fmt: skip
    for wave, nodes in enumerate(result.waves):
        print(f"Wave {wave}")
        by_node = {s.node: s for s in result.steps}
        report.table(
            ["  IMAGE", "REASON", "WHY"],
            [(f"  {short(n)}", by_node[n].reason, report.brief(by_node[n].detail)) for n in nodes],
        )
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(result.counts().items()))
    if result.steps:
        print(f"\n{plural(len(result.steps), 'image')} in {plural(len(result.waves), 'wave')}: "
              f"{counts}.")  # fmt: skip
    if result.unknown:
        print(f"{plural(len(result.unknown), 'image')} could not be judged (see graphbuild check).")
