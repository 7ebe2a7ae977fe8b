"""`graphbuild sync`: fetch every repository, parse what changed, store the graph."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphbuild import errors, filelock, graphdb, index, report, sources, workloads
from graphbuild.config import Config


@dataclass
class Summary:
    repos: list[sources.SyncResult]
    images: int
    parsed: int
    cached: int
    problems: list[errors.Problem] = field(default_factory=list)


def refresh(config: Config, jobs: int = 8) -> Summary:
    """Sync, index and link; the stored graph is replaced only when linking succeeds."""
    lock = config.workspace / "sync.lock"
    with filelock.exclusive(lock, lambda who: report.note(f"Waiting for another sync ({who}).")):
        return _refresh(config, jobs)


def _refresh(config: Config, jobs: int) -> Summary:
    with report.progress(len(config.sources), "Syncing") as step:

        def done(result: sources.SyncResult) -> None:
            if result.error:
                step(f"{result.repo}: failed")
            elif result.commit:
                step(f"{result.repo}: {result.commit[:12]}{' (new)' if result.fetched else ''}")
            else:
                step(f"{result.repo}: local folder")

        synced = sources.sync(config, jobs=jobs, on_done=done)
    db = index.open_db(config.workspace)
    try:
        deploy_problems = workloads.refresh(db, config, synced)
        with index.Indexer(config, synced, db) as indexer:
            fingerprint = indexer.scan()
            stored = graphdb.meta(db)
            if stored and stored["fingerprint"] == fingerprint:
                problems = [errors.Problem(**p) for p in stored["problems"]] + deploy_problems
                return Summary(synced, stored["images"], 0, len(indexer.found), problems)
            idx = indexer.parse()
        from graphbuild import graph  # networkx: only paid when the graph is relinked

        g, link_problems = graph.build(idx.images, config.mirrors)
        problems = idx.problems + link_problems
        images = sum(1 for _, kind in g.nodes(data="kind") if kind == graphdb.IMAGE)
        if idx.deferred:  # not the whole of these inputs: the next sync must parse on
            fingerprint += "/deferred"
        meta = {"fingerprint": fingerprint, "images": images, "mirrors": config.mirrors,
                "problems": [p.__dict__ for p in problems]}  # fmt: skip
        graph.save(db, g, meta)
        return Summary(synced, images, idx.parsed, idx.cached, problems + deploy_problems)
    finally:
        db.close()


def run(config: Config, jobs: int, as_json: bool) -> int:
    summary = refresh(config, jobs)
    if as_json:
        report.emit_json(
            {
                "repos": [
                    {"name": r.repo, "commit": r.commit, "fetched": r.fetched, "error": r.error}
                    for r in summary.repos
                ],
                "images": summary.images,
                "parsed": summary.parsed,
                "cached": summary.cached,
                "problems": [p.__dict__ for p in summary.problems],
            }
        )
    else:
        new = sum(1 for r in summary.repos if r.fetched)
        print(
            f"Synced {len(summary.repos)} repositories ({new} with new commits); "
            f"indexed {summary.images} images: parsed {summary.parsed} Dockerfiles, "
            f"{summary.cached} from cache."
        )
        if summary.problems:
            count = len(summary.problems)
            print(f"{count} problem{'s' if count != 1 else ''}:")
            for p in summary.problems:
                print(f"  {p.level:<10} {p}")
    failed = any(p.level == errors.ERROR for p in summary.problems)
    return errors.FAILED if failed else errors.OK
