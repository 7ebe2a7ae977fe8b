"""One module per command: each takes a loaded Config and plain options, returns an exit code."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing

import networkx as nx

from graphbuild import errors, graphdb, report
from graphbuild.config import Config
from graphbuild.graph import load  # not `graph`: that name is the graph command's module


def ensure(config: Config) -> sqlite3.Connection:
    """The index with its stored graph; a query syncs first only when there is none yet."""
    db = graphdb.connect(config.workspace)
    if graphdb.meta(db) is None:
        from graphbuild.commands.sync import refresh

        report.note("No index yet: syncing first (graphbuild sync).")
        problems = refresh(config).problems
        if problems:
            report.note(f"The sync found {len(problems)} problem(s): see `graphbuild sync`.")
    db.execute("BEGIN")  # one snapshot: a sync that commits meanwhile is not half seen
    return db


def synced(config: Config, names: Sequence[str] = ()) -> tuple[nx.DiGraph, list[str], bool]:
    """Sync first, then the graph, the nodes `names` match, and whether the sync had errors.

    Builds start from what the repositories say now: a fix merged a minute ago
    is what an on-call rebuild or a resume must build.
    """
    from graphbuild.commands.sync import refresh

    problems = refresh(config).problems
    failed = any(p.level == errors.ERROR for p in problems)
    if failed:
        report.note(f"The sync found {len(problems)} problem(s): see `graphbuild sync`.")
    with closing(graphdb.connect(config.workspace)) as db:
        nodes = []
        for name in names:
            found = graphdb.match(db, name)
            if not found:
                raise errors.NotFound(f"{name} is not in the graph; see `graphbuild images`")
            nodes += found
        return load(db), nodes, failed
