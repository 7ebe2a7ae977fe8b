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

import base64
import io
import tarfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from graphbuild import acr_admin, extras, refs, retry
from graphbuild.builders import BuildRequest
from graphbuild.config import AcrSpec, AzureSpec
from graphbuild.errors import CommandFailed, InvalidReference

PINNED = ".graphbuild.Dockerfile"  # where the pinned Dockerfile goes in the uploaded context
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
_TRANSIENT = frozenset({"Error"})  # the service failed, not the Dockerfile
_QUEUE_GRACE = 3600.0  # seconds a run may wait for an agent, on top of its own timeout
# a throttled scheduleRun (429: refused before any work) waits its Retry-After, or 1, 2 then
# 4 s, up to 2 minutes, before the next try; 4 tries in all, as the SDK gives other requests
SCHEDULE_BACKOFF = retry.Backoff(1.0, factor=2.0, most=120.0, jitter=0.2)
SCHEDULE_TRIES = 4
_MIB = 1024 * 1024
# Azure Storage's largest Put Blob and Put Block bodies by service version, newest first; a
# SAS request runs at the SAS's `sv` (an x-ms-version on it is ignored). docs/azure.md.
_STORAGE_LIMITS = (
    ("2019-12-12", 5000 * _MIB, 4000 * _MIB),
    ("2016-05-31", 256 * _MIB, 100 * _MIB),
    ("", 64 * _MIB, 4 * _MIB),
)
_STORAGE_VERSION = "2021-08-06"  # sent, and assumed, when the SAS names no `sv`
_MAX_BLOCKS = 50_000  # blocks in one block blob
SINGLE_PUT_MAX = 256 * _MIB  # above this, blocks: a failed request then costs one block
BLOCK_SIZE = 64 * _MIB


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
            run_id = self._schedule(client, request, names, log, cancel)
            try:
                run = self._follow(client, run_id, request.log, cancel)
            except (_Cancelled, _Lost) as stop:  # the run must not go on pushing without us
                cancelled = self._cancel(client, run_id, log)
                what = str(stop) if isinstance(stop, _Lost) else "cancelled"
                message = f"acr {request.image}: {what} (ACR run {run_id})"
                if isinstance(stop, _Lost) and not cancelled:  # it may still build and push
                    message += "; it could not be cancelled, " + self._twice()
                    raise CommandFailed(message) from None
                raise CommandFailed(message, transient=isinstance(stop, _Lost)) from None
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

    def _cancel(self, client: Any, run_id: str, log: Any) -> bool:
        """Whether ACR confirmed the cancel: only then is the run sure to stop."""
        from azure.core.exceptions import AzureError

        try:
            client.runs.begin_cancel(self.group, self.registry, run_id).result()
        except AzureError as err:
            log.write(f"ACR run {run_id} could not be cancelled: {acr_admin.first_line(err)}\n")
            return False
        log.write(f"ACR run {run_id} cancelled\n")
        return True

    def _schedule(
        self, client: Any, request: BuildRequest, names: list[str], log: Any,
        cancel: threading.Event,
    ) -> str:  # fmt: skip
        """Upload, schedule, and the run id. scheduleRun answers 200 with the Run, or 202 as a
        long-running operation (Location, Azure-AsyncOperation or both), which the SDK's ARM
        poller follows to the Run: from Location, or from the status's `properties`."""
        from azure.core.exceptions import AzureError
        from azure.mgmt.containerregistry.v2019_06_01_preview import models

        platform = (request.platforms or ("linux/amd64",))[0].split("/")
        build = models.DockerBuildRequest(
            image_names=names, is_push_enabled=True, no_cache=request.no_cache,
            docker_file_path=PINNED, target=request.target, timeout=int(self.timeout),
            arguments=[models.Argument(name=k, value=v, is_secret=False)
                       for k, v in request.build_args.items()]
                      + [models.Argument(name=k, value=v, is_secret=True)
                         for k, v in request.secret_args.items()],
            platform=models.PlatformProperties(
                os=platform[0].capitalize(), architecture=platform[1],
                variant=platform[2] if len(platform) > 2 else None),
            agent_pool_name=self.agent_pool,
            credentials=_credentials(models, self.azure),
        )  # fmt: skip
        try:
            build.source_location = self._upload(client, request)
        except AzureError as err:  # no run was asked for yet
            message = f"acr {request.image}: {acr_admin.first_line(err)}"
            raise CommandFailed(message, transient=acr_admin.transient(err)) from None
        poller = self._post(client, request, build, cancel)
        try:
            run = poller.result()
        except AzureError as err:  # accepted, then not followed: the run may exist
            why = f"its operation could not be followed ({acr_admin.first_line(err)})"
            raise self._untracked(request, f"ACR accepted the run, but {why}") from None
        if run is None or not run.run_id:  # a 202 whose operation gave no Run: it may build
            raise self._untracked(request, "ACR accepted the run, but its answers named no run id")
        log.write(f"ACR run {run.run_id} on {self.registry}: {', '.join(names)}\n")
        log.flush()
        return str(run.run_id)

    def _post(self, client: Any, request: BuildRequest, build: Any, cancel: threading.Event) -> Any:
        """The scheduleRun poller, its POST sent once per try and tried again only when it
        surely made no run: throttled (429), or never sent (no connection). The SDK would
        resend it on a 500, 503 or 504 (or any answer with Retry-After), each resend a new
        run; its operation's polls keep the SDK's retries (`polling`)."""
        from azure.core import exceptions
        from azure.mgmt.core.polling.arm_polling import ARMPolling

        def attempt(_: int) -> Any:
            try:
                return client.registries.begin_schedule_run(
                    self.group, self.registry, build, retry_total=0,
                    polling=ARMPolling(client._config.polling_interval))  # fmt: skip
            except exceptions.HttpResponseError as err:
                if err.status_code == 429:
                    headers = getattr(err.response, "headers", None) or {}
                    wait = retry.retry_after(headers.get("Retry-After"))
                    raise retry.Again(acr_admin.first_line(err), wait=wait) from None
                raise

        try:
            return retry.call(attempt, tries=SCHEDULE_TRIES, backoff=SCHEDULE_BACKOFF,
                              cancel=cancel)  # fmt: skip
        except retry.Cancelled:
            raise CommandFailed(f"acr {request.image}: cancelled (no ACR run made)") from None
        except retry.Again as last:  # throttled: refused before any work
            raise CommandFailed(f"acr {request.image}: {last.why}", transient=True) from None
        except exceptions.AzureError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            said = acr_admin.first_line(err)
            if isinstance(err, exceptions.ServiceRequestError):  # never reached ACR
                raise CommandFailed(f"acr {request.image}: {said}", transient=True) from None
            if isinstance(err, exceptions.ClientAuthenticationError) or (status and status < 500):
                raise CommandFailed(f"acr {request.image}: {said}") from None  # refused
            # a server error or no answer: ACR may have made the run, then lost its answer
            why = f"scheduleRun's answer was lost ({said}): ACR may have made the run"
            raise self._untracked(request, why) from None

    def _untracked(self, request: BuildRequest, why: str) -> CommandFailed:
        """A run ACR may have made but graphbuild cannot follow: it may be building, so it is
        not retried (a retry would schedule a second run)."""
        return CommandFailed(f"acr {request.image}: {why}; {self._twice()}", transient=False)

    def _twice(self) -> str:
        """Why a run that may be building is not retried, and where to see it."""
        return (f"not retried, as that could build it twice (az acr task list-runs -r "
                f"{self.registry} shows it)")  # fmt: skip

    def _upload(self, client: Any, request: BuildRequest) -> str:
        """The context and the pinned Dockerfile as a tar.gz in the registry's source blob:
        one Put Blob, or above SINGLE_PUT_MAX (or the version's limit) Put Block + Put Block
        List. A body over Azure's limit is refused for good, with its size."""
        import httpx

        target = client.registries.get_build_source_upload_url(self.group, self.registry)
        url, data = str(target.upload_url), _pack(request.context, request.dockerfile)
        version = (parse_qs(urlsplit(url).query).get("sv") or [_STORAGE_VERSION])[0]
        put_max, block_max = next((p, b) for v, p, b in _STORAGE_LIMITS if version >= v)
        block = min(block_max, BLOCK_SIZE)
        try:
            with httpx.Client(verify=self.verify, timeout=300,
                              headers={"x-ms-version": version}) as http:  # fmt: skip
                if len(data) <= min(put_max, SINGLE_PUT_MAX):
                    answer = http.put(url, headers={"x-ms-blob-type": "BlockBlob"}, content=data)
                    self._uploaded(request, answer, len(data))
                    return str(target.relative_path)
                if len(data) > block * _MAX_BLOCKS:
                    raise CommandFailed(f"acr {request.image}: the source is {len(data)} bytes "
                                        f"(tar.gz), more than {_MAX_BLOCKS} blocks of {block} "
                                        "bytes")  # fmt: skip
                ids: list[str] = []
                for at in range(0, len(data), block):
                    ids.append(base64.b64encode(f"{len(ids):08d}".encode()).decode())
                    where = httpx.URL(url).copy_merge_params({"comp": "block",
                                                              "blockid": ids[-1]})  # fmt: skip
                    answer = http.put(where, content=data[at : at + block])
                    self._uploaded(request, answer, len(data))
                listed = "".join(f"<Latest>{i}</Latest>" for i in ids)
                answer = http.put(httpx.URL(url).copy_merge_params({"comp": "blocklist"}),
                                  content=f'<?xml version="1.0" encoding="utf-8"?>'
                                          f"<BlockList>{listed}</BlockList>")  # fmt: skip
                self._uploaded(request, answer, len(data))
        except httpx.HTTPError as err:  # its text would hold the upload URL's signature
            raise CommandFailed(f"acr {request.image}: source upload failed "
                                f"({type(err).__name__})", transient=True) from None  # fmt: skip
        return str(target.relative_path)

    @staticmethod
    def _uploaded(request: BuildRequest, answer: Any, size: int) -> None:
        """A refused upload request: too large is for good; others (an expired or refused
        signature, a server error) may pass with a new upload URL."""
        if answer.status_code < 300:
            return
        code = answer.headers.get("x-ms-error-code") or str(answer.status_code)
        if answer.status_code == 413 or code == "RequestBodyTooLarge":
            raise CommandFailed(f"acr {request.image}: source upload refused: the context is "
                                f"{size} bytes (tar.gz), more than Azure Storage takes in one "
                                f"request ({code})", transient=False)  # fmt: skip
        raise CommandFailed(f"acr {request.image}: source upload refused "
                            f"({answer.status_code} {code})", transient=True)  # fmt: skip

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


def _credentials(models: Any, azure: AzureSpec) -> Any:
    """The run's logins to other registries (`azure.credentials`): Key Vault secret URIs
    and identities, never a secret itself. None when there are none, as before; with
    some, the run keeps its login to its own registry (`Default`), where it pushes."""
    custom = {}
    for host, login in azure.credentials.items():
        if login.password_vault is None and login.identity is None:
            continue  # a login for imports only
        user = password = None
        if login.password_vault is not None:
            password = models.SecretObject(type="Vaultsecret", value=login.password_vault)
            if login.username is not None:  # a user name is not a secret
                user = models.SecretObject(type="Opaque", value=login.username)
            else:
                user = models.SecretObject(type="Vaultsecret", value=login.username_vault)
        custom[host] = models.CustomRegistryCredentials(user_name=user, password=password,
                                                        identity=login.identity)  # fmt: skip
    if not custom:
        return None
    return models.Credentials(
        source_registry=models.SourceRegistryCredentials(login_mode="Default"),
        custom_registries=custom,
    )


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
