"""The OCI distribution client: tag -> digest, manifests, retries and limits, many at once.

One httpx client per registry host (its own TLS settings, connection pool,
authentication and optional cap on requests in flight). A failure is an
answer too: `Failure(kind=…)` says the registry was down, refused us, or
has no such tag, so that callers never mistake "unknown" for "changed".
"""

from __future__ import annotations

import email.utils
import os
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from graphbuild import __version__, refs
from graphbuild.config import RegistrySpec
from graphbuild.errors import InvalidReference
from graphbuild.registry import manifests
from graphbuild.registry.auth import (
    ACR_SUFFIXES,
    DOCKER_HUB_HOSTS,
    AcrAuth,
    AuthError,
    Credentials,
    HostAuth,
    docker_credentials,
)

MISSING, DENIED, UNREACHABLE, RATE_LIMITED, ERROR = (
    "missing", "denied", "unreachable", "rate-limited", "error"
)  # fmt: skip
MAX_WAIT = 60.0  # longest pause between retries, whatever Retry-After asks


@dataclass(frozen=True)
class Resolved:
    """What a reference points at now."""

    ref: str
    digest: str  # the tag's own digest: an index digest for multi-arch images
    media_type: str
    platforms: dict[str, str] = field(default_factory=dict)  # asked platform -> child digest
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)  # "" or platform -> ...


@dataclass(frozen=True)
class Failure:
    """Why a reference has no answer. Never a reason to rebuild."""

    ref: str
    kind: str  # missing | denied | unreachable | rate-limited | error
    message: str


class _Failed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass
class _Host:
    name: str
    http: httpx.Client
    auth: HostAuth
    slots: threading.Semaphore | None
    # The first request to a host goes alone: it learns how the host authenticates,
    # so the requests behind it send credentials up front instead of each taking a 401.
    first: threading.Lock = field(default_factory=threading.Lock)
    probed: bool = False
    # Set once a request ran out of retries without an answer: the rest of this run's
    # requests to the host fail at once instead of each waiting through its retries.
    down: str | None = None


