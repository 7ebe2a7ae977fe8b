"""Registry authentication: challenges, bearer tokens, and where credentials come from.

Credentials are looked up the way the Docker CLI does (credHelpers, then
credsStore, then auths in config.json) or taken from repos.yaml's
`registries:` (a password named by an environment variable, never written
in the file). Tokens are cached per scope until they expire. No secret is
ever put into a message, a log line or the state database.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from graphbuild import clouds, extras, retry
from graphbuild.errors import GraphbuildError
from graphbuild.registry import http

DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # the Docker CLI's credential key for docker.io
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
ACR_SUFFIXES = clouds.SUFFIXES
ENTRA = "Entra ID (DefaultAzureCredential)"  # how a registry signed in through it is named
CLIENT_ID = "graphbuild"
MIN_TOKEN_LIFETIME = 60  # seconds; the spec's default when expires_in is missing
MAX_TOKEN_LIFETIME = 24 * 3600  # a token said to live longer is renewed daily all the same
EXCHANGE_TRIES = 4  # ACR's token exchange, when it answers 429 or 5xx or not at all
EXCHANGE_PATIENCE = 60.0  # seconds the exchange is retried for, whatever Retry-After asks
MAX_TOKEN_SIZE = 1024 * 1024  # a token answer is a few KiB; a bigger one is not read
_HELPER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


class AuthError(GraphbuildError):
    """The registry or its token server refused us: bad, missing or insufficient credentials."""


class AuthUnavailable(AuthError):
    """The token server did not answer (down, timed out, 5xx): not a refusal."""


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)  # OAuth2 refresh token
    registry_token: str | None = field(default=None, repr=False)  # a bearer token as is
    # where they were found, for a person to read (`docker config (path)`); never a secret
    source: str = field(default="", compare=False)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",scope="repository:x:pull,push"` -> ("bearer", {…}); quotes hold commas."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if not match or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = (
            re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        )
        pos = match.end()
    return scheme.lower(), params


# ---------------------------------------------------------------- credentials


def docker_credentials(host: str, env: Mapping[str, str] = os.environ) -> Credentials | None:
    """What `docker login` stored: $DOCKER_AUTH_CONFIG, credHelpers, credsStore, then auths."""
    key = DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host
    if env.get("DOCKER_AUTH_CONFIG"):
        found = _from_auths(_load_json(env["DOCKER_AUTH_CONFIG"], "$DOCKER_AUTH_CONFIG"), key)
        if found:
            return replace(found, source="$DOCKER_AUTH_CONFIG")
    folder = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise AuthError(f"{path}: cannot read ({err})") from None
    config = _load_json(text, str(path))
    helpers = config.get("credHelpers")
    helper = (helpers.get(key) if isinstance(helpers, dict) else None) or config.get("credsStore")
    if helper:
        found = _from_helper(str(helper), key)
        if found:
            return replace(found, source=f"docker-credential-{helper} (named in {path})")
    found = _from_auths(config, key)
    return replace(found, source=f"docker config ({path})") if found else None


def _load_json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as err:  # a number too long for int is a ValueError, with no `msg`
        why = err.msg if isinstance(err, json.JSONDecodeError) else str(err).split(":")[0]
        raise AuthError(f"{where}: not valid JSON ({why})") from None
    return data if isinstance(data, dict) else {}


def _host_of(key: str) -> str:
    """Legacy keys are URLs (`https://host/v1/`); match them by host."""
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def _from_auths(config: dict, key: str) -> Credentials | None:
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = auths.get(key)
    if entry is None:
        entry = next((v for k, v in auths.items() if _host_of(k) == _host_of(key)), None)
    if not isinstance(entry, dict):
        return None
    entry = {k: v for k, v in entry.items() if isinstance(v, str)}
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            raise AuthError(f"docker config entry for {key}: `auth` is not base64") from None
    creds = Credentials(username or None, password or None, entry.get("identitytoken") or None,
                        entry.get("registrytoken") or None)  # fmt: skip
    return creds if creds != Credentials() else None


def _from_helper(helper: object, key: str) -> Credentials | None:
    if not isinstance(helper, str) or not _HELPER_RE.match(helper):
        raise AuthError(f"docker credential helper name {helper!r} is not valid")
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=key, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise AuthError(f"{program} is named in docker's config.json but not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"{program} did not answer within 60 s") from None
    except (OSError, UnicodeDecodeError) as err:  # not executable, or not text
        raise AuthError(f"{program} cannot be run ({type(err).__name__})") from None
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None  # not an error: this helper simply has nothing for the host
        raise AuthError(f"{program} failed (exit {done.returncode})")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise AuthError(f"{program} did not answer with a JSON object")
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(username, str | None) or not isinstance(secret, str | None):
        raise AuthError(f"{program} answered with a Username or Secret that is not text")
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username, secret) if username or secret else None


# ---------------------------------------------------------------- per-host auth


class HostAuth:
    """One registry's authentication: learnt from its first challenge, then sent up front.

    After the first challenge names the token realm, a token for a new
    repository is fetched before its first request, so each reference costs
    one request to the registry, not a 401 and a retry.
    """

    def __init__(
        self,
        client: httpx.Client,
        credentials: Callable[[], Credentials | None],
        plain: str | None,
        deadline: float,
    ) -> None:
        """`plain`: the registry's own loopback host name when it is reached over plain http,
        the one host a token realm may name without TLS. `deadline`: seconds per answer."""
        self.http, self._lookup, self.plain, self.deadline = client, credentials, plain, deadline
        self.lock = threading.Lock()
        self.scheme: str | None = None  # None: no challenge seen yet (perhaps anonymous)
        self.realm = self.service = ""
        self.tokens: dict[str, tuple[str, float]] = {}
        self._creds: Credentials | None = None
        self._failed: AuthError | None = None
        self._looked_up = False

    def credentials(self) -> Credentials | None:
        """Looked up once per run, failure included: a broken helper is not run per reference."""
        with self.lock:
            if not self._looked_up:
                try:
                    self._creds = self._lookup()
                except AuthError as err:
                    self._failed = err
                self._looked_up = True
            if self._failed is not None:
                raise self._failed
            return self._creds

    def used(self) -> str:
        """Which credential this registry was given, for a person to read: `anonymous` when
        none was asked for or found. Never a secret."""
        with self.lock:
            if self._failed is not None:
                return f"none ({self._failed})"
            if self._creds is not None:
                return self._creds.source or "given credentials"
        return "anonymous"

    def header(self, scope: str) -> str | None:
        """The Authorization value to send for `scope`, fetching a token if one is due."""
        if self.scheme == "basic":
            creds = self.credentials()
            if creds and creds.username is not None:
                return _basic(creds.username, creds.password or "")
            return None
        if self.scheme != "bearer":
            return None
        with self.lock:
            cached = self.tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        token, expiry = self._fetch_token(scope)
        with self.lock:
            self.tokens[scope] = (token, expiry)
        return f"Bearer {token}"

    def challenged(self, header: str, scope: str) -> str | None:
        """Learn from a 401's WWW-Authenticate. The caller retries once, with the scope the
        challenge names when it names one (None: keep its own)."""
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if not (creds := self.credentials()) or creds.username is None:
                raise AuthError("the registry asks for a username and password and none is set")
            self.scheme = "basic"
            return None
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(f"unsupported authentication challenge {scheme[:20]!r}")
        realm = params["realm"]
        try:
            url = httpx.URL(realm)
        except (httpx.InvalidURL, ValueError):  # IDNA errors are ValueErrors
            raise AuthError("the token realm is not a valid URL") from None
        if url.scheme != "https" and not (url.scheme == "http" and url.host == self.plain):
            if url.scheme == "http" and self.plain is not None:
                raise AuthError(f"the token realm http://{url.host[:100]} is plain http on "
                                "another host than the registry; refusing to send credentials "
                                "to it")  # fmt: skip
            raise AuthError("the token realm is not https; refusing to send credentials to it")
        wanted = params.get("scope") or scope
        with self.lock:
            self.scheme, self.realm, self.service = "bearer", realm, params.get("service", "")
            self.tokens.pop(wanted, None)
        if params.get("error") == "insufficient_scope":
            raise AuthError(f"the token was refused for {wanted} (insufficient_scope)")
        return wanted

    def _fetch_token(self, scope: str) -> tuple[str, float]:
        try:
            return self._ask_token(scope)
        except httpx.HTTPError as err:
            raise AuthUnavailable(
                f"the token server did not answer ({type(err).__name__})"
            ) from None

    def _fetch(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        data: dict[str, str] | None = None,
    ) -> http.Answer:
        """One answer from the token server: by the deadline, at most MAX_TOKEN_SIZE, and
        redirected only on its own host and never from https to http."""
        try:
            return http.fetch(
                self.http, method, url, headers=headers, params=params, data=data,
                until=time.monotonic() + self.deadline, cap=MAX_TOKEN_SIZE,
                may_redirect=lambda first, target: http.redirect_refusal(
                    first, target, plain=self.plain),
            )  # fmt: skip
        except http.Overdue:
            raise AuthUnavailable(
                f"the token server did not finish its answer within {self.deadline:g} s"
            ) from None
        except http.TooLarge:
            raise AuthUnavailable(
                f"the token server's answer is more than {MAX_TOKEN_SIZE // 1024 // 1024} MiB; "
                "not reading it"
            ) from None
        except http.Refused as err:
            raise AuthError(f"the token server {err}") from None

    def _ask_token(self, scope: str) -> tuple[str, float]:
        creds = self.credentials()
        if creds and creds.registry_token:
            return creds.registry_token, float("inf")
        response = None
        if creds and creds.identity_token:
            form = {"grant_type": "refresh_token", "service": self.service, "client_id": CLIENT_ID,
                    "scope": scope, "refresh_token": creds.identity_token}  # fmt: skip
            response = self._fetch("POST", self.realm, data=form)
            if response.status == 404:  # an old token server: GET below
                response = None
        if response is None:
            params = [("service", self.service)] + ([("scope", scope)] if scope else [])
            headers = {}
            if creds and creds.username is not None:
                headers["Authorization"] = _basic(creds.username, creds.password or "")
            response = self._fetch("GET", self.realm, params=params, headers=headers)
        if response.status in (401, 403):
            who = "the configured credentials" if creds else "anonymous access"
            raise AuthError(f"the token server refused {who} for {scope or 'the registry'}")
        if response.status == 429 or response.status >= 500:
            raise AuthUnavailable(f"the token server answered {response.status}")
        if response.status != 200:
            raise AuthError(f"the token server answered {response.status}")
        answer = _json(response.body)
        body = answer if isinstance(answer, dict) else {}
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError("the token server's answer has no token")
        return token, _renew_at(token_lifetime(token, body.get("expires_in")), early=5)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _json(body: bytes) -> object:
    """A token server's JSON answer, or None when it is not JSON (or nested past reason)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


