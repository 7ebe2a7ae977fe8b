"""`graphbuild sweep`: sync, check, plan, build. Meant for cron, CI schedules, CronJobs."""

from __future__ import annotations

from graphbuild import errors, execute, report
from graphbuild.commands import build, planned, synced
from graphbuild.commands.plan import show
from graphbuild.config import Config
from graphbuild.state import sweep_lock


def run(
    config: Config,
    *,
    dry_run: bool,
    settings: execute.RunSettings,
    max_images: int,
    yes: bool,
    wait: bool,
    as_json: bool,
    only: list[str] | None = None,
) -> int:
    """One sweep under the sweep lock; idempotent: right after a good one it builds nothing.

    Exit 1 when anything kept it from the whole truth: a repository not
    fetched, a registry that did not answer, a build that failed. `only` limits it
    to what is built on those references (a push event's sweep).
    """
    with sweep_lock(config.workspace, wait, lambda who: report.note(f"Waiting for {who}.")):
        g, starts, failed_sync = synced(config, only or [])
        plan, check = planned(config, g)
        if only:  # a push event: what is built on the pushed images, nothing else
            plan = plan.within(g, starts)
        unanswered = check.unanswered()
        if unanswered:
            some = ", ".join(unanswered[:3]) + (", …" if len(unanswered) > 3 else "")
            report.note(f"{len(unanswered)} references got no answer from their registry "
                        f"({some}): what is built on them was not judged. "
                        "See `graphbuild check`.")  # fmt: skip
        incomplete = failed_sync or bool(unanswered)
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
        if not plan.steps and unanswered and as_json:
            report.emit_json({"id": None, "status": "incomplete", "unanswered": unanswered,
                              "nodes": []})  # fmt: skip
            return errors.FAILED
        code = build(config, g, plan, "sweep", None, settings, as_json)
        return errors.FAILED if incomplete else code
