"""Which workloads run which image: the references found in deploy repositories (by
discovery.py, kept in index.db) and the workloads repos.yaml lists for kubectl.

Matching a workload to a graph node is by repository and tag, or by a digest
graphbuild itself built. This module is what a query needs to answer "where does this
image run": it reads stored workloads and imports neither the YAML reader nor git.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from graphbuild import indexdb, refs
from graphbuild.config import Config

GITOPS, KUBECTL = "gitops", "kubectl"
Path = tuple[str | int, ...]  # of a node inside its YAML document


@dataclass(frozen=True)
class Found:
    """One image reference in one file."""

    kind: str  # deploy_yaml.CONTAINER | KUSTOMIZE | HELM | INLINE | OVERRIDE
    line: int  # 1-based
    name: str  # the repository as written: kustomize newName, helm registry/repository
    tag: str | None
    digest: str | None
    # "Kind/namespace/name", "kustomization", a helm key path "frontend.image", or (INLINE)
    # where the values are and the key path in them: "HelmRelease/ns/web:frontend.image"
    workload: str
    container: str | None
    doc: int  # 0-based document in the file
    path: Path  # of the located node inside its document (and on inside a values string)


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
    found: Found | None = None
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


# ---------------------------------------------------------------- kept in index.db


def load(db: sqlite3.Connection, config: Config) -> list[Workload]:
    """Every workload graphbuild deploys to: found in deploy repositories, and listed."""
    found = []
    for stored in indexdb.deploy_workloads(db):  # read only: a query must not write
        found += [_workload(row) for row in json.loads(stored)]
    return found + listed(config)


def as_row(workload: Workload) -> dict:
    return asdict(workload)


def _workload(row: dict) -> Workload:
    item = row["found"]
    found = Found(**{**item, "path": tuple(item["path"])}) if item else None
    return Workload(**{**row, "found": found})
