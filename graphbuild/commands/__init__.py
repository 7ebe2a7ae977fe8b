"""One module per command: each takes a loaded Config and plain options, returns an exit code."""

from __future__ import annotations

import sqlite3

from graphbuild import graphdb, report
from graphbuild.config import Config


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
