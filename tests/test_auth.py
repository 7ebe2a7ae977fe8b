"""Registry sign-in (registry/auth.py) against real token servers: ACR's Entra ID exchange,
token lifetimes read from the tokens, and the exchange's errors.

The Entra ID token comes from the real azure-identity, asking a managed-identity endpoint on
loopback (as App Service serves it); the ACR side is the test token server of servers.py.
"""

from __future__ import annotations

import base64
import json
import os
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError

from graphbuild import acr_admin, clouds, config, pipeline, retry
from graphbuild.config import AzureSpec, RegistrySpec
from graphbuild.registry import DENIED, UNREACHABLE, Registry
from graphbuild.registry.auth import AcrAuth, AuthError, AuthUnavailable, token_lifetime

from .oci import LocalRegistry
from .servers import ManagedIdentity, TokenServer
from .site import require

SCOPE = "repository:team/app0:pull"


@dataclass
class Acr:
    tokens: TokenServer
    identity: ManagedIdentity
    http: httpx.Client

    def auth(self) -> AcrAuth:
        """A fresh sign-in to the token server, as after a registry's first challenge."""
        auth = AcrAuth(self.http, lambda: None, plain="127.0.0.1", deadline=10)
        auth.backoff = retry.Backoff(0.01)
        challenge = f'Bearer realm="{self.tokens.realm}",service="{TokenServer.SERVICE}"'
        auth.challenged(challenge, SCOPE)
        return auth

    def exchanges(self) -> int:
        return sum("exchange" in request for request in self.tokens.requests)


@pytest.fixture
def acr(tmp_path, monkeypatch) -> Iterator[Acr]:
    tokens = TokenServer(
        tmp_path / "tokens", path="/oauth2/token", entra_token="entra-xyz", field="access_token"
    ).start()
    identity = ManagedIdentity("entra-xyz").start()
    for name in [k for k in os.environ if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))]:
        monkeypatch.delenv(name)
    for name, value in identity.environment().items():
        monkeypatch.setenv(name, value)
    try:
        with httpx.Client() as http:
            yield Acr(tokens, identity, http)
    finally:
        tokens.stop()
        identity.stop()


# ---------------------------------------------------------------- lifetimes


@pytest.mark.parametrize(("expires_in", "exp", "kept"), [
    (None, 3600, (3000, 3600)),  # ACR's /oauth2/token: no expires_in, the JWT's exp says it
    (300, 3600, (240, 300)),  # the distribution spec's expires_in, when sent, is the answer
])  # fmt: skip
def test_an_access_token_is_kept_as_long_as_it_says(acr, expires_in, exp, kept):
    acr.tokens.expires_in, acr.tokens.lifetime = expires_in, exp
    auth = acr.auth()
    assert auth.header(SCOPE).startswith("Bearer ")
    left = auth.tokens[SCOPE][1] - time.monotonic()
    assert kept[0] < left <= kept[1]
    auth.header(SCOPE)
    grants = [r for r in acr.tokens.requests if r.get("grant") == "refresh_token"]
    assert len(grants) == 1 and acr.exchanges() == 1


def test_the_refresh_token_is_exchanged_again_by_its_own_exp(acr):
    acr.tokens.refresh_lifetime = 600
    auth = acr.auth()
    auth.credentials()
    assert auth._refresh is not None
    assert 400 < auth._refresh[1] - time.monotonic() <= 600


def _jwt(payload: bytes) -> str:
    part = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NiJ9.{part}.c2lnbmF0dXJl"


@pytest.mark.parametrize("token", [
    "", "opaque-token", "a.b.c", "a.!!!.c", _jwt(b"not json"), _jwt(b"[1, 2]"),
    _jwt(b'{"exp": "soon"}'), _jwt(b'{"exp": true}'), _jwt(b'{"exp": 1e400}'),
    _jwt(b'{"exp": NaN}'), _jwt(b'{"exp": ' + b"9" * 5000 + b"}"), _jwt(b'{"exp": 12}'),
    _jwt(b'{"exp": ' + b"[" * 100000 + b"]" * 100000 + b"}"), _jwt(b"\xff\xfe"),
])  # fmt: skip
def test_a_token_that_is_not_a_jwt_with_a_usable_exp_gets_a_short_life(token):
    """graphbuild is the client, not the verifier: it reads `exp` only to know when to renew,
    and whatever the token holds, it renews soon rather than never, and does not crash."""
    assert token_lifetime(token) == 60


