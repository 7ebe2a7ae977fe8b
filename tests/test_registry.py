"""The registry client against a real docker-registry: tags, indexes, auth, faults."""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import socket
import ssl
import stat
import threading
import time

import bcrypt
import httpcore
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from graphbuild.config import RegistrySpec
from graphbuild.registry import (
    DENIED,
    ERROR,
    MISSING,
    RATE_LIMITED,
    UNREACHABLE,
    Failure,
    Registry,
    Resolved,
)
from graphbuild.registry import client as registry_client
from graphbuild.registry import manifests as registry_manifests
from graphbuild.registry.auth import (
    AcrAuth,
    AuthError,
    Credentials,
    HostAuth,
    docker_credentials,
    parse_challenge,
)
from graphbuild.registry.client import Known

from .flaky_network import ResetFirst
from .hostile_registry import Drip, Reply, Scripted, endless, manifest, served, wait_for
from .oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    LocalRegistry,
    free_port,
    sha,
)
from .servers import FaultProxy, ManagedIdentity, TokenServer
from .site import require


def client(host: str, timeout: float = 5, **spec) -> Registry:
    return Registry({host: RegistrySpec(host, insecure=True, **spec)}, backoff=0.01,
                    timeout=timeout)  # fmt: skip


def test_a_tag_resolves_to_its_manifest_digest_and_moves(registry):
    first = registry.image("lib/base", "1", content="one")
    with client(registry.host) as r:
        assert r.resolve(f"{registry.host}/lib/base:1").digest == first
        second = registry.image("lib/base", "1", content="two")
        again = r.resolve(f"{registry.host}/lib/base:1")
    assert again.digest == second != first
    assert again.media_type == "application/vnd.oci.image.manifest.v1+json"


def test_a_docker_v2_manifest_resolves(registry):
    digest = registry.image("lib/old", "1", docker_format=True)
    with client(registry.host) as r:
        answer = r.resolve(f"{registry.host}/lib/old:1")
    assert answer.digest == digest
    assert answer.media_type == "application/vnd.docker.distribution.manifest.v2+json"


def test_an_index_gives_its_own_digest_and_each_platform_without_attestations(registry):
    amd = registry.image("lib/multi", "amd", content="amd")
    arm = registry.image("lib/multi", "arm", content="arm", platform="linux/arm64/v8")
    index = registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64/v8": arm},
                           attestation=True)  # fmt: skip
    with client(registry.host) as r:
        answer = r.resolve(
            f"{registry.host}/lib/multi:1", ["linux/amd64", "linux/arm64", "linux/s390x"]
        )
        only_head = r.resolve(f"{registry.host}/lib/multi:1")
        known = r.resolve(
            f"{registry.host}/lib/multi:1", ["linux/amd64"], Known({index: {"linux/amd64": amd}})
        )
    assert answer.digest == index
    assert answer.platforms == {"linux/amd64": amd, "linux/arm64": arm}  # no s390x, no attestation
    assert answer.children == {"linux/amd64": amd, "linux/arm64/v8": arm}  # all, to remember
    assert only_head.digest == index and only_head.platforms == {}
    assert known.platforms == {"linux/amd64": amd}
    # HEAD + GET (by the digest the HEAD named) for the first, HEAD only when no platform is
    # asked or the index is known
    assert registry.requests(r"/lib/multi/manifests/1$") == 3
    assert registry.requests(rf"/lib/multi/manifests/{index}$") == 1


def test_missing_tags_and_repositories(registry):
    registry.image("lib/base", "1")
    with client(registry.host) as r:
        tag = r.resolve(f"{registry.host}/lib/base:2")
        repo = r.resolve(f"{registry.host}/nobody/here:1")
    assert (tag.kind, repo.kind) == (MISSING, MISSING)
    assert tag.message == f"{registry.host}/lib/base:2: not found"


def test_inspect_reads_annotations_of_the_platform_manifest(registry):
    note = {"org.opencontainers.image.base.digest": "sha256:" + "1" * 64}
    amd = registry.image("app", "amd", annotations=note)
    index = registry.index("app", "1", {"linux/amd64": amd})
    with client(registry.host) as r:
        single = r.inspect(f"{registry.host}/app:amd", ["linux/amd64"])
        multi = r.inspect(f"{registry.host}/app:1", ["linux/amd64"])
    assert single.annotations("linux/amd64") == note
    assert (multi.digest, multi.platforms) == (index, {"linux/amd64": amd})
    assert multi.annotations("linux/amd64") == note
    with client(registry.host) as r:  # manifests already read are not fetched again
        before = registry.requests()
        known = Known({index: multi.children}, multi.by_manifest)
        again = r.inspect(f"{registry.host}/app:1", ["linux/amd64"], known)
        assert registry.requests() - before == 1  # the HEAD
    assert again.annotations("linux/amd64") == note


def test_one_request_per_unique_reference(registry):
    refs = {f"{registry.host}/lib/r{i}:1": [] for i in range(40)}
    for ref in refs:
        registry.image(ref.split("/", 1)[1].rsplit(":", 1)[0], "1", content=ref)
    before = registry.requests()
    with client(registry.host) as r:
        answers = r.resolve_all(refs)
        assert r.requests[registry.host] == 40
    assert all(a.digest.startswith("sha256:") for a in answers.values())
    assert registry.requests() - before == 40


# ---------------------------------------------------------------- authentication


def test_htpasswd_basic_auth(tmp_path, monkeypatch):
    require("docker-registry")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("ci:" + bcrypt.hashpw(b"s3cr3t-pw", bcrypt.gensalt()).decode() + "\n")
    auth = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
    reg = LocalRegistry(tmp_path / "reg", auth=auth, credentials=("ci", "s3cr3t-pw")).start()
    try:
        digest = reg.image("private/app", "1")
        monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
        spec = {"auth": "basic", "username": "ci", "password_env": "TEST_REGISTRY_PASSWORD"}
        with client(reg.host, **spec) as r:
            assert r.resolve(f"{reg.host}/private/app:1").digest == digest
        monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "wrong-pw")
        with client(reg.host, **spec) as r:
            refused = r.resolve(f"{reg.host}/private/app:1")
        with client(reg.host, auth="anonymous") as r:
            anonymous = r.resolve(f"{reg.host}/private/app:1")
    finally:
        reg.stop()
    assert refused.kind == DENIED and "wrong-pw" not in refused.message
    assert anonymous.kind == DENIED
    assert "asks for a username and password and none is set" in anonymous.message


