"""The image graph: which image is built on which base, and the questions asked of it.

A networkx DiGraph with an edge base -> image for every base reference a build
pulls. Image nodes are keyed `registry/repository:first-tag`; external bases by
their normalised reference (digest kept when pinned). A reference to a tag the
fleet produces links to the producing image, across repositories, so "what is
built on X" is a walk over descendants.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx

from graphbuild import refs
from graphbuild.errors import CycleError
from graphbuild.index import ERROR, WARNING, Image, Problem

FORMAT_VERSION = 1
IMAGE, EXTERNAL = "image", "external"


# ---------------------------------------------------------------- building


def build(images: list[Image]) -> tuple[nx.DiGraph, list[Problem]]:
    """Link every parsed image to its bases; raise CycleError if images build on each other."""
    graph = nx.DiGraph()
    produced: dict[str, str] = {}  # `name:tag` -> image node id
    problems: list[Problem] = []
    kept: list[Image] = []
    for image in images:
        if image.parsed is None:
            continue
        if image.id in graph:
            other = graph.nodes[image.id]
            where = f"{other['repo']}:{other['dockerfile']}"
            message = f"{image.id} is also produced by {where}; skipped"
            problems.append(Problem(ERROR, image.repo, message, image.dockerfile))
            continue
        tags = []
        for tag in image.tags:
            if tag in produced:
                problems.append(
                    Problem(
                        WARNING,
                        image.repo,
                        f"tag {tag} is also produced by {produced[tag]}; not linked here",
                        image.dockerfile,
                    )
                )
                continue
            produced[tag] = image.id
            tags.append(tag)
        graph.add_node(
            image.id,
            kind=IMAGE,
            image=image.image,
            tags=tags,
            repo=image.repo,
            dockerfile=image.dockerfile,
            context=image.context,
            target=image.target,
            platforms=image.platforms,
            build_args=image.build_args,
            commit=image.commit,
            blob=image.blob,
            unresolved=[
                {"kind": r.kind, "raw": r.raw, "line": r.line, "reason": r.unresolved}
                for r in image.parsed.refs
                if r.unresolved
            ],
        )
        kept.append(image)

    for image in kept:
        assert image.parsed is not None
        for ref in image.parsed.refs:
            if ref.ref is not None:
                _add_edge(graph, produced, ref.ref, image, ref.kind, ref.line, ref.platforms)
    by_id = {image.id: image for image in kept}
    for parent in kept:
        assert parent.parsed is not None
        if not parent.parsed.onbuild:
            continue
        for child_id in list(graph.successors(parent.id)):
            edge = graph.edges[parent.id, child_id]
            if edge["kind"] != "from":
                continue
            child, line = by_id[child_id], edge["line"]
            for ref in parent.parsed.onbuild:
                assert ref.ref is not None
                _add_edge(
                    graph,
                    produced,
                    ref.ref,
                    child,
                    ref.kind,
                    line,
                    ref.platforms,
                    via=f"ONBUILD of {parent.id}",
                )

    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph, problems
    raise CycleError([u for u, _ in cycle])


def _add_edge(
    graph: nx.DiGraph,
    produced: dict[str, str],
    ref: str,
    image: Image,
    kind: str,
    line: int,
    platforms: Iterable[str],
    via: str | None = None,
) -> None:
    parsed = refs.parse(ref)
    source = produced.get(parsed.tagged) if parsed.tag is not None else None
    if source is None:
        source = ref
        if source not in graph:
            graph.add_node(
                source,
                kind=EXTERNAL,
                name=parsed.name,
                tag=parsed.tag,
                digest=parsed.digest,
                pinned=parsed.digest is not None,
            )
    use = {"kind": kind, "line": line, "ref": ref, "pinned": parsed.digest is not None}
    if via:
        use["via"] = via
    if graph.has_edge(source, image.id):
        graph.edges[source, image.id]["also"].append(use)
        return
    graph.add_edge(
        source,
        image.id,
        **use,
        repo=image.repo,
        dockerfile=image.dockerfile,
        platforms=list(platforms),
        also=[],
    )


# ---------------------------------------------------------------- storing


@dataclass
class Stored:
    """The graph as the last sync left it, with what that sync found."""

    graph: nx.DiGraph
    problems: list[Problem] = field(default_factory=list)
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    synced_at: str = ""


def save(path: Path, stored: Stored) -> None:
    """Write atomically, so a query never reads half a graph."""
    g = stored.graph
    data = {
        "version": FORMAT_VERSION,
        "synced_at": stored.synced_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "repos": stored.repos,
        "problems": [p.__dict__ for p in stored.problems],
        "nodes": [{"id": n, **attrs} for n, attrs in g.nodes(data=True)],
        "edges": [{"source": u, "target": v, **attrs} for u, v, attrs in g.edges(data=True)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".graph-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, separators=(",", ":"))
    Path(tmp).replace(path)


def load(path: Path) -> Stored | None:
    """The stored graph, or None when there is none (or it is from another version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # a damaged file is rebuilt by the next sync
    if data.get("version") != FORMAT_VERSION:
        return None
    graph = nx.DiGraph()
    graph.add_nodes_from((n.pop("id"), n) for n in data["nodes"])
    graph.add_edges_from((e.pop("source"), e.pop("target"), e) for e in data["edges"])
    problems = [Problem(**p) for p in data["problems"]]
    return Stored(graph, problems, data["repos"], data["synced_at"])


# ---------------------------------------------------------------- queries


def match(graph: nx.DiGraph, text: str) -> list[str]:
    """Nodes a user's REF names: no tag = every tag; a tag also matches its pinned forms."""
    query = refs.parse(text)
    found = []
    for node, attrs in graph.nodes(data=True):
        if attrs["kind"] == EXTERNAL:
            if attrs["name"] != query.name:
                continue
            if query.digest is not None:
                hit = attrs["digest"] == query.digest
            else:
                hit = query.tag is None or attrs["tag"] == query.tag
            if hit:
                found.append(node)
        elif (
            attrs["image"] == query.name
            and query.digest is None
            and (query.tag is None or f"{query.name}:{query.tag}" in attrs["tags"])
        ):
            found.append(node)
    return sorted(found)


@dataclass(frozen=True)
class Use:
    """An image built on the queried base, and the edge that first reaches it."""

    image: str
    depth: int
    base: str  # the node it is built on, one level up
    kind: str
    repo: str
    dockerfile: str
    line: int


def uses(graph: nx.DiGraph, starts: list[str], max_depth: int | None = None) -> list[Use]:
    """Every image built on `starts`, breadth first: the shortest chain decides the depth."""
    depth = dict.fromkeys(starts, 0)
    queue = deque(starts)
    found: list[Use] = []
    while queue:
        node = queue.popleft()
        if max_depth is not None and depth[node] >= max_depth:
            continue
        for child in sorted(graph.successors(node)):
            if child in depth:
                continue
            depth[child] = depth[node] + 1
            edge = graph.edges[node, child]
            found.append(
                Use(
                    child,
                    depth[child],
                    node,
                    edge["kind"],
                    edge["repo"],
                    edge["dockerfile"],
                    edge["line"],
                )
            )
            queue.append(child)
    return sorted(found, key=lambda u: (u.depth, u.image))


@dataclass(frozen=True)
class Parent:
    """One step down the chain: `image` is built on `base`."""

    image: str
    base: str
    depth: int
    kind: str
    line: int
    repo: str
    dockerfile: str
    external: bool


def parents(graph: nx.DiGraph, image: str) -> list[Parent]:
    """The bases of `image`, their bases, and so on down to external roots."""
    depth = {image: 0}
    queue = deque([image])
    found: list[Parent] = []
    while queue:
        node = queue.popleft()
        for base in sorted(graph.predecessors(node)):
            edge = graph.edges[base, node]
            found.append(
                Parent(
                    node,
                    base,
                    depth[node] + 1,
                    edge["kind"],
                    edge["line"],
                    edge["repo"],
                    edge["dockerfile"],
                    graph.nodes[base]["kind"] == EXTERNAL,
                )
            )
            if base not in depth:
                depth[base] = depth[node] + 1
                queue.append(base)
    return found


def focus(graph: nx.DiGraph, starts: list[str]) -> nx.DiGraph:
    """The neighbourhood of `starts`: everything they are built on and everything built on them."""
    keep = set(starts)
    for node in starts:
        keep |= nx.ancestors(graph, node) | nx.descendants(graph, node)
    return graph.subgraph(keep)


# ---------------------------------------------------------------- exports


def to_json(graph: nx.DiGraph) -> dict:
    """The documented shape: nodes with id and kind, edges with source (base) and target."""
    return {
        "nodes": [{"id": n, **attrs} for n, attrs in sorted(graph.nodes(data=True))],
        "edges": [
            {"source": u, "target": v, **attrs}
            for u, v, attrs in sorted(graph.edges(data=True), key=lambda e: (e[0], e[1]))
        ],
    }


def to_dot(graph: nx.DiGraph) -> str:
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph graphbuild {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node, attrs in sorted(graph.nodes(data=True)):
        shape = "box" if attrs["kind"] == IMAGE else "ellipse"
        lines.append(f"  {q(node)} [shape={shape}];")
    for u, v, attrs in sorted(graph.edges(data=True), key=lambda e: (e[0], e[1])):
        style = "" if attrs["kind"] == "from" else ", style=dashed"
        lines.append(f"  {q(u)} -> {q(v)} [label={q(attrs['kind'])}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: nx.DiGraph) -> str:
    ids = {node: f"n{i}" for i, node in enumerate(sorted(graph.nodes))}

    def label(text: str) -> str:
        return '"' + text.replace('"', "#quot;") + '"'

    lines = ["graph LR"]
    for node, attrs in sorted(graph.nodes(data=True)):
        shape = f"[{label(node)}]" if attrs["kind"] == IMAGE else f"([{label(node)}])"
        lines.append(f"  {ids[node]}{shape}")
    for u, v, attrs in sorted(graph.edges(data=True), key=lambda e: (e[0], e[1])):
        arrow = "-->" if attrs["kind"] == "from" else "-.->"
        lines.append(f"  {ids[u]} {arrow}|{attrs['kind']}| {ids[v]}")
    return "\n".join(lines) + "\n"