def test_a_jwt_exp_past_a_day_is_renewed_daily():
    far = json.dumps({"exp": int(time.time()) + 10 * 24 * 3600}).encode()
    assert token_lifetime(_jwt(far)) == 24 * 3600
    near = json.dumps({"exp": int(time.time()) + 1800}).encode()
    assert 1790 < token_lifetime(_jwt(near)) <= 1800
    assert token_lifetime(_jwt(near), expires_in=120) == 120
    assert token_lifetime("opaque", expires_in="300") == 300
    assert token_lifetime("opaque", expires_in=float("inf")) == 24 * 3600


# ---------------------------------------------------------------- exchange errors


def test_a_throttled_then_failing_exchange_is_tried_again(acr):
    acr.tokens.exchange_faults.extend([(429, {"Retry-After": "1"}), (503, {})])
    auth = acr.auth()
    started = time.monotonic()
    assert auth.credentials().identity_token
    assert time.monotonic() - started >= 0.9  # the Retry-After was waited for
    assert acr.exchanges() == 3


def test_an_exchange_that_asks_to_wait_too_long_is_unavailable_at_once(acr):
    """A Retry-After past what graphbuild waits (60 s) is not waited for, nor taken as a
    refusal."""
    acr.tokens.exchange_faults.append((503, {"Retry-After": "3600"}))
    auth = acr.auth()
    auth.backoff = retry.Backoff(0.01, most=60)
    with pytest.raises(AuthUnavailable, match="answered 503; the next try would be too late"):
        auth.credentials()
    assert acr.exchanges() == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_exchange_names_the_role_and_is_not_tried_again(acr, status):
    acr.tokens.exchange_faults.append((status, {}))
    with pytest.raises(AuthError, match="AcrPull") as refused:
        acr.auth().credentials()
    assert not isinstance(refused.value, AuthUnavailable)
    assert acr.exchanges() == 1


def test_an_exchange_that_keeps_failing_is_unavailable_not_refused(acr):
    acr.tokens.exchange_faults.extend([(500, {})] * 10)
    auth = acr.auth()
    auth.tries = 3
    with pytest.raises(AuthUnavailable, match="answered 500") as failed:
        auth.credentials()
    assert "AcrPull" not in str(failed.value)
    assert acr.exchanges() == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", [None, 403])