def _token_registry(tmp_path, tokens: TokenServer) -> LocalRegistry:
    """Images are pushed while the storage is served without auth, then served with tokens."""
    require("docker-registry")
    plain = LocalRegistry(tmp_path / "reg").start()
    for i in range(3):
        plain.image(f"team/app{i}", "1", content=str(i))
    plain.stop()
    return LocalRegistry(tmp_path / "reg", auth=tokens.registry_auth()).start()


def _anonymous_answer(tmp_path, **token_server):
    """What an anonymous client gets for one image behind a token server set up so, and
    the registry's host."""
    tokens = TokenServer(tmp_path / "tokens", **token_server).start()
    reg = _token_registry(tmp_path, tokens)
    try:
        with client(reg.host, auth="anonymous") as r:
            return r.resolve(f"{reg.host}/team/app0:1"), reg.host
    finally:
        reg.stop()
        tokens.stop()


def test_bearer_tokens_are_fetched_per_repository_and_sent_up_front(tmp_path):
    tokens = TokenServer(tmp_path / "tokens", field="access_token").start()
    reg = _token_registry(tmp_path, tokens)
    pushed = reg.requests()
    try:
        refs = {f"{reg.host}/team/app{i}:1": [] for i in range(3)}
        with client(reg.host, auth="anonymous") as r:
            answers = r.resolve_all(refs)
            again = r.resolve(f"{reg.host}/team/app0:1")
    finally:
        reg.stop()
        tokens.stop()
    assert all(not hasattr(a, "kind") for a in [*answers.values(), again])
    # the first request learns the realm (401); every other one carries its token
    assert reg.requests() - pushed == 3 + 1 + 1
    scopes = sorted(s for req in tokens.requests for s in req["scopes"])
    assert scopes == [f"repository:team/app{i}:pull" for i in range(3)]


def test_bearer_token_with_docker_login_credentials(tmp_path, monkeypatch):
    tokens = TokenServer(tmp_path / "tokens", users={"robot": "pat-123"}).start()
    reg = _token_registry(tmp_path, tokens)
    config = tmp_path / "docker"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    try:
        with client(reg.host) as r:
            without = r.resolve(f"{reg.host}/team/app1:1")
        auth = base64.b64encode(b"robot:pat-123").decode()
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        with client(reg.host) as r:
            with_login = r.resolve(f"{reg.host}/team/app1:1")
        (config / "config.json").write_text(
            json.dumps({"auths": {reg.host: {"identitytoken": "identity-token-for-tests"}}})
        )
        with client(reg.host) as r:
            with_identity = r.resolve(f"{reg.host}/team/app2:1")
    finally:
        reg.stop()
        tokens.stop()
    assert without.kind == DENIED and "refused anonymous access" in without.message
    assert with_login.digest.startswith("sha256:")
    assert with_identity.digest.startswith("sha256:")
    assert tokens.requests[-1] == {
        "method": "POST", "scopes": ["repository:team/app2:pull"], "grant": "refresh_token"
    }  # fmt: skip
    assert "pat-123" not in without.message


def test_a_token_without_pull_access_is_denied_by_name(tmp_path):
    answer, host = _anonymous_answer(tmp_path, grant=False)
    assert answer.kind == DENIED
    assert (
        answer.message
        == f"{host}/team/app0:1: the token grants no pull access (insufficient_scope)"
    )


def test_a_tls_registry_with_a_private_ca(tmp_path):
    """ca_bundle trusts a private CA; without it, TLS verification fails and says so."""
    require("docker-registry")
    ca, cert, key = _tls_files(tmp_path)
    plain = LocalRegistry(tmp_path / "reg").start()
    digest = plain.image("lib/base", "1")
    plain.stop()
    reg = LocalRegistry(tmp_path / "reg", tls={"certificate": str(cert), "key": str(key)}).start()
    try:
        spec = RegistrySpec(reg.host, ca_bundle=ca)
        with Registry({reg.host: spec}, backoff=0.01) as r:
            trusted = r.resolve(f"{reg.host}/lib/base:1")
        with Registry({}, backoff=0.01, retries=0) as r:
            untrusted = r.resolve(f"{reg.host}/lib/base:1")
    finally:
        reg.stop()
    assert trusted.digest == digest
    assert untrusted.kind == UNREACHABLE and "CERTIFICATE_VERIFY_FAILED" in untrusted.message


def _tls_files(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(name("test CA"))
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


def test_acr_exchanges_an_entra_id_token_from_azure_identity(tmp_path, monkeypatch):
    """The real azure-identity asks a managed-identity endpoint (here on loopback, as App
    Service serves it); the Entra ID token is exchanged for an ACR refresh token."""
    tokens = TokenServer(
        tmp_path / "tokens", path="/oauth2/token", entra_token="entra-xyz", field="access_token"
    ).start()
    identity = ManagedIdentity("entra-xyz").start()
    reg = _token_registry(tmp_path, tokens)
    for name in [k for k in os.environ if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))]:
        monkeypatch.delenv(name)
    for name, value in identity.environment().items():
        monkeypatch.setenv(name, value)
    try:
        with client(reg.host, auth="acr") as r:
            answers = r.resolve_all({f"{reg.host}/team/app{i}:1": [] for i in range(3)})
        identity.token = "not-what-acr-expects"
        with client(reg.host, auth="acr") as r:
            refused = r.resolve(f"{reg.host}/team/app0:1")
    finally:
        reg.stop()
        tokens.stop()
        identity.stop()
    assert all(answer.digest.startswith("sha256:") for answer in answers.values())
    assert identity.requests[0] == "https://containerregistry.azure.net"
    exchanges = [req for req in tokens.requests if "exchange" in req]
    assert exchanges == [
        {"method": "POST", "exchange": True},
        {"method": "POST", "exchange": False},
    ]
    grants = [req for req in tokens.requests if req.get("grant") == "refresh_token"]
    assert len(grants) == 3  # one exchange, then one token per repository
    assert refused.kind == DENIED and "AcrPull" in refused.message


