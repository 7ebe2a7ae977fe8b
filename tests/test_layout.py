"""The graph view's layered layout: layers by longest path, few crossings, no overlaps, the
same drawing for the same graph, and a cycle neither hangs it nor breaks it."""

from __future__ import annotations

import random
from itertools import combinations

import pytest

from graphbuild import layout


def random_dag(count: int, edges: int, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    """`count` nodes in a random order and `edges` edges, each from an earlier node of a
    hidden topological order to a later one: a DAG like a fleet's, bases on the left."""
    rng = random.Random(seed)
    names = [f"n{i:04d}" for i in range(count)]
    found: set[tuple[str, str]] = set()
    for i in range(1, count):  # every node but the first built on one before it
        found.add((names[rng.randrange(max(0, i - 40), i)], names[i]))
    while len(found) < edges:
        a, b = sorted(rng.sample(range(count), 2))
        found.add((names[a], names[b]))
    shuffled = names[:]
    rng.shuffle(shuffled)
    return shuffled, sorted(found)


def overlapping(placed: layout.Layout) -> list[tuple[str, str]]:
    boxes = {n: (x, y, x + placed.node_width, y + placed.node_height)
             for n, (x, y) in placed.positions.items()}  # fmt: skip
    return [
        (a, b)
        for (a, (ax, ay, ax2, ay2)), (b, (bx, by, bx2, by2)) in combinations(boxes.items(), 2)
        if ax < bx2 and bx < ax2 and ay < by2 and by < ay2
    ]


def test_a_layer_is_the_longest_path_from_a_root_and_runs_left_to_right():
    nodes = ["os", "base", "app", "tool", "lonely"]
    edges = [("os", "base"), ("base", "app"), ("os", "app"), ("tool", "app"), ("x", "app")]
    placed = layout.layout(nodes, edges)  # ("x", "app"): x is not in the subgraph, ignored
    # tool is a root used only by app: drawn just before it, not at the far left
    assert placed.layers == {"os": 0, "base": 1, "app": 2, "tool": 1, "lonely": 0}
    assert set(placed.positions) == set(nodes)
    x = {n: placed.positions[n][0] for n in nodes}
    assert x["os"] == x["lonely"] < x["base"] == x["tool"] < x["app"]
    for n, (left, top) in placed.positions.items():
        assert left >= 0 and left + placed.node_width <= placed.width, n
        assert top >= 0 and top + placed.node_height <= placed.height, n
    # os -> app skips a layer: it is routed straight across the middle layer, beside base
    (left, y1), (right, y2) = placed.routes["os", "app"]
    assert (left, right) == (x["base"], x["base"] + placed.node_width) and y1 == y2
    top = placed.positions["base"][1]
    assert not top <= y1 <= top + placed.node_height
    assert placed.routes["os", "base"] == []


def test_the_order_in_a_layer_follows_the_neighbours_so_edges_do_not_cross():
    # by name, layer 1 would be [y, z]: a (top) -> z (bottom) would cross b -> y
    placed = layout.layout(["a", "b", "y", "z"], [("a", "z"), ("b", "y")])
    y = {n: top for n, (_, top) in placed.positions.items()}
    assert (y["a"] < y["b"]) == (y["z"] < y["y"])


def test_no_two_nodes_overlap_and_every_edge_goes_right():
    nodes, edges = random_dag(150, 190, seed=7)
    placed = layout.layout(nodes, edges)
    assert overlapping(placed) == []
    for u, v in edges:
        assert placed.layers[u] < placed.layers[v]
        assert placed.positions[u][0] < placed.positions[v][0]
        assert len(placed.routes[u, v]) == 2 * (placed.layers[v] - placed.layers[u] - 1)


def test_the_same_graph_gives_the_same_drawing_whatever_the_input_order():
    nodes, edges = random_dag(120, 150, seed=3)
    first = layout.layout(nodes, edges)
    assert layout.layout(nodes, edges) == first
    assert layout.layout(sorted(nodes), list(reversed(edges))) == first


def test_a_cycle_is_broken_and_drawn_not_looped_forever():
    nodes = ["a", "b", "c", "d"]
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")]
    placed = layout.layout(nodes, edges)
    assert set(placed.positions) == set(nodes) and overlapping(placed) == []
    assert set(placed.routes) == set(edges)  # every edge has a route, even the self-loop
    assert layout.layout(list(reversed(nodes)), edges) == placed
    assert sorted(placed.layers.values()) == [0, 1, 2, 3]  # the chain broken once: a b c d


@pytest.mark.timeout(20)  # "does not hang" on the graph view's largest usual input
def test_five_hundred_nodes_are_laid_out():
    nodes, edges = random_dag(500, 600, seed=11)
    placed = layout.layout(nodes, edges)
    assert len(placed.positions) == 500 and overlapping(placed) == []


def test_points_counts_the_nodes_and_each_layer_an_edge_crosses():
    """a -> b -> c -> d, and a -> d crossing the two layers between: 4 nodes + 2 points."""
    nodes = ["a", "b", "c", "d"]
    assert layout.points(nodes, [("a", "b"), ("b", "c"), ("c", "d")]) == 4
    assert layout.points(nodes, [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]) == 6
    assert layout.points(nodes, [("a", "b"), ("b", "a")]) == 4  # a cycle, turned around
