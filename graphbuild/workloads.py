"""Which workloads run which image: found in deploy repositories, or listed by hand.

A sync reads every configured deploy repository at its branch and records
each image reference its manifests hold (Kubernetes containers, kustomize
`images:`, Helm values, in files or inline in HelmReleases, Argo CD
Applications and kustomize helmCharts, and the images Argo CD and Flux set
themselves: kustomize images and Helm parameters) with the ring its path belongs to; a
ConfigMap is Helm values when a HelmRelease anywhere in the repository takes
values from it (Flux's bases and overlays); repos.yaml adds
workloads patched with kubectl. Matching a workload to a graph node is by
repository and tag, or by a digest graphbuild itself built.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from graphbuild import deploy_yaml, indexdb, refs, sources, trees
from graphbuild.config import Config, DeployRepoSpec
from graphbuild.errors import ERROR, WARNING, CloneDamaged, InvalidReference, Problem

GITOPS, KUBECTL = "gitops", "kubectl"
# What discovery reads, by version: a commit read by an older graphbuild is read again.
# 2: inline Helm values, block scalars, YAML as go-yaml reads it (tabs).
# 3: images Argo CD and Flux set themselves (kustomize.images, helm.parameters, Flux
# Kustomization images, HelmRelease postRenderers); Argo CD's values string only without
# a valuesObject.
_READS = 3
_PATTERNS = ("**/*.yaml", "**/*.yml", "**/kustomization", "**/Kustomization")


@dataclass(frozen=True)
class Workload:
    deployer: str  # GITOPS | KUBECTL
    ring: str
    image: str  # the repository it runs, normalised: localhost:5000/shop/web
    tag: str | None
    digest: str | None
    name: str  # what people call it: Deployment/shop/web (web), or the repos.yaml name
    where: str  # deploy:envs/dev/web.yaml:12, or repos.yaml's key
    repo: str | None = None  # GITOPS: the deploy repository and the reference in it
    file: str | None = None
    found: deploy_yaml.Found | None = None
    kubectl: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across syncs while the reference stays where it is."""
        if self.found is None:
            return f"{KUBECTL}:{self.name}"
        path = ".".join(str(p) for p in self.found.path)
        return f"{self.repo}:{self.file}#{self.found.doc}:{path}"

    def runs(self, image: str, tags: Iterable[str], built: Iterable[str] = ()) -> bool:
        """Does this workload run the image `image` (repository) with one of `tags`, or
        one of the digests graphbuild built for it?"""
        if image != self.image:
            return False
        if self.tag is not None:
            return self.tag in tags
        if self.digest is not None:
            return self.digest in built
        return "latest" in tags


def running(
    targets: Iterable[Workload], attrs: indexdb.ImageNode, built: Iterable[str] = ()
) -> list[Workload]:
    """The workloads that run an image node (its graph attributes), of those in `targets`."""
    tags = {tag for t in attrs["tags"] if (tag := refs.parse(t).tag) is not None}
    digests = set(built)
    return [w for w in targets if w.runs(attrs["image"], tags, digests)]


def listed(config: Config) -> list[Workload]:
    """The workloads repos.yaml names by hand (kubectl)."""
    return [
        Workload(KUBECTL, w.ring, w.image, w.tag, None, w.name, w.key, kubectl=w.kubectl)
        for w in config.deployments.workloads
    ]


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


# ---------------------------------------------------------------- kept in index.db


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
        indexdb.keep_deploy_repo(db, spec.name, key, json.dumps([_row(w) for w in found]),
                                 json.dumps([p.__dict__ for p in trouble]))  # fmt: skip
    return problems


def load(db: sqlite3.Connection, config: Config) -> list[Workload]:
    """Every workload graphbuild deploys to: found in deploy repositories, and listed."""
    found = []
    for stored in indexdb.deploy_workloads(db):  # read only: a query must not write
        found += [_workload(row) for row in json.loads(stored)]
    return found + listed(config)


def _read(tree: trees.Tree, path: str) -> str:
    """A manifest's text; its size is known before it is read, so a blob of any size costs no
    memory."""
    size = tree.size(path)
    if size > deploy_yaml.MAX_BYTES:
        raise deploy_yaml.ManifestError(deploy_yaml.too_big(size))
    return tree.read(path).decode("utf-8")


def _row(workload: Workload) -> dict:
    return asdict(workload)


def _workload(row: dict) -> Workload:
    item = row["found"]
    found = deploy_yaml.Found(**{**item, "path": tuple(item["path"])}) if item else None
    return Workload(**{**row, "found": found})