def test_each_registry_says_which_credential_it_was_given(tmp_path, monkeypatch, registry):
    """For `check` to say per registry: anonymous, or where docker's credentials came from
    (a file, a helper, $DOCKER_AUTH_CONFIG), or repos.yaml's basic auth; never a secret."""
    tokens = TokenServer(tmp_path / "tokens", users={"robot": "pat-123"}).start()
    reg = _token_registry(tmp_path, tokens)
    bin_dir, config = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    config.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("ROBOT_PAT", "pat-123")
    _helper(bin_dir, "special", {"Username": "robot", "Secret": "pat-123"})
    auth = {"auths": {reg.host: {"auth": base64.b64encode(b"robot:pat-123").decode()}}}
    seen = {}
    try:
        (config / "config.json").write_text(json.dumps(auth))
        specs = {h: RegistrySpec(h, insecure=True) for h in (reg.host, registry.host)}
        with Registry(specs, backoff=0.01, timeout=5) as r:
            r.resolve(f"{reg.host}/team/app1:1")
            r.resolve(f"{registry.host}/team/none:1")  # no credentials asked for
            seen["file"] = r.signed_in()
        (config / "config.json").write_text(json.dumps({"credHelpers": {reg.host: "special"}}))
        with client(reg.host) as r:
            r.resolve(f"{reg.host}/team/app1:1")
            seen["helper"] = r.signed_in()
        monkeypatch.setenv("DOCKER_AUTH_CONFIG", json.dumps(auth))
        with client(reg.host) as r:
            r.resolve(f"{reg.host}/team/app1:1")
            seen["variable"] = r.signed_in()
        with client(reg.host, auth="basic", username="robot", password_env="ROBOT_PAT") as r:
            r.resolve(f"{reg.host}/team/app1:1")
            seen["basic"] = r.signed_in()
    finally:
        reg.stop()
        tokens.stop()
    assert seen == {
        "file": {reg.host: f"docker config ({config / 'config.json'})",
                 registry.host: "anonymous"},
        "helper": {reg.host: f"docker-credential-special (named in {config / 'config.json'})"},
        "variable": {reg.host: "$DOCKER_AUTH_CONFIG"},
        "basic": {reg.host: "basic auth as robot (password from $ROBOT_PAT)"},
    }  # fmt: skip
    assert "pat-123" not in repr(seen) and "pat-123" not in repr(docker_credentials(reg.host))


def test_a_stale_docker_login_wins_over_entra_id_under_auto_and_is_named(tmp_path, monkeypatch):
    """`az acr login` leaves a token in docker's config; under `auth: auto` it is used, not
    the Entra ID identity, and that is what the check names. With none there, Entra ID is."""
    tokens = TokenServer(
        tmp_path / "tokens", path="/oauth2/token", entra_token="entra-xyz", field="access_token",
        users={"00000000-0000-0000-0000-000000000000": "stale-acr-token"},
    ).start()  # fmt: skip
    identity = ManagedIdentity("entra-xyz").start()
    reg = _token_registry(tmp_path, tokens)
    for name in [k for k in os.environ if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))]:
        monkeypatch.delenv(name)
    for name, value in identity.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    login = base64.b64encode(b"00000000-0000-0000-0000-000000000000:stale-acr-token").decode()
    seen = []
    try:
        for entry in ({reg.host: {"auth": login}}, {}):
            (tmp_path / "config.json").write_text(json.dumps({"auths": entry}))
            with httpx.Client(base_url=f"http://{reg.host}") as http:
                # what Registry makes for a *.azurecr.io host under `auth: auto`
                acr = AcrAuth(http, lambda: docker_credentials(reg.host), "127.0.0.1", 5.0)
                acr.required = False
                answer = http.get("/v2/team/app1/manifests/1")
                scope = acr.challenged(answer.headers["WWW-Authenticate"], "")
                assert acr.header(scope or "repository:team/app1:pull")
                seen.append(acr.used())
        identity.token = "not-what-acr-expects"  # an identity ACR refuses: not "anonymous"
        with httpx.Client(base_url=f"http://{reg.host}") as http:
            acr = AcrAuth(http, lambda: None, "127.0.0.1", 5.0)  # `auth: acr`
            answer = http.get("/v2/team/app1/manifests/1")
            scope = acr.challenged(answer.headers["WWW-Authenticate"], "")
            with pytest.raises(AuthError) as refused:
                acr.header(scope or "repository:team/app1:pull")
            seen.append(acr.used())
    finally:
        reg.stop()
        tokens.stop()
        identity.stop()
    assert seen == [f"docker config ({tmp_path / 'config.json'})",
                    "Entra ID (DefaultAzureCredential)", f"none ({refused.value})"]  # fmt: skip
    assert len(identity.requests) == 2  # asked only once docker's config had nothing


def test_parse_challenge_keeps_quoted_commas():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",'
        'scope="repository:team/app:pull,push",error="insufficient_scope"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:team/app:pull,push",
                      "error": "insufficient_scope"}  # fmt: skip
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})


def _helper(folder, name: str, answer: dict | None) -> None:
    """A real docker-credential-<name> program on PATH answering `get`."""
    script = folder / f"docker-credential-{name}"
    body = json.dumps(answer) if answer else ""
    code = 0 if answer else 1
    script.write_text(
        "#!/bin/sh\nread host\n"
        + (f"echo '{body}'\n" if answer else "echo 'credentials not found in native keychain'\n")
        + f"exit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_docker_config_lookup_order(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    _helper(bin_dir, "special", {"Username": "helper-user", "Secret": "helper-secret"})
    _helper(bin_dir, "store", {"Username": "<token>", "Secret": "refresh-me"})
    _helper(bin_dir, "empty", None)
    encoded = base64.b64encode(b"file-user:file-pass").decode()
    (tmp_path / "config.json").write_text(json.dumps({
        "credHelpers": {"helped.example": "special", "nothing.example": "empty"},
        "credsStore": "store",
        "auths": {"https://index.docker.io/v1/": {"auth": encoded},
                  "https://legacy.example/v1/": {"username": "old", "password": "pw"}},
    }))  # fmt: skip
    assert docker_credentials("helped.example") == Credentials("helper-user", "helper-secret")
    assert docker_credentials("stored.example") == Credentials(identity_token="refresh-me")
    assert docker_credentials("nothing.example") is None
    plain = {"https://index.docker.io/v1/": {"auth": encoded},
             "https://legacy.example/v1/": {"username": "old", "password": "pw"}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"auths": plain}))  # no helpers now
    assert docker_credentials("docker.io") == Credentials("file-user", "file-pass")
    assert docker_credentials("legacy.example") == Credentials("old", "pw")
    assert docker_credentials("unknown.example") is None
    monkeypatch.setenv(
        "DOCKER_AUTH_CONFIG", json.dumps({"auths": {"ci.example": {"auth": encoded}}})
    )
    assert docker_credentials("ci.example") == Credentials("file-user", "file-pass")
    assert "file-pass" not in repr(docker_credentials("ci.example"))


