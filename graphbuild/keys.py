"""What a build is, as a content address (design rule 1).

An image's *source* is everything of its own that goes into a build: the
image, its Dockerfile (path and blob), the content of its build context,
build args, target and platforms. Its *key* adds the exact digest of every
parent it is built on. A key built once, whose image the registry still
serves, needs no build; an image whose source differs from the one
graphbuild last built it from needs one, even when no base moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import networkx as nx

from graphbuild import sources
from graphbuild.config import Config
from graphbuild.graphdb import IMAGE
from graphbuild.state import State


def source_key(node: str, attrs: Mapping, content: str) -> str:
    """The image's own inputs; `content` is its context's (sources.Tree.content)."""
    inputs = [node, attrs["dockerfile"], attrs["blob"], attrs["context"], content,
              sorted(attrs["build_args"].items()), attrs["target"], attrs["platforms"]]  # fmt: skip
    return _digest(inputs)


def build_key(source: str, parents: Mapping[str, str]) -> str:
    """Same source on the same parent digests: the same build."""
    return _digest([source, sorted(parents.items())])


def changed_sources(
    config: Config, graph: nx.DiGraph, served: Mapping[str, str], state: State
) -> dict[str, str]:
    """Images graphbuild built, still served as it built them, whose source has changed since.

    Images graphbuild never built are left to detection: adopting graphbuild
    must not rebuild a fleet that is up to date.
    """
    records = {}
    for node, attrs in graph.nodes(data=True):
        if attrs["kind"] == IMAGE and node in served:
            record = state.build_of(node, served[node])
            if record is not None and record.source is not None:
                records[node] = record
    by_repo: dict[str, list[str]] = {}
    for node in records:
        by_repo.setdefault(graph.nodes[node]["repo"], []).append(node)
    repos = {repo.name: repo for repo in config.repos}
    changed = {}
    for name, nodes in sorted(by_repo.items()):
        commit = graph.nodes[nodes[0]]["commit"]
        if name not in repos:
            continue
        result = sources.SyncResult(name, commit)
        tree = sources.open_tree(repos[name], result, config.workspace, {}, {})
        try:
            for node in nodes:
                attrs = graph.nodes[node]
                if source_key(node, attrs, tree.content(attrs["context"])) != records[node].source:
                    at = f" (now at commit {commit[:12]})" if commit else ""
                    changed[node] = (
                        f"its Dockerfile, build context or options changed since graphbuild "
                        f"built it{at}"
                    )
        finally:
            tree.close()
    return changed


def _digest(inputs: list) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
