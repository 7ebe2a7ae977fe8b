"""buildah: builds and pushes without a Docker engine or daemon (`--isolation chroot`).

buildah writes the OCI base annotations (base.name, base.digest) into every
manifest it pushes; graphbuild adds its own run and reason on top.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading

from graphbuild.builders import BuildRequest, read_digest
from graphbuild.config import BuildahSpec
from graphbuild.errors import CommandFailed
from graphbuild.process import run


class Buildah:
    name = program = "buildah"

    def __init__(self, spec: BuildahSpec) -> None:
        self.isolation = spec.isolation
        self.store = ["--storage-driver", spec.storage_driver]
        if spec.root:
            self.store += ["--root", spec.root]
        if spec.runroot:
            self.store += ["--runroot", spec.runroot]

    def bud_argv(self, request: BuildRequest) -> list[str]:
        argv = ["buildah", *self.store, "bud", "--isolation", self.isolation, "--quiet",
                "-f", str(request.dockerfile), *_plain(request.insecure_pull)]  # fmt: skip
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        for key in request.secret_args:  # no value: buildah reads it from its environment
            argv += ["--build-arg", key]
        if request.target:
            argv += ["--target", request.target]
        for name, value in request.contexts.items():
            argv += ["--build-context", f"{name}={value}"]
        for key, value in request.labels.items():
            argv += ["--label", f"{key}={value}"]
        for key, value in request.annotations.items():
            argv += ["--annotation", f"{key}={value}"]
        if request.no_cache:
            argv.append("--no-cache")
        if len(request.platforms) > 1:  # one manifest list holding an image per platform
            argv += ["--manifest", _local_list(request), "--platform", ",".join(request.platforms)]
        else:
            argv += ["-t", request.tags[0]]
            argv += ["--platform", request.platforms[0]] if request.platforms else []
        return [*argv, str(request.context)]

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        multi = len(request.platforms) > 1
        try:
            run(
                self.bud_argv(request),
                request.log,
                cancel,
                f"buildah bud {request.image}",
                env=request.secret_args,
            )
            return self._push(request, cancel)
        finally:
            if multi:  # a later build must start a new list, not add to this one
                rm = ["buildah", *self.store, "manifest", "rm", _local_list(request)]
                subprocess.run(rm, capture_output=True, check=False)

    def _push(self, request: BuildRequest, cancel: threading.Event) -> str:
        multi = len(request.platforms) > 1
        verb = ["manifest", "push", "--all"] if multi else ["push"]
        source = _local_list(request) if multi else request.tags[0]
        digest = ""
        for tag in request.tags:
            digestfile = request.log.with_suffix(".digest")
            digestfile.unlink(missing_ok=True)
            push = [
                "buildah", *self.store, *verb, *_plain(request.insecure_push), "--quiet",
                "--digestfile", str(digestfile), source, f"docker://{tag}",
            ]  # fmt: skip
            run(push, request.log, cancel, f"buildah push {tag}")
            pushed = read_digest(digestfile)
            if not pushed.startswith("sha256:") or (digest and pushed != digest):
                raise CommandFailed(f"buildah push {tag}: no consistent digest ({pushed!r})")
            digest = pushed
        return digest


def _plain(insecure: bool) -> list[str]:
    """Plain http: config.py allows it for loopback registries only. A pull is pinned by
    digest, so its content is verified either way; a push sends credentials."""
    return ["--tls-verify=false"] if insecure else []


def _local_list(request: BuildRequest) -> str:
    """The local manifest list of one build: named for its log, which is unique per run."""
    return f"localhost/graphbuild-list:{hashlib.sha256(bytes(request.log)).hexdigest()[:20]}"
