"""`graphbuild uses REF`: every image built on REF, with the line that pulls it in, and the
workloads that run those images."""

from __future__ import annotations

import sqlite3

from graphbuild import errors, graphdb, report, workloads
from graphbuild.commands import ensure
from graphbuild.config import Config
from graphbuild.report import short
from graphbuild.state import State
from graphbuild.workspace import STATE


def run(config: Config, ref: str, direct: bool, depth: int | None, as_json: bool) -> int:
    db = ensure(config)
    starts = graphdb.match(db, ref)
    found = graphdb.uses(db, starts, 1 if direct else depth)
    running = _running(db, config, [use.image for use in found])
    if as_json:
        report.emit_json([{**use.__dict__, "workloads": [
            {"name": w.name, "ring": w.ring, "deployer": w.deployer, "where": w.where}
            for w in running[use.image]]} for use in found])  # fmt: skip
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
    deployed = [(w.ring, w.name, short(image), w.where)
                for image, ws in running.items() for w in ws]  # fmt: skip
    if deployed:
        print()
        report.table(["RING", "WORKLOAD", "RUNS", "WHERE"], deployed)
        print(f"{len(deployed)} workload{'s' if len(deployed) != 1 else ''} run them.")
    return errors.OK


def _running(
    db: sqlite3.Connection, config: Config, nodes: list[str]
) -> dict[str, list[workloads.Workload]]:
    """The workloads that run each image; a reference by digest alone runs what graphbuild
    built, as state.db records it."""
    targets = workloads.load(db, config)
    found: dict[str, list[workloads.Workload]] = {node: [] for node in nodes}
    if not targets:
        return found
    state = State(config.workspace) if (config.workspace / STATE).exists() else None
    try:
        for node in nodes:
            attrs = graphdb.attrs(db, node)
            built = state.built_digests(node) if state else set()
            found[node] = workloads.running(targets, attrs, built) if attrs else []
    finally:
        if state:
            state.db.close()
    return found
