"""`graphbuild uses REF`: every image built on REF, with the line that pulls it in, and the
workloads that run those images."""

from __future__ import annotations

from graphbuild import errors, queries, report
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, ref: str, direct: bool, depth: int | None, as_json: bool) -> int:
    answer = queries.uses(queries.open_index(config), config, ref, 1 if direct else depth)
    starts, found, running = answer.starts, answer.found, answer.running
    if as_json:
        report.emit_json(queries.uses_document(answer))
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
