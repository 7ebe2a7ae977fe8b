"""The OCI distribution client: tag -> digest, manifests, retries and limits, many at once.

One httpx client per registry host (its own TLS settings, connection pool,
authentication and optional cap on requests in flight). A failure is an
answer too: `Failure(kind=…)` says the registry was down, refused us, or
has no such tag, so that callers never mistake "unknown" for "changed".
Registry answers are input: sizes are capped, every answer has a deadline and so has
the whole pass, a new digest is believed only with its manifest, redirects never
downgrade, and text is cleaned.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import httpx

from graphbuild import __version__, extras, refs, retry
from graphbuild.clouds import Cloud
from graphbuild.clouds import of as cloud_of
from graphbuild.config import RegistrySpec, loopback
from graphbuild.errors import ConfigError, InvalidReference
from graphbuild.registry import http, manifests
from graphbuild.registry.auth import (
    ACR_SUFFIXES,
    DOCKER_HUB_HOSTS,
    AcrAuth,
    AuthError,
    AuthUnavailable,
    Credentials,
    HostAuth,
    docker_credentials,
)

MISSING, DENIED, UNREACHABLE, RATE_LIMITED, ERROR = (
    "missing", "denied", "unreachable", "rate-limited", "error"
)  # fmt: skip
MAX_WAIT = 60.0  # longest pause between retries, whatever Retry-After asks
BREAKER = 3  # references in a row without an answer before a host is given up for the run
GRACE = 2.0  # seconds past a pass's deadline for its threads to hand their failures back
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Resolved:
    """What a reference points at now."""

    ref: str
    digest: str  # the tag's own digest: an index digest for multi-arch images
    media_type: str
    platforms: dict[str, str] = field(default_factory=dict)  # asked platform -> child digest
    children: dict[str, str] = field(default_factory=dict)  # every child of an index
    by_manifest: dict[str, dict[str, str]] = field(default_factory=dict)  # digest -> annotations

    def annotations(self, platform: str) -> dict[str, str]:
        """The annotations of the manifest `platform` runs: its child, or the manifest itself."""
        return self.by_manifest.get(self.platforms.get(platform, self.digest), {})


@dataclass(frozen=True)
class Failure:
    """Why a reference has no answer. Never a reason to rebuild."""

    ref: str
    kind: str  # missing | denied | unreachable | rate-limited | error
    message: str


@dataclass(frozen=True)
class Known:
    """What earlier runs learnt about digests; digests are immutable, so it never goes stale."""

    children: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # index -> children
    annotations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # digest -> them
    # references whose digest the caller records, and the digest it recorded last (None: not
    # yet): any other digest is proven by its manifest before it is answered
    recorded: Mapping[str, str | None] = field(default_factory=dict)
    # image -> the digest graphbuild last built and pushed for it: its own build record says
    # what it is built on, so that manifest need not be read to learn it
    built: Mapping[str, str] = field(default_factory=dict)

    def built_here(self, ref: str, digest: str, kind: str) -> bool:
        """The image manifest graphbuild last built for `ref`: its build record, not the
        manifest's annotations, says what it is built on (an index's children are still
        read)."""
        return self.built.get(ref) == digest and kind in manifests.IMAGE_TYPES

    def proven(self, ref: str, digest: str) -> bool:
        """Seen before: recorded for `ref`, pushed by graphbuild's last build of the image it
        names, or its manifest was read by an earlier run."""
        if ref not in self.recorded or digest in (self.recorded[ref], self.built.get(ref)):
            return True
        return digest in self.children or digest in self.annotations


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
    redirects: frozenset[str]  # other hosts its manifest requests may be redirected to
    plain: str | None  # its own loopback host name when it is reached over plain http
    # The first request to a host goes alone: it learns how the host authenticates,
    # so the requests behind it send credentials up front instead of each taking a 401.
    first: threading.Lock = field(default_factory=threading.Lock)
    probed: bool = False
    # After BREAKER references in a row got no answer (or one Retry-After beyond MAX_WAIT),
    # the rest of the run's requests to the host fail at once instead of each retrying.
    failures: int = 0
    down: tuple[str, str] | None = None
    # why it cannot be reached at all (refused, no such host, bad certificate), if that is why
    unreachable: str | None = None


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
        max_wait: float = MAX_WAIT,
        clouds: Mapping[str, Cloud] | None = None,
    ) -> None:
        """`clouds`: the Azure cloud of a registry whose name does not say it (`azure.cloud` for
        `azure.login_server`); other ACR hosts' names say theirs."""
        self.specs = dict(specs or {})
        self.clouds = dict(clouds or {})
        self.concurrency, self.timeout = concurrency, timeout
        self.deadline = 2 * timeout  # a whole answer, headers and body, however it trickles
        self.retries, self.max_wait = retries, max_wait
        # waits between tries: jittered, so clients turned away together come back apart
        self.backoff = retry.Backoff(backoff, most=max_wait, jitter=0.5)
        self._until: float | None = None  # when the pass resolve_all runs must end
        self._within = 0.0  # its length, for messages
        # manifests read by digest in this run: tags sharing a digest cost one GET, not one each
        self._read: dict[tuple[str, str, str], manifests.Manifest] = {}
        self._reading: dict[tuple[str, str, str], threading.Lock] = {}
        self.requests: Counter[str] = Counter()  # per registry host, token servers excluded
        self.errors: Counter[str] = Counter()  # per host: requests with no answer, 429 or 5xx
        self.ratelimits: dict[str, str] = {}  # host -> "remaining/limit" as Docker Hub reports
        self._hosts: dict[str, _Host] = {}
        self._tls = {host: _tls(spec) for host, spec in self.specs.items()}
        for host, spec in self.specs.items():
            _check_password(spec)
            if spec.auth == "acr":
                extras.require_azure(f"registries.{host}.auth acr")
        self._lock = threading.Lock()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self._hosts.values():
            host.http.close()

    def unreachable(self) -> dict[str, str]:
        """The registries this run could not reach at all, and why: each was asked once, and
        every reference on it is unreachable. For the one line that names each to a person."""
        with self._lock:
            return {name: host.unreachable for name, host in sorted(self._hosts.items())
                    if host.unreachable is not None}  # fmt: skip

    def signed_in(self) -> dict[str, str]:
        """Which credential each registry this run asked was given (`anonymous`: none), for
        a person to read: under `auth: auto` a stale `az acr login` in docker's config wins
        over Entra ID. A registry that could not be reached at all is left out."""
        with self._lock:
            hosts = sorted(self._hosts.items())
        return {name: host.auth.used() for name, host in hosts if host.unreachable is None}

    # -- many at once

    def resolve_all(
        self,
        wanted: Mapping[str, Sequence[str]],
        *,
        inspect: frozenset[str] | set[str] = frozenset(),
        known: Known | None = None,
        timeout: float | None = None,
    ) -> dict[str, Resolved | Failure]:
        """Each reference once, `concurrency` at a time; `inspect` ones also get annotations.

        With `timeout`, the whole pass ends by then: requests in flight are cut, references
        not asked yet are not, and each of them is a Failure that says the deadline passed.
        """
        known = known or Known()
        if timeout is not None:
            self._until, self._within = time.monotonic() + timeout, timeout

        def one(ref: str) -> Resolved | Failure:
            try:
                with http.deadline(self._until) if self._until else nullcontext():
                    if self._over():
                        return self._late(ref)
                    if ref in inspect:
                        return self.inspect(ref, wanted[ref], known)
                    return self.resolve(ref, wanted[ref], known)
            except Exception as err:  # a bug must not cost the other references their answer
                return Failure(ref, ERROR, f"{ref}: internal error: {type(err).__name__}: {err}")

        pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency))
        futures: dict[str, Future[Resolved | Failure]] = {r: pool.submit(one, r) for r in wanted}
        try:
            # the network is bounded by the deadline; this bounds the rest (a credential
            # helper, Entra ID): whatever has not answered shortly after it is let go
            left = None if self._until is None else self._until - time.monotonic() + GRACE
            wait(futures.values(), timeout=left)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._until = None
        return {ref: future.result() if future.done() and not future.cancelled()
                else self._late(ref) for ref, future in futures.items()}  # fmt: skip

    def _over(self) -> bool:
        return self._until is not None and time.monotonic() >= self._until

    def _late(self, ref: str) -> Failure:
        return Failure(ref, UNREACHABLE, self._late_message(ref))

    def _late_message(self, where: str) -> str:
        return (f"{where}: no answer before the check's deadline of {self._within:g} s passed "
                "(check.timeout in repos.yaml)")  # fmt: skip

    # -- one reference

    def resolve(
        self, ref: str, platforms: Sequence[str] = (), known: Known | None = None
    ) -> Resolved | Failure:
        """The digest a reference points at (HEAD), and its platforms' digests if an index."""
        known = known or Known()
        try:
            host, name, reference = self._split(ref)
            digest, kind = self._head(host, name, reference)
            children: Mapping[str, str] = {}
            unsure = kind not in manifests.KNOWN_TYPES
            wanted = platforms and (kind in manifests.INDEX_TYPES or unsure)
            if wanted and digest is not None and digest in known.children:
                children = known.children[digest]
            elif digest is None or wanted or not known.proven(ref, digest):
                # a new digest counts only once its manifest is read and checked: a registry
                # answering a HEAD with a made-up digest proves nothing
                found = self._get(host, name, reference, digest)
                digest, kind, children = found.digest, found.media_type, found.children
            return Resolved(ref, digest, kind, _choose(children, platforms), dict(children))
        except _Failed as err:
            return Failure(ref, err.kind, err.message)

    def inspect(
        self, ref: str, platforms: Sequence[str] = (), known: Known | None = None
    ) -> Resolved | Failure:
        """Like resolve, plus the annotations of each platform's manifest.

        A HEAD first: manifests already read (by digest) are not fetched again, so an
        unchanged image costs one request, and on Docker Hub no pull.
        """
        known = known or Known()
        try:
            host, name, reference = self._split(ref)
            digest, kind = self._head(host, name, reference)
            found: dict[str, dict[str, str]] = {}
            children: Mapping[str, str] = {}
            if digest is not None and digest in known.annotations:
                found[digest] = dict(known.annotations[digest])
                children = known.children.get(digest, {})
            elif digest is None or not known.built_here(ref, digest, kind):
                top = self._get(host, name, reference, digest)
                digest, kind, children = top.digest, top.media_type, top.children
                found[digest] = top.annotations
            chosen = _choose(children, platforms)
            for child in chosen.values():
                if child in known.annotations:
                    found[child] = dict(known.annotations[child])
                else:
                    found[child] = self._get(host, name, child, child, child=True).annotations
            return Resolved(ref, digest, kind, chosen, dict(children), found)
        except _Failed as err:
            return Failure(ref, err.kind, err.message)

    def diff_ids(self, ref: str) -> tuple[str, list[str]] | Failure:
        """The platform and layers (diff ids, base first) of the image manifest `ref` names
        by digest: what tells a finding in a base's layers from one in the image's own."""
        try:
            host, name, digest = self._split(ref)
            if not manifests.is_digest(digest):
                raise _Failed(ERROR, f"{ref}: layers are read by digest only")
            found = self._get(host, name, digest, digest, child=True)
            where = _where(host, name, digest)
            if not found.config:
                raise _Failed(ERROR, f"{where}: an index, not an image manifest")
            answer = self._request(host, "GET", f"/v2/{name}/blobs/{found.config}",
                                   f"repository:{name}:pull", where, blob=True)  # fmt: skip
            if answer.status != 200:
                raise _Failed(ERROR, f"{where}: its config blob: the registry answered "
                              f"{answer.status}{_registry_message(answer)}")  # fmt: skip
            if manifests.sha256(answer.body) != found.config:
                raise _Failed(ERROR, f"{where}: the registry sent a config blob that is not "
                              f"{found.config}")  # fmt: skip
            return manifests.diff_ids(answer.body, found.config)
        except manifests.InvalidManifest as err:
            return Failure(ref, ERROR, f"{ref}: {err}")
        except _Failed as err:
            return Failure(ref, err.kind, err.message)

    # -- manifests

    def _split(self, ref: str) -> tuple[_Host, str, str]:
        try:
            parsed = refs.parse(ref)
        except InvalidReference as err:
            raise _Failed(ERROR, str(err)) from None
        return self._host(parsed.domain), parsed.path, parsed.digest or parsed.tag or "latest"

    def _head(self, host: _Host, name: str, reference: str) -> tuple[str | None, str]:
        answer = self._manifest(host, "HEAD", name, reference)
        digest = answer.headers.get("docker-content-digest")
        where = _where(host, name, reference)
        if digest is not None and not manifests.is_digest(digest):
            raise _Failed(ERROR, f"{where}: the registry sent an invalid digest "
                          f"{_clean(digest)!r}")  # fmt: skip
        if digest is not None and manifests.is_digest(reference) and digest != reference:
            raise _Failed(ERROR, f"{where}: the registry answered for {digest} instead")
        return digest, manifests.media_type(answer.headers.get("content-type"))

    def _get(
        self, host: _Host, name: str, reference: str, digest: str | None, child: bool = False
    ) -> manifests.Manifest:
        """The manifest a HEAD named (by its digest, checked), or the tag's when it named none."""
        if digest is None:
            return self._read_manifest(host, name, reference, None, child)
        key = (host.name, name, digest)
        with self._lock:
            lock = self._reading.setdefault(key, threading.Lock())
        with lock:  # one GET per digest; if it failed, the next one asks for itself
            if key not in self._read:
                self._read[key] = self._read_manifest(host, name, reference, digest, child)
            return self._read[key]

    def _read_manifest(
        self, host: _Host, name: str, reference: str, digest: str | None, child: bool
    ) -> manifests.Manifest:
        where = _where(host, name, reference)
        # by the digest, content-addressed: what the tag points at now cannot differ from it
        said = f"{where}: the registry names {digest}, but " if digest and not child else ""
        try:
            answer = self._manifest(host, "GET", name, digest or reference, where)
        except _Failed as err:
            if child and err.kind == MISSING:  # an index naming a child it does not have
                raise _Failed(ERROR, f"{where}: listed in an index but missing") from None
            if said and err.kind == MISSING:
                raise _Failed(ERROR, f"{said}has no manifest by that digest") from None
            raise
        actual = manifests.sha256(answer.body)
        claimed = answer.headers.get("docker-content-digest")
        for wanted in (claimed, digest):
            if wanted is not None and wanted != actual:
                raise _Failed(ERROR, f"{where}: the registry sent a manifest whose digest is "
                              f"{actual}, not {_clean(wanted)}")  # fmt: skip
        try:
            return manifests.parse(answer.body, answer.headers.get("content-type"), actual)
        except manifests.InvalidManifest as err:
            raise _Failed(ERROR, f"{said}{err}" if said else f"{where}: {err}") from None

    def _manifest(
        self, host: _Host, method: str, name: str, reference: str, where: str | None = None
    ) -> http.Answer:
        """`where`: how messages name it (the tag a digest was asked for)."""
        where = where or _where(host, name, reference)
        answer = self._request(host, method, f"/v2/{name}/manifests/{reference}",
                               f"repository:{name}:pull", where)  # fmt: skip
        if answer.status == 200:
            return answer
        detail = _registry_message(answer)
        if answer.status == 404:
            raise _Failed(MISSING, f"{where}: not found{detail}")
        if answer.status == 401 and host.name in DOCKER_HUB_HOSTS:
            raise _Failed(DENIED, f"{where}: not found or no access (Docker Hub answers both "
                          f"with 401){detail}")  # fmt: skip
        if answer.status in (401, 403):
            raise _Failed(DENIED, f"{where}: access denied{detail}")
        raise _Failed(ERROR, f"{where}: the registry answered {answer.status}{detail}")

    # -- HTTP

    def _request(
        self, host: _Host, method: str, path: str, scope: str, where: str, blob: bool = False
    ) -> http.Answer:
        if host.probed:
            return self._send(host, method, path, scope, where, blob)
        with host.first:
            try:
                return self._send(host, method, path, scope, where, blob)
            finally:
                host.probed = True

    def _send(
        self, host: _Host, method: str, path: str, scope: str, where: str, blob: bool = False
    ) -> http.Answer:
        """The answer, tried again (with backoff) while the network fails or the registry
        answers 429 or 5xx; never waiting past the check's deadline."""
        challenged = False

        def attempt(n: int) -> http.Answer:
            nonlocal scope, challenged
            while True:  # a 401 that names its token server is asked again, not a new try
                if self._over():
                    raise _Failed(UNREACHABLE, self._late_message(where))
                if host.down:
                    raise _Failed(host.down[0], f"{where}: {host.down[1]}")
                headers = {"Accept": manifests.ACCEPT}
                try:
                    authorization = host.auth.header(scope)
                except AuthUnavailable as err:
                    if self._over():
                        raise _Failed(UNREACHABLE, self._late_message(where)) from None
                    raise self._gave_up(host, UNREACHABLE, f"{where}: {err}") from None
                except AuthError as err:
                    raise _Failed(DENIED, f"{where}: {err}") from None
                if authorization:
                    headers["Authorization"] = authorization
                try:
                    answer = self._exchange(host, method, path, headers, blob)
                except http.Overdue:  # it answered, too slowly: asking again would be as slow
                    if self._over():
                        raise _Failed(UNREACHABLE, self._late_message(where)) from None
                    message = (
                        f"{where}: the registry did not finish its answer within "
                        f"{self.deadline:g} s"
                    )
                    raise self._gave_up(host, UNREACHABLE, message) from None
                except http.TooLarge:
                    raise _Failed(ERROR, f"{where}: the answer is more than the 4 MiB a "
                                  "manifest may take") from None  # fmt: skip
                except http.Refused as err:
                    hint = ""
                    if str(err).startswith("redirected to another host"):
                        hint = f" (allow it with registries.{host.name}.redirect_hosts)"
                    raise _Failed(ERROR, f"{where}: the registry {err}{hint}") from None
                except httpx.ConnectError as err:
                    # refused, no such host, a certificate that does not verify: asking
                    # again cannot change it, and a registry back in a minute is seen by
                    # the next check. Any other failure to connect (a reset handshake, a
                    # temporary DNS failure) may be a blip: tried again, like a timeout.
                    if _hopeless(err):
                        raise self._cannot_reach(host, where, err) from None
                    raise retry.Again(_describe(err), value=err) from None
                except httpx.HTTPError as err:
                    raise retry.Again(_describe(err), value=err) from None
                if answer.redirected and answer.status in (401, 403):
                    # another host (a blob's storage) asks for credentials: never the
                    # registry's, nor a token its challenge would make them send elsewhere
                    raise _Failed(DENIED, f"{where}: the host it was redirected to answered "
                                  f"{answer.status}; no credentials are sent there")  # fmt: skip
                self._note_ratelimit(host.name, answer.headers)
                challenge = answer.headers.get("www-authenticate")
                if answer.status == 401 and challenge and not challenged:
                    challenged = True
                    try:
                        scope = host.auth.challenged(challenge, scope) or scope
                    except AuthError as err:
                        raise _Failed(DENIED, f"{where}: {err}") from None
                    continue
                if answer.status == 401 and challenge and "insufficient_scope" in challenge:
                    raise _Failed(DENIED, f"{where}: the token grants no pull access "
                                  "(insufficient_scope)")  # fmt: skip
                if answer.status == 429 or answer.status >= 500:
                    kind = RATE_LIMITED if answer.status == 429 else ERROR
                    wait = retry.retry_after(answer.headers.get("retry-after"))
                    if wait is not None and wait > self.max_wait:
                        host.down = (kind, f"{host.name} asks to wait {wait:.0f} s; not waiting")
                        raise _Failed(kind, f"{where}: the registry answered {answer.status} "
                                      f"and asks to wait {wait:.0f} s")  # fmt: skip
                    why = f"the registry answered {answer.status}"
                    raise retry.Again(why, wait=wait, value=answer)
                host.failures = 0
                return answer

        try:
            return retry.call(attempt, tries=self.retries + 1, backoff=self.backoff,
                              until=self._until)  # fmt: skip
        except retry.Late as late:  # no use waiting for it
            raise _Failed(UNREACHABLE, f"{self._late_message(where)}; the last try: "
                          f"{late.last.why}") from None  # fmt: skip
        except retry.Again as last:
            if isinstance(last.value, httpx.HTTPError):
                raise self._gave_up(host, UNREACHABLE, f"{where}: {last.why}") from None
            answer = last.value
            kind = RATE_LIMITED if answer.status == 429 else ERROR
            message = f"{where}: {last.why} after {self.retries + 1} tries"
            raise self._gave_up(host, kind, message + _registry_message(answer)) from None

    def _exchange(
        self, host: _Host, method: str, path: str, headers: dict[str, str], blob: bool = False
    ) -> http.Answer:
        """One request: its whole answer by the deadline, its body capped in size. A blob is
        checked against its digest, so it may come from the storage any registry redirects
        blobs to (https only; no credentials follow it there)."""

        def refusal(first: httpx.URL, target: httpx.URL) -> str | None:
            allowed = host.redirects | {http.authority(target)} if blob else host.redirects
            if blob and target.scheme == "http" and first.scheme == "https":
                return "redirected from https to http; not following (no downgrade)"
            return http.redirect_refusal(first, target, allowed=allowed, plain=host.plain)

        with self._slot(host):
            self._count(host.name)
            try:
                answer = http.fetch(
                    host.http, method, path, headers=headers, cap=manifests.MAX_SIZE,
                    until=time.monotonic() + self.deadline, may_redirect=refusal,
                )  # fmt: skip
            except (httpx.HTTPError, http.Overdue):
                self._count(host.name, self.errors)
                raise
            if answer.status == 429 or answer.status >= 500:
                self._count(host.name, self.errors)
            return answer

    def _cannot_reach(self, host: _Host, where: str, err: httpx.ConnectError) -> _Failed:
        """A connection no retry can make (`_hopeless`): the host is given up for the run."""
        reason = _connect_reason(err)
        with self._lock:
            if host.down is None:
                host.down = (UNREACHABLE, f"{host.name} cannot be reached ({reason})")
                host.unreachable = reason
            return _Failed(host.down[0], f"{where}: {host.down[1]}")

    def _gave_up(self, host: _Host, kind: str, message: str) -> _Failed:
        with self._lock:
            host.failures += 1
            if host.failures >= BREAKER and host.down is None:
                host.down = (kind, f"{host.name} gave no answer {BREAKER} times in a row; "
                             "not asking it again in this run")  # fmt: skip
                if kind == UNREACHABLE:
                    host.unreachable = f"no answer {BREAKER} times in a row"
        return _Failed(kind, message)

    @contextmanager
    def _slot(self, host: _Host) -> Iterator[None]:
        if host.slots is None:
            yield
            return
        with host.slots:
            yield

    def _count(self, name: str, counter: Counter[str] | None = None) -> None:
        with self._lock:
            (self.requests if counter is None else counter)[name] += 1

    def _note_ratelimit(self, name: str, headers: httpx.Headers) -> None:
        remaining = headers.get("ratelimit-remaining")
        if remaining is not None:
            limit = headers.get("ratelimit-limit", "?")
            self.ratelimits[name] = _clean(f"{remaining.split(';')[0]}/{limit.split(';')[0]}")

    def _host(self, domain: str) -> _Host:
        with self._lock:
            if domain in self._hosts:
                return self._hosts[domain]
            spec = self.specs.get(domain) or RegistrySpec(domain)
            api = "registry-1.docker.io" if domain in DOCKER_HUB_HOSTS else domain
            scheme = "http" if spec.insecure else "https"
            client = http.client(
                base_url=f"{scheme}://{api}", timeout=self.timeout,
                verify=self._tls.get(domain, True),
                headers={"User-Agent": f"graphbuild/{__version__}"},
                limits=httpx.Limits(max_connections=max(self.concurrency, 1)),
            )  # fmt: skip
            # the one host plain http may go to: a loopback registry's own (token realm,
            # redirects); repos.yaml allows `insecure` for no other
            plain = client.base_url.host if spec.insecure and loopback(domain) else None
            acr = spec.auth == "acr" or (spec.auth == "auto" and domain.endswith(ACR_SUFFIXES))
            kind = AcrAuth if acr else HostAuth
            auth = kind(client, lambda: _credentials(spec), plain, self.deadline)
            if isinstance(auth, AcrAuth):
                auth.required = spec.auth == "acr"
                auth.cloud = self.clouds.get(domain) or cloud_of(domain)
                auth.tries, auth.backoff = self.retries + 1, self.backoff
            slots = threading.Semaphore(spec.max_requests) if spec.max_requests else None
            redirects = frozenset(spec.redirect_hosts)
            host = self._hosts[domain] = _Host(domain, client, auth, slots, redirects, plain)
            return host


