"""The sync step (`pipeline.sync`): fetch, index and link, then store the graph.

It has a module of its own so that `graphbuild sync` imports only what a sync
needs: a warm sync of a thousand repositories where nothing moved is a
thousand `ls-remote`s, and every module imported before the first of them
starts is paid in full. Linking (graph.py, networkx) is imported only when the
inputs changed; fetching (GitPython) only when a repository moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from graphbuild import console, discovery, errors, filelock, index, indexdb, report, sources
from graphbuild.config import Config
from graphbuild.console import plural

SHOWN = 20  # sync problems a command lists before pointing at `graphbuild sync`


@dataclass
class Synced:
    """What `graphbuild sync` did: each repository, the images indexed, and the problems."""

    repos: list[sources.SyncResult]
    images: int
    parsed: int
    cached: int
    problems: list[errors.Problem] = field(default_factory=list)


def sync(config: Config, jobs: int = 8, summary: bool = True) -> Synced:
    """Fetch, index and link; the stored graph is replaced only when linking succeeds.
    Through a pipe, without --verbose, the repositories are summed up in one line on stderr
    (`summary`: the `sync` command's answer is that line, on stdout)."""
    lock = config.workspace / "sync.lock"
    with filelock.exclusive(lock, lambda who: report.note(f"Waiting for another sync ({who}).")):
        return _sync(config, jobs, summary and report.piped() and not console.verbose)


def synced_line(repos: Sequence[sources.SyncResult]) -> str:
    """`Synced 3 repositories (1 with new commits)`, and which failed."""
    new = sum(1 for r in repos if r.fetched)
    failed = [r.repo for r in repos if r.error]
    line = f"Synced {plural(len(repos), 'repository')} ({new} with new commits"
    if failed:
        some = ", ".join(failed[:5]) + (", …" if len(failed) > 5 else "")
        line += f"; {len(failed)} failed: {some}"
    return line + ")"


def _sync(config: Config, jobs: int, summary: bool) -> Synced:
    with report.progress(len(config.sources), "Syncing") as step:

        def done(result: sources.SyncResult) -> None:
            if result.error:
                step(f"{result.repo}: failed")
            elif result.commit:
                step(f"{result.repo}: {result.commit[:12]}{' (new)' if result.fetched else ''}")
            else:
                step(f"{result.repo}: local folder")

        synced = sources.sync(config, jobs=jobs, on_done=done)
    if summary:
        report.note(synced_line(synced) + ".")
    db = indexdb.connect(config.workspace)
    try:
        deploy_problems = discovery.refresh(db, config, synced)
        with index.Indexer(config, synced, db) as indexer:
            fingerprint = indexer.scan()
            stored = indexdb.meta(db)
            if stored and stored["fingerprint"] == fingerprint:
                problems = [errors.Problem(**p) for p in stored["problems"]] + deploy_problems
                return Synced(synced, stored["images"], 0, len(indexer.found), problems)
            idx = indexer.parse()
        from graphbuild import graph  # networkx: only when there is something to link

        g, link_problems = graph.build(idx.images, config.mirrors)
        problems = idx.problems + link_problems
        images = sum(1 for _, data in graph.node_items(g) if data["kind"] == indexdb.IMAGE)
        if idx.deferred:  # not the whole of these inputs: the next sync must parse on
            fingerprint += "/deferred"
        meta = {"fingerprint": fingerprint, "images": images, "mirrors": config.mirrors,
                "problems": [p.__dict__ for p in problems]}  # fmt: skip
        graph.save(db, g, meta)
        return Synced(synced, images, idx.parsed, idx.cached, problems + deploy_problems)
    finally:
        db.close()


def say_problems(problems: Sequence[errors.Problem], heading: str, levels: bool = False) -> None:
    """`heading`, then the first SHOWN problems, one `repo:path:line: message` each (after its
    level, with `levels`), then how many more there are."""
    report.note(heading)
    for problem in problems[:SHOWN]:
        report.note(f"  {problem.level:<10} {problem}" if levels else f"  {problem}")
    if len(problems) > SHOWN:
        report.note(f"  … and {len(problems) - SHOWN} more: see `graphbuild sync`.")
