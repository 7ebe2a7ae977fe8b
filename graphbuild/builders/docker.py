"""docker buildx: BuildKit through a Docker engine (or a remote buildx builder).

Not runnable on graphbuild's own test machine (it has no Docker engine); its
argv is tested, and it follows the same protocol as the builders that run.
"""

from __future__ import annotations

import json
import threading

from graphbuild.builders import BuildRequest
from graphbuild.config import DockerSpec
from graphbuild.errors import CommandFailed
from graphbuild.process import run


class Docker:
    name = program = "docker"

    def __init__(self, spec: DockerSpec) -> None:
        self.builder = spec.builder  # a `docker buildx` builder instance; else the current one

    def argv(self, request: BuildRequest, metadata: str) -> list[str]:
        argv = ["docker", "buildx", "build", "--push", "--metadata-file", metadata,
                "--file", str(request.dockerfile), "--provenance=false"]  # fmt: skip
        if self.builder:
            argv += ["--builder", self.builder]
        for tag in request.tags:
            argv += ["--tag", tag]
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key in request.secret_args:  # no value: docker reads it from its environment
            argv += ["--build-arg", key]
        if request.target:
            argv += ["--target", request.target]
        if request.platforms:
            argv += ["--platform", ",".join(request.platforms)]
        for name, value in request.contexts.items():
            argv += ["--build-context", f"{name}={value}"]
        for key, value in request.labels.items():
            argv += ["--label", f"{key}={value}"]
        for key, value in request.annotations.items():  # BuildKit writes no base annotations
            argv += ["--annotation", f"{key}={value}"]
        if request.no_cache:
            argv.append("--no-cache")
        return [*argv, str(request.context)]

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        metadata = request.log.with_suffix(".metadata.json")
        metadata.unlink(missing_ok=True)  # an earlier attempt's digest is not this one's
        run(self.argv(request, str(metadata)), request.log, cancel,
            f"docker buildx {request.image}", env=request.secret_args)  # fmt: skip
        try:
            digest = json.loads(metadata.read_text())["containerimage.digest"]
        except (OSError, ValueError, KeyError) as err:
            raise CommandFailed(
                f"docker buildx {request.image}: no pushed digest ({err})"
            ) from None
        return str(digest)
