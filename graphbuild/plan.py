"""What to rebuild, in which waves, and why: the plan is an output of its own (rule 8).

The rebuild set is every image `check` found stale or missing, plus everything
built on them; each step carries its reason code and the chain that caused
it. Waves are the topological generations of that set: how plans and reports
are shown to people. The executor does not wait for a wave to finish; a
child starts the moment its own parents are built.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import networkx as nx

from graphbuild import detect
from graphbuild.graph import edge_data, follows, node_data
from graphbuild.indexdb import IMAGE

FORCED, PARENT, SOURCE_CHANGED = "forced", "parent-rebuilt", "source-changed"
VULNERABLE = "vulnerable"  # its own layers carry a finding a rebuild without cache fixes


@dataclass(frozen=True)
class Step:
    node: str
    wave: int
    reason: str  # stale | base-changed | missing | source-changed | vulnerable | forced |
    # parent-rebuilt
    detail: str
    chain: list[str]


@dataclass
class Plan:
    steps: list[Step]
    digests: dict[str, str] = field(default_factory=dict)  # node -> digest now (for pinning)
    unknown: list[str] = field(default_factory=list)  # images nobody could judge

    @property
    def waves(self) -> list[list[str]]:
        out: list[list[str]] = []
        for step in self.steps:
            while len(out) <= step.wave:
                out.append([])
            out[step.wave].append(step.node)
        return out

    def within(self, graph: nx.DiGraph[str], starts: Iterable[str]) -> Plan:
        """Only the steps at or below `starts`: a sweep a push event asked for."""
        keep = {n for start in starts if start in graph
                for n in (start, *nx.descendants(graph, start))}  # fmt: skip
        steps = [step for step in self.steps if step.node in keep]
        kept = graph.subgraph(step.node for step in steps)
        wave = {n: i for i, level in enumerate(nx.topological_generations(kept)) for n in level}
        steps = sorted((replace(step, wave=wave[step.node]) for step in steps),  # no empty waves
                       key=lambda step: (step.wave, step.node))  # fmt: skip
        return Plan(steps, self.digests, [n for n in self.unknown if n in keep])

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in self.steps:
            counts[step.reason] = counts.get(step.reason, 0) + 1
        return counts


def from_check(
    graph: nx.DiGraph[str],
    check: detect.Check,
    changed: dict[str, str] | None = None,
    vulnerable: dict[str, str] | None = None,
) -> Plan:
    """Stale and missing images, those whose own source `changed` (image -> why), those
    whose own layers carry a finding a rebuild fixes (`vulnerable`: image -> which), and
    everything built on them."""
    roots = {
        image.id: (image.reason, image.detail, image.chain)
        for image in check.images
        if image.status in (detect.STALE, detect.MISSING_TAG)
    }
    # before a changed source: a build with cache may keep the old package layer; a new
    # base rebuilds every layer above it anyway
    for node, why in (vulnerable or {}).items():
        roots.setdefault(node, (VULNERABLE, why, [node]))
    for node, why in (changed or {}).items():
        roots.setdefault(node, (SOURCE_CHANGED, why, [node]))
    unknown = sorted(i.id for i in check.images if i.status == detect.UNKNOWN)
    return _plan(graph, roots, check.digests, unknown)


def forced(
    graph: nx.DiGraph[str],
    nodes: Iterable[str],
    reason: str,
    downstream: bool = True,
    depth: int | None = None,
    digests: dict[str, str] | None = None,
) -> Plan:
    """The on-call path: the named images (or what is built on a named base), now.

    `depth` counts levels below what was named, as `uses --depth` does: on a
    base, depth 1 is the images built directly on it.
    """
    roots: dict[str, tuple[str, str, list[str]]] = {}
    levels: dict[str, int] = {}
    for node in nodes:
        if node_data(graph, node)["kind"] == IMAGE:
            roots[node], levels[node] = (FORCED, reason, [node]), 0
        else:  # a base: everything built directly on it is the root of the rebuild
            for child in _built_on(graph, node):
                roots.setdefault(child, (FORCED, reason, [child, node]))
                levels[child] = min(levels.get(child, 1), 1)
    return _plan(graph, roots, digests or {}, [], downstream, depth, reason, levels)


def fixing(
    graph: nx.DiGraph[str],
    vulnerable: dict[str, str],
    digests: dict[str, str],
    downstream: bool = True,
    depth: int | None = None,
) -> Plan:
    """`rebuild --cve`: the images whose own layers carry it, and what is built on them
    (`depth` levels of it at most)."""
    roots = {node: (VULNERABLE, why, [node]) for node, why in vulnerable.items()}
    return _plan(graph, roots, digests, [], downstream, depth)


def updated(graph: nx.DiGraph[str], bases: Iterable[str]) -> Plan:
    """What-if, offline: the plan if these bases (or images) had just changed."""
    roots: dict[str, tuple[str, str, list[str]]] = {}
    for node in bases:
        targets = [node] if node_data(graph, node)["kind"] == IMAGE else _built_on(graph, node)
        for child in targets:
            why = f"{node} updated (what-if)"
            roots.setdefault(
                child, (detect.BASE_CHANGED, why, [child] if child == node else [child, node])
            )
    return _plan(graph, roots, {}, [])


def _plan(
    graph: nx.DiGraph[str],
    roots: dict[str, tuple[str, str, list[str]]],
    digests: dict[str, str],
    unknown: list[str],
    downstream: bool = True,
    depth: int | None = None,
    forced_reason: str | None = None,
    levels: dict[str, int] | None = None,
) -> Plan:
    """The roots and, with `downstream`, what is built on them, `depth` levels at most."""
    why: dict[str, tuple[str, str, list[str]]] = dict(roots)
    level = {node: (levels or {}).get(node, 0) for node in roots}
    queue = deque(sorted(roots, key=lambda node: (level[node], node)) if downstream else ())
    while queue:  # breadth first: each image gets its nearest root's chain and level
        node = queue.popleft()
        if depth is not None and level[node] >= depth:
            continue
        for child in sorted(_built_on(graph, node)):
            if child not in why:
                reason = FORCED if forced_reason else PARENT
                detail = forced_reason or f"built on {node}, which this run rebuilds"
                why[child], level[child] = (reason, detail, [child, *why[node][2]]), level[node] + 1
                queue.append(child)
    sub = graph.subgraph(why)
    steps = [
        Step(node, wave, *why[node])
        for wave, generation in enumerate(nx.topological_generations(sub))
        for node in sorted(generation)
    ]
    return Plan(steps, digests, unknown)


def _built_on(graph: nx.DiGraph[str], node: str) -> Iterator[str]:
    """Images with `node` as an input of their build (never a mere `# syntax` frontend)."""
    for child in graph.successors(node):
        if node_data(graph, child)["kind"] == IMAGE and follows(edge_data(graph, node, child)):
            yield child