def _tls(spec: RegistrySpec) -> ssl.SSLContext | bool:
    """The system's CAs, plus the registry's own `ca_bundle` when it has one."""
    if spec.ca_bundle is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(spec.ca_bundle))
    except (OSError, ssl.SSLError) as err:
        message = f"not a readable CA bundle ({getattr(err, 'strerror', None) or err})"
        raise ConfigError(
            str(spec.ca_bundle), f"registries.{spec.host}.ca_bundle", message
        ) from None
    return context


def _check_password(spec: RegistrySpec) -> None:
    """A basic-auth password that is not there is a config error before any request."""
    if spec.auth != "basic":
        return
    if spec.password_env and spec.password_env not in os.environ:
        key = f"registries.{spec.host}.password_env"
        raise ConfigError("environment", key, f"${spec.password_env} is not set")
    if spec.password_file and not spec.password_file.is_file():
        key = f"registries.{spec.host}.password_file"
        raise ConfigError(str(spec.password_file), key, "no such file")


def _credentials(spec: RegistrySpec) -> Credentials | None:
    if spec.auth in ("anonymous", "acr"):
        return None
    if spec.auth == "basic":
        if spec.password_env:
            password = os.environ.get(spec.password_env, "")
        else:
            assert spec.password_file is not None
            try:
                password = spec.password_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                raise AuthError(f"{spec.password_file}: cannot read ({err})") from None
        where = f"${spec.password_env}" if spec.password_env else str(spec.password_file)
        source = f"basic auth as {spec.username} (password from {where})"
        return Credentials(spec.username, password, source=source)
    return docker_credentials(spec.host)


