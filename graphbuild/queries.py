"""The answers of the query commands (`uses`, `images`, `bases`, `graph`) as plain data.

They are read straight from index.db by SQL, never by loading the whole graph into
networkx: a query on a fleet of 10,000 images must answer in a fraction of a second,
and so must import none of the build, registry or deploy machinery. The commands
print these answers; their `--json` is exactly this data.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphbuild import indexdb, report, workloads
from graphbuild.config import Config
from graphbuild.console import plural
from graphbuild.errors import GraphbuildError, NotFound
from graphbuild.state import State, migrate, reading


def open_index(config: Config) -> sqlite3.Connection:
    """The index with its stored graph, in one read snapshot; synced first only when there
    is none yet (the one time a query pays for a sync, and so imports it)."""
    migrate(config.workspace)  # the reads below never migrate state.db themselves
    db = indexdb.connect(config.workspace)
    if indexdb.meta(db) is None:
        from graphbuild import syncing  # git and the parser: only for this first query

        report.note("No index yet: syncing first (graphbuild sync).")
        problems = syncing.sync(config).problems
        if problems:  # shown, not only counted: the first query may be the only sync seen
            heading = f"The sync found {plural(len(problems), 'problem')}:"
            syncing.say_problems(problems, heading, levels=True)
    db.execute("BEGIN")  # one snapshot: a sync that commits meanwhile is not half seen
    return db


# ---------------------------------------------------------------- uses


@dataclass
class Uses:
    """The nodes a REF names, every image built on them, and the workloads running each."""

    starts: list[str]
    found: list[indexdb.Use]
    running: dict[str, list[workloads.Workload]] = field(default_factory=dict)


def uses(db: sqlite3.Connection, config: Config, ref: str, depth: int | None) -> Uses:
    starts = indexdb.match(db, ref)
    found = indexdb.uses(db, starts, depth)
    return Uses(starts, found, _running(db, config, [use.image for use in found]))


def suggest(db: sqlite3.Connection, text: str, most: int = 10) -> list[str]:
    """Nodes whose id holds `text`: what the web search offers when a REF names nothing,
    e.g. `upstream/os` typed for `registry.example.com/upstream/os:1`."""
    rows = db.execute(
        "SELECT id FROM graph_nodes WHERE instr(lower(id), lower(?)) > 0 "
        "ORDER BY length(id), id LIMIT ?",
        (text, most),
    )
    return [node for (node,) in rows]


def uses_document(answer: Uses) -> list[dict[str, Any]]:
    """`uses --json`: each image found, with the workloads that run it."""
    return [{**use.__dict__, "workloads": [_workload(w) for w in answer.running[use.image]]}
            for use in answer.found]  # fmt: skip


def _workload(w: workloads.Workload) -> dict[str, Any]:
    return {"name": w.name, "ring": w.ring, "deployer": w.deployer, "where": w.where}


def _running(
    db: sqlite3.Connection, config: Config, nodes: list[str]
) -> dict[str, list[workloads.Workload]]:
    """The workloads that run each image; a reference by digest alone runs what graphbuild
    built, as state.db records it."""
    targets = workloads.load(db, config)
    found: dict[str, list[workloads.Workload]] = {node: [] for node in nodes}
    if not targets:
        return found
    state = reading(config.workspace)
    try:
        for node in nodes:
            attrs = indexdb.attrs(db, node)
            if attrs is None or attrs["kind"] != indexdb.IMAGE:
                continue  # what is built on something is an image: never so
            built = state.built_digests(node) if state else set()
            found[node] = workloads.running(targets, attrs, built)
    finally:
        if state:
            state.db.close()
    return found


# ---------------------------------------------------------------- one image


def show(
    db: sqlite3.Connection, config: Config, ref: str, builds: int = 10
) -> list[dict[str, Any]]:
    """`show REF --json`, the image page: for each image REF names, what it is built on and
    what is built on it, its tags, the last check's verdict, its last builds, the gates'
    results on its last build, and the workloads that run it. Read from the stores only:
    freshness is what the last check or sweep found, with the time it ran."""
    nodes = [n for n in indexdb.match(db, ref) if indexdb.kind_of(db, n) == indexdb.IMAGE]
    if not nodes:
        raise NotFound(f"{ref} is not an image the fleet builds; see `graphbuild images`")
    running = _running(db, config, nodes)
    state = reading(config.workspace)
    try:
        return [_image(db, state, node, running[node], builds) for node in nodes]
    finally:
        if state:
            state.db.close()


def _image(
    db: sqlite3.Connection,
    state: State | None,
    node: str,
    running: list[workloads.Workload],
    most: int,
) -> dict[str, Any]:
    attrs = indexdb.attrs(db, node)
    assert attrs is not None and attrs["kind"] == indexdb.IMAGE
    fresh = state.freshness(node).get(node) if state else None
    history = state.builds(node)[-most:][::-1] if state else []
    last = history[0].digest if history else None
    return {
        "id": node,
        "tags": attrs["tags"],
        "repo": attrs["repo"],
        "dockerfile": attrs["dockerfile"],
        "digest": (fresh.digest if fresh else None) or last,
        "freshness": None if fresh is None else {
            "status": fresh.status, "reason": fresh.reason, "detail": fresh.detail,
            "chain": fresh.chain, "checked": fresh.at},
        "parents": [p.__dict__ for p in indexdb.parents(db, node)],
        "children": [u.__dict__ for u in indexdb.uses(db, [node], 1)],
        "builds": [{"digest": b.digest, "built_at": b.built_at, "run": b.run_id,
                    "parents": b.parents} for b in history],
        "gates": state.gates_on(node, last) if state and last else [],
        "workloads": [_workload(w) for w in running],
    }  # fmt: skip


# ---------------------------------------------------------------- images and bases


def images(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every image the fleet builds with its stored attributes and the bases it is built on."""
    bases = _bases_of(db)
    rows = db.execute("SELECT id, attrs FROM graph_nodes WHERE kind = ? ORDER BY id",
                      (indexdb.IMAGE,))  # fmt: skip
    return [{"id": node, **json.loads(attrs), "bases": sorted(bases[node])} for node, attrs in rows]


