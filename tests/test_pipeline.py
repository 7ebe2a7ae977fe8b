"""pipeline.built: what a run's pass built is recorded as up to date, and nothing else;
a push's sweep checks and plans only its part of the graph, as the whole check would."""

from __future__ import annotations

import shutil
from dataclasses import replace

from graphbuild import config, detect, pipeline
from graphbuild.state import Freshness, NodeStatus, RunNode, State, now

from .site import Site, require

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


def test_a_push_sweeps_narrowed_check_and_plan_are_the_whole_ones_within_its_part(
    tmp_path, registry, remotes
):
    """Issue 17, point 4: a push's sweep checks and plans only what is built on the pushed
    nodes and what those are built on, and says of them exactly what the whole check's plan
    kept `within` them says: x is stale because tool (not below the push) is stale, z is
    rebuilt because helper's source changed, though neither is below the push."""
    require("buildah")
    site = Site(tmp_path, registry, remotes)
    h = site.host
    registry.image("other/q", "1", content="q v1")
    registry.image("other/u", "1", content="u v1")
    extra = remotes("extra", {
        "tool/Dockerfile": f"FROM {h}/other/q:1\nCOPY f /tool\n", "tool/f": "tool",
        "helper/Dockerfile": "FROM scratch\nCOPY f /helper\n", "helper/f": "helper",
        "x/Dockerfile": f"FROM {h}/platform/mid:1\nCOPY --from={h}/extra/tool:1 /tool /t\n"
                        "COPY f /x\n", "x/f": "x",
        "z/Dockerfile": f"FROM {h}/platform/mid:1\nCOPY --from={h}/extra/helper:1 /helper /h\n"
                        "COPY f /z\n", "z/f": "z",
        "u/Dockerfile": f"FROM {h}/other/u:1\nCOPY f /u\n", "u/f": "u",
    })  # fmt: skip
    site.config["repos"].append({"name": "extra", "url": str(extra.url), "images": [
        {"image": f"{h}/extra/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]}]})  # fmt: skip
    site.write_config()
    assert site.run("sweep")["status"] == "succeeded"
    registry.image("other/q", "1", content="q v2")  # tool is stale: no sweep has seen it
    extra.commit({"helper/f": "helper, changed"})  # helper's source changed: not built yet

    def compare(name: str, pushed: str, below: set[str]) -> None:
        """Whole and narrowed, each on its own copy of the workspace as it is now."""
        answers = []
        for narrowed in (False, True):
            root = tmp_path / f"{name}-{'narrowed' if narrowed else 'whole'}"
            root.mkdir()
            shutil.copy(tmp_path / "repos.yaml", root)
            shutil.copytree(tmp_path / ".graphbuild", root / ".graphbuild")
            cfg = config.load(root / "repos.yaml")
            now = pipeline.fresh(cfg, [pushed])
            scope = detect.needed(now.graph, now.nodes) if narrowed else None
            asked = registry.requests("^/v2/other/u/")
            checked = pipeline.check(cfg, now.graph, only=scope)
            unrelated = registry.requests("^/v2/other/u/") - asked
            steps = pipeline.plan(cfg, now.graph, checked).within(now.graph, now.nodes)
            answers.append((checked, steps, scope, unrelated))
        (whole, whole_steps, _, asked_whole), (part, steps, scope, asked_part) = answers
        assert scope is not None and {s.node for s in steps.steps} == below
        assert f"{h}/extra/u:1" not in scope and f"{h}/other/u:1" not in scope
        assert asked_whole > 0 and asked_part == 0 and part.requests < whole.requests
        assert part.images == [i for i in whole.images if i.id in scope]
        bases = [replace(b, since=None) for b in part.bases]  # since: when a change was seen
        assert bases == [replace(b, since=None) for b in whole.bases if b.id in scope]
        assert (steps.steps, steps.unknown) == (whole_steps.steps, whole_steps.unknown)
        assert steps.digests == {n: d for n, d in whole_steps.digests.items() if n in scope}

    x, z = f"{h}/extra/x:1", f"{h}/extra/z:1"
    # a push of mid that changed nothing of it: what is below it is judged as a whole check would
    compare("mid", site.mid, {x, z})
    site.push_upstream("upstream v2")
    compare("upstream", site.upstream, {site.base, site.mid, site.app, x, z})


def test_a_pushs_check_also_judges_the_floating_base_that_shares_a_pinned_bases_tag(
    tmp_path, registry
):
    """`FROM x:1@D` and `FROM x:1` are two nodes that ask the registry one question, x:1.
    A push's check whose part holds only the pinned one records x:1's new digest; unless
    it also judges the floating node, the next whole check compares the new digest with
    itself, and no check ever says that the floating base changed."""
    import yaml

    h = registry.host
    first = registry.image("ext/x", "1", content="x v1")
    repo = tmp_path / "repo"
    for name, line in (("p", f"FROM {h}/ext/x:1@{first}"), ("q", f"FROM {h}/ext/x:1")):
        (repo / name).mkdir(parents=True)
        (repo / name / "Dockerfile").write_text(f"{line}\nCOPY f /f\n")
        (repo / name / "f").write_text(name)
    image = {"image": f"{h}/fleet/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]}
    repos = [{"name": "r", "path": str(repo), "images": [image]}]
    (tmp_path / "repos.yaml").write_text(
        yaml.safe_dump({"registries": {h: {"insecure": True}}, "repos": repos})
    )
    cfg = config.load(tmp_path / "repos.yaml")
    g = pipeline.fresh(cfg).graph
    pipeline.check(cfg, g)  # the last whole check: x:1 is first
    registry.image("ext/x", "1", content="x v2")  # x:1 moves
    part = detect.needed(g, [f"{h}/fleet/p:1"])  # a push of fleet/p (its own CI)
    narrowed = {b.id: b.status for b in pipeline.check(cfg, g, only=part).bases}
    assert narrowed[f"{h}/ext/x:1"] == "changed"  # said by the check that saw it move
