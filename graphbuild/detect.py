"""Which bases changed, and which of the fleet's images are built on an old base, and why.

One pass: every unique reference is asked of its registry once (bases and
alias tags with a HEAD; the fleet's images with a HEAD, plus a GET only for
manifests never read before and not graphbuild's own last build, to read their
OCI base annotations), and each image is judged edge by edge against what it
was built on:

- evidence first: the manifest's base annotations (the immediate parent, per
  platform) or graphbuild's own build record (every parent);
- otherwise a baseline: the parent digest the image was first seen with. A
  check sets a baseline only when there is none, and only evidence or a build
  moves it, so "the base moved" stays visible until the image is rebuilt,
  however many checks run in between.

A registry that is down or refuses us gives `unknown`, never `changed`: a
digest is recorded only when a registry answered, so an outage causes no
rebuild storm and the update behind it is still seen when it recovers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import networkx as nx

from graphbuild import dockerfile, refs
from graphbuild.errors import InvalidReference
from graphbuild.graph import (
    builds_on,
    edge_data,
    external_data,
    image_data,
    node_data,
    node_items,
    out_edge_items,
)
from graphbuild.indexdb import EXTERNAL, IMAGE, Edge, ExternalNode, ImageNode
from graphbuild.registry import MISSING, Failure, Registry, Resolved
from graphbuild.registry.client import Known
from graphbuild.registry.manifests import BASE_DIGEST, BASE_NAME, pick
from graphbuild.state import State, now

# base statuses
CHANGED, UNCHANGED, NEW, PINNED, UNKNOWN = "changed", "unchanged", "new", "pinned", "unknown"
# image statuses
UP_TO_DATE, STALE = "up-to-date", "stale"
# reason codes
BASE_CHANGED, PINNED_OUTDATED, MISSING_TAG = "base-changed", "pinned-outdated", "missing"
# `# syntax` frontends move with every BuildKit release and do not change what is built:
# reported in the base table, never a reason to rebuild (no storm every frontend release)


@dataclass(frozen=True)
class BaseCheck:
    id: str  # the external node
    status: str  # changed | unchanged | new | pinned | pinned-outdated | unknown
    digest: str | None = None  # what the tag points at now
    previous: str | None = None  # what it pointed at at the last check, if different
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
    # node -> the digest it has now (a pin's own digest for pinned bases): what builds pin to
    digests: dict[str, str] = field(default_factory=dict)

    def unanswered(self) -> list[str]:
        """Bases and images no registry answered for: what this check could not judge."""
        bases = [b.id for b in self.bases if b.status == UNKNOWN]
        return bases + [i.id for i in self.images if i.status == UNKNOWN and i.digest is None]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        items: list[BaseCheck | ImageCheck] = [*self.bases, *self.images]
        for item in items:
            key = f"{'bases' if isinstance(item, BaseCheck) else 'images'} {item.status}"
            out[key] = out.get(key, 0) + 1
        return out


def check(
    graph: nx.DiGraph[str],
    registry: Registry,
    state: State,
    mirrors: Mapping[str, str] | None = None,
    timeout: float | None = None,
    only: Collection[str] | None = None,
) -> Check:
    """Ask the registries about every base and image in `graph`, or only about the nodes
    `only` names (`needed` says which a part of the graph takes); record what they said.
    `mirrors` (repos.yaml) lets a base annotation that names a mirror name its upstream;
    after `timeout` seconds, what has no answer yet is unknown."""
    scope = set(graph) if only is None else set(only) & set(graph)
    wanted, inspect = _questions(graph, scope)
    latest = {ref: state.latest(ref) for ref in wanted}
    seen_digests = {seen.digest for seen in latest.values() if seen}
    seen_digests |= {_digest_ref(ref) for ref in wanted if "@" in ref}
    children = state.children(seen_digests)
    kids = {child for index in children.values() for child in index.values()}
    # a digest other than the one recorded last is proven by its manifest before it is
    # believed: a registry's word alone neither makes a base changed nor gets recorded
    recorded = {ref: seen.digest if seen else None for ref, seen in latest.items()
                if "@" not in ref}  # fmt: skip
    last = state.last_built(inspect)  # with their alias tags, which name the same push
    built = {ref: last[node] for node in last for ref in image_data(graph, node)["tags"]}
    known = Known(children, state.annotations(seen_digests | kids), recorded, built)
    answers = registry.resolve_all(wanted, inspect=inspect, known=known, timeout=timeout)
    at = now()
    _remember(answers, state)
    judge = _Judge(graph, answers, state, mirrors or {})
    bases = [judge.base(node, latest, at) for node in _externals(graph) if node in scope]
    images = judge.images(scope)
    state.set_baselines(judge.baselines, at)
    observed: list[tuple[str, str, str]] = []
    for ref, answer in answers.items():
        if isinstance(answer, Resolved) and "@" not in ref:
            observed.append((ref, "", answer.digest))
            observed += [(ref, platform, digest) for platform, digest in answer.platforms.items()]
    state.observe(observed, at)
    digests = {}
    for node, attrs in node_items(graph):
        if node not in scope:
            continue
        if attrs["kind"] == EXTERNAL and attrs["digest"] is not None:
            digests[node] = attrs["digest"]
            continue
        found = answers.get(_tagged(attrs) if attrs["kind"] == EXTERNAL else node)
        if isinstance(found, Resolved):
            digests[node] = found.digest
    requests = sum(registry.requests.values())
    return Check(bases, images, requests, dict(registry.ratelimits), digests)


# ---------------------------------------------------------------- what to ask


def needed(graph: nx.DiGraph[str], starts: Iterable[str]) -> set[str]:
    """The nodes a check must judge to say of `starts` and everything built on them exactly
    what a check of the whole graph says: those, and all they are built on up to the
    external bases. Not only the parents' digests: an image built on a stale image is
    stale itself whatever its own digests say, and that parent's verdict takes its own
    parents'. A fleet image used another way (a `# syntax` frontend) is judged too, with
    what it is built on: a run holds a build back when the digest of any fleet image it
    uses failed a gate."""
    below = {n for start in starts if start in graph
             for n in (start, *nx.descendants(graph, start))}  # fmt: skip
    found, todo = set(below), list(below)
    while todo:
        node = todo.pop()
        for parent in graph.predecessors(node):
            if parent in found:
                continue
            if builds_on(edge_data(graph, parent, node)) or graph.nodes[parent]["kind"] == IMAGE:
                found.add(parent)
                todo.append(parent)
    # `x:1@D` and `x:1` ask one question: judged apart, the answer recorded for one would
    # make the other's change unseen by the next whole check
    tagged = {node: _tagged(attrs) for node, attrs in node_items(graph)
              if attrs["kind"] == EXTERNAL and attrs["tag"] is not None}  # fmt: skip
    asked = {ref for node, ref in tagged.items() if node in found}
    return found | {node for node, ref in tagged.items() if ref in asked}


def _questions(
    graph: nx.DiGraph[str], scope: Collection[str]
) -> tuple[dict[str, list[str]], set[str]]:
    """Each unique reference of the nodes in `scope` with the platforms whose digests
    matter (every image built on a base counts, in scope or not: a base's answer is the
    same whichever part of the graph asked); images to inspect."""
    wanted: dict[str, list[str]] = {}
    inspect: set[str] = set()

    def ask(ref: str, platforms: Iterable[str]) -> None:
        have = wanted.setdefault(ref, [])
        have += [p for p in platforms if p not in have]

    for node, attrs in node_items(graph):
        if node not in scope:
            continue
        if attrs["kind"] == EXTERNAL:
            platforms = [p for _, child, edge in out_edge_items(graph, node)
                         for p in _consumer_platforms(graph, child, edge)]  # fmt: skip
            if attrs["tag"] is not None:
                ask(_tagged(attrs), platforms)
            if attrs["digest"] is not None:  # a pin: its children are what builds use
                ask(f"{attrs['name']}@{attrs['digest']}", platforms)
        else:
            ask(node, _image_platforms(attrs))
            inspect.add(node)
            for alias in attrs["tags"][1:]:
                ask(alias, [])
    return wanted, inspect


def _image_platforms(attrs: ImageNode) -> list[str]:
    return list(attrs["platforms"] or [dockerfile.DEFAULT_PLATFORM])


def _consumer_platforms(graph: nx.DiGraph[str], image: str, edge: Edge) -> list[str]:
    """The platforms whose digest of a base matter to this edge: FROM --platform wins."""
    if edge["platform"]:
        return [edge["platform"]]
    return list(edge["platforms"] or _image_platforms(image_data(graph, image)))


def _externals(graph: nx.DiGraph[str]) -> list[str]:
    return sorted(n for n, kind in graph.nodes(data="kind") if kind == EXTERNAL)


def _tagged(attrs: ExternalNode) -> str:
    return f"{attrs['name']}:{attrs['tag']}"


def _digest_ref(ref: str) -> str:
    return ref.rsplit("@", 1)[1]


def _remember(answers: dict[str, Resolved | Failure], state: State) -> None:
    """Index children and manifest annotations never change: keep them for later runs."""
    for answer in answers.values():
        if isinstance(answer, Resolved):
            if answer.children:
                state.remember_children(answer.digest, answer.children)
            if answer.by_manifest:
                state.remember_annotations(answer.by_manifest)


# ---------------------------------------------------------------- judging


class _Judge:
    """Turns registry answers into base and image statuses, parents before children."""

    def __init__(
        self,
        graph: nx.DiGraph[str],
        answers: dict[str, Resolved | Failure],
        state: State,
        mirrors: Mapping[str, str],
    ) -> None:
        self.graph, self.answers, self.state, self.mirrors = graph, answers, state, mirrors
        self.known_baselines = state.baselines()
        self.baselines: list[tuple[str, str, str]] = []  # to record after judging
        self.done: dict[str, ImageCheck] = {}

    # -- bases

    def base(self, node: str, latest: dict, at: str) -> BaseCheck:
        attrs = external_data(self.graph, node)
        users = self.graph.out_degree(node)
        if attrs["tag"] is None:
            return BaseCheck(node, PINNED, attrs["digest"], detail="pinned by digest only",
                             images=users)  # fmt: skip
        ref = _tagged(attrs)
        answer = self.answers[ref]
        if isinstance(answer, Failure):
            return BaseCheck(node, UNKNOWN, detail=f"{answer.kind}: {answer.message}", images=users)
        if attrs["pinned"]:
            if attrs["digest"] in {answer.digest, *answer.platforms.values()}:
                return BaseCheck(node, PINNED, answer.digest, platforms=answer.platforms,
                                 images=users)  # fmt: skip
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
        old = {p: self.state.latest(ref, p) for p in answer.platforms}
        moved = sorted(p for p, seen in old.items() if seen and seen.digest != answer.platforms[p])
        if answer.platforms and not moved and all(old.values()):
            detail = "the index changed, the platforms built for did not"
            return BaseCheck(node, UNCHANGED, answer.digest, before.digest, at, answer.platforms,
                             detail, users)  # fmt: skip
        which = f" ({', '.join(moved)})" if moved else ""
        return BaseCheck(node, CHANGED, answer.digest, before.digest, at, answer.platforms,
                         f"{before.digest} -> {answer.digest}{which}", users)  # fmt: skip

    # -- images

    def images(self, scope: Collection[str]) -> list[ImageCheck]:
        """Those in `scope`, which holds all that each is built on (`needed`)."""
        for node in nx.topological_sort(self.graph):
            if node in scope and node_data(self.graph, node)["kind"] == IMAGE:
                self.done[node] = self.image(node)
        return [self.done[node] for node in sorted(self.done)]

    def image(self, node: str) -> ImageCheck:
        attrs = image_data(self.graph, node)
        answer = self.answers[node]
        if isinstance(answer, Failure):
            if answer.kind == MISSING:
                return ImageCheck(node, MISSING_TAG, MISSING_TAG, "not in the registry yet", [node])
            return ImageCheck(node, UNKNOWN, UNKNOWN, f"{answer.kind}: {answer.message}", [node])
        verdict = self._judge_edges(node, answer)
        absent = [
            t
            for t in attrs["tags"][1:]
            if isinstance(other := self.answers.get(t), Failure) and other.kind == MISSING
        ]
        if absent and verdict.status != STALE:
            detail = f"tag{'s' if len(absent) > 1 else ''} {', '.join(absent)} not in the registry"
            return ImageCheck(node, MISSING_TAG, MISSING_TAG, detail, [node], answer.digest)
        return verdict

    def _judge_edges(self, node: str, answer: Resolved) -> ImageCheck:
        evidence = self._evidence(node, answer)
        if isinstance(evidence, ImageCheck):
            return evidence  # the Dockerfile names another base than the image was built on
        verified, assumed, unknown = [], [], []
        for parent in sorted(self.graph.predecessors(node)):
            edge = edge_data(self.graph, parent, node)
            if not builds_on(edge):
                continue
            why = self.done.get(parent)
            absent = why is not None and why.status == MISSING_TAG and why.digest is None
            if why is not None and (why.status == STALE or absent):
                detail = f"built on {parent}, which is {why.status}"
                return ImageCheck(node, STALE, STALE, detail, [node, *why.chain], answer.digest)
            platforms = _consumer_platforms(self.graph, node, edge)
            current = self._current(parent, platforms)
            if current is None:
                unknown.append(parent)
                continue
            built_on = evidence.get(parent)
            if built_on is not None:
                stale = [d for d in built_on if d not in current]
                if stale:
                    external = node_data(self.graph, parent)["kind"] == EXTERNAL
                    detail = f"built on {parent} {stale[0]}, which is now {self._now(parent)}"
                    reason = BASE_CHANGED if external else STALE
                    return ImageCheck(node, STALE, reason, detail, [node, parent], answer.digest)
                self.baselines.append((node, parent, built_on[0]))
                verified.append(parent)
                continue
            baseline = self.known_baselines.get((node, parent))
            if baseline is None:
                self.baselines.append((node, parent, self._digest_for(parent, platforms)))
                assumed.append(parent)
            elif baseline not in current:
                reason = (
                    BASE_CHANGED if node_data(self.graph, parent)["kind"] == EXTERNAL else STALE
                )
                moved = f"{parent} moved from {baseline} to {self._now(parent)}"
                detail = f"{moved} since the image was built"
                return ImageCheck(node, STALE, reason, detail, [node, parent], answer.digest)
            else:
                assumed.append(parent)
        if unknown:
            detail = f"cannot tell: no answer for {', '.join(unknown)}"
            return ImageCheck(node, UNKNOWN, UNKNOWN, detail, [node, *unknown], answer.digest)
        base = image_data(self.graph, node)["base"]
        if not verified and assumed:
            detail = ("no OCI base annotation or graphbuild build record; nothing it is built on "
                      "moved since it was first seen")  # fmt: skip
            return ImageCheck(node, UNKNOWN, UNKNOWN, detail, [node, *assumed], answer.digest)
        if base is None and not verified:
            detail = "built on nothing a registry tracks (FROM scratch)"
            return ImageCheck(node, UP_TO_DATE, "", detail, [node], answer.digest)
        return ImageCheck(node, UP_TO_DATE, chain=[node, *verified, *assumed], digest=answer.digest)

    def _evidence(self, node: str, answer: Resolved) -> dict[str, list[str]] | ImageCheck:
        """What the image says it was built on: parent -> digests (one per platform).

        graphbuild's own build record of this very digest comes first: it names
        every parent (COPY --from ones too) with the exact digest it was pinned
        to. Otherwise the manifest's org.opencontainers.image.base.* annotations
        name the immediate parent, per platform; config labels are never read,
        because a LABEL is inherited and may describe a grandparent.
        """
        record = self.state.build_of(node, answer.digest)
        if record is not None:
            return {p: [d] for p, d in record.parents.items() if p in self.graph}
        parent = image_data(self.graph, node)["base"]
        found: dict[str, list[str]] = {}
        if parent is not None:
            for platform in _image_platforms(image_data(self.graph, node)):
                annotations = answer.annotations(platform)
                if not annotations.get(BASE_DIGEST):
                    continue
                name = annotations.get(BASE_NAME, "")
                if name and not self._names(name, parent):
                    detail = f"built on {name}, the Dockerfile now names {parent}"
                    return ImageCheck(node, STALE, STALE, detail, [node, parent], answer.digest)
                found.setdefault(parent, []).append(annotations[BASE_DIGEST])
        return found

    def _current(self, parent: str, platforms: list[str]) -> set[str] | None:
        """The digests that count as `parent` now, for a consumer building `platforms`."""
        attrs = node_data(self.graph, parent)
        if attrs["kind"] == EXTERNAL and attrs["digest"] is not None:  # pinned: current as it is
            pin = self.answers.get(f"{attrs['name']}@{attrs['digest']}")
            children = pin.children if isinstance(pin, Resolved) else {}
            return {attrs["digest"], *children.values()}
        answer = self.answers.get(_tagged(attrs) if attrs["kind"] == EXTERNAL else parent)
        if not isinstance(answer, Resolved):
            return None
        wanted = {answer.platforms.get(p) or pick(answer.children, p) for p in platforms}
        return {answer.digest} | {d for d in wanted if d}

    def _digest_for(self, parent: str, platforms: list[str]) -> str:
        """The digest a consumer building `platforms` pulls: the pin, else the platform child."""
        attrs = node_data(self.graph, parent)
        if attrs["kind"] == EXTERNAL and attrs["digest"] is not None:
            return attrs["digest"]
        answer = self.answers[_tagged(attrs) if attrs["kind"] == EXTERNAL else parent]
        assert isinstance(answer, Resolved)  # _current answered before this is asked
        child = answer.platforms.get(platforms[0]) if platforms else None
        return child or answer.digest

    def _now(self, parent: str) -> str:
        attrs = node_data(self.graph, parent)
        answer = self.answers.get(_tagged(attrs) if attrs["kind"] == EXTERNAL else parent)
        return answer.digest if isinstance(answer, Resolved) else "unknown"

    def _names(self, name: str, parent: str) -> bool:
        """Does an annotation's base.name (as written in FROM) name the graph's parent node?

        A FROM pinned to `name:tag@digest` (as graphbuild pins every build) is
        recorded by buildah as `name@digest`: the repository is what can match.
        """
        try:
            annotated = refs.normalize(refs.upstream(str(refs.normalize(name)), self.mirrors))
        except InvalidReference:
            return False
        attrs = node_data(self.graph, parent)
        if annotated.tag is None and annotated.digest is not None:
            names = attrs["tags"] if attrs["kind"] == IMAGE else [attrs["name"]]
            return annotated.name in {refs.parse(n).name for n in names}
        if attrs["kind"] == IMAGE:
            return annotated.tagged in attrs["tags"]
        return annotated.tagged == _tagged(attrs) if attrs["tag"] else str(annotated) == parent