@pytest.mark.parametrize(("text", "why"), [
    ('{"auths": ', "not valid JSON (Expecting value)"),
    ('{"auths": ' + "9" * 5000 + "}", "not valid JSON (Exceeds the limit (4300 digits)"),
])  # fmt: skip
def test_a_docker_config_that_is_not_json_is_named_not_a_traceback(
    tmp_path, monkeypatch, text, why
):
    """A number too long for Python's int is a ValueError without a JSONDecodeError's msg."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_AUTH_CONFIG", raising=False)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(AuthError, match=re.escape(f"{tmp_path / 'config.json'}: {why}")):
        docker_credentials("docker.io")


# ---------------------------------------------------------------- faults


@pytest.fixture
def proxy(registry):
    running = FaultProxy(registry.host).start()
    yield running
    running.stop()


def test_429_and_500_are_retried_honouring_retry_after(registry, proxy):
    digest = registry.image("lib/base", "1")
    proxy.fail(429, 2, {"Retry-After": "0"})
    proxy.fail(503, 1)
    with client(proxy.address) as r:
        answer = r.resolve(f"{proxy.address}/lib/base:1")
    assert answer.digest == digest
    assert proxy.seen == 4


def test_each_try_is_a_request_and_one_turned_away_an_error(registry, proxy):
    """What /metrics serves per host: a 503 then the answer is 2 requests and 1 error."""
    digest = registry.image("lib/base", "1")
    proxy.fail(503, 1)
    with client(proxy.address) as r:
        assert r.resolve(f"{proxy.address}/lib/base:1").digest == digest
    assert (r.requests[proxy.address], r.errors[proxy.address]) == (2, 1)
    assert proxy.seen == 2


def test_retries_run_out(registry, proxy):
    registry.image("lib/base", "1")
    proxy.fail(500, 10)
    with client(proxy.address) as r:
        answer = r.resolve(f"{proxy.address}/lib/base:1")
    proxy.faults.clear()
    proxy.fail(429, 10, {"Retry-After": "0"})
    with client(proxy.address) as r:
        limited = r.resolve(f"{proxy.address}/lib/base:1")
    assert answer.kind == ERROR and "answered 500 after 5 tries" in answer.message
    assert limited.kind == RATE_LIMITED


def test_a_stalled_connection_times_out(registry, proxy):
    registry.image("lib/base", "1")
    proxy.stall(3, 10)
    r = Registry({proxy.address: RegistrySpec(proxy.address, insecure=True)}, timeout=0.3,
                 retries=1, backoff=0.01)  # fmt: skip
    with r:
        answer = r.resolve(f"{proxy.address}/lib/base:1")
    assert answer.kind == UNREACHABLE and "timed out" in answer.message


def test_a_refused_connection_is_not_retried_and_gives_the_registry_up_for_the_run():
    """Nobody listens: as crane, ORAS and curl do, a refused connection is not tried again
    (a registry back in a minute is seen by the next check), and the registry's other
    references are not asked at all. `unreachable()` names it once, with the reason."""
    host = f"127.0.0.1:{free_port()}"
    with client(host) as r:
        answers = r.resolve_all({f"{host}/lib/r{i}:1": [] for i in range(20)})
        assert r.requests[host] == 1
        assert r.unreachable() == {host: "connection refused"}
    assert {a.kind for a in answers.values()} == {UNREACHABLE}
    messages = [a.message for a in answers.values()]
    assert all(m.endswith(f": {host} cannot be reached (connection refused)") for m in messages)


def test_a_connection_reset_in_the_tls_handshake_is_tried_again_and_answered(tmp_path):
    """A one-off reset while connecting (a middlebox, a load balancer restarting) is not a
    registry that is down: it is tried again, and the registry's answer is the answer."""
    ca, cert, key = _tls_files(tmp_path)
    body = manifest("after a reset")
    tls = Scripted(lambda seen: served(body) if "/manifests/" in seen.path else Reply(200),
                   tls=(cert, key)).start()  # fmt: skip
    front = ResetFirst(tls.address).start()
    try:
        with Registry({front.address: RegistrySpec(front.address, ca_bundle=ca)},
                      backoff=0.01) as r:  # fmt: skip
            answer = r.resolve(f"{front.address}/lib/base:1")
            assert r.unreachable() == {}
    finally:
        front.stop()
        tls.stop()
    assert isinstance(answer, Resolved), answer
    assert answer.digest == sha(body) and front.accepted >= 2


def test_a_certificate_that_does_not_verify_gives_the_registry_up_at_once(tmp_path):
    """Asking again cannot make a certificate verify: one request, then the host is down."""
    _, cert, key = _tls_files(tmp_path)
    tls = Scripted(lambda seen: Reply(200), tls=(cert, key)).start()
    try:
        with Registry({}, backoff=0.01) as r:  # the system's CAs: the test CA is not one
            answers = r.resolve_all({f"{tls.address}/lib/r{i}:1": [] for i in range(3)})
            assert r.requests[tls.address] == 1
            assert "CERTIFICATE_VERIFY_FAILED" in r.unreachable()[tls.address]
    finally:
        tls.stop()
    assert {a.kind for a in answers.values()} == {UNREACHABLE}


def test_a_host_name_that_does_not_resolve_gives_the_registry_up_at_once():
    host = "registry.graphbuild-test.invalid"  # RFC 6761: never resolves
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as err:
        if err.errno != socket.EAI_NONAME:
            pytest.skip(f"this resolver cannot say no such host now ({err})")
    with Registry({}, backoff=0.01) as r:
        answers = r.resolve_all({f"{host}/lib/r{i}:1": [] for i in range(3)})
        assert r.requests[host] == 1
        assert r.unreachable() == {host: "name or service not known"}
    assert {a.kind for a in answers.values()} == {UNREACHABLE}


def _as_httpx_raises(cause: OSError) -> httpx.ConnectError:
    """The ConnectError httpx raises for an OSError while connecting: httpcore's
    ConnectError from the OSError, httpx's from httpcore's."""
    try:
        try:
            try:
                raise cause
            except OSError as err:
                raise httpcore.ConnectError(str(err)) from err
        except httpcore.ConnectError as err:
            raise httpx.ConnectError(str(err)) from err
    except httpx.ConnectError as err:
        return err


@pytest.mark.parametrize(
    ("cause", "hopeless"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), True),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), False),
        (OSError(errno.EHOSTUNREACH, "No route to host"), False),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), False),
    ],
    ids=lambda v: v if isinstance(v, bool) else type(v).__name__ + str(v.errno),
)
def test_only_refused_unknown_hosts_and_bad_certificates_are_not_tried_again(cause, hopeless):
    """What reaches the client: httpcore raises every OSError while connecting (a reset
    handshake, EAI_AGAIN) as a ConnectError; the cause says which are worth a retry."""
    assert registry_client._hopeless(_as_httpx_raises(cause)) is hopeless


def test_a_registry_that_answers_is_not_unreachable(registry):
    registry.image("lib/base", "1")
    with client(registry.host) as r:
        assert isinstance(r.resolve(f"{registry.host}/lib/base:1"), Resolved)
        assert r.unreachable() == {}


