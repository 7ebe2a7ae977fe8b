"""Small servers the registry tests put beside the real registry: a token server that signs
the JWTs docker-registry verifies, and a proxy that injects 429s, 500s and stalls."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class _Server:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # handlers reach their server's state through this
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if hasattr(self, "client"):
            self.client.close()


class _Quiet(BaseHTTPRequestHandler):
    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes: without this, Nagle and delayed ACKs
        # add 40 ms to every answer
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# ---------------------------------------------------------------- token server


class TokenServer(_Server):
    """Issues registry tokens (ES256 JWTs with an x5c chain) for docker-registry's token auth."""

    SERVICE, ISSUER = "graphbuild-test-registry", "graphbuild-test-issuer"

    def __init__(
        self,
        folder: Path,
        users: dict[str, str] | None = None,
        field: str = "token",
        path: str = "/token",
        entra_token: str | None = None,
        grant: bool = True,
    ):
        super().__init__(_TokenHandler)
        self.users, self.field = users, field  # users None: anonymous pulls are granted
        # ACR's shape: the realm is /oauth2/token, and /oauth2/exchange turns an Entra ID
        # token into a refresh token
        self.path, self.entra_token, self.grant = path, entra_token, grant
        self.refresh_tokens = {"identity-token-for-tests"}
        # ACR's /oauth2/token sends no expires_in (None; its data-plane swagger's AccessToken
        # has access_token alone): the token's own `exp` says it
        self.expires_in: int | None = None if path == "/oauth2/token" else 300
        self.lifetime = 300  # seconds to the `exp` of the tokens it issues
        self.refresh_lifetime = 3 * 3600  # and of the exchange's refresh tokens (ACR: 3 h)
        # answers /oauth2/exchange gives instead, one per request: (status, headers)
        self.exchange_faults: deque[tuple[int, dict[str, str]]] = deque()
        self.exchange_delay = 0.0  # seconds each exchange takes
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graphbuild test token CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.bundle = folder / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict] = []  # what each token request asked for

    @property
    def realm(self) -> str:
        return f"http://{self.address}{self.path}"

    def registry_auth(self) -> dict:
        """The `auth:` section for docker-registry's config."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.SERVICE,
                "issuer": self.ISSUER,
                "rootcertbundle": str(self.bundle),
            }
        }

    def token(self, scopes: list[str], subject: str) -> str:
        access = []
        for scope in scopes if self.grant else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER,
            "sub": subject,
            "aud": self.SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return jwt.encode(
            claims, self.key, algorithm="ES256", headers={"x5c": [base64.b64encode(der).decode()]}
        )


class _TokenHandler(_Quiet):
    def do_GET(self) -> None:
        server: TokenServer = self.server.owner
        query = parse_qs(urlparse(self.path).query)
        subject = self._user(server)
        if subject is None:
            self.reply(401, b'{"details":"bad credentials"}')
            return
        scopes = query.get("scope", [])
        server.requests.append({"method": "GET", "scopes": scopes, "user": subject})
        self._grant(server, scopes, subject)

    def do_POST(self) -> None:
        server: TokenServer = self.server.owner
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        if urlparse(self.path).path == "/oauth2/exchange":
            self._exchange(server, form)
            return
        server.requests.append(
            {
                "method": "POST",
                "scopes": form.get("scope", []),
                "grant": form.get("grant_type", [""])[0],
            }
        )
        if form.get("refresh_token", [""])[0] not in server.refresh_tokens:
            self.reply(401, b'{"details":"bad refresh token"}')
            return
        self._grant(server, " ".join(form.get("scope", [])).split(), "identity")

    def _exchange(self, server: TokenServer, form: dict) -> None:
        ok = (
            server.entra_token is not None
            and form.get("grant_type") == ["access_token"]
            and form.get("access_token") == [server.entra_token]
            and form.get("service") == [server.SERVICE]
        )
        server.requests.append({"method": "POST", "exchange": ok})
        time.sleep(server.exchange_delay)
        if server.exchange_faults:
            status, headers = server.exchange_faults.popleft()
            self.reply(status, b'{"errors":[{"code":"INJECTED","message":"fault"}]}', headers)
            return
        if not ok:
            self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
            return
        # a JWT, as ACR's are, its `exp` when it must be exchanged again
        claims = {"jti": uuid.uuid4().hex, "exp": int(time.time()) + server.refresh_lifetime}
        refresh = jwt.encode(claims, server.key, algorithm="ES256")
        server.refresh_tokens.add(refresh)
        body = json.dumps({"refresh_token": refresh}).encode()
        self.reply(200, body, {"Content-Type": "application/json"})

    def _user(self, server: TokenServer) -> str | None:
        if server.users is None:
            return "anonymous"
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if server.users.get(user) == password else None

    def _grant(self, server: TokenServer, scopes: list[str], subject: str) -> None:
        body = {server.field: server.token(scopes, subject)}
        if server.expires_in is not None:
            body["expires_in"] = server.expires_in
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


# ---------------------------------------------------------------- fault proxy


class FaultProxy(_Server):
    """Forwards to a registry; `fail(...)` queues answers to give instead, request by request."""

    def __init__(
        self,
        upstream: str,
        headers: dict[str, str] | None = None,
        digest: str | None = "keep",
        latency: float = 0.0,
    ) -> None:
        super().__init__(_ProxyHandler)
        self.upstream, self.extra, self.latency = upstream, headers or {}, latency
        self.client = httpx.Client(base_url=f"http://{upstream}", timeout=30)
        self.digest = digest  # "keep", None (drop Docker-Content-Digest) or a value to lie with
        self.faults: deque[tuple] = deque()
        self.seen = 0
        self.lock = threading.Lock()

    def fail(self, status: int, times: int = 1, headers: dict | None = None) -> None:
        self.faults.extend([("status", status, headers or {})] * times)

    def answer(self, status: int, body: bytes, headers: dict | None = None, times: int = 1) -> None:
        """Answer with exactly this instead of asking the registry (garbage, lies, huge)."""
        self.faults.extend([("answer", status, headers or {}, body)] * times)

    def stall(self, seconds: float, times: int = 1) -> None:
        self.faults.extend([("stall", seconds)] * times)

    def next_fault(self) -> tuple | None:
        with self.lock:
            self.seen += 1
            return self.faults.popleft() if self.faults else None


class _ProxyHandler(_Quiet):
    def do_HEAD(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def _forward(self) -> None:
        proxy: FaultProxy = self.server.owner
        fault = proxy.next_fault()
        if fault and fault[0] == "stall":
            time.sleep(fault[1])
            return
        if fault and fault[0] == "answer":
            self.reply(fault[1], fault[3], fault[2])
            return
        if fault:
            self.reply(fault[1], b'{"errors":[{"code":"INJECTED","message":"fault"}]}', fault[2])
            return
        time.sleep(proxy.latency)  # a registry across a network, not on loopback
        headers = {
            k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")
        }
        upstream = proxy.client.request(self.command, self.path, headers=headers)
        keep = ("content-type", "docker-content-digest", "www-authenticate", "location")
        out = {k: v for k, v in upstream.headers.items() if k.lower() in keep}
        if proxy.digest != "keep":
            out.pop("docker-content-digest", None)
            if proxy.digest is not None:
                out["Docker-Content-Digest"] = proxy.digest
        self.reply(upstream.status_code, upstream.content, {**out, **proxy.extra})


# ---------------------------------------------------------------- Azure managed identity


class ManagedIdentity(_Server):
    """The App Service managed-identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER) that
    azure-identity's DefaultAzureCredential asks for an Entra ID token."""

    HEADER = "managed-identity-header-for-tests"

    def __init__(self, token: str) -> None:
        super().__init__(_IdentityHandler)
        self.token = token
        self.requests: list[str] = []

    def environment(self) -> dict[str, str]:
        return {
            "IDENTITY_ENDPOINT": f"http://{self.address}/msi/token",
            "IDENTITY_HEADER": self.HEADER,
        }


class _IdentityHandler(_Quiet):
    def do_GET(self) -> None:
        server: ManagedIdentity = self.server.owner
        query = parse_qs(urlparse(self.path).query)
        server.requests.append(query.get("resource", [""])[0])
        if self.headers.get("X-IDENTITY-HEADER") != server.HEADER:
            self.reply(401)
            return
        body = {
            "access_token": server.token,
            "expires_on": str(int(time.time()) + 3600),
            "resource": query.get("resource", [""])[0],
            "token_type": "Bearer",
        }
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
