"""buildah: builds and pushes without a Docker engine or daemon (`--isolation chroot`).

buildah writes the OCI base annotations (base.name, base.digest) into every
manifest it pushes; graphbuild adds its own run and reason on top.
"""

from __future__ import annotations

import threading

from graphbuild.builders import BuildFailed, BuildRequest, run


class Buildah:
    name = "buildah"

    def __init__(
        self,
        isolation: str = "chroot",
        storage_driver: str = "vfs",
        root: str | None = None,
        runroot: str | None = None,
    ) -> None:
        self.isolation = isolation
        self.store = ["--storage-driver", storage_driver]
        if root:
            self.store += ["--root", root]
        if runroot:
            self.store += ["--runroot", runroot]

    def bud_argv(self, request: BuildRequest) -> list[str]:
        argv = ["buildah", *self.store, "bud", "--isolation", self.isolation, "--quiet",
                "-f", str(request.dockerfile), *self._plain(request)]  # fmt: skip
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        if request.target:
            argv += ["--target", request.target]
        for key, value in request.labels.items():
            argv += ["--label", f"{key}={value}"]
        for key, value in request.annotations.items():
            argv += ["--annotation", f"{key}={value}"]
        if request.no_cache:
            argv.append("--no-cache")
        if len(request.platforms) > 1:  # one manifest list holding an image per platform
            argv += ["--manifest", request.tags[0], "--platform", ",".join(request.platforms)]
        else:
            argv += ["-t", request.tags[0]]
            argv += ["--platform", request.platforms[0]] if request.platforms else []
        return [*argv, str(request.context)]

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        run(self.bud_argv(request), request.log, cancel, f"buildah bud {request.image}")
        verb = ["manifest", "push", "--all"] if len(request.platforms) > 1 else ["push"]
        digest = ""
        for tag in request.tags:
            digestfile = request.log.with_suffix(".digest")
            digestfile.unlink(missing_ok=True)
            push = [
                "buildah", *self.store, *verb, *self._plain(request), "--quiet",
                "--digestfile", str(digestfile), request.tags[0], f"docker://{tag}",
            ]  # fmt: skip
            run(push, request.log, cancel, f"buildah push {tag}")
            pushed = digestfile.read_text().strip() if digestfile.exists() else ""
            if not pushed.startswith("sha256:") or (digest and pushed != digest):
                raise BuildFailed(f"buildah push {tag}: no consistent digest ({pushed!r})")
            digest = pushed
        return digest

    @staticmethod
    def _plain(request: BuildRequest) -> list[str]:
        return ["--tls-verify=false"] if request.insecure else []