def test_rate_limit_headers_are_reported(registry):
    registry.image("lib/base", "1")
    limits = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "97;w=21600"}
    proxy = FaultProxy(registry.host, headers=limits).start()
    try:
        with client(proxy.address) as r:
            r.resolve(f"{proxy.address}/lib/base:1")
            assert r.ratelimits == {proxy.address: "97/100"}
    finally:
        proxy.stop()


def test_without_a_digest_header_the_digest_is_the_sha256_of_the_bytes(registry):
    digest = registry.image("lib/base", "1")
    proxy = FaultProxy(registry.host, digest=None).start()
    try:
        with client(proxy.address) as r:
            assert r.resolve(f"{proxy.address}/lib/base:1").digest == digest
    finally:
        proxy.stop()


def test_a_registry_that_lies_about_a_digest_is_caught(registry):
    registry.image("lib/base", "1")
    proxy = FaultProxy(registry.host, digest="sha256:" + "0" * 64).start()
    try:
        with client(proxy.address) as r:
            answer = r.inspect(f"{proxy.address}/lib/base:1")
    finally:
        proxy.stop()
    assert answer.kind == ERROR  # the manifest is read by the digest the HEAD named: none
    assert answer.message.endswith("but has no manifest by that digest")


def test_docker_hub_names_go_to_its_api_host():
    """`python:3.12` is docker.io, whose API is registry-1.docker.io (no request is sent)."""
    with Registry() as r:
        assert str(r._host("docker.io").http.base_url) == "https://registry-1.docker.io"
        assert str(r._host("ghcr.io").http.base_url) == "https://ghcr.io"


# ---------------------------------------------------------------- registries that misbehave

INDEX_TYPE = {"Content-Type": "application/vnd.oci.image.index.v1+json"}


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        pytest.param(b'{"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": 5}',
                     INDEX_TYPE, "has no list of manifests", id="manifests-not-a-list"),
        pytest.param(b"[1, 2, 3]", INDEX_TYPE, "not a JSON object", id="a-json-list"),
        pytest.param(b"<html>Bad gateway</html>", {"Content-Type": "text/html"}, "not JSON",
                     id="an-html-page"),
        pytest.param(b'{"schemaVersion": 2, "mediaType": "text/plain"}', {},
                     "unknown media type", id="not-a-manifest"),
        pytest.param(b"{" + b" " * (5 * 1024 * 1024), {}, "4 MiB", id="too-big-to-be-a-manifest"),
    ],
)  # fmt: skip
def test_garbage_from_a_registry_is_an_error_not_a_crash(registry, proxy, body, headers, says):
    registry.image("lib/base", "1")
    proxy.answer(200, b"", {**headers, "Docker-Content-Digest": sha(body)})  # the HEAD agrees
    proxy.answer(200, body, headers)  # the GET
    with client(proxy.address) as r:
        answer = r.inspect(f"{proxy.address}/lib/base:1")
    assert answer.kind == ERROR and says in answer.message


def test_an_invalid_digest_header_is_refused(registry, proxy):
    registry.image("lib/base", "1")
    proxy.answer(200, b"", {"Docker-Content-Digest": "<script>x</script>"})
    with client(proxy.address) as r:
        answer = r.resolve(f"{proxy.address}/lib/base:1")
    assert answer.kind == ERROR and "invalid digest" in answer.message
    assert "<script>" not in answer.message.replace("'<script>x</script>'", "")


def test_registry_error_text_is_cleaned_and_cut(registry, proxy):
    noisy = json.dumps({"errors": [{"code": "X", "message": "\x1b[31m" + "a" * 5000}]})
    proxy.answer(418, noisy.encode())
    with client(proxy.address) as r:
        answer = r.resolve(f"{proxy.address}/lib/base:1")
    assert "\x1b" not in answer.message and len(answer.message) < 400


def test_an_index_naming_a_missing_child_is_an_error_not_missing(registry):
    amd = registry.image("lib/multi", "amd", content="amd")
    registry.index("lib/multi", "1", {"linux/amd64": amd})
    with httpx.Client(base_url=f"http://{registry.host}") as http:  # the child is deleted
        http.delete(f"/v2/lib/multi/manifests/{amd}").raise_for_status()
    with client(registry.host) as r:
        answer = r.inspect(f"{registry.host}/lib/multi:1", ["linux/amd64"])
    assert answer.kind == ERROR and "listed in an index but missing" in answer.message


def test_a_retry_after_beyond_a_minute_gives_the_host_up_for_the_run(registry, proxy):
    for i in range(5):
        registry.image(f"lib/r{i}", "1")
    proxy.fail(429, 1, {"Retry-After": "3600"})
    with client(proxy.address) as r:
        answers = r.resolve_all({f"{proxy.address}/lib/r{i}:1": [] for i in range(5)})
        assert r.requests[proxy.address] == 1
    assert {a.kind for a in answers.values()} == {RATE_LIMITED}
    assert any("asks to wait 3600 s" in a.message for a in answers.values())