# ---------------------------------------------------------------- Azure Container Registry


class AcrAuth(HostAuth):
    """ACR through Entra ID: an azure-identity token exchanged for an ACR refresh token.

    DefaultAzureCredential finds workload identity, managed identity, a service
    principal in the environment or `az login`; graphbuild stores nothing. The
    refresh token then goes through the ordinary OAuth2 refresh_token flow.
    Under `auth: auto`, no Azure identity means anonymous (ACR's anonymous pull).
    """

    required = True  # False under `auth: auto`
    # the registry's cloud: its Entra ID and audience; None when its name says none
    # (azure-identity's own default authority, the public cloud's audience)
    cloud: clouds.Cloud | None = None
    tries = EXCHANGE_TRIES
    backoff = retry.Backoff(0.5, most=EXCHANGE_PATIENCE, jitter=0.5)
    _refresh: tuple[str, float] | None = None
    _azure = None
    _no_identity: str | None = None
    _entra = False  # signed in through Entra ID
    _entra_failed: str | None = None  # why Entra ID sign-in failed, when it did
    _failure: AuthError | None = None  # the last exchange's, for the threads that waited on it
    _exchanged = 0  # exchanges finished

    def __init__(
        self,
        client: httpx.Client,
        credentials: Callable[[], Credentials | None],
        plain: str | None,
        deadline: float,
    ) -> None:
        super().__init__(client, credentials, plain, deadline)
        self.exchanging = threading.Lock()  # one exchange per registry at a time

    def credentials(self) -> Credentials | None:
        given = super().credentials()  # `az acr login` or an admin user in docker's config
        if given is not None:
            return given
        try:
            token = self._refresh_token()
        except AuthError as err:
            self._entra_failed = str(err)
            raise
        if not token:
            return None
        self._entra = True
        return Credentials(identity_token=token, source=ENTRA)

    def used(self) -> str:
        """Docker's config first, as credentials() takes it: a stale `az acr login` there wins
        over Entra ID under `auth: auto`, and this is where a person sees that."""
        given = super().used()
        if given != "anonymous":
            return given
        if self._entra:
            return ENTRA
        if self._entra_failed is not None:
            return f"none ({self._entra_failed})"
        with self.lock:
            return f"anonymous ({self._no_identity})" if self._no_identity else given

    def _refresh_token(self) -> str | None:
        """The refresh token, exchanged for when it is due. Threads that need it while an
        exchange is in flight wait for that one and take its result, token or refusal."""
        seen = self._exchanged
        with self.exchanging:
            with self.lock:
                if self._refresh and self._refresh[1] > time.monotonic():
                    return self._refresh[0]
                if self._no_identity is not None:  # asked once per run, not once per reference
                    if self.required:
                        raise AuthError(self._no_identity)
                    return None
                if self._exchanged != seen and self._failure is not None:
                    raise type(self._failure)(str(self._failure))
            self._failure = None
            try:
                return self._exchange()
            except AuthError as err:
                self._failure = err
                raise
            finally:
                self._exchanged += 1

    def _exchange(self) -> str | None:
        aad = self._entra_token()
        if aad is None:
            return None
        base, _, _ = self.realm.partition("/oauth2/")
        form = {"grant_type": "access_token", "service": self.service, "access_token": aad}

        def attempt(n: int) -> http.Answer:
            try:
                response = self._fetch("POST", f"{base}/oauth2/exchange", data=form)
            except httpx.ConnectError as err:  # nothing listens: the registry is down
                message = f"ACR's token exchange cannot be reached ({type(err).__name__})"
                raise AuthUnavailable(message) from None
            except httpx.HTTPError as err:
                raise retry.Again(f"did not answer ({type(err).__name__})") from None
            if response.status == 429 or response.status >= 500:
                wait = retry.retry_after(response.headers.get("retry-after"))
                raise retry.Again(f"answered {response.status}", wait=wait)
            return response

        until = time.monotonic() + EXCHANGE_PATIENCE  # and never past the check's deadline
        until = min(until, http.deadline_at() or until)
        try:
            response = retry.call(attempt, tries=self.tries, backoff=self.backoff, until=until)
        except retry.Late as late:
            raise AuthUnavailable(f"ACR's token exchange {late.last.why}; the next try would "
                                  "be too late") from None  # fmt: skip
        except retry.Again as last:
            raise AuthUnavailable(f"ACR's token exchange {last.why} ({self.tries} tries)") from None
        if response.status in (401, 403):
            raise AuthError(
                f"ACR refused the Entra ID token ({response.status}); does the identity "
                "have the AcrPull role on the registry?"
            )
        if response.status != 200:
            raise AuthError(f"ACR's token exchange answered {response.status}")
        answer = _json(response.body)
        token = answer.get("refresh_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError("ACR's token exchange answered without a refresh_token")
        with self.lock:
            self._refresh = (token, _renew_at(token_lifetime(token), early=60))
        return token

    def _entra_token(self) -> str | None:
        try:
            from azure.core.exceptions import ClientAuthenticationError
            from azure.identity import DefaultAzureCredential
        except ImportError:  # no Azure SDK; `auth: acr` stopped at Registry() already
            if self.required:
                raise AuthError(f"ACR sign-in needs the Azure SDK: {extras.AZURE}") from None
            return None  # `auth: auto`: anonymous, as with no Azure identity
        cloud = self.cloud or clouds.PUBLIC
        if self._azure is None:
            options = {"authority": self.cloud.authority} if self.cloud else {}
            self._azure = DefaultAzureCredential(**options)
        try:
            return self._azure.get_token(cloud.acr_scope).token
        except ClientAuthenticationError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            with self.lock:
                self._no_identity = f"no Azure credential for ACR ({first[:200]})"
            if self.required:
                raise AuthError(self._no_identity) from None
            return None


def token_lifetime(token: str, expires_in: object = None) -> float:
    """Seconds a token may be kept: the answer's `expires_in` when it gives one (at least a
    minute, as the distribution spec says), else the token's own `exp` (ACR's answers carry
    no expires_in; its tokens are JWTs), else a minute; never more than a day.

    The JWT is read, not verified: graphbuild is its client, and only learns from it when to
    renew. Whatever it holds, the answer is a lifetime, never an exception."""
    given = _seconds(expires_in)
    if given is not None and given > 0:
        return min(max(given, MIN_TOKEN_LIFETIME), MAX_TOKEN_LIFETIME)
    exp = _jwt_exp(token)
    left = None if exp is None else exp - time.time()
    if left is None or left <= 0:
        return MIN_TOKEN_LIFETIME
    return min(left, MAX_TOKEN_LIFETIME)


def _renew_at(lifetime: float, early: float) -> float:
    """When (time.monotonic()) to renew a token: `early` before it ends, or halfway."""
    return time.monotonic() + lifetime - min(early, lifetime / 2)


def _seconds(value: object) -> float | None:
    """A number of seconds given as a number or a numeric string; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    return None if math.isnan(seconds) else seconds


def _jwt_exp(token: str) -> float | None:
    """A JWT's `exp` claim (seconds since the epoch), None when the token is not a JWT or its
    `exp` is not a finite number."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):  # binascii and Unicode errors are ValueErrors
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return float(exp) if math.isfinite(exp) else None
    except OverflowError:  # an int too large for a float
        return None
