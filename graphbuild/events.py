"""Registry push webhooks, which may only bring the next sweep forward.

The scheduled sweep stays the source of truth (design rule 2). A lost, repeated or
forged webhook can at worst cost or save one early sweep; it never changes what gets
built. So pushes are only collected into one sweep at a time, and ACR's unsigned
webhooks are checked against a shared secret compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from graphbuild import refs
from graphbuild.console import note, plural
from graphbuild.errors import GraphbuildError, InvalidReference

SECRET_HEADER = "X-Graphbuild-Secret"  # noqa: S105 - a header name
MAX_BODY = 64 * 1024  # real push events are under 2 KiB
REQUEST_DEADLINE = 30.0  # seconds for a whole request, headers and body, however it drips
MAX_CONNECTIONS = 64  # open at once; more are answered 503 and closed
ACR, DOCKERHUB = "acr", "dockerhub"
# what became of a POST to a hook, for `on_event` (/metrics counts them)
ACCEPTED, IGNORED, REFUSED = "accepted", "ignored", "refused"
NOT_A_PUSH = "ignored: not a push of a tag"


def secret(variable: str) -> str:
    """The shared secret, from the environment; surrounding whitespace (a file's newline)
    is not part of it."""
    value = os.environ.get(variable, "").strip()
    if not value or not value.isascii() or not value.isprintable():
        raise GraphbuildError(
            f"${variable} must hold the webhook's shared secret (printable ASCII; see "
            "docs/azure.md)"
        )
    return value


@dataclass(frozen=True)
class Push:
    """A tag that moved in a registry, named as the graph names its nodes."""

    ref: str  # normalised name:tag, e.g. myacr.azurecr.io/team/app:1.2
    digest: str | None  # ACR sends the manifest digest; Docker Hub sends none
    source: str  # ACR | DOCKERHUB


def parse(body: bytes, host_hint: str | None = None) -> Push | None:
    """An ACR event (it has `action`) or a Docker Hub push (`repository`, `push_data`).

    None for events that move no tag: ACR delete, quarantine, chart_push, chart_delete
    and ping, and a push by digest alone. `host_hint` is the registry host to use when
    an ACR event has no `request.host`. Raises ValueError with a one-line reason.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: 64 KiB of nested `[`
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("body is not a JSON object")
    if "action" in doc:
        return _acr(doc, host_hint)
    if "repository" in doc or "push_data" in doc:
        return _dockerhub(doc)
    raise ValueError("neither an ACR event (no `action`) nor a Docker Hub push (no `push_data`)")


def _acr(doc: dict, host_hint: str | None) -> Push | None:
    if _string(doc, "action") != "push":
        return None
    target = _object(doc, "target")
    repository = _required(target, "repository", "target")
    tag = _string(target, "tag", "target")
    if tag is None:
        return None  # pushed by digest: no tag moved
    digest = _string(target, "digest", "target")
    request = doc.get("request")
    host = _string(request, "host", "request") if isinstance(request, dict) else None
    if (host := host or host_hint) is None:
        raise ValueError("ACR push without request.host, and no registry host given")
    return Push(_tagged(f"{host}/{repository}", tag, digest), digest, ACR)


def _dockerhub(doc: dict) -> Push | None:
    name = _required(_object(doc, "repository"), "repo_name", "repository")
    tag = _string(_object(doc, "push_data"), "tag", "push_data")
    if tag is None:
        return None
    return Push(_tagged(f"{refs.DEFAULT_DOMAIN}/{name}", tag, None), None, DOCKERHUB)


def _object(doc: dict, key: str) -> dict:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"no `{key}` object")
    return value


def _string(doc: dict, key: str, where: str = "event") -> str | None:
    """A string field; None when it is absent, null or empty."""
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} is not a string")
    return value


def _required(doc: dict, key: str, where: str) -> str:
    value = _string(doc, key, where)
    if value is None:
        raise ValueError(f"no {where}.{key}")
    return value


def _tagged(name: str, tag: str, digest: str | None) -> str:
    """`name:tag` normalised by refs; the round trip catches a tag like `1@sha256:…`."""
    text = f"{name}:{tag}" + (f"@{digest}" if digest else "")
    try:
        ref = refs.parse(text)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from None
    if ref.tag != tag or ref.digest != digest:
        raise ValueError(f"invalid tag {tag!r}")
    return ref.tagged