def test_a_failing_credential_helper_runs_once_per_run(registry, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    helper = bin_dir / "docker-credential-broken"
    helper.write_text(f"#!/bin/sh\necho called >> {calls}\nexit 3\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "broken"}))
    tokens = TokenServer(tmp_path / "tokens").start()
    reg = _token_registry(tmp_path / "x", tokens)
    try:
        with client(reg.host) as r:
            answers = r.resolve_all({f"{reg.host}/team/app{i}:1": [] for i in range(3)})
    finally:
        reg.stop()
        tokens.stop()
    assert {a.kind for a in answers.values()} == {DENIED}
    assert all("docker-credential-broken failed (exit 3)" in a.message for a in answers.values())
    assert calls.read_text().count("called") == 1


def test_a_token_server_that_answers_garbage(tmp_path):
    answer, _ = _anonymous_answer(tmp_path, field="nothing-useful")
    assert answer.kind == DENIED and "the token server's answer has no token" in answer.message


def test_credentials_are_not_sent_to_a_plain_http_token_realm():
    """A registry on https whose challenge names an http realm: the realm is refused."""
    with httpx.Client() as http:
        auth = HostAuth(http, lambda: Credentials("u", "p"), plain=None, deadline=30)
        with pytest.raises(AuthError, match="not https; refusing to send credentials"):
            auth.challenged('Bearer realm="http://evil.example/token"', "repository:a:pull")


# ---------------------------------------------------------------- deadlines and caps


def _answer_within(seconds: float, call):
    """Run `call` in a thread; its answer, and how long it took (inf: it did not return)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    took = wait_for(thread, seconds)
    return (out[0] if out else None), took


@pytest.mark.parametrize("drip", [Drip.headers, Drip.body], ids=["headers", "body"])
def test_a_registry_that_drips_its_answer_is_cut_at_the_answer_deadline(drip):
    """One byte every 0.2 s defeats a 1 s read timeout; the whole answer has 2 s, and a
    registry that ran out of it is not asked again for that reference."""
    server = drip().start()
    try:
        with client(server.address, timeout=1.0) as r:  # inspect: a HEAD, then a GET
            answer, took = _answer_within(30, lambda: r.inspect(f"{server.address}/lib/base:1"))
    finally:
        server.stop()
    assert took < 10, "still waiting for a dripping registry after 30 s"
    assert answer.kind == UNREACHABLE
    assert answer.message == (f"{server.address}/lib/base:1: the registry did not finish "
                              "its answer within 2 s")  # fmt: skip
    assert server.connections == (1 if drip == Drip.headers else 2)  # no retry of a drip


def _challenging(realm: str, scheme: str = "Bearer") -> Scripted:
    """A registry that answers every request with a 401 naming `realm`."""
    challenge = f'{scheme} realm="{realm}",service="svc"'
    return Scripted(lambda seen: Reply(401, {"WWW-Authenticate": challenge})).start()


def test_a_token_server_that_drips_is_cut_at_the_answer_deadline():
    tokens = Drip.headers().start()
    reg = _challenging(f"http://{tokens.address}/token")
    try:
        with client(reg.address, timeout=1.0, auth="anonymous") as r:
            answer, took = _answer_within(30, lambda: r.resolve(f"{reg.address}/lib/base:1"))
    finally:
        reg.stop()
        tokens.stop()
    assert took < 10, "still waiting for a dripping token server after 30 s"
    assert answer.kind == UNREACHABLE
    assert answer.message.endswith("the token server did not finish its answer within 2 s")


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "streamed"])
def test_a_huge_token_answer_is_not_read(length):
    """A token is a few KiB; a 64 MiB answer is refused after 1 MiB, or at once by its
    Content-Length, instead of filling memory."""
    size = 64 * 1024 * 1024
    headers = {"Content-Type": "application/json"}
    if length:
        headers["Content-Length"] = str(size + 11)
    tokens = Scripted(lambda seen: Reply(200, headers, endless(limit=size))).start()
    reg = _challenging(f"http://{tokens.address}/token")
    try:
        with client(reg.address, auth="anonymous") as r:
            answer = r.resolve(f"{reg.address}/lib/base:1")
    finally:
        reg.stop()
        tokens.stop()
    assert answer.kind == UNREACHABLE
    assert answer.message.endswith("the token server's answer is more than 1 MiB; not reading it")
    assert tokens.sent < 16 * 1024 * 1024  # it stopped reading, so the server stopped sending


def test_references_left_when_the_check_deadline_passes_are_unknown():
    """The whole pass has a deadline too: what is unanswered by then is a Failure that says
    so, however patient each request would have been."""
    server = Drip.headers().start()
    refs = {f"{server.address}/lib/r{i}:1": [] for i in range(6)}
    try:
        with client(server.address, timeout=10.0) as r:
            answers, took = _answer_within(30, lambda: r.resolve_all(refs, timeout=2))
    finally:
        server.stop()
    assert took < 8, "the check's deadline did not stop it"
    assert {a.kind for a in answers.values()} == {UNREACHABLE}
    for ref, answer in answers.items():
        assert answer.message == (f"{ref}: no answer before the check's deadline of 2 s "
                                  "passed (check.timeout in repos.yaml)")  # fmt: skip


def test_a_retry_the_deadline_would_cut_says_what_went_wrong(registry, proxy):
    """The registry answers 503, and the backoff before the next try would pass the check's
    deadline: the answer says both, not only that time ran out."""
    proxy.fail(503, 5)
    host = proxy.address
    with Registry({host: RegistrySpec(host, insecure=True)}, backoff=30, timeout=5) as r:
        answers = r.resolve_all({f"{host}/lib/base:1": []}, timeout=2)
    (answer,) = answers.values()
    assert answer.kind == UNREACHABLE
    assert answer.message == (f"{host}/lib/base:1: no answer before the check's deadline of 2 s "
                              "passed (check.timeout in repos.yaml); the last try: the registry "
                              "answered 503")  # fmt: skip


# ---------------------------------------------------------------- where credentials may go


def test_an_insecure_registry_sends_no_credentials_to_a_plain_http_realm_elsewhere(monkeypatch):
    """`insecure` allows plain http to the loopback registry itself, not to whatever host its
    challenge names (here another loopback address, which could be anyone's listener)."""
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
    tokens = Scripted(lambda seen: Reply(200, {}, b'{"token": "t"}'), host="127.0.0.2").start()
    reg = _challenging(f"http://{tokens.address}/token")
    spec = {"auth": "basic", "username": "ci", "password_env": "TEST_REGISTRY_PASSWORD"}
    try:
        with client(reg.address, **spec) as r:
            answer = r.resolve(f"{reg.address}/lib/base:1")
    finally:
        reg.stop()
        tokens.stop()
    assert tokens.seen == []
    assert answer.kind == DENIED
    assert answer.message == (
        f"{reg.address}/lib/base:1: the token realm http://127.0.0.2 is plain http on another "
        "host than the registry; refusing to send credentials to it"
    )


# ---------------------------------------------------------------- redirects


def test_a_redirect_from_https_to_http_is_not_followed(tmp_path):
    """A registry on TLS that points to a plain-http copy: that answer could be anyone's."""
    ca, cert, key = _tls_files(tmp_path)
    plain = Scripted(lambda seen: served(manifest("plain"))).start()
    tls = Scripted(lambda seen: Reply(307, {"Location": f"{plain.url}{seen.path}"}),
                   tls=(cert, key)).start()  # fmt: skip
    try:
        with Registry({tls.address: RegistrySpec(tls.address, ca_bundle=ca)}, backoff=0.01) as r:
            answer = r.resolve(f"{tls.address}/lib/base:1")
    finally:
        tls.stop()
        plain.stop()
    assert plain.seen == []
    assert answer.kind == ERROR
    assert answer.message == (f"{tls.address}/lib/base:1: the registry redirected from https "
                              "to http; not following (no downgrade)")  # fmt: skip


def _basic_then_redirect(to: str) -> Scripted:
    """A registry that wants Basic credentials, then redirects every manifest to `to`."""

    def respond(seen):
        if "Authorization" not in seen.headers:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return Reply(307, {"Location": f"{to}{seen.path}"})

    return Scripted(respond).start()


def test_a_manifest_is_read_from_another_host_only_when_allowed_and_without_credentials(
    monkeypatch,
):
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
    body = manifest("elsewhere")
    other = Scripted(lambda seen: served(body)).start()
    reg = _basic_then_redirect(other.url)
    spec = {"auth": "basic", "username": "ci", "password_env": "TEST_REGISTRY_PASSWORD"}
    ref = f"{reg.address}/lib/base:1"
    try:
        with client(reg.address, **spec) as r:
            refused = r.resolve(ref)
        asked_before = len(other.seen)
        with client(reg.address, redirect_hosts=(other.address,), **spec) as r:
            allowed = r.resolve(ref)
    finally:
        reg.stop()
        other.stop()
    assert asked_before == 0
    assert refused.kind == ERROR
    assert refused.message == (f"{ref}: the registry redirected to another host, "
                               f"{other.address}; not following (allow it with "
                               f"registries.{reg.address}.redirect_hosts)")  # fmt: skip
    assert allowed.digest == sha(body)
    assert other.seen and all("Authorization" not in s.headers for s in other.seen)


def test_a_redirect_within_the_registry_keeps_its_credentials(monkeypatch):
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
    body = manifest("moved")

    def respond(seen):
        if "Authorization" not in seen.headers:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        if seen.path.startswith("/v2/lib/base/"):
            return Reply(307, {"Location": seen.path.replace("/lib/base/", "/lib/moved/")})
        return served(body)

    reg = Scripted(respond).start()
    spec = {"auth": "basic", "username": "ci", "password_env": "TEST_REGISTRY_PASSWORD"}
    try:
        with client(reg.address, **spec) as r:
            answer = r.resolve(f"{reg.address}/lib/base:1")
    finally:
        reg.stop()
    assert answer.digest == sha(body)
    assert reg.seen[-1].path == "/v2/lib/moved/manifests/1"
    assert "Authorization" in reg.seen[-1].headers


# ---------------------------------------------------------------- a digest needs its manifest


BOGUS = {
    "garbage": (b"<html>Bad gateway</html>", "not JSON"),
    "json-not-a-manifest": (b'{"hello": "world"}', "has no config"),
    "manifest-without-config": (
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
        "has no config",
    ),
}


@pytest.mark.parametrize(("body", "says"), BOGUS.values(), ids=BOGUS.keys())
def test_a_new_digest_is_not_believed_without_its_manifest(registry, proxy, body, says):
    """A HEAD whose Docker-Content-Digest agrees with garbage the registry serves for it:
    the digest is new, so its manifest is read (by that digest) and checked first."""
    old = registry.image("lib/base", "1")
    ref = f"{proxy.address}/lib/base:1"
    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(body)}
    proxy.answer(200, b"", headers)  # the HEAD
    proxy.answer(200, body, headers)  # the GET by digest
    with client(proxy.address) as r:
        answer = r.resolve(ref, known=Known(recorded={ref: old}))
    assert answer.kind == ERROR
    assert answer.message.startswith(f"{ref}: the registry names {sha(body)}, but ")
    assert says in answer.message


def test_a_digest_is_proven_once_and_an_unchanged_one_costs_a_head(registry):
    ref = f"{registry.host}/lib/base:1"
    digest = registry.image("lib/base", "1")
    before = registry.requests()
    with client(registry.host) as r:
        new = r.resolve(ref, known=Known(recorded={ref: None}))
        proven = registry.requests() - before
        unchanged = r.resolve(ref, known=Known(recorded={ref: digest}))
    assert new.digest == unchanged.digest == digest
    assert proven == 2 and registry.requests(rf"/manifests/{digest}$") == 1  # GET by digest
    assert registry.requests() - before == 3  # the unchanged one: its HEAD only


# ---------------------------------------------------------------- any answer at all

_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_DIGESTS = st.binary(min_size=1, max_size=8).map(sha)
_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "application/json", "text/html"]


def _index(children: list[str]) -> bytes:
    platform = {"os": "linux", "architecture": "amd64"}
    entries = [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": platform}
               for d in children]  # fmt: skip
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


_BODIES = st.one_of(
    st.binary(max_size=600),
    st.builds(manifest, _TEXT),
    st.lists(_DIGESTS, max_size=3).map(_index),
    st.sampled_from([
        b'{"token": "t", "expires_in": 300}', b'{"access_token": "t", "expires_in": "soon"}',
        b'{"token": ""}', b'{"token": 5}', b'{"expires_in": Infinity, "token": "t"}',
        b'{"errors": [{"code": "X", "message": "\x1b[31mred"}]}', b'{"errors": 5}',
        b"[" * 100_000, b"{}", b"null",
    ]),
)  # fmt: skip
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.one_of(st.sampled_from(_TYPES), _TEXT),
        "Docker-Content-Digest": st.one_of(st.just("{digest}"), _DIGESTS, _TEXT),
        "Content-Length": st.one_of(st.just("{length}"), st.integers(0, 10**12).map(str),
                                    st.sampled_from(["-1", "1,1", "x"])),
        "Location": st.one_of(st.sampled_from([
            "/v2/lib/base/manifests/1", "/v2/lib/base/manifests/{digest}", "http://{here}/v2/x",
            "https://{here}/v2/x", "http://127.0.0.2:1/v2/x", "https://127.0.0.1:1/x",
            "ftp://{here}/x", "//{here}/v2/x", "http://[::1", "http://a b/", "http://xn--/",
            "http://\xff/", "http://a:99999/",
        ]), _TEXT),
        "WWW-Authenticate": st.one_of(st.sampled_from([
            'Bearer realm="http://{here}/token",service="s",scope="repository:lib/base:pull"',
            'Bearer realm="https://{here}/token"', 'Bearer realm="http://127.0.0.2:1/token"',
            'Bearer realm="http://{here}/token",error="insufficient_scope"', 'Basic realm="r"',
            "Bearer", 'Bearer realm="ftp://{here}/"', 'Bearer realm="http://[::1"',
            'Bearer realm="https://xn--/t"', 'Bearer realm="http://{here}:99999/t"',
        ]), _TEXT),
        "Retry-After": st.one_of(st.sampled_from(["0", "1", "3600", "Wed, 21 Oct 2015 07:28 GMT"]),
                                 st.integers(0, 10**12).map(str), _TEXT),
    },
)  # fmt: skip
_REPLY = st.builds(Reply, st.one_of(st.sampled_from([200, 200, 301, 307, 401, 404, 429, 500]),
                                     st.integers(200, 599)), _HEADERS, _BODIES)  # fmt: skip


