"""`graphbuild parents IMAGE`: the chain of bases under an image, down to external roots."""

from __future__ import annotations

from collections import defaultdict

from graphbuild import errors, indexdb, queries, report
from graphbuild.config import Config
from graphbuild.report import short


def run(config: Config, image: str, as_json: bool) -> int:
    db = queries.open_index(config)
    roots = [n for n in indexdb.match(db, image) if indexdb.kind_of(db, n) == indexdb.IMAGE]
    if not roots:
        raise errors.NotFound(f"{image} is not an image the fleet builds; see `graphbuild images`")
    chains = {root: indexdb.parents(db, root) for root in roots}
    if as_json:
        report.emit_json([p.__dict__ for root in roots for p in chains[root]])
        return errors.OK
    for root in roots:
        below = defaultdict(list)
        for p in chains[root]:
            below[p.image].append(p)
        print(short(root))
        _tree(below, root, "", set())
    return errors.OK


def _tree(below: dict, node: str, indent: str, path: set[str]) -> None:
    items = below.get(node, [])
    for i, p in enumerate(items):
        last = i == len(items) - 1
        where = f"{p.repo}:{p.dockerfile}:{p.line}"
        print(f"{indent}{'└── ' if last else '├── '}{p.kind} {short(p.base)}  ({where})")
        if p.base not in path:
            _tree(below, p.base, indent + ("    " if last else "│   "), path | {node})