class Debouncer:
    """Turns a burst of pushes into one `fire(refs)`, and runs one fire at a time.

    A release pushes several tags and architectures within a second of each other
    (docs/benchmarks.md), and sweeping on each would rebuild the fleet again and again.
    `max_wait` bounds the delay, so a steady stream of pushes cannot hold a sweep back
    for ever. Pushes that arrive while `fire` runs are kept for the next one.
    """

    def __init__(
        self,
        fire: Callable[[frozenset[str]], None],
        window: float = 2.0,
        max_wait: float = 300.0,
        on_burst: Callable[[], None] = lambda: None,
    ) -> None:
        if not 0 <= window <= max_wait:
            raise ValueError(f"need 0 <= window <= max_wait, got {window} and {max_wait}")
        self._fire, self._window, self._max_wait = fire, window, max_wait
        self._on_burst = on_burst  # a burst's first push: called before its fire can be
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._first = self._last = 0.0  # monotonic times of the first and last pending push
        self._closing = self._flush = False
        self._thread = threading.Thread(target=self._run, name="graphbuild-debounce", daemon=True)
        self._thread.start()

    def add(self, push: Push) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the debouncer is closed")
            self._last = time.monotonic()
            if not self._pending:
                self._first = self._last
                self._on_burst()  # under the lock: before this burst's fire, whatever the window
            self._pending.add(push.ref)
            self._cond.notify()

    def close(self, flush: bool = False) -> None:
        """Waits for a running fire; with `flush`, then fires what is pending at once.

        Without it, pending refs are dropped with a note: the next scheduled sweep covers them.
        """
        with self._cond:
            self._closing, self._flush = True, flush
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._next()) is not None:
            try:
                self._fire(batch)
            except Exception as exc:  # a failed sweep must not stop later pushes firing
                note(f"listen: the sweep for {plural(len(batch), 'pushed image')} failed: {exc}")

    def _next(self) -> frozenset[str] | None:
        """Blocks until a batch is due; None once closed."""
        with self._cond:
            while True:
                if self._closing and not (self._flush and self._pending):
                    if self._pending:
                        note(f"listen: dropped {len(self._pending)} pending push(es) on close; "
                             "the next scheduled sweep covers them")  # fmt: skip
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                due = min(self._last + self._window, self._first + self._max_wait)
                if not self._closing and (wait := due - time.monotonic()) > 0:
                    self._cond.wait(wait)
                    continue
                batch = frozenset(self._pending)
                self._pending.clear()
                return batch


Pages = Callable[[str, str, Message], tuple[int, list[tuple[str, str]], bytes]]


def serve(
    host: str,
    port: int,
    secret: str,
    on_push: Callable[[Push], None],
    path: str = "/hooks",
    pages: Pages | None = None,
    on_event: Callable[[str], None] | None = None,
) -> ThreadingHTTPServer:
    """The webhook server, bound but not yet serving: POST {path}/acr, {path}/dockerhub.

    Replies: 401 for a missing or wrong secret (checked first), 411 for a body without a
    Content-Length (chunked included), 400 for a Content-Length that is not plain digits,
    413 for a body over 64 KiB, 400 with a one-line reason for a body that is no event,
    202 for an event that is not a push (ignored) and 202 for a push, after
    `on_push(push)`. GET /healthz answers 200 `ok` for a Kubernetes probe; any other GET
    goes to `pages` (the web view, `listen --ui`), else 404. A request gets
    REQUEST_DEADLINE seconds in all; beyond MAX_CONNECTIONS open ones, 503.

    `on_event(outcome)` is called once per POST to a hook route, before the reply: ACCEPTED
    (queued), IGNORED (not a push) or REFUSED (any 4xx or 5xx). If it fails, the reply is
    the same and the failure one line in the log.
    """
    if not secret or not secret.isascii() or not secret.isprintable():
        raise ValueError("the webhook secret must be non-empty printable ASCII")
    base = path.rstrip("/")
    routes = {f"{base}/acr": ACR, f"{base}/dockerhub": DOCKERHUB}
    return _Server((host, port), routes, secret.encode(), on_push, pages, on_event=on_event)


