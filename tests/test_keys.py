"""Build identity: a context's content digest, the image's source, the key over parents."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import networkx as nx

from graphbuild import config, keys, sources
from graphbuild.index import BuildOptions
from graphbuild.state import State
from graphbuild.trees import open_tree

ATTRS = {"dockerfile": "app/Dockerfile", "blob": "b1", "context": "app", "build_args": {},
         "target": None, "platforms": [], "contexts": {}}  # fmt: skip


def trees(tmp_path, remotes, files):
    """The same files as a local folder and as a commit of a git remote: both Trees."""
    remote = remotes("r", files)
    os.chmod(remote.work / "app/run.sh", 0o755)
    remote.commit({}, "modes")
    spec = config.RepoSpec(name="r", url=str(remote.url))
    workspace = tmp_path / "ws"
    (result,) = sources.sync(config.Config(tmp_path / "c.yaml", workspace, (spec,)))
    git_tree = open_tree(spec, result, workspace, {}, {})
    local = config.RepoSpec(name="r", path=remote.work)
    dir_tree = open_tree(local, sources.SyncResult("r", None), workspace, {}, {})
    return remote, git_tree, dir_tree


def test_a_folder_and_its_commit_have_the_same_content(tmp_path, remotes):
    files = {"app/Dockerfile": "FROM x\n", "app/run.sh": "echo\n", "app/sub/f": "f",
             "other/g": "g"}  # fmt: skip
    _, git_tree, dir_tree = trees(tmp_path, remotes, files)
    assert git_tree.content("app") == dir_tree.content("app")
    assert git_tree.content("app") != git_tree.content(".")  # `.`: the whole repository
    assert git_tree.content(".") == dir_tree.content(".")  # .git is not content


def test_content_follows_files_and_modes_inside_the_folder_only(tmp_path, remotes):
    files = {"app/Dockerfile": "FROM x\n", "app/run.sh": "echo\n", "other/g": "g"}
    remote, _, dir_tree = trees(tmp_path, remotes, files)
    before = dir_tree.content("app")
    (remote.work / "other/g").write_text("changed")
    assert dir_tree.content("app") == before  # outside the context
    os.chmod(remote.work / "app/run.sh", 0o644)
    assert dir_tree.content("app") != before  # the mode is part of what is built
    os.chmod(remote.work / "app/run.sh", 0o755)
    (remote.work / "app/new").write_text("n")
    assert dir_tree.content("app") != before


def test_source_and_build_keys():
    source = keys.source_key("r/app:1", ATTRS, "c1")
    assert source == keys.source_key("r/app:1", dict(ATTRS), "c1")  # stable
    assert source != keys.source_key("r/app:1", ATTRS, "c2")
    assert source != keys.source_key("r/other:1", ATTRS, "c1")  # per image
    assert source != keys.source_key("r/app:1", {**ATTRS, "build_args": {"V": "2"}}, "c1")
    assert source != keys.source_key("r/app:1", {**ATTRS, "platforms": ["linux/arm64"]}, "c1")
    image = {**ATTRS, "contexts": {"base": "docker-image://alpine:3"}}
    assert source != keys.source_key("r/app:1", image, "c1")  # the Dockerfile reads otherwise
    key = keys.build_key(source, {"p:1": "sha256:a", "q:1": "sha256:b"})
    assert key == keys.build_key(source, {"q:1": "sha256:b", "p:1": "sha256:a"})
    assert key != keys.build_key(source, {"p:1": "sha256:c", "q:1": "sha256:b"})


def test_a_context_that_cannot_be_read_any_more_is_planned_not_fatal(tmp_path):
    """A local context turned into a symlink loop since graphbuild built it costs that image
    a plan and a failed build naming why, never the sweep."""
    import networkx as nx

    from graphbuild.state import State

    for name in ("loop", "ok"):
        (tmp_path / "r" / name).mkdir(parents=True)
        (tmp_path / "r" / name / "Dockerfile").write_text("FROM x\n")
    local = config.RepoSpec(name="r", path=tmp_path / "r")
    cfg = config.Config(tmp_path / "c.yaml", tmp_path / "ws", (local,))
    tree = open_tree(local, sources.SyncResult("r", None), cfg.workspace, {}, {})
    graph = nx.DiGraph()
    with State(cfg.workspace) as state:
        for name in ("loop", "ok"):
            node = f"r.test/{name}:1"
            attrs = {**ATTRS, "kind": "image", "repo": "r", "commit": None, "context": name,
                     "dockerfile": f"{name}/Dockerfile"}  # fmt: skip
            graph.add_node(node, **attrs)
            source = keys.source_key(node, attrs, tree.content(name))
            state.record_build(node, f"sha256:{name}", {}, "run", key="k", source=source)
        (tmp_path / "r/loop").rename(tmp_path / "r/was-loop")
        (tmp_path / "r/loop").symlink_to("loop")
        served = {f"r.test/{name}:1": f"sha256:{name}" for name in ("loop", "ok")}
        changed = keys.changed_sources(cfg, graph, served, state)
    assert "r.test/ok:1" not in changed
    assert changed["r.test/loop:1"].startswith("its Dockerfile, build context or options changed")


def test_a_key_without_named_contexts_is_what_it_was_before_they_were_keyed():
    """Images graphbuild built before contexts were covered must not all look changed."""
    attrs = {**ATTRS, "build_args": {"V": "1"}, "target": "run", "platforms": ["linux/arm64"]}
    assert keys.source_key("r/app:1", attrs, "c1") == (
        "sha256:564f972d5008611ab3138326d8a69700166654dc811c657f262dc341c80200c9"
    )


def test_a_folder_context_is_keyed_by_its_content(tmp_path, remotes):
    """A named context that is a folder is part of the source, like the build context."""
    files = {"app/Dockerfile": "COPY --from=src /s /s\n", "app/run.sh": "echo\n",
             "shared/s": "s1"}  # fmt: skip
    remote, _, dir_tree = trees(tmp_path, remotes, files)
    attrs = {**ATTRS, "contexts": {"src": "shared"}}
    options = BuildOptions.of(attrs)
    before = keys.folder_contents(dir_tree, options)
    assert before == {"src": dir_tree.content("shared")}
    source = keys.source_key("r/app:1", attrs, "c1", before)
    (remote.work / "shared/s").write_text("s2")
    after = keys.folder_contents(dir_tree, options)
    assert keys.source_key("r/app:1", attrs, "c1", after) != source
    moved = {**attrs, "contexts": {"src": "app"}}  # another folder with the same name
    assert keys.source_key("r/app:1", moved, "c1", before) != source


def _sha(inputs: list) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def test_a_source_is_the_digest_of_exactly_the_images_own_inputs():
    """Image, Dockerfile path and blob, context path and content, sorted build args, target,
    platforms: each changes the source, and nothing else goes in."""
    attrs = {**ATTRS, "build_args": {"B": "2", "A": "1"}, "target": "run",
             "platforms": ["linux/arm64", "linux/amd64"]}  # fmt: skip
    assert keys.source_key("r/app:1", attrs, "c1") == _sha(
        ["r/app:1", "app/Dockerfile", "b1", "app", "c1", [["A", "1"], ["B", "2"]], "run",
         ["linux/arm64", "linux/amd64"]]
    )  # fmt: skip
    source = keys.source_key("r/app:1", ATTRS, "c1")
    for change in ({"dockerfile": "app/Dockerfile.prod"}, {"blob": "b2"}, {"context": "."},
                   {"target": "test"}):  # fmt: skip
        assert keys.source_key("r/app:1", {**ATTRS, **change}, "c1") != source, change
    assert keys.source_key("r/app:1", {**ATTRS, "repo": "other", "commit": "c0ffee"}, "c1") == (
        source  # where the Dockerfile lives is not an input: its blob and content are
    )


def test_a_build_key_is_the_source_on_its_parents_digests_in_name_order():
    assert keys.build_key("sha256:s", {"q:1": "sha256:b", "p:1": "sha256:a"}) == _sha(
        ["sha256:s", [["p:1", "sha256:a"], ["q:1", "sha256:b"]]]
    )
    assert keys.build_key("sha256:s", {}) == _sha(["sha256:s", []])  # FROM scratch
    assert keys.build_key("sha256:s", {}) != keys.build_key("sha256:t", {})


def _built_fleet(tmp_path, names=("a", "b")):
    """A local repository `r` with one image per name, each recorded as built from its
    current source at sha256:<name>; the graph as the index gives it."""
    for name in names:
        (tmp_path / "r" / name).mkdir(parents=True)
        (tmp_path / "r" / name / "Dockerfile").write_text("FROM x\n")
    local = config.RepoSpec(name="r", path=tmp_path / "r")
    cfg = config.Config(tmp_path / "c.yaml", tmp_path / "ws", (local,))
    tree = open_tree(local, sources.SyncResult("r", None), cfg.workspace, {}, {})
    graph = nx.DiGraph()
    graph.add_node("x:latest", kind="base")
    sources_of = {}
    for name in names:
        node = f"r.test/{name}:1"
        attrs = {**ATTRS, "kind": "image", "repo": "r", "commit": None, "context": name,
                 "dockerfile": f"{name}/Dockerfile"}  # fmt: skip
        graph.add_node(node, **attrs)
        sources_of[node] = keys.source_key(node, attrs, tree.content(name))
    tree.close()
    return cfg, graph, sources_of


def test_changed_sources_names_only_images_graphbuild_built_and_still_served(tmp_path):
    """An image is judged by its source only when graphbuild built what the registry serves
    and recorded that build's source; every other image is left to detection."""
    cfg, graph, sources_of = _built_fleet(tmp_path, ("built", "older", "never", "moved"))
    with State(cfg.workspace) as state:
        state.record_build("r.test/built:1", "sha256:built", {}, "run", key="k",
                           source=sources_of["r.test/built:1"])  # fmt: skip
        state.record_build("r.test/older:1", "sha256:older", {}, "run")  # before sources: None
        state.record_build("r.test/moved:1", "sha256:moved", {}, "run", key="k", source="old")
        for name in ("built", "older", "never", "moved"):
            (tmp_path / "r" / name / "new-file").write_text("changed")
        served = {"r.test/built:1": "sha256:built", "r.test/older:1": "sha256:older",
                  "r.test/never:1": "sha256:never",
                  "r.test/moved:1": "sha256:someone-else-pushed"}  # fmt: skip
        changed = keys.changed_sources(cfg, graph, served, state)
        assert changed == {
            "r.test/built:1": "its Dockerfile, build context or options changed since "
            "graphbuild built it"
        }
        assert keys.changed_sources(cfg, graph, {}, state) == {}  # nothing served: none


