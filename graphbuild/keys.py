"""What a build is, as a content address (design rule 1).

An image's *source* is everything of its own that goes into a build: the
image, its Dockerfile (path and blob), the content of its build context,
build args, target, platforms, and its named contexts (the content of each
folder one). Its *key* adds the exact digest of every parent it is built on,
an image that comes through a named context included. A key built once,
whose image the registry still serves, needs no build; an image whose source
differs from the one graphbuild last built it from needs one, even when no
base moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import networkx as nx

from graphbuild import sources, trees
from graphbuild.config import Config, RepoSpec
from graphbuild.graph import image_data, node_items
from graphbuild.index import BuildOptions
from graphbuild.indexdb import IMAGE, ImageNode
from graphbuild.state import Build, State


def source_key(
    node: str, attrs: ImageNode, content: str, folders: Mapping[str, str] | None = None
) -> str:
    """The image's own inputs; `content` is its context's (trees.Tree.content), `folders`
    the content of each named context that is a folder, by name."""
    o = BuildOptions.of(attrs)
    inputs = [node, o.dockerfile, attrs["blob"], o.context, content,
              sorted(o.build_args.items()), o.target, list(o.platforms)]  # fmt: skip
    if o.contexts:  # without them, the key is what it was before contexts were built
        inputs += [sorted(o.contexts.items()), sorted((folders or {}).items())]
    if o.secret_build_args:  # which variables, not their values: a new token is no new build
        inputs.append(sorted(o.secret_build_args.items()))
    return _digest(inputs)


def folder_contents(tree: trees.Tree, options: BuildOptions) -> dict[str, str]:
    """The content of each named context that is a folder, as `source_key` takes them."""
    return {name: tree.content(folder) for name, folder in options.folders.items()}


def build_key(source: str, parents: Mapping[str, str]) -> str:
    """Same source on the same parent digests: the same build."""
    return _digest([source, sorted(parents.items())])


def changed_sources(
    config: Config, graph: nx.DiGraph[str], served: Mapping[str, str], state: State
) -> dict[str, str]:
    """Images graphbuild built, still served as it built them, whose source has changed since.

    Images graphbuild never built are left to detection: adopting graphbuild
    must not rebuild a fleet that is up to date.
    """
    records = {}
    for node, attrs in node_items(graph):
        if attrs["kind"] == IMAGE and node in served:
            record = state.build_of(node, served[node])
            if record is not None and record.source is not None:
                records[node] = record
    by_repo: dict[str, list[str]] = {}
    for node in records:
        by_repo.setdefault(image_data(graph, node)["repo"], []).append(node)
    repos = {repo.name: repo for repo in config.repos}
    changed = {}
    for name, nodes in sorted(by_repo.items()):
        if name in repos:
            changed.update(_changed_in(config, repos[name], nodes, graph, records))
    return changed


def _changed_in(
    config: Config,
    repo: RepoSpec,
    nodes: list[str],
    graph: nx.DiGraph[str],
    records: Mapping[str, Build],
) -> dict[str, str]:
    """The images of one repository whose source changed. One whose source cannot be read
    (a clone gone bad, a context unreadable since) is planned too: its build then fails
    naming the cause, and nothing else is held up (the blast radius of a repository)."""
    from git.exc import GitError

    commit = image_data(graph, nodes[0])["commit"]
    at = f" (now at commit {commit[:12]})" if commit else ""
    changed = {}
    try:
        tree = trees.open_tree(repo, sources.SyncResult(repo.name, commit), config.workspace,
                                 {}, {})  # fmt: skip
    except (GitError, OSError) as err:
        why = f"its repository's clone cannot be read ({type(err).__name__}){at}"
        return dict.fromkeys(nodes, why)
    try:
        for node in nodes:
            attrs = image_data(graph, node)
            try:
                content = tree.content(attrs["context"])
                folders = folder_contents(tree, BuildOptions.of(attrs))
            except (GitError, OSError) as err:
                changed[node] = f"its build context cannot be read ({err}){at}"
                continue
            if source_key(node, attrs, content, folders) != records[node].source:
                changed[node] = (
                    f"its Dockerfile, build context or options changed since graphbuild "
                    f"built it{at}"
                )
    finally:
        tree.close()
    return changed


def _digest(inputs: list[Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