def bases(db: sqlite3.Connection, workspace: Path) -> list[dict[str, Any]]:
    """Every external base: pinned or floating, the images built on it directly and in all,
    how they use it (from, copy, mount), and what the last check said of it (`status`, and
    `since`: when its tag was first seen at the digest it has now), null before one ran."""
    state = reading(workspace)
    try:
        fresh = state.freshness() if state else {}
    finally:
        if state:
            state.db.close()
    children: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for source, target, kind in db.execute("SELECT source, target, kind FROM graph_edges"):
        children[source].append((target, kind))
    rows = db.execute("SELECT id, attrs FROM graph_nodes WHERE kind = ? ORDER BY id",
                      (indexdb.EXTERNAL,))  # fmt: skip
    return [
        {
            "id": node,
            "pinned": json.loads(attrs)["pinned"],
            "images": len(children[node]),
            "all_images": len(_below(children, node)),
            "kinds": sorted({kind for _, kind in children[node]}),
            "status": (seen := fresh.get(node)) and seen.status,
            "since": seen and seen.since,
        }
        for node, attrs in rows
    ]


def _bases_of(db: sqlite3.Connection) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for source, target in db.execute("SELECT source, target FROM graph_edges"):
        found[target].append(source)
    return found


def _below(children: dict[str, list[tuple[str, str]]], node: str) -> set[str]:
    seen: set[str] = set()
    queue = deque([node])
    while queue:
        for child, _ in children[queue.popleft()]:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen


# ---------------------------------------------------------------- the graph