def test_an_unchanged_source_is_not_changed_and_an_option_change_is(tmp_path):
    cfg, graph, sources_of = _built_fleet(tmp_path, ("a",))
    with State(cfg.workspace) as state:
        state.record_build("r.test/a:1", "sha256:a", {}, "run", key="k",
                           source=sources_of["r.test/a:1"])  # fmt: skip
        served = {"r.test/a:1": "sha256:a"}
        assert keys.changed_sources(cfg, graph, served, state) == {}
        graph.nodes["r.test/a:1"]["build_args"] = {"V": "2"}
        assert list(keys.changed_sources(cfg, graph, served, state)) == ["r.test/a:1"]


def test_a_changed_source_in_a_git_repository_names_the_commit(tmp_path, remotes):
    """The reason says which commit the source is read at, so "why?" can be checked."""
    remote = remotes("r", {"app/Dockerfile": "FROM x\n", "app/f": "1"})
    spec = config.RepoSpec(name="r", url=str(remote.url))
    cfg = config.Config(tmp_path / "c.yaml", tmp_path / "ws", (spec,))
    commit = remote.commit({"app/f": "2"})
    (result,) = sources.sync(cfg)
    assert result.commit == commit
    attrs = {**ATTRS, "kind": "image", "repo": "r", "commit": commit}
    graph = nx.DiGraph()
    graph.add_node("r.test/app:1", **attrs)
    with State(cfg.workspace) as state:
        state.record_build("r.test/app:1", "sha256:app", {}, "run", key="k", source="before")
        changed = keys.changed_sources(cfg, graph, {"r.test/app:1": "sha256:app"}, state)
        assert changed == {
            "r.test/app:1": "its Dockerfile, build context or options changed since graphbuild "
            f"built it (now at commit {commit[:12]})"
        }
        shutil.rmtree(sources.clone_dir(cfg.workspace, "r"))  # the clone is gone
        changed = keys.changed_sources(cfg, graph, {"r.test/app:1": "sha256:app"}, state)
        assert changed == {
            "r.test/app:1": "its repository's clone cannot be read (NoSuchPathError) "
            f"(now at commit {commit[:12]})"
        }


def test_an_image_of_a_repository_no_longer_in_the_config_is_not_judged(tmp_path):
    cfg, graph, _ = _built_fleet(tmp_path, ("a",))
    graph.nodes["r.test/a:1"]["repo"] = "gone"
    with State(cfg.workspace) as state:
        state.record_build("r.test/a:1", "sha256:a", {}, "run", key="k", source="old")
        assert keys.changed_sources(cfg, graph, {"r.test/a:1": "sha256:a"}, state) == {}
