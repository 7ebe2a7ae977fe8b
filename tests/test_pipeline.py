"""pipeline.built: what a run's pass built is recorded as up to date, and nothing else."""

from __future__ import annotations

from graphbuild import pipeline
from graphbuild.state import Freshness, NodeStatus, RunNode, State, now

D = "sha256:" + "1" * 64


def node(name: str, status: NodeStatus, finished: str | None) -> RunNode:
    return RunNode(name, 0, "stale", "", [name], status, 1, finished, finished, D)


def test_a_run_marks_what_it_built_or_found_served_and_not_over_a_newer_check(tmp_path):
    """a was built by a first pass that was interrupted before it could record it: its
    resume records it too."""
    with State(tmp_path) as state:
        run = state.create_run("sweep", None, {}, [RunNode(n, 0, "stale", "", [n])
                                                   for n in "abcdef"])  # fmt: skip
        state.update_node(run, node("a", NodeStatus.SUCCEEDED, now()))  # the first pass
        state.update_node(run, node("b", NodeStatus.SUCCEEDED, now()))
        state.update_node(run, node("c", NodeStatus.SKIPPED, now()))  # already served
        state.update_node(run, node("d", NodeStatus.FAILED, now()))
        state.update_node(run, node("e", NodeStatus.SUCCEEDED, now()))
        # a check after the run began found e stale again (its base moved on): it stands
        state.record_freshness([Freshness("e", "image", "stale", "base-changed", "", ["e", "x"],
                                          D, None, now())], whole=False)  # fmt: skip
        marked = {f.node for f in pipeline.built(state, run)}
    assert marked == {"a", "b", "c"}
