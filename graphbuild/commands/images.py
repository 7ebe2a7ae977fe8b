"""`graphbuild images`: every image the fleet builds, where from, and on what."""

from __future__ import annotations

from graphbuild import errors, queries, report
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, as_json: bool) -> int:
    rows = queries.images(queries.open_index(config))
    if as_json:
        report.emit_json(rows)
        return errors.OK
    report.table(
        ["IMAGE", "ALSO TAGGED", "REPO:DOCKERFILE", "BUILT ON", "UNRESOLVED"],
        [
            (
                short(r["id"]),
                ", ".join(t.rsplit(":", 1)[1] for t in r["tags"][1:]),
                f"{r['repo']}:{r['dockerfile']}",
                ", ".join(short(b) for b in r["bases"]),
                len(r["unresolved"]) or "",
            )
            for r in rows
        ],
    )
    return errors.OK
