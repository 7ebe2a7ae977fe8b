"""acr: builds run on Azure Container Registry Tasks (quick builds), not on this machine.

The build context and the Dockerfile already pinned to its parents' digests are
packed, uploaded through the registry's build-source upload URL, and built by
an ACR run that pushes to the registry. graphbuild follows the run to its end,
copies its log into the run's log file, reads the pushed digest from the run's
output images, and cancels the run when it is itself interrupted. Many runs go
at once under the scheduler's caps, so a wide wave costs the time of its
slowest image. Package and API choice: docs/azure.md.
"""

from __future__ import annotations

import io
import ssl
import tarfile
import threading
from pathlib import Path
from typing import Any

from graphbuild import acr, refs
from graphbuild.builders import BuildRequest
from graphbuild.config import AzureSpec
from graphbuild.errors import CommandFailed, InvalidReference

PINNED = ".graphbuild.Dockerfile"  # where the pinned Dockerfile goes in the uploaded context
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
_TRANSIENT = frozenset({"Error"})  # the service failed, not the Dockerfile


class Acr:
    name = "acr"
    program = None  # nothing to install: the build runs in Azure

    def __init__(
        self,
        resource_group: str,
        registry: str,
        agent_pool: str | None = None,
        timeout: float = 3600,
        poll: float = 3.0,
        **azure: str | None,  # the rest of repos.yaml's `azure:`
    ) -> None:
        self.spec = AzureSpec(resource_group, registry, **azure)
        self.group, self.registry, self.login_server = resource_group, registry, self.spec.server
        self.agent_pool, self.timeout, self.poll = agent_pool, timeout, poll
        self.verify = acr.tls(self.spec)

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        names = [self._name(tag) for tag in request.tags]
        if len(request.platforms) > 1:
            raise CommandFailed(f"acr {request.image}: an ACR quick build makes one platform; "
                                f"{', '.join(request.platforms)} asked for")  # fmt: skip
        with self._client() as client, request.log.open("a") as log:
            run_id = self._schedule(client, request, names, log)
            try:
                run = self._follow(client, run_id, request.log, cancel)
            except _Cancelled:
                client.runs.begin_cancel(self.group, self.registry, run_id).result()
                log.write(f"ACR run {run_id} cancelled\n")
                raise CommandFailed(f"acr {request.image}: cancelled (ACR run {run_id})") from None
        status = run.status
        if status != "Succeeded":
            why = run.run_error_message or "see the log"
            raise CommandFailed(f"acr {request.image}: ACR run {run_id} {status}: {why}",
                                transient=status in _TRANSIENT)  # fmt: skip
        repository, _, tag = names[0].rpartition(":")
        for image in run.output_images or []:
            if image.repository == repository and image.tag == tag and image.digest:
                return str(image.digest)
        raise CommandFailed(f"acr {request.image}: ACR run {run_id} names no digest for {names[0]}")

    def _name(self, tag: str) -> str:
        """`repo:tag` in the registry the run pushes to; ACR pushes nowhere else."""
        try:
            ref = refs.parse(tag)
        except InvalidReference as err:
            raise CommandFailed(f"acr: {err}") from None
        if ref.domain != self.login_server:
            raise CommandFailed(f"acr: {tag} is not in {self.login_server}, the registry that "
                                "builds it; ACR Tasks push only to their own registry")  # fmt: skip
        return f"{ref.path}:{ref.tag}"

    def _client(self) -> Any:
        return acr.client(self.spec, acr.TASKS_API)

    def _schedule(self, client: Any, request: BuildRequest, names: list[str], log: Any) -> str:
        from azure.core.exceptions import AzureError
        from azure.mgmt.containerregistry.v2019_06_01_preview import models

        platform = (request.platforms or ("linux/amd64",))[0].split("/")
        build = models.DockerBuildRequest(
            image_names=names, is_push_enabled=True, no_cache=request.no_cache,
            docker_file_path=PINNED, target=request.target, timeout=int(self.timeout),
            arguments=[models.Argument(name=k, value=v, is_secret=False)
                       for k, v in request.build_args.items()],
            platform=models.PlatformProperties(
                os=platform[0].capitalize(), architecture=platform[1],
                variant=platform[2] if len(platform) > 2 else None),
            agent_pool_name=self.agent_pool,
        )  # fmt: skip
        try:
            build.source_location = self._upload(client, request)
            poller = client.registries.begin_schedule_run(self.group, self.registry, build)
            run = poller.result()
        except AzureError as err:
            message = f"acr {request.image}: {acr.first_line(err)}"
            raise CommandFailed(message, transient=acr.transient(err)) from None
        log.write(f"ACR run {run.run_id} on {self.registry}: {', '.join(names)}\n")
        log.flush()
        return str(run.run_id)

    def _upload(self, client: Any, request: BuildRequest) -> str:
        """The context and the pinned Dockerfile as a tar.gz in the registry's source blob."""
        import httpx

        target = client.registries.get_build_source_upload_url(self.group, self.registry)
        answer = httpx.put(target.upload_url, content=_pack(request.context, request.dockerfile),
                           headers={"x-ms-blob-type": "BlockBlob"}, verify=self.verify,
                           timeout=300)  # fmt: skip
        if answer.status_code >= 300:
            raise CommandFailed(f"acr {request.image}: source upload refused "
                                f"({answer.status_code})", transient=True)  # fmt: skip
        return str(target.relative_path)

    def _follow(self, client: Any, run_id: str, log: Path, cancel: threading.Event) -> Any:
        """Poll the run to a terminal state, copying its log as it grows; raise _Cancelled."""
        import httpx
        from azure.core.exceptions import AzureError

        link, offset, wait, failures = None, 0, self.poll, 0
        while True:
            try:
                run = client.runs.get(self.group, self.registry, run_id)
                if link is None and run.status != "Queued":
                    answer = client.runs.get_log_sas_url(self.group, self.registry, run_id)
                    link = answer.log_link
                if link:
                    offset = _copy_log(link, offset, log, self.verify)
                failures = 0
            except (AzureError, httpx.HTTPError):
                failures += 1  # the SDK has retried already; the run goes on without us
                if failures > 5:
                    raise
                run = None
            if run is not None and run.status in TERMINAL:
                return run
            if cancel.wait(wait):
                raise _Cancelled
            wait = min(wait * 1.5, max(self.poll, 15.0))


class _Cancelled(Exception):
    pass


def _pack(context: Path, dockerfile: Path) -> bytes:
    """tar.gz of the context (no .git), with the pinned Dockerfile at PINNED."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path in sorted(context.rglob("*")):
            relative = path.relative_to(context)
            if relative.parts[0] == ".git" or relative.as_posix() == PINNED:
                continue
            tar.add(path, arcname=relative.as_posix(), recursive=False)
        tar.add(dockerfile, arcname=PINNED)
    return out.getvalue()


def _copy_log(link: str, offset: int, log: Path, verify: ssl.SSLContext | bool) -> int:
    """Append what the run's log blob holds past `offset`; the new offset."""
    import httpx

    answer = httpx.get(link, headers={"Range": f"bytes={offset}-"}, verify=verify, timeout=60)
    if answer.status_code in (404, 416):  # not written yet, or nothing new
        return offset
    answer.raise_for_status()
    with log.open("ab") as out:
        out.write(answer.content)
    return offset + len(answer.content)
