"""`graphbuild runs [ID]` and `graphbuild resume ID`: what runs did, and finishing one."""

from __future__ import annotations

from graphbuild import builds, errors, pipeline, report
from graphbuild.config import Config
from graphbuild.plan import Plan, Step
from graphbuild.state import Run, RunStatus, State, sweep_lock


def show(config: Config, run_id: str | None, as_json: bool) -> int:
    with State(config.workspace) as state:
        if run_id is None:
            runs = state.runs()
            if as_json:
                report.emit_json([report.run_document(r) for r in runs])
            else:
                report.table(
                    ["RUN", "KIND", "STATUS", "STARTED", "FINISHED", "REASON"],
                    [(r.id, r.kind, r.status, r.started[:19], (r.finished or "")[:19],
                      r.reason or "") for r in runs],
                )  # fmt: skip
            return errors.OK
        run = state.run(run_id)
    if run is None:
        raise unknown_run(run_id)
    if as_json:
        report.emit_json(report.run_document(run))
        return errors.OK
    report.run_table(run)
    print(f"Started {run.started[:19]}; build logs in {config.workspace / 'runs' / run.id}/")
    return errors.OK


def unknown_run(run_id: str) -> errors.NotFound:
    """The error for an ID no run has: the value quoted, so `no run 0` cannot read as "no ID"."""
    return errors.NotFound(f"there is no run with ID {run_id!r}; `graphbuild runs` lists them")


def resume(config: Config, run_id: str, max_parallel: int | None, as_json: bool) -> int:
    """Finish an interrupted or partly failed run; what succeeded is not built again.

    Only the latest run of its images can be resumed: an older one would push
    images built on older digests over what a later run built.
    """
    pipeline.ready(config)
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        with State(config.workspace) as state:
            run = state.run(run_id)
            if run is None:
                raise unknown_run(run_id)
            later = state.rebuilt_since(run.started, [n.node for n in run.nodes])
        if run.status == RunStatus.SUCCEEDED:
            report.note(f"Run {run_id} already succeeded: nothing to resume.")
            return errors.OK
        if later:
            raise errors.GraphbuildError(
                f"run {run_id} cannot be resumed: run {later[-1]} has rebuilt some of its images "
                "since. A sweep (or a rebuild) builds what is still to do on today's digests."
            )
        options = run.options
        settings = builds.RunSettings(
            max_parallel=max_parallel or int(options.get("max_parallel", 4)),
            force=bool(options.get("force")), no_cache=bool(options.get("no_cache")),
        )  # fmt: skip
        steps = [Step(n.node, n.wave, n.reason, n.detail, n.chain) for n in run.nodes]
        plan = Plan(steps, dict(options.get("digests", {})))
        now = pipeline.fresh(config)  # a fix merged since the failure is what gets built
        missing = [n.node for n in run.nodes if n.node not in now.graph]
        if missing:
            raise errors.GraphbuildError(f"run {run_id} names images no longer in the graph: "
                                         f"{', '.join(missing)}")  # fmt: skip
        done = pipeline.run(config, now.graph, plan, run.kind, run.reason, settings, run.id)
    code = finished(config, done, as_json)
    return errors.FAILED if now.failed else code


def finished(config: Config, run: Run | None, as_json: bool) -> int:
    """Say how a run went (or that there was nothing to rebuild); 0 only if it succeeded."""
    if run is None:
        if as_json:  # the shape of a run document, so scripts read one thing
            report.emit_json({"id": None, "status": "up-to-date", "nodes": []})
        else:
            print("Nothing to rebuild.")
        return errors.OK
    if as_json:
        report.emit_json(report.run_document(run))
    else:
        report.run_table(run)
        print(f"Reports and build logs: {pipeline.reports_folder(config, run.id)}/")
    if run.status == RunStatus.INTERRUPTED:
        report.note(f"Interrupted. Finish it with: graphbuild resume {run.id}")
    return errors.OK if run.status == RunStatus.SUCCEEDED else errors.FAILED