def serve_pages(host: str, port: int, pages: Pages) -> ThreadingHTTPServer:
    """The same hardened server with no hooks: `graphbuild serve`. Every POST is a 404."""
    return _Server((host, port), {}, b"", lambda push: None, pages, "serve")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 drops the SYNs of a burst of deliveries, and each
    # dropped one waits a second for its retry
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        routes: dict[str, str],
        secret: bytes,
        on_push: Callable[[Push], None],
        pages: Pages | None = None,
        name: str = "listen",
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(address, _Hooks)
        self.routes, self.secret, self.on_push = routes, secret, on_push
        self.pages, self.name = pages, name  # name: what its log lines start with
        self.on_event = on_event
        self.request_deadline = REQUEST_DEADLINE
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, up to MAX_CONNECTIONS: a flood of idle connections
        must not take a thread (and its memory) each."""
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client cut off or gone mid-request is one line in the log, not a traceback."""
        error = sys.exc_info()[1]
        note(f"{self.name}: a request from {client_address[0]} ended early: {error}")

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Hooks(BaseHTTPRequestHandler):
    """HTTP/1.0, so every reply closes its connection and an unread body cannot be misread."""

    server: _Server
    server_version, sys_version = "graphbuild", ""

    def version_string(self) -> str:
        return self.server_version  # `graphbuild`, not `graphbuild ` with an empty Python

    timeout = 10  # seconds per socket read: a slow client cannot hold a thread for long

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes: without this, Nagle's algorithm and
        # delayed ACKs add 40 ms to every reply
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the socket timeout bounds one read; a byte every few seconds passes it, so the
        # whole request also has a deadline, after which its connection is shut
        self._deadline = threading.Timer(self.server.request_deadline, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        """A request target that is no URL (`http://[/`) is a 400, not a dropped connection."""
        if not super().parse_request():
            return False
        try:
            urlsplit(self.path)
        except ValueError:
            self.send_error(400)
            return False
        return True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._reply(200, "ok")
        elif self.server.pages is None:
            self._reply(404, "not found")
        else:
            code, headers, body = self.server.pages(url.path, url.query, self.headers)
            self.send_response(code)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            note(f"{self.server.name}: {self.command} {url.path} {code}")

    def do_HEAD(self) -> None:
        """A GET's status and headers, no body: what uptime checks and proxies ask."""
        self.do_GET()

    def do_POST(self) -> None:
        code, text = self._post()
        if self.server.on_event is not None and urlsplit(self.path).path in self.server.routes:
            outcome = REFUSED if code >= 400 else IGNORED if text == NOT_A_PUSH else ACCEPTED
            try:
                self.server.on_event(outcome)
            except Exception as exc:  # counting is for /metrics: the registry is answered
                note(f"listen: could not count a {outcome} event: {exc}")
        self._reply(code, text)

    def _post(self) -> tuple[int, str]:
        url = urlsplit(self.path)
        source = self.server.routes.get(url.path)
        if source is None:
            return 404, "not found"
        if not self._authorised(source, url.query):
            return 401, "missing or wrong secret"
        if "Transfer-Encoding" in self.headers:
            return 411, "a body of a declared Content-Length is required, not chunked"
        lengths = set(self.headers.get_all("Content-Length") or ())
        if not lengths:
            return 411, "a Content-Length of plain digits is required"
        length_text = lengths.pop()
        if lengths or not (length_text.isascii() and length_text.isdigit()):
            return 400, "a Content-Length of plain digits is required"  # -1, +1, 1_0, two
        length = int(length_text)
        if length > MAX_BODY:
            return 413, f"body over {MAX_BODY} bytes"
        body = self.rfile.read(length)
        try:
            push = parse(body)
        except ValueError as exc:
            return 400, f"not a push event: {exc}"
        if push is None:
            return 202, NOT_A_PUSH
        if push.source != source:
            return 400, f"a {push.source} event sent to the {source} hook"
        try:
            self.server.on_push(push)
        except Exception as exc:  # the registry retries on 5xx; the pusher is told nothing
            note(f"listen: could not queue {push.ref}: {exc}")
            return 503, "could not queue the push"
        return 202, f"queued {push.ref}"

    def _authorised(self, source: str, query: str) -> bool:
        """The header; for Docker Hub, which cannot send headers, a `secret` query parameter."""
        given = self.headers.get(SECRET_HEADER)
        if given is None and source == DOCKERHUB:
            given = next(iter(parse_qs(query).get("secret", [])), None)
        return given is not None and hmac.compare_digest(given.encode(), self.server.secret)

    def _reply(self, code: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        route = urlsplit(self.path).path  # never the query, which may hold the secret
        if route != "/healthz":  # a probe every few seconds would drown the log
            note(f"{self.server.name}: {self.command} {route} {code} {text}")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors quote the request line, which may hold ?secret=: drop it."""
        super().send_error(code)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replies are logged by _reply, without the query string."""

    def log_message(self, format: str, *args: Any) -> None:
        note(f"{self.server.name}: " + format % args)