def graph(
    db: sqlite3.Connection, focus: str | None = None, depth: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The documented `graph --format json` shape: nodes with id and kind, edges with source
    (base) and target; with `focus`, only what that node is built on and what is built on it,
    `depth` edges up and down at most, read by id so that a neighbourhood costs its own size,
    not the fleet's (the graph view asks for one on every page)."""
    if depth is not None and (focus is None or depth < 1):
        raise GraphbuildError(
            "a depth needs a focus" if focus is None else "depth must be 1 or more"
        )
    if focus is None:
        nodes, edges = sorted(indexdb.nodes(db), key=lambda n: n[0]), list(indexdb.edges(db))
        return {
            "nodes": [{"id": n, **attrs} for n, attrs in nodes],
            "edges": [{"source": u, "target": v, **attrs}
                      for u, v, attrs in sorted(edges, key=lambda e: (e[0], e[1]))],
        }  # fmt: skip
    starts = indexdb.match(db, focus)
    if not starts:
        raise NotFound(f"{focus} is not in the graph")
    keep = _near(db, starts, depth)
    ids = json.dumps(sorted(keep))
    node_rows = db.execute(
        "SELECT id, attrs FROM graph_nodes WHERE id IN (SELECT value FROM json_each(?)) "
        "ORDER BY id",
        (ids,),
    )
    edge_rows = db.execute(  # by target: an image has a few bases, a base may have thousands of
        # images; by both ends, SQLite would probe every pair
        "SELECT source, target, kind, repo, dockerfile, line, attrs FROM graph_edges "
        "WHERE target IN (SELECT value FROM json_each(?)) ORDER BY source, target",
        (ids,),
    )
    return {
        "nodes": [{"id": n, **json.loads(attrs)} for n, attrs in node_rows],
        "edges": [{"source": u, "target": v, "kind": kind, "repo": repo, "dockerfile": path,
                   "line": line, **json.loads(attrs)}  # the columns indexdb.save took out
                  for u, v, kind, repo, path, line, attrs in edge_rows if u in keep],
    }  # fmt: skip


_UP = "SELECT source FROM graph_edges WHERE target IN (SELECT value FROM json_each(?))"
_DOWN = "SELECT target FROM graph_edges WHERE source IN (SELECT value FROM json_each(?))"


def _near(db: sqlite3.Connection, starts: list[str], depth: int | None) -> set[str]:
    """`starts`, what they are built on and what is built on them, `depth` edges at most
    each way (None: all), walked level by level in SQL."""
    keep = set(starts)
    for step in (_UP, _DOWN):
        seen, level, frontier = set(starts), 0, starts
        while frontier and (depth is None or level < depth):
            rows = db.execute(step, (json.dumps(frontier),))
            frontier = sorted({node for (node,) in rows} - seen)
            seen.update(frontier)
            level += 1
        keep |= seen
    return keep


def dot(document: dict[str, list[dict[str, Any]]]) -> str:
    """The graph document as Graphviz DOT: images as boxes, bases as ellipses."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph graphbuild {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node in document["nodes"]:
        shape = "box" if node["kind"] == indexdb.IMAGE else "ellipse"
        lines.append(f"  {q(node['id'])} [shape={shape}];")
    for edge in document["edges"]:
        style = "" if edge["kind"] == "from" else ", style=dashed"
        lines.append(f"  {q(edge['source'])} -> {q(edge['target'])} "
                     f"[label={q(edge['kind'])}{style}];")  # fmt: skip
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(document: dict[str, list[dict[str, Any]]]) -> str:
    """The graph document as a Mermaid flowchart."""
    ids = {node["id"]: f"n{i}" for i, node in enumerate(document["nodes"])}

    def label(text: str) -> str:
        return '"' + text.replace('"', "#quot;") + '"'

    lines = ["graph LR"]
    for node in document["nodes"]:
        name = label(node["id"])
        shape = f"[{name}]" if node["kind"] == indexdb.IMAGE else f"([{name}])"
        lines.append(f"  {ids[node['id']]}{shape}")
    for edge in document["edges"]:
        arrow = "-->" if edge["kind"] == "from" else "-.->"
        lines.append(f"  {ids[edge['source']]} {arrow}|{edge['kind']}| {ids[edge['target']]}")
    return "\n".join(lines) + "\n"
