"""`graphbuild mirror`: copy the external bases the graph uses into the ACR mirror, by digest.

Azure recommends that production pull nothing from public registries: with
`mirrors:` in repos.yaml, Dockerfiles name the mirror, graphbuild watches the
upstream, and this command keeps the mirror's tags on the upstream digests.
An image already there is not imported again.
"""

from __future__ import annotations

from graphbuild import acr, errors, refs, report
from graphbuild.commands import synced
from graphbuild.config import Config
from graphbuild.graphdb import EXTERNAL
from graphbuild.registry import Registry, Resolved


def run(config: Config, dry_run: bool, as_json: bool) -> int:
    if config.azure is None or not config.mirrors:
        raise errors.GraphbuildError(
            f"{config.file}: mirror needs `azure:` (the registry to import into) and `mirrors:`"
        )
    g, _, failed_sync = synced(config)
    pairs = {node: target for node, kind in g.nodes(data="kind")
             if kind == EXTERNAL and (target := refs.mirrored(node, config.mirrors))}  # fmt: skip
    bases = list(pairs)
    wanted = {ref: () for pair in pairs.items() for ref in pair}  # both sides, once each
    with Registry(config.registries) as registry:
        answers = registry.resolve_all(wanted, timeout=config.check_timeout)
    digests = {ref: a.digest if isinstance(a, Resolved) else None for ref, a in answers.items()}
    due, unanswered = acr.imports_due(bases, config.mirrors, digests)
    for base in unanswered:
        report.note(f"{base}: its registry did not answer ({answers[base].message}); not mirrored")
    done, failed = [], []
    if not dry_run and due:
        with acr.client(config.azure) as manager:
            for item in due:
                try:
                    acr.import_image(manager, config.azure, item)
                except errors.CommandFailed as err:  # the others are still worth importing
                    report.note(str(err))
                    failed.append(item)
                    continue
                report.note(f"Imported {item.source} ({item.digest[:19]}…) as {item.target}")
                done.append(item)
    if as_json:
        report.emit_json({
            "imports": [item.__dict__ for item in (due if dry_run else done)],
            "dry_run": dry_run, "unanswered": unanswered,
            "failed": [item.__dict__ for item in failed],
        })  # fmt: skip
    elif not due:
        print("The mirror is up to date.")
    elif dry_run:
        report.table(["UPSTREAM", "DIGEST", "MIRROR"],
                     [(i.source, report.brief(i.digest), i.target) for i in due])  # fmt: skip
    else:
        print(f"Imported {len(done)} image{'s' if len(done) != 1 else ''} into the mirror.")
    return errors.FAILED if unanswered or failed or failed_sync else errors.OK