class Registry:
    """Talks to every registry the fleet names; safe to use from many threads."""

    def __init__(
        self,
        specs: Mapping[str, RegistrySpec] | None = None,
        *,
        concurrency: int = 16,
        timeout: float = 15.0,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.specs = dict(specs or {})
        self.concurrency, self.timeout = concurrency, timeout
        self.retries, self.backoff = retries, backoff
        self.requests: Counter[str] = Counter()  # per registry host, token servers excluded
        self.ratelimits: dict[str, str] = {}  # host -> "remaining/limit" as Docker Hub reports
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self._hosts.values():
            host.http.close()

    # -- many at once

    def resolve_all(
        self,
        wanted: Mapping[str, Sequence[str]],
        *,
        inspect: frozenset[str] | set[str] = frozenset(),
        known: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, Resolved | Failure]:
        """Each reference once, `concurrency` at a time; `inspect` ones also get annotations.

        `known` maps an index digest to its platform children from an earlier
        answer, so an unchanged index costs one HEAD and no GET.
        """

        def one(ref: str) -> Resolved | Failure:
            if ref in inspect:
                return self.inspect(ref, wanted[ref])
            return self.resolve(ref, wanted[ref], known)

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return dict(zip(wanted, pool.map(one, wanted), strict=True))

    # -- one reference

    def resolve(
        self,
        ref: str,
        platforms: Sequence[str] = (),
        known: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Resolved | Failure:
        """The digest a reference points at (HEAD), and its platforms' digests if an index."""
        try:
            host, name, reference = self._split(ref)
            head = self._manifest(host, "HEAD", name, reference)
            digest = head.headers.get("docker-content-digest")
            kind = manifests.media_type(head.headers.get("content-type"))
            children: Mapping[str, str] = {}
            if digest is None or (platforms and kind in manifests.INDEX_TYPES):
                if digest is not None and known and digest in known:
                    children = known[digest]
                else:
                    found = self._get(host, name, digest or reference, digest)
                    digest, kind, children = found.digest, found.media_type, found.children
            chosen = _choose(children, platforms)
            return Resolved(ref, digest, kind, chosen)
        except _Failed as err:
            return Failure(ref, err.kind, err.message)

    def inspect(self, ref: str, platforms: Sequence[str] = ()) -> Resolved | Failure:
        """Like resolve, but GET the manifests to read their annotations (per platform)."""
        try:
            host, name, reference = self._split(ref)
            top = self._get(host, name, reference, None)
            notes = {"": top.annotations}
            chosen = _choose(top.children, platforms)
            for platform, child in chosen.items():
                notes[platform] = self._get(host, name, child, child).annotations
            return Resolved(ref, top.digest, top.media_type, chosen, notes)
        except _Failed as err:
            return Failure(ref, err.kind, err.message)

    # -- HTTP

    def _split(self, ref: str) -> tuple[_Host, str, str]:
        try:
            parsed = refs.parse(ref)
        except InvalidReference as err:
            raise _Failed(ERROR, str(err)) from None
        return self._host(parsed.domain), parsed.path, parsed.digest or parsed.tag or "latest"

    def _get(
        self, host: _Host, name: str, reference: str, expect: str | None
    ) -> manifests.Manifest:
        response = self._manifest(host, "GET", name, reference)
        body = response.content
        actual = manifests.sha256(body)
        claimed = response.headers.get("docker-content-digest")
        for wanted in (claimed, expect):
            if wanted and wanted.startswith("sha256:") and wanted != actual:
                raise _Failed(ERROR, f"{host.name}/{name}:{reference}: the registry sent a "
                              f"manifest whose digest is {actual}, not {wanted}")  # fmt: skip
        try:
            return manifests.parse(body, response.headers.get("content-type"), actual)
        except manifests.InvalidManifest as err:
            raise _Failed(ERROR, f"{host.name}/{name}: {err}") from None

    def _manifest(self, host: _Host, method: str, name: str, reference: str) -> httpx.Response:
        where = f"{host.name}/{name}{'@' if ':' in reference else ':'}{reference}"
        response = self._request(host, method, f"/v2/{name}/manifests/{reference}",
                                 f"repository:{name}:pull", where)  # fmt: skip
        if response.status_code == 200:
            return response
        detail = _registry_message(response)
        if response.status_code == 404:
            raise _Failed(MISSING, f"{where}: not found{detail}")
        if response.status_code == 401 and host.name in DOCKER_HUB_HOSTS:
            raise _Failed(DENIED, f"{where}: not found or no access (Docker Hub answers both "
                          f"with 401){detail}")  # fmt: skip
        if response.status_code in (401, 403):
            raise _Failed(DENIED, f"{where}: access denied{detail}")
        raise _Failed(ERROR, f"{where}: the registry answered {response.status_code}{detail}")

    def _request(
        self, host: _Host, method: str, path: str, scope: str, where: str
    ) -> httpx.Response:
        if host.probed:
            return self._send(host, method, path, scope, where)
        with host.first:
            try:
                return self._send(host, method, path, scope, where)
            finally:
                host.probed = True

    def _send(self, host: _Host, method: str, path: str, scope: str, where: str) -> httpx.Response:
        attempt, challenged = 0, False
        while True:
            headers = {"Accept": manifests.ACCEPT}
            try:
                authorization = host.auth.header(scope)
            except (AuthError, httpx.HTTPError) as err:
                raise _Failed(DENIED, f"{where}: {_describe(err)}") from None
            if authorization:
                headers["Authorization"] = authorization
            if host.down:
                raise _Failed(UNREACHABLE, f"{where}: {host.down}")
            try:
                with self._slot(host):
                    self._count(host.name)
                    response = host.http.request(method, path, headers=headers)
            except httpx.HTTPError as err:
                if attempt < self.retries:
                    self._pause(attempt, None)
                    attempt += 1
                    continue
                host.down = f"{host.name} did not answer ({_describe(err)})"
                raise _Failed(UNREACHABLE, f"{where}: {_describe(err)}") from None
            self._note_ratelimit(host.name, response)
            challenge = response.headers.get("www-authenticate")
            if response.status_code == 401 and challenge and challenged:
                if "insufficient_scope" in challenge:
                    message = f"{where}: the token grants no pull access (insufficient_scope)"
                    raise _Failed(DENIED, message)
            elif response.status_code == 401 and challenge:
                challenged = True
                try:
                    host.auth.challenged(challenge, scope)
                except AuthError as err:
                    raise _Failed(DENIED, f"{where}: {err}") from None
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt < self.retries:
                    self._pause(attempt, response.headers.get("retry-after"))
                    attempt += 1
                    continue
                kind = RATE_LIMITED if response.status_code == 429 else ERROR
                status, detail = response.status_code, _registry_message(response)
                message = f"{where}: the registry answered {status} after {attempt + 1} tries"
                raise _Failed(kind, message + detail)
            return response

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        wait = _retry_after(retry_after)
        if wait is None:
            wait = self.backoff * (2**attempt) * (0.5 + random.random())  # noqa: S311 - jitter
        time.sleep(min(wait, MAX_WAIT))

    @contextmanager
    def _slot(self, host: _Host) -> Iterator[None]:
        if host.slots is None:
            yield
            return
        with host.slots:
            yield

    def _count(self, name: str) -> None:
        with self._lock:
            self.requests[name] += 1

    def _note_ratelimit(self, name: str, response: httpx.Response) -> None:
        remaining = response.headers.get("ratelimit-remaining")
        if remaining is not None:
            limit = response.headers.get("ratelimit-limit", "?")
            self.ratelimits[name] = f"{remaining.split(';')[0]}/{limit.split(';')[0]}"

    def _host(self, domain: str) -> _Host:
        with self._lock:
            if domain in self._hosts:
                return self._hosts[domain]
            spec = self.specs.get(domain) or RegistrySpec(domain)
            api = "registry-1.docker.io" if domain in DOCKER_HUB_HOSTS else domain
            scheme = "http" if spec.insecure else "https"
            http = httpx.Client(
                base_url=f"{scheme}://{api}", timeout=self.timeout, follow_redirects=True,
                verify=_tls(spec),
                headers={"User-Agent": f"graphbuild/{__version__}"},
                limits=httpx.Limits(max_connections=max(self.concurrency, 1)),
            )  # fmt: skip
            acr = spec.auth == "acr" or (spec.auth == "auto" and domain.endswith(ACR_SUFFIXES))
            kind = AcrAuth if acr else HostAuth
            auth = kind(http, lambda: _credentials(spec), allow_http_realm=spec.insecure)
            slots = threading.Semaphore(spec.max_requests) if spec.max_requests else None
            host = self._hosts[domain] = _Host(domain, http, auth, slots)
            return host


def _tls(spec: RegistrySpec) -> ssl.SSLContext | bool:
    """The system's CAs, or the registry's own `ca_bundle`."""
    if spec.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(spec.ca_bundle))
    except (OSError, ssl.SSLError) as err:
        raise _Failed(ERROR, f"{spec.ca_bundle}: not a readable CA bundle ({err})") from None


def _credentials(spec: RegistrySpec) -> Credentials | None:
    if spec.auth in ("anonymous", "acr"):
        return None
    if spec.auth == "basic":
        if spec.password_env:
            password = os.environ.get(spec.password_env)
            if password is None:
                raise AuthError(f"environment variable {spec.password_env} is not set")
        else:
            assert spec.password_file is not None
            try:
                password = spec.password_file.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise AuthError(f"{spec.password_file}: {err.strerror}") from None
        return Credentials(spec.username, password)
    return docker_credentials(spec.host)


def _choose(children: Mapping[str, str], platforms: Sequence[str]) -> dict[str, str]:
    chosen = {}
    for platform in platforms:
        digest = manifests.pick(dict(children), platform)
        if digest:
            chosen[platform] = digest
    return chosen


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _registry_message(response: httpx.Response) -> str:
    """The registry's own error text (`errors[0].message`), if it sent one."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f" ({first.get('code', '')}: {first.get('message', '')})"
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _describe(err: Exception) -> str:
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    if isinstance(err, httpx.ConnectError):
        return f"cannot connect ({err})"
    return str(err) or type(err).__name__
