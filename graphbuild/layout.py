"""A layered (Sugiyama-style) drawing of a graph, left to right like `graph -f dot`, for the
graph view (pages.graph_page), which draws it as inline SVG on the server: no script in the
page, and no layout library to vendor.

Plain functions on plain data, cheap enough for a page (500 nodes in a few milliseconds):
1. a cycle is broken by turning its back edges around (a depth-first walk in name order), so
   a damaged graph is still drawn and never loops;
2. a node's layer is its longest path from a root of the subgraph, and a root's is just
   before its first child's (a tool only a deep image copies from is drawn beside it, not
   far left); an edge that spans layers goes through a point in each layer between, so it is
   ordered like a node and passes beside the boxes, never through them;
3. the order within each layer follows the mean position of its neighbours (a few sweeps
   down and up), which removes most crossings;
4. each node is pulled towards its neighbours' height without overlapping the next one.
Names are sorted first: the same graph gives the same drawing, whatever order it came in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

NODE_WIDTH, NODE_HEIGHT = 220.0, 26.0
LAYER_GAP, NODE_GAP, MARGIN = 80.0, 12.0, 8.0
SWEEPS = 6  # ordering sweeps, alternately down and up; more gain little on a fleet's graph
SETTLE = 4  # height-settling passes, alternately down and up

Point = tuple[float, float]


@dataclass(frozen=True)
class Layout:
    """Where each node's box goes (its top-left corner) and how each edge gets there."""

    positions: dict[str, Point]
    layers: dict[str, int]
    # (source, target) -> the points the edge passes between the source's right side and the
    # target's left side: two per layer it crosses, the left and right of that layer's column
    routes: dict[tuple[str, str], list[Point]]
    width: float
    height: float
    node_width: float
    node_height: float


