"""Builders: one small protocol (build, push, return the pushed digest, log to a file).

The executor hands each builder a BuildRequest whose Dockerfile is already
pinned to exact parent digests, and gets back the digest it pushed. Builders
are plug-ins: the core never imports one by name; `make(spec, azure)` picks one
from repos.yaml's `builder:` section, which config.py reads into one record per
kind. Every command is an argv list; no shell ever sees repository content.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from graphbuild.config import AcrSpec, AzureSpec, BuildahSpec, BuilderSpec, CommandSpec, DockerSpec
from graphbuild.errors import GraphbuildError

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class BuildRequest:
    image: str  # the graph node
    tags: tuple[str, ...]  # full references to push, the node's first
    context: Path
    dockerfile: Path  # the pinned copy
    build_args: Mapping[str, str] = field(default_factory=dict)
    # name -> value of the secret build args: given to the tool by environment (or marked
    # secret to ACR), never on a command line, in a log or in this record's repr
    secret_args: Mapping[str, str] = field(default_factory=dict, repr=False)
    target: str | None = None
    platforms: tuple[str, ...] = ()
    # named build contexts as `--build-context name=value` takes them: an image pinned by
    # digest (`docker-image://name:tag@sha256:…`) or a folder written beside the context
    contexts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    log: Path = Path("/dev/null")
    insecure_pull: bool = False  # a parent's registry is a plain-http loopback one
    insecure_push: bool = False  # the image's own registry is


class Builder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def program(self) -> str | None:
        """The executable it runs, checked before a run starts; None: a service."""
        ...

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        """Build and push; return the pushed digest. Raise CommandFailed; stop when cancelled."""
        ...


def read_digest(path: Path) -> str:
    """The digest a build command wrote to `path`; "" when it wrote none, or anything but a
    sha256 digest (bytes that are not text included: the command's mistake, not a crash)."""
    try:
        text = path.read_bytes().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return ""
    return text if _DIGEST_RE.fullmatch(text) else ""


def make(spec: BuilderSpec, azure: AzureSpec | None = None) -> Builder:
    """The builder repos.yaml asks for (`builder: {kind: …}`, checked by config.py); the
    acr builder builds in the registry of `azure:`.

    A builder that is not installed is bad input, said once before any run starts,
    not a failure of every image in it.
    """
    from graphbuild.builders import acr, buildah, command, docker

    builder: Builder
    match spec:
        case BuildahSpec():
            builder = buildah.Buildah(spec)
        case DockerSpec():
            builder = docker.Docker(spec)
        case CommandSpec():
            builder = command.Command(spec)
        case AcrSpec():
            assert azure is not None  # config.py refuses builder.kind acr without `azure:`
            builder = acr.Acr(spec, azure)
    if builder.program is not None and shutil.which(builder.program) is None:
        raise GraphbuildError(
            f"builder.kind {builder.name}: {builder.program} is not installed or not on PATH "
            "(see docs/config.md, builder)"
        )
    return builder
