"""`graphbuild sweep`: sync, check, plan, build. Meant for cron, CI schedules, CronJobs."""

from __future__ import annotations

from graphbuild import builds, errors, pipeline, report
from graphbuild.commands.plan import show
from graphbuild.commands.runs import finished
from graphbuild.config import Config
from graphbuild.console import plural
from graphbuild.state import sweep_lock


def run(
    config: Config,
    *,
    dry_run: bool,
    settings: builds.RunSettings,
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
        done = pipeline.sweep(config, settings, max_images=max_images, yes=yes, dry_run=dry_run,
                              only=only or ())  # fmt: skip
    return shown(config, done, max_images, as_json, dry_run)


def shown(
    config: Config, done: pipeline.Sweep, max_images: int, as_json: bool, dry_run: bool = False
) -> int:
    """Say what a sweep did (`listen`'s sweeps too); its exit code."""
    if dry_run:  # as `plan`: 1 when the plan may be missing something
        show(done.plan, as_json, bool(done.unanswered))
        return errors.FAILED if done.incomplete else errors.OK
    if done.too_big:
        if as_json:
            report.emit_json({"id": None, "status": "too-big", "planned": len(done.plan.steps),
                              "max_images": max_images, "nodes": []})  # fmt: skip
        report.note(
            f"The plan rebuilds {plural(len(done.plan.steps), 'image')}, more than --max-images "
            f"{max_images}: stopping before building. Look at `graphbuild plan`, then "
            "run again with --yes (or a higher --max-images) if it is right."
        )
        return errors.FAILED
    if done.run is None and done.unanswered:  # not "nothing to rebuild": not all was judged
        if as_json:
            report.emit_json({"id": None, "status": "incomplete", "unanswered": done.unanswered,
                              "nodes": []})  # fmt: skip
        else:
            print("Nothing to rebuild among the images that could be judged.")
        return errors.FAILED
    code = finished(config, done.run, as_json)
    return errors.FAILED if done.incomplete else code