@st.composite
def _replies(draw) -> list[Reply]:
    """Random answers; often with a plausible manifest among them (its HEAD, then its GET),
    so that the ways to a Resolved are walked too."""
    replies = draw(st.lists(_REPLY, max_size=6))
    if draw(st.booleans()):
        body = draw(
            st.one_of(st.builds(manifest, _TEXT), st.lists(_DIGESTS, max_size=2).map(_index))
        )
        kind = OCI_INDEX if b'"manifests"' in body else OCI_MANIFEST
        good = Reply(200, {"Content-Type": kind, "Docker-Content-Digest": "{digest}"}, body)
        at = draw(st.integers(0, len(replies)))
        replies[at:at] = [good] * draw(st.integers(1, 3))
    return replies


@pytest.fixture(scope="module")
def fake():
    """One scripted registry for every example: each example queues its own answers."""

    def respond(seen):
        reply = server.queue.popleft() if server.queue else Reply(404)
        body = reply.body
        fill = {"{here}": server.address, "{digest}": sha(body), "{length}": str(len(body))}
        headers = {}
        for key, value in reply.headers.items():
            for mark, text in fill.items():
                value = value.replace(mark, text)
            headers[key] = value
        return Reply(reply.status, headers, body)

    server = Scripted(lambda seen: respond(seen)).start()
    yield server
    server.stop()