def test_concurrent_first_requests_make_one_exchange(acr, fault):
    """Threads that need the refresh token at once wait for the one exchange in flight and
    share its result, the token or the refusal."""
    acr.tokens.exchange_delay = 0.5
    if fault:
        acr.tokens.exchange_faults.append((fault, {}))
    auth = acr.auth()
    start = threading.Barrier(8)
    results: list[object] = []

    def first() -> None:
        start.wait()
        try:
            results.append(auth.credentials().identity_token)
        except AuthError as err:
            results.append(str(err))

    threads = [threading.Thread(target=first) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acr.exchanges() == 1
    assert len(results) == 8 and len(set(results)) == 1
    assert ("AcrPull" in str(results[0])) == bool(fault)


# ---------------------------------------------------------------- clouds


@pytest.mark.parametrize(("host", "cloud"), [
    ("myacr.azurecr.io", clouds.PUBLIC), ("myacr.azurecr.cn", clouds.CHINA),
    ("MyAcr.AzureCR.US", clouds.US_GOVERNMENT), ("myacr.azurecr.us:443", clouds.US_GOVERNMENT),
    ("acr.example.com", None), ("azurecr.cn.example.com", None), ("127.0.0.1:5000", None),
])  # fmt: skip
def test_a_login_server_names_its_cloud(host, cloud):
    assert clouds.of(host) == cloud


@pytest.mark.parametrize(("cloud", "audience"), [
    (None, "https://containerregistry.azure.net"),
    (clouds.CHINA, "https://containerregistry.azure.cn"),
    (clouds.US_GOVERNMENT, "https://containerregistry.azure.us"),
])  # fmt: skip
def test_the_entra_token_is_for_the_registry_clouds_acr_audience(acr, cloud, audience):
    auth = acr.auth()
    auth.cloud = cloud
    assert auth.credentials().identity_token
    assert acr.identity.requests == [audience]


class _Connects(socketserver.ThreadingTCPServer):
    """An https proxy that turns every CONNECT away, noting the host it was asked for."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Connect)
        self.hosts: list[str] = []


class _Connect(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.hosts.append(self.rfile.readline().decode().split()[1])
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def service_principal(acr, monkeypatch) -> Iterator[_Connects]:
    """A service principal in the environment, and an https proxy that notes where
    azure-identity goes to sign it in (and lets it go nowhere, so the sign-in fails)."""
    proxy = _Connects()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "NO_PROXY", "no_proxy"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-secret")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.parametrize(("cloud", "authority"), [
    (clouds.CHINA, "login.chinacloudapi.cn:443"),
    (clouds.US_GOVERNMENT, "login.microsoftonline.us:443"),
    (None, "login.microsoftonline.com:443"),
])  # fmt: skip
def test_entra_id_is_asked_in_the_registry_cloud(acr, service_principal, cloud, authority):
    auth = acr.auth()
    auth.cloud = cloud
    with pytest.raises(AuthError, match="no Azure credential for ACR"):
        auth.credentials()
    assert service_principal.hosts and set(service_principal.hosts) == {authority}
    assert acr.exchanges() == 0


def _registry(acr: Acr, tmp_path) -> LocalRegistry:
    """A real registry holding team/app0:1, behind the ACR-shaped token server."""
    require("docker-registry")
    plain = LocalRegistry(tmp_path / "reg").start()
    plain.image("team/app0", "1")
    plain.stop()
    return LocalRegistry(tmp_path / "reg", auth=acr.tokens.registry_auth()).start()


@pytest.mark.parametrize(("fault", "kind", "words"), [
    (503, UNREACHABLE, "ACR's token exchange answered 503 (2 tries)"),
    (403, DENIED, "does the identity have the AcrPull role"),
])  # fmt: skip
def test_a_reference_behind_a_failing_exchange_is_unreachable_and_a_refused_one_denied(
    acr, tmp_path, fault, kind, words
):
    reg = _registry(acr, tmp_path)
    acr.tokens.exchange_faults.extend([(fault, {})] * 10)
    spec = RegistrySpec(reg.host, insecure=True, auth="acr")
    try:
        with Registry({reg.host: spec}, retries=1, backoff=0.01) as r:
            answer = r.resolve(f"{reg.host}/team/app0:1")
    finally:
        reg.stop()
    assert answer.kind == kind and words in answer.message
    assert acr.exchanges() == (2 if fault == 503 else 1)


def test_the_registry_client_signs_in_to_the_cloud_azure_cloud_names(acr, tmp_path):
    """`azure.cloud` reaches the sign-in to a login server whose name says no cloud."""
    reg = _registry(acr, tmp_path)
    (tmp_path / "repos.yaml").write_text(
        f"repos: []\nregistries:\n  '{reg.host}': {{auth: acr, insecure: true}}\n"
        f"azure: {{resource_group: rg, registry: myacr, login_server: '{reg.host}', "
        "cloud: china}\n"
    )
    try:
        with pipeline.registry_for(config.load(tmp_path / "repos.yaml")) as r:
            answer = r.resolve(f"{reg.host}/team/app0:1")
    finally:
        reg.stop()
    assert answer.digest.startswith("sha256:")
    assert acr.identity.requests == ["https://containerregistry.azure.cn"]


def test_resource_manager_calls_sign_in_in_the_azure_cloud(service_principal):
    """The management client (builds, imports, webhooks) signs in at the Entra ID of
    `azure.cloud`, for its Resource Manager."""
    spec = AzureSpec("rg", "myacr", subscription="sub", cloud="usgovernment")
    with pytest.raises(ClientAuthenticationError):
        acr_admin.client(spec).registries.get("rg", "myacr")
    assert set(service_principal.hosts) == {"login.microsoftonline.us:443"}
