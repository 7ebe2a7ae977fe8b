"""`graphbuild rebuild REF...`: the on-call path: rebuild now, whatever the digests say."""

from __future__ import annotations

from graphbuild import builds, detect, errors, pipeline, plan, report, scanning, vulns
from graphbuild.builders.command import NO_CACHE
from graphbuild.commands.runs import finished
from graphbuild.config import BuilderSpec, CommandSpec, Config
from graphbuild.state import State, sweep_lock


def run(
    config: Config,
    names: list[str],
    *,
    reason: str,
    downstream: bool,
    depth: int | None,
    settings: builds.RunSettings,
    as_json: bool,
) -> int:
    """The named images, or everything built on a named base, with `reason` on every one.

    A scheduled sweep holding the lock is waited for, not raced: two builds of
    one image at once would push in an arbitrary order.
    """
    if settings.no_cache and not _takes_no_cache(config.builder):
        report.note(
            f"builder.argv has no {NO_CACHE}: the command builder cannot be asked "
            "for --no-cache, and builds as it always does (docs/config.md, builder)."
        )
    pipeline.ready(config)
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        now = pipeline.fresh(config, names)
        # the parents outside the rebuild: only the rebuilt part is asked about, as a push's
        # sweep asks (an emergency rebuild waits on no question about the rest of the fleet)
        part = detect.needed(now.graph, now.nodes)
        digests = pipeline.check(config, now.graph, only=part).digests
        steps = plan.forced(now.graph, now.nodes, reason, downstream, depth, digests)
        done = pipeline.run(config, now.graph, steps, "rebuild", reason, settings)
    code = finished(config, done, as_json)
    return errors.FAILED if now.failed else code


def _takes_no_cache(builder: BuilderSpec) -> bool:
    """Can `--no-cache` reach this builder? A command builder gets it only through its
    template; the others always do."""
    return not isinstance(builder, CommandSpec) or NO_CACHE in builder.argv


def fix(
    config: Config,
    cve: str,
    *,
    reason: str,
    downstream: bool,
    depth: int | None,
    settings: builds.RunSettings,
    as_json: bool,
) -> int:
    """`rebuild --cve`: the images whose own layers carry a fixable `cve` in their last
    scan (within the rescan period), without cache, and what is built on them."""
    scanning.section(config)
    pipeline.ready(config)
    with sweep_lock(config.workspace, True, lambda who: report.note(f"Waiting for {who}.")):
        now = pipeline.fresh(config)
        digests = pipeline.check(config, now.graph).digests
        with State(config.workspace) as state:
            roots = vulns.rebuilds(config, now.graph, state, pipeline.targets(config), digests,
                                   cve)  # fmt: skip
        if not roots:
            report.note(f"No image's own layers carry a fixable {cve} in a scan of what is "
                        "served now: nothing to rebuild (see `graphbuild vulns "
                        f"{cve}`; `graphbuild scan` scans what is not scanned yet).")  # fmt: skip
            code = finished(config, None, as_json)
            return errors.FAILED if now.failed else code
        why = {node: vulns.reasons(found) for node, found in roots.items()}
        steps = plan.fixing(now.graph, why, digests, downstream, depth)
        label = reason if reason != "forced rebuild" else cve
        done = pipeline.run(config, now.graph, steps, "rebuild", label, settings)
    code = finished(config, done, as_json)
    return errors.FAILED if now.failed else code