# database=None: hypothesis keeps no example database in the project.
@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(replies=_replies(), inspect=st.booleans(), platforms=st.sampled_from([(), ("linux/amd64",)]),
       basic=st.booleans(), recorded=st.one_of(st.none(), _DIGESTS))  # fmt: skip
def test_any_registry_answer_is_a_result_or_a_failure(
    fake, monkeypatch, replies, inspect, platforms, basic, recorded
):
    """Random statuses, headers and bodies, redirects, challenges and Retry-After: every
    answer is Resolved or Failure, never an exception, and quickly (retries kept short)."""
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
    fake.queue.clear()
    fake.queue.extend(replies)
    spec = ({"auth": "basic", "username": "ci", "password_env": "TEST_REGISTRY_PASSWORD"}
            if basic else {"auth": "anonymous"})  # fmt: skip
    ref = f"{fake.address}/lib/base:1"
    known = Known(recorded={ref: recorded})
    registry = Registry({fake.address: RegistrySpec(fake.address, insecure=True, **spec)},
                        timeout=0.5, retries=1, backoff=0.001, max_wait=0.05)  # fmt: skip
    start = time.monotonic()
    with registry:
        ask = registry.inspect if inspect else registry.resolve
        answer = ask(ref, platforms, known)
    assert time.monotonic() - start < 10
    assert isinstance(answer, Resolved | Failure)
    event(answer.kind if isinstance(answer, Failure) else "resolved")  # see --hypothesis-show-…
    if isinstance(answer, Failure):
        assert answer.kind in (MISSING, DENIED, UNREACHABLE, RATE_LIMITED, ERROR)
        assert not set(answer.message) & {"\n", "\r", "\x1b"} and len(answer.message) < 1000
    else:
        assert answer.digest.startswith("sha256:") and len(answer.digest) == 71


@pytest.mark.parametrize(
    ("children", "wanted", "expected"),
    [
        ({"linux/amd64": "a", "linux/arm": "b"}, "linux/arm/v7", "b"),  # written without v7
        ({"linux/arm/v7": "b"}, "linux/arm/v7", "b"),
        ({"linux/arm/v6": "c", "linux/arm/v7": "b"}, "linux/arm/v6", "c"),
        ({"linux/arm/v7": "b"}, "linux/arm/v6", None),
        ({"linux/arm64/v8": "d"}, "linux/arm64", "d"),
        ({"linux/arm64": "d"}, "linux/arm64", "d"),
        ({"linux/amd64/v3": "e"}, "linux/amd64", "e"),  # no variant asked: any variant
        ({"linux/amd64": "a", "unknown/unknown": "x"}, "linux/amd64", "a"),
        ({"linux/amd64": "a"}, "linux/arm64", None),
    ],
)
def test_an_index_child_is_picked_as_containerd_compares_platforms(children, wanted, expected):
    """repos.yaml's platforms are normalised (`linux/arm` is `linux/arm/v7`); an index that
    writes a child the short way is still that platform's child."""
    assert registry_manifests.pick(children, wanted) == expected


# -- image configs: a layer list read by `scan`


D = "sha256:" + "d" * 64


def _config_manifest(config: bytes, digest: str | None = None) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": digest or sha(config), "size": len(config)},
                       "layers": []}).encode()  # fmt: skip


def test_layers_are_read_from_the_config_a_registry_redirects_to_and_checked(monkeypatch):
    """Blob storage elsewhere (as ACR and Docker Hub redirect) is read, checked against the
    config's digest; a host it redirects to that asks for credentials gets none."""
    config = json.dumps({"architecture": "arm64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [D]}}).encode()  # fmt: skip
    body = _config_manifest(config)
    storage = Scripted(
        lambda seen: (
            Reply(200, {}, config)
            if seen.path == "/ok"
            else Reply(401, {"WWW-Authenticate": f'Bearer realm="{storage.url}/token"'})
        )
    )
    storage.start()
    target = {"to": "/ok"}

    def answer(seen):
        if "/manifests/" in seen.path:
            return Reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(body)},
                         body)  # fmt: skip
        if "/blobs/" in seen.path:
            return Reply(307, {"Location": f"{storage.url}{target['to']}"})
        return Reply(200)

    registry = Scripted(answer).start()
    monkeypatch.setenv("REG_PASSWORD", "s3cr3t")
    spec = RegistrySpec(registry.address, insecure=True, auth="basic", username="ci",
                        password_env="REG_PASSWORD")  # fmt: skip
    try:
        with Registry({registry.address: spec}, retries=0, backoff=0.01) as client:
            assert client.diff_ids(f"{registry.address}/app@{sha(body)}") == ("linux/arm64", [D])
            target["to"] = "/auth"
            failed = client.diff_ids(f"{registry.address}/app@{sha(body)}")
        assert isinstance(failed, Failure) and "no credentials are sent there" in failed.message
        assert all("Authorization" not in s.headers for s in storage.seen)
        assert not any(s.path.startswith("/token") for s in storage.seen)
    finally:
        registry.stop()
        storage.stop()


def test_a_manifest_whose_config_is_no_digest_is_refused():
    body = _config_manifest(b"{}", digest="../../token?x=")
    with pytest.raises(registry_manifests.InvalidManifest, match="not a sha256 digest"):
        registry_manifests.parse(body, OCI_MANIFEST, sha(body))