def _choose(children: Mapping[str, str], platforms: Sequence[str]) -> dict[str, str]:
    chosen = {}
    for platform in platforms:
        digest = manifests.pick(dict(children), platform)
        if digest:
            chosen[platform] = digest
    return chosen


def _where(host: _Host, name: str, reference: str) -> str:
    return f"{host.name}/{name}{'@' if ':' in reference else ':'}{reference}"


def _clean(text: str, limit: int = 200) -> str:
    """Registry text, as shown to people: no control characters, not a page long."""
    text = _CONTROL_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _registry_message(answer: http.Answer) -> str:
    """The registry's own error text (`errors[0].message`), if it sent one."""
    try:
        first = json.loads(answer.body)["errors"][0]
        return " (" + _clean(f"{first.get('code', '')}: {first.get('message', '')}") + ")"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return ""


def _describe(err: Exception) -> str:
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    return _clean(str(err)) or type(err).__name__


_ERRNO_RE = re.compile(r"^\[Errno -?\d+\]\s*")


_NO_SUCH_HOST = "Name or service not known"  # glibc's words for EAI_NONAME


def _hopeless(err: httpx.ConnectError) -> bool:
    """Is this failure to connect one that no retry can mend: refused (ECONNREFUSED), no
    such host (EAI_NONAME), a certificate that does not verify? httpcore raises any OSError
    while connecting as ConnectError; the OSError is in its cause or context chain."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError | ConnectionRefusedError):
            return True
        if isinstance(cause, socket.gaierror):
            return cause.errno == socket.EAI_NONAME or _NO_SUCH_HOST in str(cause)
        if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _connect_reason(err: httpx.ConnectError) -> str:
    """`connection refused`, `name or service not known`: the socket's words, short."""
    text = _ERRNO_RE.sub("", _clean(str(err), 160))
    if not text:
        return "cannot connect"
    return text[0].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text
