"""The image graph: which image is built on which base, and the questions asked of it.

A networkx DiGraph with an edge base -> image for every base reference a build
pulls. Image nodes are keyed `registry/repository:first-tag`; external bases by
their normalised reference (digest kept when pinned). A reference to a tag the
fleet produces links to the producing image, across repositories, so "what is
built on X" is a walk over descendants.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import networkx as nx

from graphbuild import indexdb, refs
from graphbuild.dockerfile import COPY, FROM, MOUNT, BaseRef
from graphbuild.errors import ERROR, WARNING, CycleError, Problem
from graphbuild.index import Image
from graphbuild.indexdb import EXTERNAL, IMAGE

# ---------------------------------------------------------------- building

BUILD_INPUTS = frozenset({FROM, COPY, MOUNT})
_USE_KEYS = ("kind", "line", "ref", "pinned", "platform", "platforms", "via")


def build(
    images: list[Image], mirrors: Mapping[str, str] | None = None
) -> tuple[nx.DiGraph, list[Problem]]:
    """Link every parsed image to its bases; raise CycleError if images build on each other.

    A base pulled through a mirror (repos.yaml `mirrors:`) is the upstream base's node:
    one base, watched upstream, however each Dockerfile names it."""
    graph = nx.DiGraph()
    mirrors = mirrors or {}
    produced: dict[str, str] = {}  # `name:tag` -> image node id
    problems: list[Problem] = []
    kept = [image for image in images if _add_image(graph, produced, image, problems)]
    for image in kept:
        assert image.parsed is not None
        for ref in image.parsed.refs:
            if ref.ref is not None:
                _add_edge(graph, produced, mirrors, image, ref)
    _fire_onbuild(graph, produced, mirrors, kept)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        where = [_where(graph, u, v) for u, v in cycle]
        raise CycleError([u for u, _ in cycle], where)
    return graph, problems


def _add_image(
    graph: nx.DiGraph, produced: dict[str, str], image: Image, problems: list[Problem]
) -> bool:
    if image.parsed is None:
        return False
    if image.id in graph:
        other = graph.nodes[image.id]
        message = f"{image.id} is also produced by {other['repo']}:{other['dockerfile']}; skipped"
        problems.append(Problem(ERROR, image.repo, message, image.dockerfile))
        return False
    tags = []
    for tag in image.tags:
        if tag in produced:
            message = f"tag {tag} is also produced by {produced[tag]}; not linked here"
            problems.append(Problem(WARNING, image.repo, message, image.dockerfile))
            continue
        produced[tag] = image.id
        tags.append(tag)
    unresolved = [
        {"kind": r.kind, "raw": r.raw, "line": r.line, "reason": r.unresolved}
        for r in image.parsed.refs
        if r.unresolved
    ]
    graph.add_node(
        image.id, kind=IMAGE, image=image.image, tags=tags, repo=image.repo,
        **image.options.attrs(), commit=image.commit, blob=image.blob, unresolved=unresolved,
        base=None,
    )  # fmt: skip
    return True


def _add_edge(
    graph: nx.DiGraph,
    produced: dict[str, str],
    mirrors: Mapping[str, str],
    image: Image,
    ref: BaseRef,
    line: int | None = None,
    via: str | None = None,
) -> None:
    assert ref.ref is not None
    name = refs.upstream(ref.ref, mirrors)  # a mirror's name is the image it mirrors
    parsed = refs.parse(name)
    source = produced.get(parsed.tagged) if parsed.tag is not None else None
    if source is None:
        source = name
        if source not in graph:
            graph.add_node(
                source, kind=EXTERNAL, name=parsed.name, tag=parsed.tag, digest=parsed.digest,
                pinned=parsed.digest is not None,
            )  # fmt: skip
    use = {
        "kind": ref.kind, "line": line or ref.line, "ref": ref.ref,
        "pinned": parsed.digest is not None, "platform": ref.platform,
        "platforms": list(ref.platforms),
    }  # fmt: skip
    if via:
        use["via"] = via
    if ref.final and graph.nodes[image.id]["base"] is None:
        graph.nodes[image.id]["base"] = source  # the parent OCI base annotations describe
    if not graph.has_edge(source, image.id):
        graph.add_edge(source, image.id, **use, repo=image.repo, dockerfile=image.dockerfile,
                       also=[])  # fmt: skip
        return
    edge = graph.edges[source, image.id]
    if use["kind"] == "from" and edge["kind"] != "from":  # the FROM is what the image is
        first = {k: edge.pop(k) for k in _USE_KEYS if k in edge}
        edge.update(use)
        edge["also"].insert(0, first)
    else:
        edge["also"].append(use)


def _fire_onbuild(
    graph: nx.DiGraph, produced: dict[str, str], mirrors: Mapping[str, str], kept: list[Image]
) -> None:
    """A fleet image's ONBUILD triggers run in the images built FROM it: edges of theirs."""
    by_id = {image.id: image for image in kept}
    for parent in kept:
        assert parent.parsed is not None
        if not parent.parsed.onbuild:
            continue
        for child_id in list(graph.successors(parent.id)):
            edge = graph.edges[parent.id, child_id]
            if edge["kind"] != "from":
                continue
            for ref in parent.parsed.onbuild:
                _add_edge(graph, produced, mirrors, by_id[child_id], ref, edge["line"],
                          via=f"ONBUILD of {parent.id}")  # fmt: skip


def kinds(edge: dict) -> set[str]:
    """Every way an image uses a base over one edge: its first use and the others (`also`)."""
    return {edge["kind"], *(use["kind"] for use in edge["also"])}


def builds_on(edge: dict) -> bool:
    """Is the base an input of the build (FROM, COPY --from, RUN --mount)? A `# syntax`
    frontend only reads the Dockerfile: it never makes an image stale or rebuilt."""
    return bool(kinds(edge) & BUILD_INPUTS)


def follows(edge: dict) -> bool:
    """Does a new build of the base call for a new build of the image? Not when every use
    pins a digest: the image stays on that digest until its Dockerfile says otherwise."""
    uses = [edge, *edge["also"]]
    return builds_on(edge) and not all(use["pinned"] for use in uses)


def _where(graph: nx.DiGraph, base: str, image: str) -> str:
    edge = graph.edges[base, image]
    return f"{edge['repo']}:{edge['dockerfile']}:{edge['line']} builds {image} on {base}"


# ---------------------------------------------------------------- storing


def save(db: sqlite3.Connection, graph: nx.DiGraph, meta: dict[str, Any]) -> None:
    indexdb.save(db, iter(graph.nodes(data=True)), iter(graph.edges(data=True)), meta)


def load(db: sqlite3.Connection) -> nx.DiGraph:
    """The whole stored graph, for what needs all of it (checks, plans, builds, deploys)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(indexdb.nodes(db))
    graph.add_edges_from(indexdb.edges(db))
    return graph
