"""`graphbuild deploy RUN_ID [--ring R]`: take a finished run's validated images out, later.

For teams that gate a ring by hand: a sweep stops before a `manual` ring, and a
person names it here to continue. Without `--ring` it goes as a sweep does, up
to the first manual ring. A ring is deployed only after every ring before it is
healthy for this run.
"""

from __future__ import annotations

from graphbuild import deployers, errors, pipeline, report, rollout
from graphbuild.commands.runs import unknown_run
from graphbuild.config import Config
from graphbuild.state import NodeStatus, RingStatus, RunStatus, State, sweep_lock


def run(
    config: Config, run_id: str, rings: list[str], dry_run: bool, rollback: bool, as_json: bool
) -> int:
    order = [ring.name for ring in config.deployments.rings]
    if not order:
        raise errors.GraphbuildError(f"{config.file}: deployments.rings: no rings to deploy to")
    for ring in rings:
        if ring not in order:
            raise errors.NotFound(f"no ring {ring!r}; deployments.rings has {order}")
    deployers.check(config)
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        now = pipeline.fresh(config)  # workloads added to the deploy repositories count
        with State(config.workspace) as state:
            found = state.run(run_id)
            if found is None:
                raise unknown_run(run_id)
            if found.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED):
                raise errors.GraphbuildError(
                    f"run {run_id} is {found.status}: finish its builds first "
                    f"(graphbuild resume {run_id})"
                )
            later = state.rebuilt_since(found.started, [n.node for n in found.nodes])
            if later and not rollback:
                raise errors.GraphbuildError(
                    f"run {later[-1]} has rebuilt images of run {run_id} since: deploying "
                    f"{run_id} would roll them back. Pass --rollback if that is the intent."
                )
            landed = (RingStatus.HEALTHY, RingStatus.NOTHING_TO_DEPLOY)
            done = {r.ring for r in found.rings if r.status in landed}
            first = min((order.index(r) for r in rings), default=0)
            before = [r for r in order[:first] if r not in done]
            if before:
                raise errors.GraphbuildError(
                    f"ring {before[0]} is not healthy for run {run_id}: deploy it first "
                    f"(graphbuild deploy {run_id} --ring {before[0]})"
                )
            say = report.note if as_json else print
            ok = rollout.roll_out(config, now.graph, state, run_id, pipeline.targets(config),
                                  rings=rings or None, dry_run=dry_run, say=say)  # fmt: skip
            if not dry_run:  # a ring deployed by hand may end an exposure window
                pipeline.exposure(config, state, run_id)
            after = state.run(run_id)
    assert after is not None
    if as_json:
        report.emit_json(report.run_document(after))
    elif not dry_run:
        report.deploy_table(after)
    built = all(n.status not in (NodeStatus.FAILED, NodeStatus.BLOCKED) for n in after.nodes)
    return errors.OK if ok and built and not now.failed else errors.FAILED
