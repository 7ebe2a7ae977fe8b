"""Builders: one small protocol (build, push, return the pushed digest, log to a file).

The executor hands each builder a BuildRequest whose Dockerfile is already
pinned to exact parent digests, and gets back the digest it pushed. Builders
are plug-ins: the core never imports one by name; `make(spec)` picks one from
repos.yaml's `builder:` section. Every command is an argv list; no shell ever
sees repository content.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from graphbuild.errors import GraphbuildError

# Log lines that mean "try again later", not "this Dockerfile is broken".
_TRANSIENT_RE = re.compile(
    r"connection refused|connection reset|i/o timeout|tls handshake timeout|timed out|"
    r"temporary failure in name resolution|too many requests|\b429\b|\b50[234]\b|"
    r"unexpected eof|no route to host|service unavailable|bad gateway",
    re.IGNORECASE,
)


class BuildFailed(GraphbuildError):
    """A build or push failed; `transient` ones are worth retrying."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class BuildRequest:
    image: str  # the graph node
    tags: tuple[str, ...]  # full references to push, the node's first
    context: Path
    dockerfile: Path  # the pinned copy
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platforms: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    log: Path = Path("/dev/null")
    insecure_pull: bool = False  # a parent's registry is a plain-http loopback one
    insecure_push: bool = False  # the image's own registry is


class Builder(Protocol):
    name: str
    program: str  # the executable it runs: checked before a run starts

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        """Build and push; return the pushed digest. Raise BuildFailed; stop when cancelled."""
        ...


def run(argv: Sequence[str], log: Path, cancel: threading.Event, what: str) -> None:
    """Run one command with its output appended to `log`; stop it if `cancel` is set."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()  # what this command writes: earlier attempts are not its output
        try:
            # its own process group: a Ctrl-C in the terminal reaches graphbuild, which
            # lets running builds finish, and never the builds themselves
            process = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0,
            )  # fmt: skip
        except OSError as err:
            raise BuildFailed(f"{what}: cannot run {argv[0]} ({err.strerror})") from None
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    _signal(process, signal.SIGTERM)
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        _signal(process, signal.SIGKILL)
                        process.wait()
                    raise BuildFailed(f"{what}: cancelled") from None
    if code != 0:
        with log.open("rb") as written:
            written.seek(max(start, log.stat().st_size - 4000))
            tail = written.read().decode("utf-8", "replace")
        transient = bool(_TRANSIENT_RE.search(tail))
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise BuildFailed(f"{what} exited {code}: {last[:300]}", transient)


def _signal(process: subprocess.Popen, signum: int) -> None:
    """The whole group: a builder's helpers (buildah's chroot children) stop with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def make(spec: Mapping[str, Any]) -> Builder:
    """The builder repos.yaml asks for (`builder: {kind: …}`, checked by config.py).

    A builder that is not installed is bad input, said once before any run starts,
    not a failure of every image in it.
    """
    from graphbuild.builders import buildah, command, docker

    kinds = {"buildah": buildah.Buildah, "docker": docker.Docker, "command": command.Command}
    options = {k: v for k, v in spec.items() if k != "kind"}
    builder: Builder = kinds[spec.get("kind", "buildah")](**options)
    if shutil.which(builder.program) is None:
        raise GraphbuildError(
            f"builder.kind {builder.name}: {builder.program} is not installed or not on PATH "
            "(see docs/config.md, builder)"
        )
    return builder
