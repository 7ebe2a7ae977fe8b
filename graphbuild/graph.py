"""The image graph: which image is built on which base, and the questions asked of it.

A networkx DiGraph with an edge base -> image for every base reference a build
pulls. Image nodes are keyed `registry/repository:first-tag`; external bases by
their normalised reference (digest kept when pinned). A reference to a tag the
fleet produces links to the producing image, across repositories, so "what is
built on X" is a walk over descendants.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any, cast

import networkx as nx

from graphbuild import indexdb, refs
from graphbuild.dockerfile import COPY, FROM, MOUNT, BaseRef
from graphbuild.errors import ERROR, WARNING, CycleError, Problem
from graphbuild.index import Image
from graphbuild.indexdb import (
    EXTERNAL,
    IMAGE,
    BaseUse,
    Edge,
    ExternalNode,
    ImageNode,
    Node,
    Unresolved,
)

# ---------------------------------------------------------------- building

BUILD_INPUTS = frozenset({FROM, COPY, MOUNT})
_USE_KEYS = ("kind", "line", "ref", "pinned", "platform", "platforms", "via")

# ---------------------------------------------------------------- typed access
# networkx keeps node and edge data as plain dicts; these hand them out as the TypedDicts of
# indexdb.py (the same dict objects, so a change through them is a change of the graph).


def node_data(graph: nx.DiGraph[str], node: str) -> Node:
    return cast(Node, graph.nodes[node])


def image_data(graph: nx.DiGraph[str], node: str) -> ImageNode:
    """A node the caller knows is an image: one that is built on something, or planned."""
    return cast(ImageNode, graph.nodes[node])


def external_data(graph: nx.DiGraph[str], node: str) -> ExternalNode:
    """A node the caller knows is an external base."""
    return cast(ExternalNode, graph.nodes[node])


def edge_data(graph: nx.DiGraph[str], base: str, image: str) -> Edge:
    return cast(Edge, graph.edges[base, image])


def node_items(graph: nx.DiGraph[str]) -> Iterator[tuple[str, Node]]:
    return cast(Iterator[tuple[str, Node]], iter(graph.nodes(data=True)))


def out_edge_items(graph: nx.DiGraph[str], base: str) -> Iterator[tuple[str, str, Edge]]:
    return cast(Iterator[tuple[str, str, Edge]], iter(graph.out_edges(base, data=True)))


def edge_items(graph: nx.DiGraph[str]) -> Iterator[tuple[str, str, Edge]]:
    return cast(Iterator[tuple[str, str, Edge]], iter(graph.edges(data=True)))


def build(
    images: list[Image], mirrors: Mapping[str, str] | None = None
) -> tuple[nx.DiGraph[str], list[Problem]]:
    """Link every parsed image to its bases; raise CycleError if images build on each other.

    A base pulled through a mirror (repos.yaml `mirrors:`) is the upstream base's node:
    one base, watched upstream, however each Dockerfile names it."""
    graph: nx.DiGraph[str] = nx.DiGraph()
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
    graph: nx.DiGraph[str], produced: dict[str, str], image: Image, problems: list[Problem]
) -> bool:
    if image.parsed is None:
        return False
    if image.id in graph:
        other = node_data(graph, image.id)
        assert other["kind"] == IMAGE  # an external node's id holds no tag of the fleet
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
        Unresolved(kind=r.kind, raw=r.raw, line=r.line, reason=r.unresolved)
        for r in image.parsed.refs
        if r.unresolved
    ]
    data = ImageNode(
        kind=IMAGE, image=image.image, tags=tags, repo=image.repo,
        **image.options.attrs(), commit=image.commit, blob=image.blob, unresolved=unresolved,
        base=None,
    )  # fmt: skip
    graph.add_node(image.id, **data)
    return True


def _add_edge(
    graph: nx.DiGraph[str],
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
            data = ExternalNode(
                kind=EXTERNAL, name=parsed.name, tag=parsed.tag, digest=parsed.digest,
                pinned=parsed.digest is not None,
            )  # fmt: skip
            graph.add_node(source, **data)
    use = BaseUse(
        kind=ref.kind, line=line or ref.line, ref=ref.ref,
        pinned=parsed.digest is not None, platform=ref.platform,
        platforms=list(ref.platforms),
    )  # fmt: skip
    if via:
        use["via"] = via
    built = image_data(graph, image.id)
    if ref.final and built["base"] is None:
        built["base"] = source  # the parent OCI base annotations describe
    if not graph.has_edge(source, image.id):
        graph.add_edge(source, image.id, **use, repo=image.repo, dockerfile=image.dockerfile,
                       also=[])  # fmt: skip
        return
    found = edge_data(graph, source, image.id)
    if use["kind"] == "from" and found["kind"] != "from":  # the FROM is what the image is
        plain = cast(dict[str, Any], found)  # its use's keys move into `also`, the rest stay
        first = cast(BaseUse, {k: plain.pop(k) for k in _USE_KEYS if k in plain})
        found.update(use)
        found["also"].insert(0, first)
    else:
        found["also"].append(use)


def _fire_onbuild(
    graph: nx.DiGraph[str], produced: dict[str, str], mirrors: Mapping[str, str], kept: list[Image]
) -> None:
    """A fleet image's ONBUILD triggers run in the images built FROM it: edges of theirs."""
    by_id = {image.id: image for image in kept}
    for parent in kept:
        assert parent.parsed is not None
        if not parent.parsed.onbuild:
            continue
        for child_id in list(graph.successors(parent.id)):
            edge = edge_data(graph, parent.id, child_id)
            if edge["kind"] != "from":
                continue
            for ref in parent.parsed.onbuild:
                _add_edge(graph, produced, mirrors, by_id[child_id], ref, edge["line"],
                          via=f"ONBUILD of {parent.id}")  # fmt: skip


def kinds(edge: Edge) -> set[str]:
    """Every way an image uses a base over one edge: its first use and the others (`also`)."""
    return {edge["kind"], *(use["kind"] for use in edge["also"])}


def builds_on(edge: Edge) -> bool:
    """Is the base an input of the build (FROM, COPY --from, RUN --mount)? A `# syntax`
    frontend only reads the Dockerfile: it never makes an image stale or rebuilt."""
    return bool(kinds(edge) & BUILD_INPUTS)


def follows(edge: Edge) -> bool:
    """Does a new build of the base call for a new build of the image? Not when every use
    pins a digest: the image stays on that digest until its Dockerfile says otherwise."""
    uses: list[BaseUse] = [edge, *edge["also"]]
    return builds_on(edge) and not all(use["pinned"] for use in uses)


def _where(graph: nx.DiGraph[str], base: str, image: str) -> str:
    edge = edge_data(graph, base, image)
    return f"{edge['repo']}:{edge['dockerfile']}:{edge['line']} builds {image} on {base}"


# ---------------------------------------------------------------- storing


def save(db: sqlite3.Connection, graph: nx.DiGraph[str], meta: dict[str, Any]) -> None:
    indexdb.save(db, node_items(graph), edge_items(graph), meta)


def load(db: sqlite3.Connection) -> nx.DiGraph[str]:
    """The whole stored graph, for what needs all of it (checks, plans, builds, deploys)."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    for node, attrs in indexdb.nodes(db):
        graph.add_node(node, **attrs)
    for base, image, data in indexdb.edges(db):
        graph.add_edge(base, image, **data)
    return graph
