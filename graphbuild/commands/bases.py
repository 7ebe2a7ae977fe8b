"""`graphbuild bases`: the external bases the fleet pulls, and how much is built on each."""

from __future__ import annotations

from graphbuild import errors, queries, report
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, as_json: bool) -> int:
    rows = queries.bases(queries.open_index(config), config.workspace)
    if as_json:
        report.emit_json(rows)
        return errors.OK
    report.table(
        ["BASE", "PINNED", "IMAGES", "ALL DOWNSTREAM", "AS", "LAST CHECK", "SINCE"],
        [
            (
                short(r["id"]),
                "pinned" if r["pinned"] else "floating",
                r["images"],
                r["all_images"],
                ",".join(r["kinds"]),
                r["status"] or "",
                (r["since"] or "")[:19],
            )
            for r in rows
        ],
    )
    return errors.OK
