"""The image graph: which image is built on which base, and the questions asked of it.

A networkx DiGraph with an edge base -> image for every base reference a build
pulls. Image nodes are keyed `registry/repository:first-tag`; external bases by
their normalised reference (digest kept when pinned). A reference to a tag the
fleet produces links to the producing image, across repositories, so "what is
built on X" is a walk over descendants.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import networkx as nx

from graphbuild import graphdb, refs
from graphbuild.errors import CycleError
from graphbuild.graphdb import EXTERNAL, IMAGE
from graphbuild.index import ERROR, WARNING, Image, Problem

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

    if nx.is_directed_acyclic_graph(graph):
        return graph, problems
    raise CycleError([u for u, _ in nx.find_cycle(graph)])


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


def save(db: sqlite3.Connection, graph: nx.DiGraph, meta: dict[str, Any]) -> None:
    graphdb.save(db, iter(graph.nodes(data=True)), iter(graph.edges(data=True)), meta)


def load(db: sqlite3.Connection) -> nx.DiGraph:
    """The whole stored graph, for what needs all of it (exports, listings, plans)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(graphdb.nodes(db))
    graph.add_edges_from(graphdb.edges(db))
    return graph


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
