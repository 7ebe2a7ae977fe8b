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
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from graphbuild import acr_admin, extras, refs, retry
from graphbuild.builders import BuildRequest
from graphbuild.config import AcrSpec, AzureSpec
from graphbuild.errors import CommandFailed, InvalidReference

PINNED = ".graphbuild.Dockerfile"  # where the pinned Dockerfile goes in the uploaded context
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
_TRANSIENT = frozenset({"Error"})  # the service failed, not the Dockerfile
_QUEUE_GRACE = 3600.0  # seconds a run may wait for an agent, on top of its own timeout


class Acr:
    name = "acr"
    program = None  # nothing to install: the build runs in Azure

    def __init__(self, spec: AcrSpec, azure: AzureSpec) -> None:
        extras.require_azure("builder.kind acr")
        self.azure = azure  # the registry that builds, and pushes what it built
        self.group, self.registry = azure.resource_group, azure.registry
        self.login_server = azure.server
        self.agent_pool, self.timeout, self.poll = spec.agent_pool, spec.timeout, spec.poll
        self.verify = acr_admin.tls(azure)
        acr_admin.subscription(azure)  # bad input now, not an error in every build
        self.credential: Any = None  # one for every build: its tokens are shared
        self.lock = threading.Lock()

    def build(self, request: BuildRequest, cancel: threading.Event) -> str:
        names = [self._name(tag) for tag in request.tags]
        if len(request.platforms) > 1:
            raise CommandFailed(f"acr {request.image}: an ACR quick build makes one platform; "
                                f"{', '.join(request.platforms)} asked for")  # fmt: skip
        if request.contexts:
            raise CommandFailed(f"acr {request.image}: an ACR quick build takes no named build "
                                f"contexts (contexts: {', '.join(request.contexts)}); build "
                                "this image with buildah or docker buildx")  # fmt: skip
        with self._client() as client, request.log.open("a") as log:
            run_id = self._schedule(client, request, names, log)
            try:
                run = self._follow(client, run_id, request.log, cancel)
            except (_Cancelled, _Lost) as stop:  # the run must not go on pushing without us
                self._cancel(client, run_id, log)
                what = str(stop) if isinstance(stop, _Lost) else "cancelled"
                raise CommandFailed(f"acr {request.image}: {what} (ACR run {run_id})",
                                    transient=isinstance(stop, _Lost)) from None  # fmt: skip
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
        with self.lock:
            if self.credential is None:
                self.credential = acr_admin.identity(self.azure)
        return acr_admin.client(self.azure, acr_admin.TASKS_API, self.credential)

    def _cancel(self, client: Any, run_id: str, log: Any) -> None:
        from azure.core.exceptions import AzureError

        try:
            client.runs.begin_cancel(self.group, self.registry, run_id).result()
            log.write(f"ACR run {run_id} cancelled\n")
        except AzureError as err:
            log.write(f"ACR run {run_id} could not be cancelled: {acr_admin.first_line(err)}\n")

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
            message = f"acr {request.image}: {acr_admin.first_line(err)}"
            raise CommandFailed(message, transient=acr_admin.transient(err)) from None
        log.write(f"ACR run {run.run_id} on {self.registry}: {', '.join(names)}\n")
        log.flush()
        return str(run.run_id)

    def _upload(self, client: Any, request: BuildRequest) -> str:
        """The context and the pinned Dockerfile as a tar.gz in the registry's source blob."""
        import httpx

        target = client.registries.get_build_source_upload_url(self.group, self.registry)
        try:
            answer = httpx.put(target.upload_url, headers={"x-ms-blob-type": "BlockBlob"},
                               content=_pack(request.context, request.dockerfile),
                               verify=self.verify, timeout=300)  # fmt: skip
        except httpx.HTTPError as err:  # its text would hold the upload URL's signature
            raise CommandFailed(f"acr {request.image}: source upload failed "
                                f"({type(err).__name__})", transient=True) from None  # fmt: skip
        if answer.status_code >= 300:
            raise CommandFailed(f"acr {request.image}: source upload refused "
                                f"({answer.status_code})", transient=True)  # fmt: skip
        return str(target.relative_path)

    def _follow(self, client: Any, run_id: str, log: Path, cancel: threading.Event) -> Any:
        """Poll the run to a terminal state, copying its log as it grows, then the log's end.

        The log is best effort: a blob that cannot be read costs lines, not the build.
        Raises _Cancelled, or _Lost when the run cannot be followed any more.
        """
        from azure.core.exceptions import AzureError

        blob = _Log(self, client, run_id, log)
        deadline = time.monotonic() + self.timeout + _QUEUE_GRACE
        # polls space out as the run goes on, up to 15 s apart (or `poll`, if longer)
        waits, polls, failures = retry.Backoff(self.poll, 1.5, max(self.poll, 15.0)), 0, 0
        while True:
            try:
                run = client.runs.get(self.group, self.registry, run_id)
                failures = 0
            except AzureError as err:
                failures += 1  # the SDK retried already; the run goes on without us
                if failures > 5:
                    raise _Lost(f"lost track of the run: {acr_admin.first_line(err)}") from None
                run = None
            if run is not None and run.status != "Queued":
                blob.copy()
            if run is not None and run.status in TERMINAL:
                blob.finish(cancel, self.poll)
                return run
            if time.monotonic() > deadline:
                status = run.status if run is not None else "unknown"
                raise _Lost(f"still {status} after {self.timeout + _QUEUE_GRACE:g} s")
            if cancel.wait(waits.wait(polls)):
                raise _Cancelled
            polls += 1


class _Log:
    """The run's log blob, copied into the build log by byte ranges as it grows."""

    def __init__(self, builder: Acr, client: Any, run_id: str, log: Path) -> None:
        self.builder, self.client, self.run_id, self.log = builder, client, run_id, log
        self.link: str | None = None
        self.offset, self.complete, self.failures = 0, False, 0

    def copy(self) -> None:
        import httpx
        from azure.core.exceptions import AzureError

        if self.failures > 5:
            return  # given up on the log; the build goes on
        try:
            if self.link is None:
                b = self.builder
                self.link = self.client.runs.get_log_sas_url(b.group, b.registry,
                                                             self.run_id).log_link  # fmt: skip
            if self.link:
                self._read(self.link)
            self.failures = 0
        except (AzureError, httpx.HTTPError) as err:
            self.failures += 1
            self.link = None  # an expired signature: ask for a new link
            if self.failures > 5:
                with self.log.open("a") as out:  # the error's name only: its URL is signed
                    out.write(f"(the run's log could not be read: {type(err).__name__})\n")

    def finish(self, cancel: threading.Event, poll: float) -> None:
        """After the run ends its log may still be catching up: read until it says so."""
        for _ in range(10):
            if self.complete or self.failures > 5 or cancel.wait(min(poll, 2.0)):
                return
            self.copy()

    def _read(self, link: str) -> None:
        import httpx

        answer = httpx.get(link, headers={"Range": f"bytes={self.offset}-"},
                           verify=self.builder.verify, timeout=60)  # fmt: skip
        self.complete = any(k.lower() == "x-ms-meta-complete" for k in answer.headers)
        if answer.status_code in (404, 416):  # not written yet, or nothing new
            return
        answer.raise_for_status()
        data = answer.content
        if answer.status_code == 200 and self.offset:  # the range was not honoured
            data = data[self.offset :]
        with self.log.open("ab") as out:
            out.write(data)
        self.offset += len(data)


class _Lost(Exception):
    pass


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
