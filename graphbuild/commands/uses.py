"""`graphbuild uses REF`: every image built on REF, with the line that pulls it in."""

from __future__ import annotations

from graphbuild import errors, graphdb, report
from graphbuild.commands import ensure
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, ref: str, direct: bool, depth: int | None, as_json: bool) -> int:
    db = ensure(config)
    starts = graphdb.match(db, ref)
    found = graphdb.uses(db, starts, 1 if direct else depth)
    if as_json:
        report.emit_json([use.__dict__ for use in found])
        return errors.OK
    if not starts:
        report.note(f"{ref} is not in the graph: no Dockerfile names it and no image produces it.")
        return errors.OK
    if not found:
        print(f"No image is built on {ref}.")
        return errors.OK
    rows = [
        (u.depth, short(u.image), short(u.base), u.kind, f"{u.repo}:{u.dockerfile}:{u.line}")
        for u in found
    ]
    report.table(["DEPTH", "IMAGE", "BUILT ON", "AS", "WHERE"], rows)
    print(f"{len(found)} image{'s' if len(found) != 1 else ''} built on {ref}.")
    return errors.OK