def points(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> int:
    """How many points the layout places: the nodes, and one per layer each edge crosses.
    The work and the drawing grow with it, not with the nodes alone (a chain that every
    image also copies from has few nodes and a great many points): what a page must
    bound before it lays anything out. Linear in the graph's size."""
    names, _, forward, layer = _layered(nodes, edges)
    return len(names) + sum(max(layer[b] - layer[a] - 1, 0) for a, b in forward)


def _layered(
    nodes: Iterable[str], edges: Iterable[tuple[str, str]]
) -> tuple[list[str], list[tuple[str, str]], list[tuple[int, int]], list[int]]:
    """The sorted names, the edges among them, the edges turned acyclic (as indexes into
    the names) and each node's layer."""
    names = sorted(set(nodes))
    index = {name: i for i, name in enumerate(names)}
    pairs = sorted({(u, v) for u, v in edges if u in index and v in index})
    forward = _acyclic(len(names), [(index[u], index[v]) for u, v in pairs if u != v])
    return names, pairs, forward, _layers(len(names), forward)


def layout(
    nodes: Iterable[str],
    edges: Iterable[tuple[str, str]],
    node_width: float = NODE_WIDTH,
    node_height: float = NODE_HEIGHT,
) -> Layout:
    """Lay out `nodes`; edges to or from a node not among them are left out."""
    names, pairs, forward, layer = _layered(nodes, edges)
    index = {name: i for i, name in enumerate(names)}

    # every edge as a chain of vertices, one per layer: the real ends, virtual points between
    ups: list[list[int]] = [[] for _ in names]
    downs: list[list[int]] = [[] for _ in names]
    chains: dict[tuple[int, int], list[int]] = {}
    for a, b in forward:
        chain = [a]
        for step in range(layer[a] + 1, layer[b]):
            layer.append(step)
            ups.append([])
            downs.append([])
            chain.append(len(layer) - 1)
        chain.append(b)
        for x, y in pairwise(chain):
            downs[x].append(y)
            ups[y].append(x)
        chains[a, b] = chain

    rows: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for vertex, at in enumerate(layer):  # names first, in name order, then the virtual points
        rows[at].append(vertex)
    _order(rows, ups, downs)
    real = len(names)
    tops = _heights(rows, ups, downs, real, node_height)

    column = [MARGIN + i * (node_width + LAYER_GAP) for i in range(len(rows))]
    lowest = min(tops, default=0.0)
    tops = [top - lowest + MARGIN for top in tops]
    positions = {name: (column[layer[i]], tops[i]) for i, name in enumerate(names)}
    routes: dict[tuple[str, str], list[Point]] = {}
    for u, v in pairs:
        a, b = index[u], index[v]
        if a == b:
            routes[u, v] = []
            continue
        chain = chains[a, b] if (a, b) in chains else chains[b, a][::-1]
        routes[u, v] = [
            point
            for vertex in chain[1:-1]
            for point in ((column[layer[vertex]], tops[vertex]),
                          (column[layer[vertex]] + node_width, tops[vertex]))
        ]  # fmt: skip
    bottom = max((top + (node_height if i < real else 0.0) for i, top in enumerate(tops)),
                 default=0.0)  # fmt: skip
    return Layout(
        positions=positions,
        layers={name: layer[i] for i, name in enumerate(names)},
        routes=routes,
        width=column[-1] + node_width + MARGIN if rows else 2 * MARGIN,
        height=bottom + MARGIN if rows else 2 * MARGIN,
        node_width=node_width,
        node_height=node_height,
    )


def _acyclic(count: int, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The edges with every back edge of a depth-first walk (in vertex order) turned around:
    a graph without cycles, each edge kept once."""
    succ: list[list[int]] = [[] for _ in range(count)]
    for a, b in edges:
        succ[a].append(b)
    state = [0] * count  # 0 not seen, 1 on the walk's path, 2 done
    back: set[tuple[int, int]] = set()
    for root in range(count):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            vertex, rest = stack[-1]
            for nxt in rest:
                if state[nxt] == 1:
                    back.add((vertex, nxt))
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
                    break
            else:
                state[vertex] = 2
                stack.pop()
    turned = {(b, a) if (a, b) in back else (a, b) for a, b in edges}
    return sorted(turned)


def _layers(count: int, edges: list[tuple[int, int]]) -> list[int]:
    """Each vertex's longest path from a root (a vertex nothing points to); a root's layer is
    one before its nearest child's."""
    succ: list[list[int]] = [[] for _ in range(count)]
    waiting = [0] * count
    for a, b in edges:
        succ[a].append(b)
        waiting[b] += 1
    layer = [0] * count
    roots = [v for v in range(count) if not waiting[v]]
    ready = deque(roots)
    while ready:
        vertex = ready.popleft()
        for nxt in succ[vertex]:
            layer[nxt] = max(layer[nxt], layer[vertex] + 1)
            waiting[nxt] -= 1
            if not waiting[nxt]:
                ready.append(nxt)
    for root in roots:  # a base that only later images use sits just before the first of them
        if succ[root]:
            layer[root] = min(layer[nxt] for nxt in succ[root]) - 1
    return layer


def _order(rows: list[list[int]], ups: list[list[int]], downs: list[list[int]]) -> None:
    """Reorder each layer in place by its vertices' mean neighbour position in the layer
    before it, sweeping down then up; a vertex with no neighbour there keeps its place."""
    place = [0] * len(ups)
    for row in rows:
        for i, vertex in enumerate(row):
            place[vertex] = i
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        span = range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)
        near = ups if down else downs
        for at in span:
            row = rows[at]
            keys = {}
            for vertex in row:
                others = near[vertex]
                mean = sum(place[o] for o in others) / len(others) if others else place[vertex]
                keys[vertex] = (mean, place[vertex])
            row.sort(key=keys.__getitem__)
            for i, vertex in enumerate(row):
                place[vertex] = i


def _heights(
    rows: list[list[int]], ups: list[list[int]], downs: list[list[int]], real: int, height: float
) -> list[float]:
    """Each vertex's top: stacked in its layer's order, then pulled towards the middle of its
    neighbours in the layer before, sweeping down then up, never closer than NODE_GAP."""
    size = [height if v < real else 0.0 for v in range(len(ups))]
    tops = [0.0] * len(ups)
    for row in rows:
        y = 0.0
        for vertex in row:
            tops[vertex] = y
            y += size[vertex] + NODE_GAP
    for sweep in range(SETTLE):
        down = sweep % 2 == 0
        span = range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)
        near = ups if down else downs
        for at in span:
            row = rows[at]
            want = []
            for vertex in row:
                others = near[vertex]
                centre = (sum(tops[o] + size[o] / 2 for o in others) / len(others) if others
                          else tops[vertex] + size[vertex] / 2)  # fmt: skip
                want.append(centre - size[vertex] / 2)
            # pushed down from the top and up from the bottom: both keep the order and the
            # gaps, and so does their mean, which does not drift either way
            first = want[:]
            for i in range(1, len(row)):
                first[i] = max(want[i], first[i - 1] + size[row[i - 1]] + NODE_GAP)
            last = want[:]
            for i in range(len(row) - 2, -1, -1):
                last[i] = min(want[i], last[i + 1] - size[row[i]] - NODE_GAP)
            for i, vertex in enumerate(row):
                tops[vertex] = (first[i] + last[i]) / 2
    return tops
