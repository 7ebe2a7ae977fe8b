"""`graphbuild mirror`: copy the external bases the graph uses into the ACR mirror, by digest.

Azure recommends that production pull nothing from public registries: with
`mirrors:` in repos.yaml, Dockerfiles name the mirror, graphbuild watches the
upstream, and this command keeps the mirror's tags on the upstream digests.
An image already there is not imported again.
"""

from __future__ import annotations

from graphbuild import errors, extras, pipeline, report
from graphbuild.config import Config
from graphbuild.console import plural


def run(config: Config, dry_run: bool, as_json: bool) -> int:
    if config.azure is None or not config.mirrors:
        raise errors.GraphbuildError(
            f"{config.file}: mirror needs `azure:` (the registry to import into) and `mirrors:`"
        )
    extras.require_azure("mirror")
    now = pipeline.fresh(config)
    done = pipeline.mirror(config, now.graph, dry_run)
    shown(done, dry_run, as_json)
    failed = done.unanswered or done.failed or now.failed
    return errors.FAILED if failed else errors.OK


def shown(done: pipeline.Mirrored, dry_run: bool, as_json: bool) -> None:
    """Say what a mirror pass did (`listen`'s, before its sweep, too)."""
    if as_json:
        report.emit_json({
            "imports": [item.__dict__ for item in (done.due if dry_run else done.done)],
            "dry_run": dry_run, "unanswered": done.unanswered,
            "failed": [item.__dict__ for item in done.failed],
        })  # fmt: skip
    elif not done.due:
        print("The mirror is up to date.")
    elif dry_run:
        report.table(["UPSTREAM", "DIGEST", "MIRROR"],
                     [(i.source, report.brief(i.digest), i.target) for i in done.due])  # fmt: skip
    else:
        print(f"Imported {plural(len(done.done), 'image')} into the mirror.")
