"""Deployers: one small protocol (show a change, then make it) over the places images run.

`gitops` writes the new digest into a deploy repository and pushes; a GitOps
controller (Argo CD, Flux) rolls it out. `kubectl` patches a workload in its
cluster and waits for the rollout. The rollout (rollout.py) groups changes by
ring and deployer and never imports a deployer by name: `make(kind, ...)`
picks it.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from graphbuild.config import Config
from graphbuild.errors import GraphbuildError
from graphbuild.state import DeployStatus
from graphbuild.workloads import GITOPS, Workload


@dataclass(frozen=True)
class Change:
    """Point one workload at one validated image, by digest."""

    workload: Workload
    node: str  # the image node that was rebuilt
    tag: str | None  # the tag to keep in the reference, where one is written
    digest: str

    @property
    def reference(self) -> str:
        """`name:tag@sha256:…`: readable, and pinned to exactly what was validated."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.workload.image}{tag}@{self.digest}"


@dataclass(frozen=True)
class Applied:
    change: Change
    status: DeployStatus
    detail: str = ""  # the commit pushed, the command run, or what went wrong


@dataclass(frozen=True)
class Context:
    """What a deployer needs to know about the rollout step it is part of."""

    run_id: str
    ring: str
    reason: str  # why these images were rebuilt: goes into commit messages
    log: Path
    cancel: threading.Event
    workspace: Path


class Deployer(Protocol):
    name: str
    batched: bool  # True: one apply for all of a ring's changes (one commit); else one each

    def preview(self, changes: list[Change], context: Context) -> list[str]:
        """What `apply` would do, exactly: file diffs, or the commands it would run."""
        ...

    def apply(self, changes: list[Change], context: Context) -> list[Applied]:
        """Make the changes; one Applied per change. A change already in place is UNCHANGED,
        and costs nothing (no empty commit, no rollout)."""
        ...


def check(config: Config) -> None:
    """Before a run starts, not at its prod ring: a deployer that cannot run is bad input."""
    if config.deployments.workloads and shutil.which("kubectl") is None:
        raise GraphbuildError(
            f"{config.file}: deployments.workloads: kubectl is not installed or not on PATH"
        )


def make(kind: str, config: Config) -> Deployer:
    """The deployer for a workload kind."""
    from graphbuild.deployers import gitops, kubectl

    if kind == GITOPS:
        return gitops.Gitops({spec.name: spec for spec in config.deployments.repos})
    return kubectl.Kubectl()
