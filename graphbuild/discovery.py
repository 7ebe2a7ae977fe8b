"""Deploy repositories read for the workloads they deploy: each image reference their
manifests hold, with the ring its path belongs to, kept in index.db by commit.

Kept apart from workloads.py, which only models and matches workloads: a query that
asks which workloads run an image reads the stored ones and needs none of this (the
YAML reader, git).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable

from graphbuild import deploy_yaml, indexdb, refs, sources, trees
from graphbuild.config import Config, DeployRepoSpec
from graphbuild.errors import ERROR, WARNING, CloneDamaged, InvalidReference, Problem
from graphbuild.workloads import GITOPS, Workload, as_row

# What discovery reads, by version: a commit read by an older graphbuild is read again.
# 2: inline Helm values, block scalars, YAML as go-yaml reads it (tabs).
# 3: images Argo CD and Flux set themselves (kustomize.images, helm.parameters, Flux
# Kustomization images, HelmRelease postRenderers); Argo CD's values string only without
# a valuesObject.
_READS = 3
_PATTERNS = ("**/*.yaml", "**/*.yml", "**/kustomization", "**/Kustomization")


def ring_of(spec: DeployRepoSpec, path: str) -> str | None:
    """The first ring whose globs match `path`; None: graphbuild does not deploy it."""
    for ring, patterns in spec.rings.items():
        if any(trees.glob_regex(p).match(path) for p in patterns):
            return ring
    return None


def discover(spec: DeployRepoSpec, tree: trees.Tree) -> tuple[list[Workload], list[Problem]]:
    """Every image reference in one deploy repository's manifests that lies in a ring."""
    found: list[Workload] = []
    problems: list[Problem] = []
    paths = sorted({p for pattern in _PATTERNS for p in tree.glob(pattern)})
    read: list[tuple[str, str, str | Problem]] = []  # each file in a ring: path, ring, text
    held: list[deploy_yaml.Held] = []  # ConfigMaps of Helm values, named by HelmReleases anywhere
    for path in paths:
        ring = ring_of(spec, path)
        text: str | Problem
        try:
            text = _read(tree, path)
        except UnicodeDecodeError as err:
            text = Problem(WARNING, spec.name, f"not read: {err}", path)
        except deploy_yaml.ManifestError as err:
            text = Problem(WARNING, spec.name, f"not read: {err.message}", path, err.line)
        if ring is not None:
            read.append((path, ring, text))
        if isinstance(text, str) and "valuesFrom" in text:
            with contextlib.suppress(deploy_yaml.ManifestError):  # said below if in a ring
                held += deploy_yaml.values_from(path, text)
    for path, ring, text in read:
        if isinstance(text, Problem):
            problems.append(text)
            continue
        try:
            located = deploy_yaml.find(path, text, held)
        except deploy_yaml.ManifestError as err:
            problems.append(Problem(WARNING, spec.name, f"not read: {err.message}", path, err.line))
            continue
        for item in located:
            if item.kind != deploy_yaml.CONTAINER and not item.tag and not item.digest:
                # the tag comes from elsewhere (kustomize's base, the chart's appVersion):
                # which image this runs is not written here
                message = f"{item.name}: no tag or digest here, so not deployed by graphbuild"
                problems.append(Problem(WARNING, spec.name, message, path, item.line))
                continue
            try:
                image = refs.parse(item.name).name
            except InvalidReference as err:
                problems.append(Problem(WARNING, spec.name, err.reason, path, item.line))
                continue
            name = item.workload + (f" ({item.container})" if item.container else "")
            where = f"{spec.name}:{path}:{item.line}"
            found.append(Workload(GITOPS, ring, image, item.tag, item.digest, name, where,
                                  spec.name, path, item))  # fmt: skip
    return found, problems


def refresh(
    db: sqlite3.Connection, config: Config, synced: Iterable[sources.SyncResult]
) -> list[Problem]:
    """Re-read the deploy repositories whose commit (or ring globs, or what discovery reads)
    changed since last time."""
    results = {r.repo: r for r in synced}
    problems: list[Problem] = []
    wanted = {spec.name for spec in config.deployments.repos}
    indexdb.forget_deploy_repos(db, [r for r in indexdb.deploy_repos(db) if r not in wanted])
    for spec in config.deployments.repos:
        result = results.get(spec.name)
        if result is None or result.commit is None:
            error = result.error if result else "not synced"
            problems.append(Problem(ERROR, spec.name, f"deploy repository not read: {error}"))
            continue
        if result.error:  # what it had before is read, and deploying to it will fail
            problems.append(Problem(ERROR, spec.name, result.error))
        key = json.dumps([result.commit, spec.rings, _READS], sort_keys=True)
        stored = indexdb.deploy_repo(db, spec.name)
        if stored and stored[0] == key:
            problems += [Problem(**p) for p in json.loads(stored[1])]
            continue
        try:
            tree = trees.open_tree(spec.source, result, config.workspace, {}, {})
            try:
                found, trouble = discover(spec, tree)
            finally:
                tree.close()
        except CloneDamaged as err:  # what it had before is kept; the next sync fetches anew
            problems.append(Problem(ERROR, spec.name, str(err)))
            continue
        problems += trouble
        indexdb.keep_deploy_repo(db, spec.name, key, json.dumps([as_row(w) for w in found]),
                                 json.dumps([p.__dict__ for p in trouble]))  # fmt: skip
    return problems


def _read(tree: trees.Tree, path: str) -> str:
    """A manifest's text; its size is known before it is read, so a blob of any size costs no
    memory."""
    size = tree.size(path)
    if size > deploy_yaml.MAX_BYTES:
        raise deploy_yaml.ManifestError(deploy_yaml.too_big(size))
    return tree.read(path).decode("utf-8")
