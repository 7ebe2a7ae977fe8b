"""`graphbuild sync`: fetch every repository, parse what changed, store the graph."""

from __future__ import annotations

from pathlib import Path

from graphbuild import errors, graph, index, report, sources
from graphbuild.config import Config


def refresh(config: Config, jobs: int = 8) -> tuple[graph.Stored, index.Index]:
    """Sync, index and link; the stored graph is replaced only when linking succeeds."""
    with report.progress(len(config.repos), "Syncing") as step:

        def done(result: sources.SyncResult) -> None:
            if result.error:
                step(f"{result.repo}: failed")
            elif result.commit:
                step(f"{result.repo}: {result.commit[:12]}{' (new)' if result.fetched else ''}")
            else:
                step(f"{result.repo}: local folder")

        synced = sources.sync(config, jobs=jobs, on_done=done)
    idx = index.build(config, synced)
    g, link_problems = graph.build(idx.images)
    repos = {
        r.repo: {"commit": r.commit, "fetched": r.fetched, "error": r.error} for r in synced
    }
    stored = graph.Stored(g, idx.problems + link_problems, repos)
    graph.save(graph_file(config), stored)
    return stored, idx


def graph_file(config: Config) -> Path:
    return config.workspace / "graph.json"


def ensure(config: Config) -> graph.Stored:
    """The stored graph; a query syncs first only when there is none yet."""
    stored = graph.load(graph_file(config))
    if stored is None:
        report.note("No index yet: syncing first (graphbuild sync).")
        stored, _ = refresh(config)
    return stored


def run(config: Config, jobs: int, as_json: bool) -> int:
    stored, idx = refresh(config, jobs)
    failed = [p for p in stored.problems if p.level == index.ERROR]
    if as_json:
        report.emit_json({
            "repos": [{"name": name, **info} for name, info in stored.repos.items()],
            "images": _image_count(stored),
            "parsed": idx.parsed,
            "cached": idx.cached,
            "problems": [p.__dict__ for p in stored.problems],
        })
    else:
        new = sum(1 for info in stored.repos.values() if info["fetched"])
        print(
            f"Synced {len(stored.repos)} repositories ({new} with new commits); "
            f"indexed {_image_count(stored)} images: parsed {idx.parsed} Dockerfiles, "
            f"{idx.cached} from cache."
        )
        if stored.problems:
            print(f"{len(stored.problems)} problem{'s' if len(stored.problems) != 1 else ''}:")
            for p in stored.problems:
                print(f"  {p.level:<10} {p}")
    return errors.FAILED if failed else errors.OK


def _image_count(stored: graph.Stored) -> int:
    return sum(1 for _, kind in stored.graph.nodes(data="kind") if kind == graph.IMAGE)
