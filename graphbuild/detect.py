"""Which bases changed, and which of the fleet's images are built on an old base, and why.

One pass: every unique reference is asked of its registry once (external
bases with a HEAD, the fleet's own images with a GET to read their OCI base
annotations), the answers are compared with what state.db saw before, and
each image gets a status with a reason code and the chain that explains it.

A registry that is down or refuses us gives `unknown`, never `changed`: a
digest is recorded only when a registry answered, so an outage causes no
rebuild storm and the update behind it is still seen when it recovers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from graphbuild import dockerfile, refs
from graphbuild.errors import InvalidReference
from graphbuild.graphdb import EXTERNAL, IMAGE
from graphbuild.registry import MISSING, Failure, Registry, Resolved
from graphbuild.registry.manifests import BASE_DIGEST, BASE_NAME
from graphbuild.state import State, now

# base statuses
CHANGED, UNCHANGED, NEW, PINNED, UNKNOWN = "changed", "unchanged", "new", "pinned", "unknown"
# image statuses
UP_TO_DATE, STALE = "up-to-date", "stale"
# reason codes
BASE_CHANGED, PINNED_OUTDATED, MISSING_TAG = "base-changed", "pinned-outdated", "missing"


@dataclass(frozen=True)
class BaseCheck:
    id: str  # the external node
    status: str  # changed | unchanged | new | pinned | pinned-outdated | unknown
    digest: str | None = None  # what the tag points at now
    previous: str | None = None  # what it pointed at when last seen, if different
    since: str | None = None  # when the tag was first seen pointing at `digest`
    platforms: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    images: int = 0  # images built directly on it


@dataclass(frozen=True)
class ImageCheck:
    id: str
    status: str  # up-to-date | stale | missing | unknown
    reason: str = ""  # stale | base-changed | missing | unknown
    detail: str = ""
    chain: list[str] = field(default_factory=list)  # this image, then what makes it stale
    digest: str | None = None


@dataclass
class Check:
    bases: list[BaseCheck]
    images: list[ImageCheck]
    requests: int = 0
    ratelimits: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in [*self.bases, *self.images]:
            key = f"{'bases' if isinstance(item, BaseCheck) else 'images'} {item.status}"
            out[key] = out.get(key, 0) + 1
        return out


def check(graph: nx.DiGraph, registry: Registry, state: State) -> Check:
    """Ask the registries about every base and image in `graph`; record what they said."""
    wanted, inspect = _questions(graph)
    latest = {ref: state.latest(ref) for ref in wanted}
    known = state.children(seen.digest for seen in latest.values() if seen)
    answers = registry.resolve_all(wanted, inspect=inspect, known=known)
    at = now()
    bases = [_base(graph, node, answers, latest, state, at) for node in _externals(graph)]
    images = _images(graph, answers, state, {b.id: b for b in bases})
    seen: list[tuple[str, str, str]] = []
    for ref, answer in answers.items():
        if isinstance(answer, Resolved):
            seen.append((ref, "", answer.digest))
            seen += [(ref, platform, digest) for platform, digest in answer.platforms.items()]
            if answer.platforms:
                state.remember_children(answer.digest, answer.platforms)
    state.observe(seen, at)
    total = sum(registry.requests.values())
    return Check(bases, images, total, dict(registry.ratelimits))


# ---------------------------------------------------------------- what to ask


def _questions(graph: nx.DiGraph) -> tuple[dict[str, list[str]], set[str]]:
    """Each unique reference with the platforms whose digests matter; images to inspect."""
    wanted: dict[str, list[str]] = {}
    inspect: set[str] = set()
    for node, attrs in graph.nodes(data=True):
        if attrs["kind"] == EXTERNAL:
            if attrs["tag"] is None:
                continue  # pinned by digest only: nothing to follow
            ref = _tagged(attrs)
            platforms = wanted.setdefault(ref, [])
            for _, _, edge in graph.out_edges(node, data=True):
                for platform in [edge.get("platform"), *edge.get("platforms", [])]:
                    if platform and platform not in platforms:
                        platforms.append(platform)
        else:
            wanted[node] = list(attrs["platforms"] or [dockerfile.DEFAULT_PLATFORM])
            inspect.add(node)
    return wanted, inspect


def _externals(graph: nx.DiGraph) -> list[str]:
    return sorted(n for n, kind in graph.nodes(data="kind") if kind == EXTERNAL)


def _tagged(attrs: dict) -> str:
    return f"{attrs['name']}:{attrs['tag']}"


# ---------------------------------------------------------------- bases


def _base(
    graph: nx.DiGraph,
    node: str,
    answers: dict[str, Resolved | Failure],
    latest: dict,
    state: State,
    at: str,
) -> BaseCheck:
    attrs = graph.nodes[node]
    users = graph.out_degree(node)
    if attrs["tag"] is None:
        return BaseCheck(node, PINNED, attrs["digest"], detail="pinned by digest only",
                         images=users)  # fmt: skip
    ref = _tagged(attrs)
    answer = answers[ref]
    if isinstance(answer, Failure):
        return BaseCheck(node, UNKNOWN, detail=f"{answer.kind}: {answer.message}", images=users)
    current = {answer.digest, *answer.platforms.values()}
    if attrs["pinned"]:
        if attrs["digest"] in current:
            return BaseCheck(node, PINNED, answer.digest, platforms=answer.platforms, images=users)
        detail = f"pinned {attrs['digest']}, the tag now points at {answer.digest}"
        return BaseCheck(node, PINNED_OUTDATED, answer.digest, attrs["digest"], None,
                         answer.platforms, detail, users)  # fmt: skip
    before = latest.get(ref)
    if before is None:
        return BaseCheck(node, NEW, answer.digest, since=at, platforms=answer.platforms,
                         detail="first time seen", images=users)  # fmt: skip
    if before.digest == answer.digest:
        return BaseCheck(node, UNCHANGED, answer.digest, since=before.first_seen,
                         platforms=answer.platforms, images=users)  # fmt: skip
    moved = {
        platform: digest
        for platform, digest in answer.platforms.items()
        if (old := state.latest(ref, platform)) is not None and old.digest != digest
    }
    if answer.platforms and not moved and all(state.latest(ref, p) for p in answer.platforms):
        detail = "the index changed, the platforms built for did not"
        return BaseCheck(node, UNCHANGED, answer.digest, before.digest, None, answer.platforms,
                         detail, users)  # fmt: skip
    which = f" ({', '.join(sorted(moved))})" if moved else ""
    detail = f"{before.digest} -> {answer.digest}{which}"
    return BaseCheck(node, CHANGED, answer.digest, before.digest, at, answer.platforms,
                     detail, users)  # fmt: skip


# ---------------------------------------------------------------- images


def _images(
    graph: nx.DiGraph,
    answers: dict[str, Resolved | Failure],
    state: State,
    bases: dict[str, BaseCheck],
) -> list[ImageCheck]:
    """Parents first, so an image whose parent is stale or missing is stale through it."""
    done: dict[str, ImageCheck] = {}
    for node in nx.topological_sort(graph):
        if graph.nodes[node]["kind"] == IMAGE:
            done[node] = _image(graph, node, answers, state, bases, done)
    return [done[node] for node in sorted(done)]


def _image(
    graph: nx.DiGraph,
    node: str,
    answers: dict[str, Resolved | Failure],
    state: State,
    bases: dict[str, BaseCheck],
    done: dict[str, ImageCheck],
) -> ImageCheck:
    answer = answers[node]
    if isinstance(answer, Failure):
        if answer.kind == MISSING:
            return ImageCheck(node, MISSING_TAG, MISSING_TAG, "not in the registry yet", [node])
        return ImageCheck(node, UNKNOWN, UNKNOWN, f"{answer.kind}: {answer.message}", [node])
    if graph.in_degree(node) == 0:
        detail = "built on nothing a registry tracks (FROM scratch)"
        return ImageCheck(node, UP_TO_DATE, "", detail, [node], answer.digest)
    direct = _built_on(graph, node, answer, answers, state)
    if direct is not None and direct.status == STALE:
        return direct
    for parent in sorted(graph.predecessors(node)):
        if parent in done and done[parent].status in (STALE, MISSING_TAG):
            why = done[parent]
            detail = f"built on {parent}, which is {why.status}"
            return ImageCheck(node, STALE, STALE, detail, [node, *why.chain], answer.digest)
        base = bases.get(parent)
        covered = direct is not None and parent in direct.chain
        if base is not None and base.status == CHANGED and not covered:
            detail = f"{parent} changed: {base.detail}"
            return ImageCheck(node, STALE, BASE_CHANGED, detail, [node, parent], answer.digest)
    if direct is None:
        detail = "no OCI base annotation or graphbuild build record to compare with"
        return ImageCheck(node, UNKNOWN, UNKNOWN, detail, [node], answer.digest)
    return direct


def _built_on(
    graph: nx.DiGraph,
    node: str,
    answer: Resolved,
    answers: dict[str, Resolved | Failure],
    state: State,
) -> ImageCheck | None:
    """What the image says it was built on, against what its parents are now.

    The manifest's org.opencontainers.image.base.* annotations name the
    immediate parent; config labels are never read, because a LABEL is
    inherited and may describe a grandparent. Without annotations, graphbuild's
    own build record (every parent's digest) is used. None: no evidence.
    """
    parent = graph.nodes[node]["base"]
    notes = _annotations(answer)
    if parent is not None and notes.get(BASE_DIGEST):
        built_on = notes[BASE_DIGEST]
        name = notes.get(BASE_NAME, "")
        if name and not _same_image(name, parent, graph):
            detail = f"built on {name}, the Dockerfile now names {parent}"
            return ImageCheck(node, STALE, STALE, detail, [node, parent], answer.digest)
        return _compare(node, answer, {parent: built_on}, answers, graph, state)
    record = state.build_of(node, answer.digest)
    if record is not None:
        parents = {p: d for p, d in record.parents.items() if p in graph}
        return _compare(node, answer, parents, answers, graph, state)
    return None


def _compare(
    node: str,
    answer: Resolved,
    built_on: dict[str, str],
    answers: dict[str, Resolved | Failure],
    graph: nx.DiGraph,
    state: State,
) -> ImageCheck:
    for parent, digest in sorted(built_on.items()):
        attrs = graph.nodes[parent]
        if attrs["kind"] == EXTERNAL and attrs["pinned"]:
            # the Dockerfile pins this digest: it is current however the tag has moved
            pinned = attrs["digest"]
            if digest not in {pinned, *state.children([pinned]).get(pinned, {}).values()}:
                detail = f"built on {parent} {digest}, which pins {pinned}"
                return ImageCheck(node, STALE, STALE, detail, [node, parent], answer.digest)
            continue
        now_answer = answers.get(_question(graph, parent))
        if not isinstance(now_answer, Resolved):
            detail = f"cannot tell: {parent} has no answer from its registry"
            return ImageCheck(node, UNKNOWN, UNKNOWN, detail, [node, parent], answer.digest)
        if digest not in {now_answer.digest, *now_answer.platforms.values()}:
            detail = f"built on {parent} {digest}, which is now {now_answer.digest}"
            return ImageCheck(node, STALE, STALE, detail, [node, parent], answer.digest)
    return ImageCheck(node, UP_TO_DATE, chain=[node, *sorted(built_on)], digest=answer.digest)


def _annotations(answer: Resolved) -> dict[str, str]:
    """The image manifest's annotations: the first platform's child, or the manifest itself."""
    for platform in answer.platforms:
        if platform in answer.annotations:
            return answer.annotations[platform]
    return answer.annotations.get("", {})


def _question(graph: nx.DiGraph, node: str) -> str:
    attrs = graph.nodes[node]
    return _tagged(attrs) if attrs["kind"] == EXTERNAL and attrs["tag"] else node


def _same_image(name: str, parent: str, graph: nx.DiGraph) -> bool:
    """Does an annotation's base.name (as written in FROM) name the graph's parent node?"""
    try:
        annotated = refs.normalize(name)
    except InvalidReference:
        return False
    attrs = graph.nodes[parent]
    candidates: Iterable[str] = attrs["tags"] if attrs["kind"] == IMAGE else [_tagged(attrs)]
    return annotated.tagged in candidates or str(annotated) == parent
