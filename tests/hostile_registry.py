"""Registries that misbehave on purpose, on loopback: one that drips its answer a byte at a
time, and one that answers whatever its test scripts (any status, headers and body, a body
streamed without end, plain http or TLS). Both record what they were sent."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .oci import OCI_MANIFEST, sha

# ---------------------------------------------------------------- dripping


class Drip:
    """Answers every request with `fast` at once, then `slow` one byte every `every` seconds,
    until the client hangs up (or `slow` runs out). `hung_up` counts clients that did."""

    def __init__(self, fast: bytes, slow: bytes, every: float = 0.2, host: str = "127.0.0.1"):
        self.fast, self.slow, self.every = fast, slow, every
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.2)
        self.address = "{}:{}".format(*self.listener.getsockname()[:2])
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.connections = self.hung_up = 0
        self.lock = threading.Lock()

    @classmethod
    def headers(cls, every: float = 0.2) -> Drip:
        """A status line at once, then a header that never ends."""
        return cls(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 100_000, every)

    @classmethod
    def body(cls, every: float = 0.2, content_type: str = OCI_MANIFEST) -> Drip:
        """Headers at once, then a body, slowly."""
        body = b" " * 100_000
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                f"Docker-Content-Digest: {sha(body)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return cls(head.encode(), body, every)

    def start(self) -> Drip:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(self.fast)
                for i in range(len(self.slow)):
                    if self.stopping.wait(self.every):
                        return
                    conn.sendall(self.slow[i : i + 1])
            except OSError:  # the client hung up: what a deadline is for
                with self.lock:
                    self.hung_up += 1


# ---------------------------------------------------------------- scripted


@dataclass
class Reply:
    """One answer: a body of bytes, or an iterable of chunks streamed without a length."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class _Quiet(ThreadingHTTPServer):
    """A client that hangs up mid-answer (graphbuild cutting a slow one: the point of many
    tests) is not an error worth a traceback in the test output; anything else is."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class Scripted:
    """An HTTP server whose every answer comes from `respond(seen) -> Reply`: by default the
    next `Reply` queued with `then(...)`, else 404. With `tls=(cert, key)` it speaks https.
    `sent` counts the body bytes it managed to write (a client that stops reading stops it)."""

    def __init__(
        self,
        respond: Callable[[Seen], Reply] | None = None,
        tls: tuple | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.respond = respond or self._next
        self.queue: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.sent = 0
        self.httpd = _Quiet((host, 0), _ScriptedHandler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.address = "{}:{}".format(*self.httpd.server_address[:2])

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def then(self, *replies: Reply) -> Scripted:
        self.queue.extend(replies)
        return self

    def start(self) -> Scripted:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next(self, seen: Seen) -> Reply:
        return self.queue.popleft() if self.queue else Reply(404)


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (OSError, ssl.SSLError):  # a client that hung up mid-answer
            self.close_connection = True

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        server: Scripted = self.server.owner
        seen = Seen(self.command, self.path, dict(self.headers.items()))
        server.seen.append(seen)
        reply = server.respond(seen)
        self.close_connection = True
        self.send_response(reply.status)
        streamed = not isinstance(reply.body, bytes)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if not streamed and not any(k.lower() == "content-length" for k in reply.headers):
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        for chunk in [reply.body] if not streamed else reply.body:
            self.wfile.write(chunk)
            server.sent += len(chunk)


# ---------------------------------------------------------------- answers


def manifest(content: str = "x") -> bytes:
    """A small, valid OCI image manifest (its blobs need not exist: only manifests are read)."""
    config = sha(content.encode())
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": len(content)},
        "layers": [],
    }).encode()  # fmt: skip


def served(body: bytes, media_type: str = OCI_MANIFEST) -> Reply:
    """A manifest answer as a registry gives it: its type and its digest."""
    return Reply(200, {"Content-Type": media_type, "Docker-Content-Digest": sha(body)}, body)


def endless(chunk: bytes = b"a" * 65536, limit: int = 64 * 1024 * 1024) -> Iterable[bytes]:
    """A body that goes on (up to `limit`, so that a test that fails still ends)."""
    yield b'{"token": "'
    for _ in range(limit // len(chunk)):
        yield chunk


def wait_for(thread: threading.Thread, seconds: float) -> float:
    """Join `thread` for at most `seconds`; the time it took (inf: it is still running)."""
    start = time.monotonic()
    thread.join(seconds)
    return float("inf") if thread.is_alive() else time.monotonic() - start
