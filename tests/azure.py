"""A local Azure Resource Manager for one container registry, so the real azure-mgmt SDK (and
code built on it) can be tested on loopback.

It speaks HTTPS with a test CA (azure-core refuses to send bearer tokens over plain http),
answers the Microsoft.ContainerRegistry calls with the JSON shapes of Azure's REST reference,
and serves the SAS blob URLs ACR hands out (source upload, run logs) the way Azure Storage does.
A quick build "runs" by reading the uploaded tar.gz and pushing a small image per image name to
a real LocalRegistry, so digests in `outputImages` are digests the registry really serves."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import http
import io
import ipaddress
import json
import re
import secrets
import socket
import ssl
import tarfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, LocalRegistry, sha
from .servers import _Quiet, _Server

# api-versions the fake accepts. Runs live in the Tasks API (the SDK's 2019-06-01-preview,
# or 2025-03-01-preview); import and webhooks in the registry API (the SDK default 2025-04-01).
TASKS_API = frozenset({"2019-06-01-preview", "2025-03-01-preview"})
REGISTRY_API = frozenset({"2019-05-01", "2023-07-01", "2023-11-01-preview", "2025-04-01"})
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
# the log blob's `Complete` metadata per final run status; azure-cli's _stream_utils.py stops
# streaming once the key is there and lower-cases the value (failed, timedout, canceled, ...)
COMPLETE = {
    "Succeeded": "Succeeded",
    "Failed": "Failed",
    "Canceled": "Canceled",
    "Error": "InternalError",
    "Timeout": "TimedOut",
}
RUN_ERRORS = {
    "Failed": "failed during run, err: exit status 1",
    "Error": "internal error while running the build",
    "Timeout": "the run timed out",
}
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
# what a pull from Docker Hub over its rate limit answers (its error code is TOOMANYREQUESTS)
DOCKER_HUB_LIMIT = (
    "toomanyrequests: You have reached your pull rate limit. You may increase the limit by "
    "authenticating and upgrading: https://www.docker.com/increase-rate-limit"
)
STORAGE_VERSION = "2021-08-06"
# ACR's webhook scope (WebhookPropertiesCreateParameters.scope): 'repo:*', 'repo:tag', 'repo'
# (meaning repo:latest), or empty for all; repo in the distribution reference grammar
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
WEBHOOK_SCOPE = re.compile(
    rf"{_COMPONENT}(?:/{_COMPONENT})*(?::(?:\*|\w[\w.-]{{0,127}}))?", re.ASCII
)
WEBHOOK_QUOTA = {"Basic": 2, "Standard": 10, "Premium": 500}  # ACR's SKU limits page
WEBHOOK_ACTIONS = ("push", "delete", "quarantine", "chart_push", "chart_delete")  # WebhookAction
RUN_TIMEOUT = (300, 28800)  # DockerBuildRequest.timeout's minimum and maximum, in seconds
CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"  # the principal ARM names in a refusal
MIB = 1024 * 1024
# Put Blob's and Put Block's largest body by service version (the newest first). A SAS request
# runs at its `sv`; an x-ms-version header on it is ignored ("Versioning for Azure Storage").
STORAGE_LIMITS = (
    ("2019-12-12", 5000 * MIB, 4000 * MIB),
    ("2016-05-31", 256 * MIB, 100 * MIB),
    ("", 64 * MIB, 4 * MIB),
)
RECORDED_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "range",
    "x-ms-range",
    "x-ms-blob-type",
    "x-ms-version",
    "x-ms-client-request-id",
    "user-agent",
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ArmRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # the RECORDED_HEADERS that were sent, names lower-cased
    body: Any = None  # parsed JSON, raw bytes (blob uploads, non-JSON) or None when empty
    status: int | None = None  # what the server answered


@dataclass
class RunRecord:
    """A quick build: what was asked, what the uploaded source held, and how it went."""

    run_id: str
    request: dict  # the DockerBuildRequest body as sent (camelCase)
    outcome: str  # the terminal status it reaches unless canceled
    created: datetime.datetime
    images: list[tuple[str, str]]  # (repository, tag) from imageNames
    dockerfile: str | None = None  # the text of dockerFilePath inside the upload
    files: list[str] = field(default_factory=list)  # the names in the uploaded archive
    error: str | None = None  # runErrorMessage, once terminal and not successful
    status: str = "Queued"
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    outputs: list[dict] = field(default_factory=list)  # ImageDescriptor JSON
    log: bytearray = field(default_factory=bytearray)
    cancels: int = 0


@dataclass
class Operation:
    """A long-running operation, polled through Location or Azure-AsyncOperation."""

    op_id: str
    kind: str  # cancel, import, webhook
    error: dict | None = None  # {code, message} when it ends failed
    failed_status: int = 409  # the HTTP status the Location poll answers when it fails
    polls: int = 0
    run_id: str | None = None  # a scheduleRun: the run its final answer gives
    status_result: bool = False  # the Azure-AsyncOperation status carries it in `properties`


class _TLSServer(ThreadingHTTPServer):
    """Wraps each connection in TLS in its own thread, so a client that refuses the
    certificate fails alone without blocking the accept loop."""

    daemon_threads = True

    def __init__(self, handler: type, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        request.settimeout(10)  # a client that connects and stalls frees its thread
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. the client does not trust the test CA; it reports that itself
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # handler failures are answered as 500 and kept in FakeArm.errors


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a 127.0.0.1/localhost certificate it signed: (ca.pem, cert, key)."""

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = _now()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("graphbuild fake ARM CA"))
        .issuer_name(name("graphbuild fake ARM CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class FakeArm(_Server):
    """Azure Resource Manager for one registry, backed by a LocalRegistry.

    A run moves one step each time someone looks at it (runs.get, or a read of its log blob):
    the look answers the current state, then Queued -> Running (source read, "Step i/n" lines
    logged) -> its final status (images pushed, `outputImages` set). So successive runs.get
    calls see Queued, Running, Succeeded, with no clocks or sleeps involved.

    Options are plain attributes a test sets at any time:
    - `fail`: repository -> how many next runs pushing to it fail (decremented per run);
    - `statuses`: repository -> the final status of its failing runs (default Failed;
      Error and Timeout are the other terminal ones);
    - `hold`: runs stay Running until canceled (or until hold is cleared);
    - `forbidden`: ARM path suffix (e.g. "/scheduleRun") -> the action ARM says the signed-in
      principal may not perform: 403 AuthorizationFailed, as a missing role assignment gives;
    - `throttle`: ARM path suffix (e.g. "/scheduleRun") -> how many next requests get 429
      with `Retry-After: throttle_retry_after` (None: no Retry-After, and then azure-core
      does not retry a POST);
    - `lro_polls`: how many polls each long-running operation stays in progress;
    - `lro_retry_after`: a Retry-After for in-progress LRO answers (None: none is sent, so the
      SDK waits its polling_interval, 30 s unless the client was given another).
    - `import_rate_limited`: how many next imports fail as a Docker Hub pull over its rate
      limit does (TOOMANYREQUESTS in the operation's error).
    - `tasks_not_allowed`: scheduleRun answers 400 TasksOperationsNotAllowed, as Azure does
      on free-trial and free-credit subscriptions (the source upload still works there).
    - `blob_put_limit`, `blob_block_limit`: the largest Put Blob / Put Block body in bytes
      (None: Azure's limit for the SAS's service version), so a test can go over it cheaply;
    - `schedule_reply`: how scheduleRun answers, each a shape its swagger (200 Run, or 202
      long-running) and ARM's async rules allow: "200" (the Run), "location" (202, Location:
      polled to the Run), "async" (202, Azure-AsyncOperation only: the Succeeded status holds
      the Run in `properties`), "async-bare" (the same, with no result in the status), "both"
      (202 with both headers: status polled, then the Run from Location);
    - `lro_unreachable`: how many next operation polls answer 503 (Retry-After 1), as an
      operation endpoint that cannot be reached for a while does.
    - `schedule_then_fail`: each next scheduleRun makes its run, then answers the next of
      these: a status (500, 502, 503, 504: ARM's error body, as a gateway that lost the
      service's answer sends), or "drop" (the connection is closed with no answer at all).
    """

    def __init__(
        self,
        folder: Path,
        registry: LocalRegistry,
        *,
        subscription: str = "sub-1",
        resource_group: str = "rg",
        name: str = "myacr",
        token: str = "entra-xyz",
        location: str = "westeurope",
    ) -> None:
        # _Server.__init__ would bind a plain-http server; this one needs the TLS variant
        ca, cert, key = make_tls_files(folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = _TLSServer(_ArmHandler, context)
        self.httpd.owner = self
        # a short poll interval: stop() (shutdown) waits up to one interval
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.ca_bundle = ca
        self.registry = registry
        self.subscription, self.resource_group, self.name = subscription, resource_group, name
        self.token, self.location = token, location
        self.fail: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.hold = False
        self.forbidden: dict[str, str] = {}
        self.throttle: dict[str, int] = {}
        self.throttle_retry_after: int | str | None = 1  # seconds or an HTTP date
        self.lro_polls = 1
        self.lro_retry_after: int | None = None
        self.import_rate_limited = 0
        self.tasks_not_allowed = False
        self.schedule_reply = "200"
        self.lro_unreachable = 0
        self.schedule_then_fail: list[int | str] = []
        self.blob_put_limit: int | None = None
        self.blob_block_limit: int | None = None
        self.blocks: dict[str, dict[str, bytes]] = {}  # relativePath -> uncommitted blocks
        self.requests: list[ArmRequest] = []
        self.runs: dict[str, RunRecord] = {}
        self.uploads: dict[str, bytes] = {}  # relativePath -> the bytes PUT to its upload URL
        self.issued: set[str] = set()  # relativePaths handed out by listBuildSourceUploadUrl
        self.imports: list[dict] = []  # {parameters, digest, error} per importImage
        self.cancels: list[str] = []  # run ids, one per cancel request
        self.webhooks: dict[str, dict] = {}  # name -> the create body, secrets included
        self.sku = "Premium"  # Basic and Standard: fewer webhooks (WEBHOOK_QUOTA)
        self.replications: list[str] = []  # regions, the home one too once geo-replicated
        self.operations: dict[str, Operation] = {}
        self.errors: list[str] = []  # server-side exceptions (answered as 500)
        self.lock = threading.RLock()
        self._sas_key = secrets.token_bytes(32)
        self._created = _now()

    # -- addresses

    @property
    def base_url(self) -> str:
        return f"https://{self.address}"

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )

    def calls(self, suffix: str = "", method: str | None = None) -> list[ArmRequest]:
        """The recorded requests whose path ends with `suffix` (and have `method`)."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path.endswith(suffix) and (method is None or r.method == method)
            ]

    # -- dispatch

    def answer(self, request: ArmRequest, raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        """The whole server: one request in, (status, body, headers) out."""
        with self.lock:
            self.requests.append(request)
        if request.path.startswith("/blobs/"):
            return self._blob(request, raw)
        auth = request.headers.get("authorization", "")
        if not auth:
            return _unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or value != self.token:
            return _unauthorized("InvalidAuthenticationToken", "The access token is invalid.")
        for suffix, action in self.forbidden.items():
            if request.path.endswith(suffix):
                return _error(403, "AuthorizationFailed", (
                    f"The client '{CLIENT_ID}' with object id '{CLIENT_ID}' does not have "
                    f"authorization to perform action '{action}' over scope "
                    f"'{self.resource_id}' or the scope is invalid. If access was recently "
                    "granted, please refresh your credentials."))  # fmt: skip
        with self.lock:
            for suffix, left in self.throttle.items():
                if left > 0 and request.path.endswith(suffix):
                    self.throttle[suffix] = left - 1
                    retry = self.throttle_retry_after
                    return _error(
                        429,
                        "TooManyRequests",
                        "The request was throttled; retry after the given time.",
                        {} if retry is None else {"Retry-After": str(retry)},
                    )
        if isinstance(request.body, _BadJson):
            return _error(400, "InvalidRequestContent", "The request content was invalid JSON.")
        return self._arm(request)

    def _arm(self, request: ArmRequest) -> tuple[int, bytes, dict[str, str]]:
        match = re.fullmatch(
            r"/subscriptions/([^/]+)(?:/resourceGroups/([^/]+))?"
            r"/providers/Microsoft\.ContainerRegistry/(.+)",
            request.path,
            re.IGNORECASE,
        )
        if not match:
            return _not_found_route(request)
        subscription, group, rest = match.groups()
        if subscription != self.subscription:
            return _error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription}' could not be found.",
            )
        version = request.query.get("api-version")
        if not version:
            return _error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        operation = re.fullmatch(
            r"locations/[^/]+/(operationResults|operationStatuses)/([^/]+)", rest, re.IGNORECASE
        )
        if operation and request.method == "GET":
            return self._poll(operation.group(1).lower(), operation.group(2))
        if group is None:
            return _not_found_route(request)
        if group.lower() != self.resource_group.lower():
            return _error(
                404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found."
            )
        registry = re.fullmatch(r"registries/([^/]+)(/.*)?", rest, re.IGNORECASE)
        if not registry:
            return _not_found_route(request)
        name, tail = registry.group(1), registry.group(2) or ""
        if name.lower() != self.name.lower():
            return _error(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerRegistry/registries/{name}' under resource "
                f"group '{group}' was not found.",
            )
        return self._route(request, tail, version)

    def _route(
        self, request: ArmRequest, tail: str, version: str
    ) -> tuple[int, bytes, dict[str, str]]:
        method, body = request.method, request.body
        routes: list[tuple[str, str, frozenset[str], Any]] = [
            ("GET", r"", TASKS_API | REGISTRY_API, lambda: self._registry_resource()),
            ("POST", r"/listBuildSourceUploadUrl", TASKS_API, lambda: self._upload_url()),
            ("POST", r"/scheduleRun", TASKS_API, lambda: self._schedule(body)),
            ("GET", r"/runs", TASKS_API, lambda: self._list_runs(request.query)),
            ("GET", r"/runs/([^/]+)", TASKS_API, lambda i: self._get_run(i)),
            ("POST", r"/runs/([^/]+)/listLogSasUrl", TASKS_API, lambda i: self._log_link(i)),
            ("POST", r"/runs/([^/]+)/cancel", TASKS_API, lambda i: self._cancel(i, version)),
            ("POST", r"/importImage", REGISTRY_API, lambda: self._import(body, version)),
            ("GET", r"/replications", REGISTRY_API, lambda: self._list_replications()),
            ("GET", r"/webhooks", REGISTRY_API, lambda: self._list_webhooks()),
            ("GET", r"/webhooks/([^/]+)", REGISTRY_API, lambda w: self._get_webhook(w)),
            (
                "PUT",
                r"/webhooks/([^/]+)",
                REGISTRY_API,
                lambda w: self._put_webhook(w, body, version),
            ),
            ("DELETE", r"/webhooks/([^/]+)", REGISTRY_API, lambda w: self._delete_webhook(w)),
            (
                "POST",
                r"/webhooks/([^/]+)/getCallbackConfig",
                REGISTRY_API,
                lambda w: self._callback_config(w),
            ),
        ]
        allowed = []
        for verb, pattern, versions, action in routes:
            match = re.fullmatch(pattern, tail, re.IGNORECASE)
            if not match:
                continue
            allowed.append(verb)
            if verb != method:
                continue
            if version not in versions:
                return _error(
                    400,
                    "NoRegisteredProviderFound",
                    f"No registered resource provider found for location '{self.location}' and "
                    f"API version '{version}' for this request. The supported api-versions are "
                    f"'{', '.join(sorted(versions))}'.",
                )
            with self.lock:
                return action(*match.groups())
        if allowed:
            return _error(
                405, "MethodNotAllowed", f"The method '{method}' is not allowed on this resource."
            )
        return _not_found_route(request)

    # -- the registry

    def _registry_resource(self) -> tuple[int, bytes, dict[str, str]]:
        return _json(
            200,
            {
                "id": self.resource_id,
                "name": self.name,
                "type": "Microsoft.ContainerRegistry/registries",
                "location": self.location,
                "tags": {},
                "sku": {"name": self.sku, "tier": self.sku},
                "properties": {
                    "loginServer": self.registry.host,
                    "creationDate": _iso(self._created),
                    "provisioningState": "Succeeded",
                    "adminUserEnabled": False,
                    "publicNetworkAccess": "Enabled",
                    "networkRuleBypassOptions": "AzureServices",
                    "zoneRedundancy": "Disabled",
                    "anonymousPullEnabled": False,
                },
            },
        )

    # -- source upload and runs

    def _upload_url(self) -> tuple[int, bytes, dict[str, str]]:
        relative = f"source/{_now():%Y%m%d%H%M}/{uuid.uuid4()}.tar.gz"
        self.issued.add(relative)
        return _json(
            200,
            {"uploadUrl": self._sas(f"/blobs/{relative}", "rw"), "relativePath": relative},
        )

    def _schedule(self, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if self.tasks_not_allowed:
            return self._tasks_refused()
        if not isinstance(body, dict) or body.get("type") != "DockerBuildRequest":
            kind = body.get("type") if isinstance(body, dict) else None
            return _error(
                400,
                "InvalidParameter",
                f"Run request type '{kind}' is not served here; send a DockerBuildRequest.",
            )
        if not body.get("dockerFilePath"):
            return _error(400, "InvalidParameter", "The dockerFilePath field is required.")
        if not (body.get("platform") or {}).get("os"):
            return _error(400, "InvalidParameter", "The platform.os field is required.")
        timeout = body.get("timeout", 3600)
        if type(timeout) is not int or not RUN_TIMEOUT[0] <= timeout <= RUN_TIMEOUT[1]:
            low, high = RUN_TIMEOUT
            message = f"The timeout {timeout!r} is not from {low} to {high} seconds."
            return _error(400, "InvalidParameter", message)
        if "credentials" in body and (wrong := _bad_credentials(body["credentials"])):
            return _error(400, "InvalidRequestContent", f"The request content was invalid: {wrong}")
        run_id = f"cb{len(self.runs) + 1}"
        images = []
        for image in body.get("imageNames") or []:
            parsed = self._image_name(image, run_id)
            if parsed is None:
                return _error(400, "InvalidParameter", f"Invalid image name '{image}'.")
            images.append(parsed)
        run = RunRecord(run_id, body, "Succeeded", _now(), images)
        self._read_source(run, body.get("sourceLocation"), body["dockerFilePath"])
        if run.outcome == "Succeeded":
            failing = [repo for repo, _ in images if self.fail.get(repo, 0) > 0]
            for repo in failing:
                self.fail[repo] -= 1
            if failing:
                run.outcome = self.statuses.get(failing[0], "Failed")
                run.error = RUN_ERRORS.get(run.outcome, RUN_ERRORS["Failed"])
        self.runs[run_id] = run
        if self.schedule_then_fail:  # the run is made; its answer is lost on the way back
            then = self.schedule_then_fail.pop(0)
            if then == "drop":
                raise _Dropped
            phrase = http.HTTPStatus(int(then)).phrase
            return _error(int(then), phrase.replace(" ", ""), f"{phrase}. Try again later.")
        return self._schedule_answer(run)

    def _schedule_answer(self, run: RunRecord) -> tuple[int, bytes, dict[str, str]]:
        """The run as `schedule_reply` says: at once, or through a long-running operation."""
        reply = self.schedule_reply
        if reply == "200":
            return _json(200, self._run_resource(run))
        if reply not in ("location", "async", "async-bare", "both"):
            raise ValueError(f"schedule_reply {reply!r}")
        answer = self._accepted(
            "schedule",
            "2019-06-01-preview",
            async_header=reply != "location",
            location_header=reply in ("location", "both"),
        )
        op = list(self.operations.values())[-1]  # the one just made (under self.lock)
        op.run_id, op.status_result = run.run_id, reply == "async"
        return answer

    def _tasks_refused(self) -> tuple[int, bytes, dict[str, str]]:
        """Azure's answer to a Tasks request on a subscription that may not run them, as
        `az acr build` and azd users report it (a 400 with `target: request`)."""
        message = (
            f"ACR Tasks requests for the registry {self.name} and {self.subscription} are not "
            "permitted. Please file an Azure support request at http://aka.ms/azuresupport for "
            "assistance."
        )
        body = {"error": {"code": "TasksOperationsNotAllowed", "message": message,
                          "target": "request"}}  # fmt: skip
        return _json(400, body)

    def _image_name(self, image: str, run_id: str) -> tuple[str, str] | None:
        """imageNames are relative to the registry ({{.Run.ID}} and {{.Run.Registry}} as ACR
        expands them); a name prefixed with the login server is accepted too."""
        image = image.replace("{{.Run.ID}}", run_id)
        image = image.replace("{{.Run.Registry}}", self.registry.host)
        image = image.removeprefix(f"{self.registry.host}/")
        repo, colon, tag = image.rpartition(":")
        if not colon or "/" in tag:
            repo, tag = image, "latest"
        if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", repo):
            return None
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            return None
        return repo, tag

    def _read_source(self, run: RunRecord, location: str | None, dockerfile: str) -> None:
        """What a build agent does first: download the context and find the Dockerfile."""
        data = self.uploads.get(location or "")
        if data is None:
            run.outcome = "Failed"
            run.error = (
                f"failed to download the source: the source location '{location}' was not found"
            )
            return
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
                run.files = sorted(name for name, m in members.items() if m.isfile())
                wanted = members.get(dockerfile.removeprefix("./"))
                handle = tar.extractfile(wanted) if wanted is not None and wanted.isfile() else None
                run.dockerfile = handle.read().decode(errors="replace") if handle else None
        except (tarfile.TarError, EOFError, OSError):
            run.outcome = "Failed"
            run.error = "failed to extract the source: it is not a tar archive"
            return
        if run.dockerfile is None:
            run.outcome = "Failed"
            run.error = f"failed to find the Dockerfile '{dockerfile}' in the source"

    def _run_resource(self, run: RunRecord) -> dict:
        body = run.request
        properties = {
            "runId": run.run_id,
            "status": run.status,
            "lastUpdatedTime": _iso(run.finished or run.started or run.created),
            "runType": "QuickBuild",
            "createTime": _iso(run.created),
            "startTime": _iso(run.started),
            "finishTime": _iso(run.finished),
            "outputImages": run.outputs or None,
            "platform": body.get("platform"),
            "agentConfiguration": body.get("agentConfiguration"),
            "agentPoolName": body.get("agentPoolName"),
            "runErrorMessage": run.error if run.status in TERMINAL - {"Succeeded"} else None,
            "provisioningState": "Succeeded",
            "isArchiveEnabled": bool(body.get("isArchiveEnabled", False)),
        }
        return {
            "id": f"{self.resource_id}/runs/{run.run_id}",
            "name": run.run_id,
            "type": "Microsoft.ContainerRegistry/registries/runs",
            "properties": {k: v for k, v in properties.items() if v is not None},
        }

    def _run(self, run_id: str) -> RunRecord | None:
        return self.runs.get(run_id)

    def _missing_run(self, run_id: str) -> tuple[int, bytes, dict[str, str]]:
        return _error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.ContainerRegistry/registries/{self.name}/runs/{run_id}' "
            f"under resource group '{self.resource_group}' was not found.",
        )

    def _get_run(self, run_id: str) -> tuple[int, bytes, dict[str, str]]:
        run = self._run(run_id)
        if run is None:
            return self._missing_run(run_id)
        answer = _json(200, self._run_resource(run))
        self._advance(run)  # each look shows the state, then the run takes a step
        return answer

    def _list_runs(self, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        runs = sorted(self.runs.values(), key=lambda r: int(r.run_id[2:]), reverse=True)
        top = query.get("$top")
        if top and top.isdigit():
            runs = runs[: int(top)]
        return _json(200, {"value": [self._run_resource(r) for r in runs]})

    def _advance(self, run: RunRecord) -> None:
        """Queued -> Running (the Dockerfile's steps logged) -> final status (images pushed)."""
        if run.status == "Queued":
            run.status, run.started = "Running", _now()
            self._log(run, "Downloading source code...", stamp=True)
            if run.dockerfile is not None:
                self._log(run, "Finished downloading source code", stamp=True)
                timeout = run.request.get("timeout", 3600)
                self._log(run, f"Executing step ID: build. Timeout(sec): {timeout}", stamp=True)
                steps = _instructions(run.dockerfile)
                for number, step in enumerate(steps, 1):
                    self._log(run, f"Step {number}/{len(steps)} : {step}")
        elif run.status == "Running" and not self.hold:
            self._finish(run)

    def _finish(self, run: RunRecord) -> None:
        if run.outcome == "Succeeded":
            try:
                self._push(run)
            except httpx.HTTPError as err:
                run.outcome, run.outputs = "Failed", []
                run.error = f"failed to push: {err}"
        run.status, run.finished = run.outcome, _now()
        seconds = max(1, round((run.finished - run.created).total_seconds()))
        if run.status == "Succeeded":
            self._log(
                run,
                f"Step ID: build marked as successful (elapsed time in seconds: {seconds})",
                stamp=True,
            )
            self._log(run, f"Run ID: {run.run_id} was successful after {seconds}s")
        else:
            self._log(run, f"error: {run.error}")
            self._log(run, f"Run ID: {run.run_id} failed after {seconds}s. Error: {run.error}")

    def _push(self, run: RunRecord) -> None:
        if not run.request.get("isPushEnabled", True):
            for repo, tag in run.images:
                self._log(run, f"Successfully tagged {self.registry.host}/{repo}:{tag}")
            return
        platform = run.request.get("platform") or {}
        wanted = "/".join(
            part
            for part in (
                platform.get("os", "linux").lower(),
                platform.get("architecture", "amd64"),
                platform.get("variant"),
            )
            if part
        )
        for repo, tag in run.images:
            reference = f"{self.registry.host}/{repo}:{tag}"
            self._log(run, f"Pushing image: {reference}, attempt 1", stamp=True)
            content = f"{run.dockerfile}\n{run.run_id}\n"
            digest = self.registry.image(repo, tag, content=content, platform=wanted)
            self._log(run, f"{tag}: digest: {digest} size: {self.registry.sizes[digest]}")
            self._log(run, f"Successfully pushed image: {reference}", stamp=True)
            run.outputs.append(
                {"registry": self.registry.host, "repository": repo, "tag": tag, "digest": digest}
            )

    def _log(self, run: RunRecord, line: str, *, stamp: bool = False) -> None:
        # ACR writes CRLF lines; azure-cli's streamer flushes on b"\r\n"
        prefix = f"{_now():%Y/%m/%d %H:%M:%S} " if stamp else ""
        run.log += f"{prefix}{line}\r\n".encode()

    def _log_link(self, run_id: str) -> tuple[int, bytes, dict[str, str]]:
        if self._run(run_id) is None:
            return self._missing_run(run_id)
        return _json(200, {"logLink": self._sas(f"/blobs/logs/{run_id}/rawtext.log", "r")})

    def _cancel(self, run_id: str, version: str) -> tuple[int, bytes, dict[str, str]]:
        run = self._run(run_id)
        if run is None:
            return self._missing_run(run_id)
        self.cancels.append(run_id)
        run.cancels += 1
        if run.status not in TERMINAL:
            run.status, run.finished = "Canceled", _now()
            run.error = "the run was canceled"
            self._log(run, f"Run ID: {run_id} was canceled", stamp=True)
        if version == "2019-06-01-preview":  # a long-running operation there; later APIs
            return self._accepted("cancel", version, async_header=True)
        return 200, b"", {}  # (2025-03-01-preview) answer 200 at once, as their SDK expects

    # -- long-running operations

    def _accepted(
        self,
        kind: str,
        version: str,
        *,
        error: dict | None = None,
        failed_status: int = 409,
        async_header: bool = False,
        body: dict | None = None,
        status: int = 202,
        location_header: bool = True,
    ) -> tuple[int, bytes, dict[str, str]]:
        op = Operation(f"{kind}-{uuid.uuid4()}", kind, error, failed_status)
        self.operations[op.op_id] = op
        base = (
            f"{self.base_url}/subscriptions/{self.subscription}/providers/"
            f"Microsoft.ContainerRegistry/locations/{self.location}"
        )
        headers = {}
        if kind != "webhook" and location_header:
            headers["Location"] = f"{base}/operationResults/{op.op_id}?api-version={version}"
        if async_header:
            headers["Azure-AsyncOperation"] = (
                f"{base}/operationStatuses/{op.op_id}?api-version={version}"
            )
        if self.lro_retry_after is not None:
            headers["Retry-After"] = str(self.lro_retry_after)
        if body is not None:
            return _json(status, body, headers)
        return status, b"", headers

    def _poll(self, style: str, op_id: str) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            op = self.operations.get(op_id)
            if op is None:
                return _error(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
            if self.lro_unreachable > 0:
                self.lro_unreachable -= 1
                return _error(503, "ServiceUnavailable", "Try again later.", {"Retry-After": "1"})
            op.polls += 1
            running = op.polls <= self.lro_polls
        retry = {} if self.lro_retry_after is None else {"Retry-After": str(self.lro_retry_after)}
        if style == "operationstatuses":  # Azure-AsyncOperation: 200 with a status body
            status = "InProgress" if running else ("Failed" if op.error else "Succeeded")
            body = {"id": op_id, "name": op_id, "status": status}
            if op.error and not running:
                body["error"] = op.error
            run = self.runs.get(op.run_id or "")
            if run is not None and op.status_result and not running:  # a POST's result
                body["properties"] = self._run_resource(run)["properties"]
            return _json(200, body, retry if running else {})
        if running:  # Location: 202 while running, then the result or the error
            return 202, b"", retry
        if op.error:
            return _json(op.failed_status, {"error": op.error})
        run = self.runs.get(op.run_id or "")
        if run is not None:
            return _json(200, self._run_resource(run))
        return 200, b"", {}

    # -- import

    def _import(self, body: Any, version: str) -> tuple[int, bytes, dict[str, str]]:
        source = body.get("source") if isinstance(body, dict) else None
        if not isinstance(source, dict) or not source.get("sourceImage"):
            return _error(400, "InvalidParameter", "The source.sourceImage field is required.")
        mode = body.get("mode", "NoForce")
        if mode not in ("NoForce", "Force"):
            return _error(400, "InvalidParameter", f"Invalid import mode '{mode}'.")
        if "credentials" in source and (wrong := _bad_import_credentials(source["credentials"])):
            return _error(400, "InvalidRequestContent", f"The request content was invalid: {wrong}")
        record = {"parameters": body, "digest": None, "error": None}
        self.imports.append(record)
        try:
            if self.import_rate_limited > 0:
                self.import_rate_limited -= 1
                raise _ImportError(400, "TOOMANYREQUESTS", DOCKER_HUB_LIMIT)
            record["digest"] = self._copy_image(source, body, mode)
            failed_status = 200
        except _ImportError as err:
            record["error"] = {"code": err.code, "message": err.message}
            failed_status = err.status
        except httpx.HTTPError as err:
            record["error"] = {"code": "InternalServerError", "message": f"Import failed: {err}"}
            failed_status = 500
        return self._accepted(
            "registries", version, error=record["error"], failed_status=failed_status
        )

    def _copy_image(self, source: dict, body: dict, mode: str) -> str:
        """Copy the source manifest (and what it references) to each target, as ACR import
        does within one registry: same bytes, same media type, so the same digest."""
        image = source["sourceImage"]
        uri, resource = source.get("registryUri"), source.get("resourceId")
        local = {self.registry.host.lower()}
        if uri is None and resource is None and image.split("/", 1)[0].lower() in local:
            image = image.split("/", 1)[1]
        elif uri is not None and uri.lower().removeprefix("https://").rstrip("/") not in local:
            raise _ImportError(
                400, "InvalidParameters", f"Source registry '{uri}' is not reachable."
            )
        elif resource is not None and resource.lower() != self.resource_id.lower():
            raise _ImportError(
                400, "InvalidParameters", f"Source registry '{resource}' is not reachable."
            )
        repo, reference, by_digest = _split_image(image)
        got = self.registry.http.get(
            f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if got.status_code == 404:
            raise _ImportError(404, "NotFound", f"Source image '{image}' was not found.")
        got.raise_for_status()
        raw, media_type, digest = got.content, got.headers["content-type"], sha(got.content)
        tags = [_split_tag(t) for t in body.get("targetTags") or []]
        untagged = list(body.get("untaggedTargetRepositories") or [])
        if not tags and not untagged:
            if by_digest:
                untagged = [repo]
            else:
                tags = [(repo, reference)]
        for target_repo, tag in tags:
            if mode == "NoForce":
                head = self.registry.http.head(
                    f"/v2/{target_repo}/manifests/{tag}",
                    headers={"Accept": ", ".join(MANIFEST_TYPES)},
                )
                existing = head.headers.get("docker-content-digest")
                if head.status_code == 200 and existing != digest:
                    raise _ImportError(
                        409,
                        "Conflict",
                        f"Tag {target_repo}:{tag} already exists in target registry.",
                    )
        for target_repo in dict.fromkeys([r for r, _ in tags] + untagged):
            self._copy_manifest(repo, target_repo, raw, media_type)
        for target_repo, tag in tags:
            self._put_manifest(target_repo, tag, raw, media_type)
        return digest

    def _copy_manifest(self, source: str, target: str, raw: bytes, media_type: str) -> None:
        """Everything a manifest references, then the manifest by digest."""
        body = json.loads(raw)
        if media_type in (OCI_INDEX, DOCKER_LIST):
            for child in body.get("manifests", []):
                got = self.registry.http.get(
                    f"/v2/{source}/manifests/{child['digest']}",
                    headers={"Accept": child["mediaType"]},
                )
                got.raise_for_status()
                self._copy_manifest(source, target, got.content, got.headers["content-type"])
        else:
            for blob in [body["config"], *body.get("layers", [])]:
                if source == target:
                    continue
                got = self.registry.http.get(f"/v2/{source}/blobs/{blob['digest']}")
                got.raise_for_status()
                self.registry.blob(target, got.content)  # HEAD, then POST + PUT ?digest=
        self._put_manifest(target, sha(raw), raw, media_type)

    def _put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        self.registry.http.put(
            f"/v2/{repo}/manifests/{reference}", content=raw, headers={"Content-Type": media_type}
        ).raise_for_status()
        self.registry.sizes[sha(raw)] = len(raw)

    # -- webhooks

    def _webhook_resource(self, name: str, state: str = "Succeeded") -> dict:
        stored = self.webhooks[name]
        properties = stored.get("properties") or {}
        return {
            "id": f"{self.resource_id}/webhooks/{name}",
            "name": name,
            "type": "Microsoft.ContainerRegistry/registries/webhooks",
            "location": stored.get("location"),
            "tags": stored.get("tags") or {},
            # serviceUri and customHeaders are secrets: only getCallbackConfig returns them
            "properties": {
                "status": properties.get("status", "enabled"),
                "scope": properties.get("scope", ""),
                "actions": properties.get("actions", []),
                "provisioningState": state,
            },
        }

    def _put_webhook(self, name: str, body: Any, version: str) -> tuple[int, bytes, dict[str, str]]:
        if not re.fullmatch(r"[a-zA-Z0-9]{5,50}", name):
            return _error(400, "InvalidParameter", f"Invalid webhook name '{name}'.")
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict) or not body.get("location"):
            return _error(
                400, "InvalidParameter", "The location and properties fields are required."
            )
        if not properties.get("serviceUri") or not properties.get("actions"):
            return _error(
                400, "InvalidParameter", "The serviceUri and actions fields are required."
            )
        unknown = [a for a in properties["actions"] if a not in WEBHOOK_ACTIONS]
        if unknown:
            return _error(400, "InvalidParameter", f"Unknown webhook actions {unknown}; "
                          f"expected some of {', '.join(WEBHOOK_ACTIONS)}.")  # fmt: skip
        refused = self._webhook_refusal(name, body["location"], properties.get("scope") or "")
        if refused:
            return _error(400, "InvalidParameter", refused)
        existed = name in self.webhooks
        self.webhooks[name] = body
        if existed:
            return _json(200, self._webhook_resource(name))
        return self._accepted(
            "webhook",
            version,
            async_header=True,
            body=self._webhook_resource(name, "Creating"),
            status=201,
        )

    def _webhook_refusal(self, name: str, location: str, scope: str) -> str | None:
        """What ACR's webhook reference rules out: a scope in none of its documented forms,
        a region the registry has no replica in, more webhooks than the SKU allows."""
        if scope and not WEBHOOK_SCOPE.fullmatch(scope):
            return (
                f"The webhook scope '{scope}' is invalid: use 'repo:*', 'repo:tag', 'repo' "
                "(repo:latest) or empty for all repositories."
            )
        regions = {self.location, *self.replications}
        if location not in regions:
            return (
                f"The location '{location}' is not a replication of registry '{self.name}' "
                f"({', '.join(sorted(regions))})."
            )
        quota = WEBHOOK_QUOTA[self.sku]
        if name not in self.webhooks and len(self.webhooks) >= quota:
            return f"The registry's {self.sku} SKU allows {quota} webhooks."
        return None

    def _list_replications(self) -> tuple[int, bytes, dict[str, str]]:
        """ReplicationList.json's shape (2025-04-01), one per region, named for it."""
        status = {"displayStatus": "Ready", "message": "The replication is ready.",
                  "timestamp": _iso(self._created)}  # fmt: skip
        return _json(200, {"value": [
            {"id": f"{self.resource_id}/replications/{region}", "name": region,
             "type": "Microsoft.ContainerRegistry/registries/replications", "location": region,
             "tags": {}, "properties": {"provisioningState": "Succeeded", "status": status,
                                        "regionEndpointEnabled": True,
                                        "zoneRedundancy": "Disabled"}}
            for region in self.replications
        ]})  # fmt: skip

    def _get_webhook(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        if name not in self.webhooks:
            return self._missing_webhook(name)
        return _json(200, self._webhook_resource(name))

    def _list_webhooks(self) -> tuple[int, bytes, dict[str, str]]:
        return _json(200, {"value": [self._webhook_resource(n) for n in self.webhooks]})

    def _delete_webhook(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        if self.webhooks.pop(name, None) is None:
            return 204, b"", {}
        return 200, b"", {}

    def _callback_config(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        if name not in self.webhooks:
            return self._missing_webhook(name)
        properties = self.webhooks[name]["properties"]
        return _json(
            200,
            {
                "serviceUri": properties["serviceUri"],
                "customHeaders": properties.get("customHeaders") or {},
            },
        )

    def _missing_webhook(self, name: str) -> tuple[int, bytes, dict[str, str]]:
        return _error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.ContainerRegistry/registries/{self.name}/webhooks/{name}' "
            f"under resource group '{self.resource_group}' was not found.",
        )

    # -- blobs (Azure Storage, SAS-authenticated)

    def _sas(self, path: str, permissions: str) -> str:
        start, expiry = _now() - datetime.timedelta(minutes=5), _now() + datetime.timedelta(hours=1)
        query = {
            "sv": STORAGE_VERSION,
            "st": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "se": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sr": "b",
            "sp": permissions,
            "sig": self._signature(path, permissions),
        }
        return f"{self.base_url}{path}?{urlencode(query)}"

    def _signature(self, path: str, permissions: str) -> str:
        mac = hmac.new(self._sas_key, f"{permissions}\n{path}".encode(), hashlib.sha256)
        return base64.b64encode(mac.digest()).decode()

    def _blob(self, request: ArmRequest, raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        permissions, signature = request.query.get("sp", ""), request.query.get("sig", "")
        if "authorization" in request.headers:  # a SAS URL never takes a bearer token
            return _storage_error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. A SAS request carries no "
                "Authorization header.",
            )
        expected = self._signature(request.path, permissions)
        if not signature or not hmac.compare_digest(signature, expected):
            return _storage_error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization "
                "header is formed correctly including the signature.",
            )
        need = "w" if request.method == "PUT" else "r"
        if request.method not in ("PUT", "GET", "HEAD"):
            return _storage_error(
                405, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb."
            )
        if need not in permissions:
            return _storage_error(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )
        log = re.fullmatch(r"/blobs/logs/([^/]+)/rawtext\.log", request.path)
        if log:
            if request.method == "PUT":
                return _storage_error(403, "AuthorizationPermissionMismatch", "Logs are read-only.")
            return self._read_log(log.group(1), request)
        relative = request.path.removeprefix("/blobs/")
        if request.method == "PUT" and request.query.get("comp") in ("block", "blocklist"):
            return self._put_block(request, relative, raw)
        if request.method == "PUT":
            put_limit, _ = self._blob_limits(request)
            if len(raw) > put_limit:
                return _too_large(put_limit)
            if request.headers.get("x-ms-blob-type") != "BlockBlob":
                return _storage_error(
                    400,
                    "MissingRequiredHeader",
                    "An HTTP header that's mandatory for this request is not specified.",
                    detail="<HeaderName>x-ms-blob-type</HeaderName>",
                )
            with self.lock:
                self.uploads[relative] = raw
            return 201, b"", {**_blob_headers(raw), "x-ms-request-server-encrypted": "true"}
        with self.lock:
            data = self.uploads.get(relative)
        if data is None:
            return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        return _ranged(data, request, {"x-ms-blob-type": "BlockBlob"})

    def _blob_limits(self, request: ArmRequest) -> tuple[int, int]:
        """(Put Blob, Put Block) limits at the SAS's version, unless the test set its own."""
        version = request.query.get("sv", "")
        put, block = next((p, b) for v, p, b in STORAGE_LIMITS if version >= v)
        return self.blob_put_limit or put, self.blob_block_limit or block

    def _put_block(
        self, request: ArmRequest, relative: str, raw: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """Put Block (`comp=block&blockid=`) and Put Block List (`comp=blocklist`, XML)."""
        if request.query["comp"] == "block":
            block_id = request.query.get("blockid", "")
            try:
                decoded = base64.b64decode(block_id, validate=True)
            except ValueError:
                decoded = b""
            with self.lock:
                pending = self.blocks.setdefault(relative, {})
                lengths = {len(other) for other in pending}
            if not decoded or len(decoded) > 64 or lengths - {len(block_id)}:
                return _storage_error(
                    400,
                    "InvalidQueryParameterValue",
                    "Value for one of the query parameters specified in the request URI is "
                    "invalid.",
                    detail="<QueryParameterName>blockid</QueryParameterName>",
                )
            _, block_limit = self._blob_limits(request)
            if len(raw) > block_limit:
                return _too_large(block_limit)
            with self.lock:
                pending[block_id] = raw
            return 201, b"", {"x-ms-request-server-encrypted": "true"}
        try:
            listed = ElementTree.fromstring(raw)
        except ElementTree.ParseError:
            listed = None
        if listed is None or listed.tag != "BlockList":
            return _storage_error(
                400, "InvalidXmlDocument", "XML specified is not syntactically valid."
            )
        with self.lock:
            pending = self.blocks.get(relative, {})
            ids = [element.text or "" for element in listed]
            if any(i not in pending for i in ids):  # nothing committed before: Latest = pending
                return _storage_error(
                    400, "InvalidBlockList", "The specified block list is invalid."
                )
            data = b"".join(pending[i] for i in ids)
            self.uploads[relative] = data
            self.blocks.pop(relative, None)  # uncommitted blocks are discarded on commit
        return 201, b"", {**_blob_headers(data), "x-ms-request-server-encrypted": "true"}

    def _read_log(self, run_id: str, request: ArmRequest) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            run = self.runs.get(run_id)
            if run is None or run.status == "Queued":
                answer = _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
            else:
                headers = {"x-ms-blob-type": "AppendBlob", "Content-Type": "text/plain"}
                if run.status in TERMINAL:
                    headers["x-ms-meta-Complete"] = COMPLETE[run.status]
                answer = _ranged(bytes(run.log), request, headers)
            if run is not None:
                self._advance(run)  # reading the log is watching the run too
            return answer


def _bad_credentials(credentials: Any) -> str | None:
    """What in a run request's `credentials` the 2019-06-01-preview Tasks swagger does not
    define (Credentials, SourceRegistryCredentials, CustomRegistryCredentials, SecretObject),
    or None. A plain string where it wants a SecretObject (a literal password) is refused."""
    path = "credentials"
    if not isinstance(credentials, dict):
        return f"{path} is not an object"
    for key in credentials.keys() - {"sourceRegistry", "customRegistries"}:
        return f"{path}.{key} is not a property of Credentials"
    source = credentials.get("sourceRegistry", {})
    if not isinstance(source, dict) or source.keys() - {"loginMode"}:
        return f"{path}.sourceRegistry is not a SourceRegistryCredentials"
    if source.get("loginMode", "Default") not in ("None", "Default"):
        return f"{path}.sourceRegistry.loginMode is not one of None, Default"
    custom = credentials.get("customRegistries", {})
    if not isinstance(custom, dict):
        return f"{path}.customRegistries is not a map of login server to credentials"
    for server, login in custom.items():
        at = f"{path}.customRegistries[{server!r}]"
        if not isinstance(login, dict):
            return f"{at} is not a CustomRegistryCredentials"
        for key in login.keys() - {"userName", "password", "identity"}:
            return f"{at}.{key} is not a property of CustomRegistryCredentials"
        if "identity" in login and not isinstance(login["identity"], str):
            return f"{at}.identity is not a string"
        for key in ("userName", "password"):
            secret = login.get(key, {})
            if not isinstance(secret, dict) or secret.keys() - {"type", "value"}:
                return f"{at}.{key} is not a SecretObject"
            if secret.get("type", "Opaque") not in ("Opaque", "Vaultsecret"):
                return f"{at}.{key}.type is not one of Opaque, Vaultsecret"
            if "value" in secret and not isinstance(secret["value"], str):
                return f"{at}.{key}.value is not a string"
    return None


def _bad_import_credentials(credentials: Any) -> str | None:
    """What in `source.credentials` the 2025-04-01 registry swagger's ImportSourceCredentials
    does not define, or None: a `password` string is required, `username` optional, and
    nothing else (no Key Vault reference, no identity)."""
    path = "source.credentials"
    if not isinstance(credentials, dict):
        return f"{path} is not an object"
    for key in credentials.keys() - {"username", "password"}:
        return f"{path}.{key} is not a property of ImportSourceCredentials"
    if "password" not in credentials:
        return f"{path}.password is required"
    for key in ("username", "password"):
        if key in credentials and not isinstance(credentials[key], str):
            return f"{path}.{key} is not a string"
    return None


class _ImportError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Dropped(Exception):
    """Raised by an answer that is never sent (FakeArm.schedule_then_fail)."""


class _BadJson:
    """The body of a JSON request that did not parse."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class _ArmHandler(_Quiet):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    timeout = 10  # idle keep-alive connections end, and their threads with them

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        arm: FakeArm = self.server.owner
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Azure Storage and ARM want a Content-Length; the body is left unread, so close
            self.close_connection = True
            self.reply(
                *_storage_error(411, "MissingContentLengthHeader", "Content-Length is required.")
            )
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        split = urlsplit(self.path)
        body: Any = None
        if raw:
            body = raw
            if "json" in self.headers.get("Content-Type", "") and not split.path.startswith(
                "/blobs/"
            ):
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = _BadJson(raw)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in RECORDED_HEADERS}
        request = ArmRequest(
            self.command,
            split.path,
            dict(parse_qsl(split.query, keep_blank_values=True)),
            headers,
            body,
        )
        try:
            status, payload, extra = arm.answer(request, raw)
        except _Dropped:  # no answer: the client sees the connection closed
            self.close_connection = True
            return
        except Exception as err:  # a bug here should fail the test, not hang the SDK
            arm.errors.append(f"{self.command} {self.path}: {err!r}")
            status, payload, extra = _error(500, "InternalServerError", repr(err))
        request.status = status
        request_id = str(uuid.uuid4())
        extra = {"x-ms-request-id": request_id, **extra}
        if not split.path.startswith("/blobs/"):
            extra["x-ms-correlation-request-id"] = request_id
        else:
            extra["x-ms-version"] = STORAGE_VERSION
        self.reply(status, payload, extra)


# -- answers


def _json(status: int, body: Any, headers: dict | None = None) -> tuple[int, bytes, dict]:
    return (
        status,
        json.dumps(body).encode(),
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _error(
    status: int, code: str, message: str, headers: dict | None = None
) -> tuple[int, bytes, dict]:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _unauthorized(code: str, message: str) -> tuple[int, bytes, dict]:
    challenge = (
        'Bearer authorization_uri="https://login.microsoftonline.com/common", '
        f'error="invalid_token", error_description="{message}"'
    )
    return _error(401, code, message, {"WWW-Authenticate": challenge})


def _not_found_route(request: ArmRequest) -> tuple[int, bytes, dict]:
    return _error(
        404, "NotFound", f"No route for '{request.method} {request.path}' in this fake ARM."
    )


def _storage_error(
    status: int, code: str, message: str, detail: str = ""
) -> tuple[int, bytes, dict]:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}\nRequestId:{uuid.uuid4()}\n"
        f"Time:{_iso(_now())}</Message>{detail}</Error>"
    )
    return status, body.encode(), {"Content-Type": "application/xml", "x-ms-error-code": code}


def _too_large(limit: int) -> tuple[int, bytes, dict]:
    return _storage_error(
        413,
        "RequestBodyTooLarge",
        "The request body is too large and exceeds the maximum permissible limit.",
        detail=f"<MaxLimit>{limit}</MaxLimit>",
    )


def _blob_headers(data: bytes) -> dict[str, str]:
    return {
        "ETag": f'"0x{hashlib.sha256(data).hexdigest()[:16].upper()}"',
        "Last-Modified": _now().strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


def _ranged(data: bytes, request: ArmRequest, headers: dict[str, str]) -> tuple[int, bytes, dict]:
    """Get Blob: the whole blob, or `Range: bytes=N-[M]` as 206; a start past the end is 416."""
    headers = {"Accept-Ranges": "bytes", **_blob_headers(data), **headers}
    wanted = request.headers.get("x-ms-range") or request.headers.get("range") or ""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
    if not match:  # no (or an unparsable) range: Azure Storage answers the whole blob
        return 200, data, headers
    start = int(match.group(1))
    if start >= len(data):
        status, body, error_headers = _storage_error(
            416,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
        )
        return status, body, {**error_headers, "Content-Range": f"bytes */{len(data)}"}
    end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    return 206, data[start : end + 1], headers


# -- small parsers


def _split_image(image: str) -> tuple[str, str, bool]:
    """`repo:tag`, `repo@sha256:...` or `repo` -> (repo, reference, by digest)."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest, True
    repo, tag = _split_tag(image)
    return repo, tag, False


def _split_tag(image: str) -> tuple[str, str]:
    repo, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        return image, "latest"
    return repo, tag


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, as `docker build` numbers
    them in "Step i/n : ..." lines."""
    steps, current = [], ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        current += stripped
        steps.append(current.strip())
        current = ""
    if current.strip():
        steps.append(current.strip())
    return steps
