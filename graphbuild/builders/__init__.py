"""Builders: one small protocol (build, push, return the pushed digest, log to a file).

The executor hands each builder a BuildRequest whose Dockerfile is already
pinned to exact parent digests, and gets back the digest it pushed. Builders
are plug-ins: the core never imports one by name; `make(spec)` picks one from
repos.yaml's `builder:` section. Every command is an argv list; no shell ever
sees repository content.
"""

from __future__ import annotations

import re
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
    insecure: bool = False  # a registry it pulls from or pushes to is a plain-http loopback one


class Builder(Protocol):
    name: str

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
            process = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as err:
            raise BuildFailed(f"{what}: cannot run {argv[0]} ({err.strerror})") from None
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                    raise BuildFailed(f"{what}: cancelled") from None
    if code != 0:
        with log.open("rb") as written:
            written.seek(max(start, log.stat().st_size - 4000))
            tail = written.read().decode("utf-8", "replace")
        transient = bool(_TRANSIENT_RE.search(tail))
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise BuildFailed(f"{what} exited {code}: {last[:300]}", transient)


def make(spec: Mapping[str, Any]) -> Builder:
    """The builder repos.yaml asks for (`builder: {kind: …}`, checked by config.py)."""
    from graphbuild.builders import buildah, command, docker

    kinds = {"buildah": buildah.Buildah, "docker": docker.Docker, "command": command.Command}
    options = {k: v for k, v in spec.items() if k != "kind"}
    return kinds[spec.get("kind", "buildah")](**options)
