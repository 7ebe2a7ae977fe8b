"""`graphbuild sweep`: sync, check, plan, build. Meant for cron, CI schedules, CronJobs."""

from __future__ import annotations

import networkx as nx

from graphbuild import builders, errors, execute, report
from graphbuild.commands import synced
from graphbuild.commands.check import checked
from graphbuild.commands.plan import show
from graphbuild.config import Config
from graphbuild.plan import Plan, from_check
from graphbuild.state import State, sweep_lock


def run(
    config: Config,
    *,
    dry_run: bool,
    settings: execute.RunSettings,
    max_images: int,
    yes: bool,
    wait: bool,
    as_json: bool,
) -> int:
    """One sweep under the sweep lock; idempotent: right after a good one it builds nothing."""
    with sweep_lock(config.workspace, wait, lambda who: report.note(f"Waiting for {who}.")):
        g, _, failed_sync = synced(config)
        plan = from_check(g, checked(config, g))
        if dry_run:
            show(plan, as_json)
            return errors.OK
        if len(plan.steps) > max_images and not yes:
            if as_json:
                report.emit_json({"id": None, "status": "too-big", "planned": len(plan.steps),
                                  "max_images": max_images, "nodes": []})  # fmt: skip
            report.note(
                f"The plan rebuilds {len(plan.steps)} images, more than --max-images "
                f"{max_images}: stopping before building. Look at `graphbuild plan`, then "
                "run again with --yes (or a higher --max-images) if it is right."
            )
            return errors.FAILED
        code = build(config, g, plan, "sweep", None, settings, as_json)
        return errors.FAILED if failed_sync else code


def build(
    config: Config,
    g: nx.DiGraph,
    plan: Plan,
    kind: str,
    reason: str | None,
    settings: execute.RunSettings,
    as_json: bool,
    run_id: str | None = None,
) -> int:
    """Execute a plan as a new run (or finish `run_id`), write its reports, say how it went."""
    builder = builders.make(config.builder)
    with State(config.workspace) as state:
        for dead in set(state.abandon_runs()) - {run_id}:  # callers hold the sweep lock
            report.note(f"Run {dead} was killed; finish it with: graphbuild resume {dead}")
        if run_id is None:
            if not plan.steps:
                if as_json:  # the shape of a run document, so scripts read one thing
                    report.emit_json({"id": None, "status": "up-to-date", "nodes": []})
                else:
                    print("Nothing to rebuild.")
                return errors.OK
            options = {"max_parallel": settings.max_parallel, "force": settings.force,
                       "no_cache": settings.no_cache}  # fmt: skip
            run_id = execute.new_run(state, kind, reason, plan, options)
        else:
            state.reopen_run(run_id)
        with report.RunProgress(len(plan.steps), len(plan.waves)) as progress:
            execute.execute(config, g, plan, state, builder, settings, run_id, progress.event,
                            report.note)  # fmt: skip
        finished = state.run(run_id)
    assert finished is not None
    folder = config.workspace / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.json_text(report.run_document(finished)))
    (folder / "report.md").write_text(report.run_markdown(finished))
    if as_json:
        report.emit_json(report.run_document(finished))
    else:
        report.run_table(finished)
        print(f"Reports and build logs: {folder}/")
    if finished.status == "interrupted":
        report.note(f"Interrupted. Finish it with: graphbuild resume {run_id}")
    return errors.OK if finished.status == "succeeded" else errors.FAILED
