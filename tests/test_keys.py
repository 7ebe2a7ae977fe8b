"""Build identity: a context's content digest, the image's source, the key over parents."""

from __future__ import annotations

import os

from graphbuild import config, keys, sources
from graphbuild.index import BuildOptions

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
    git_tree = sources.open_tree(spec, result, workspace, {}, {})
    local = config.RepoSpec(name="r", path=remote.work)
    dir_tree = sources.open_tree(local, sources.SyncResult("r", None), workspace, {}, {})
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
    tree = sources.open_tree(local, sources.SyncResult("r", None), cfg.workspace, {}, {})
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
