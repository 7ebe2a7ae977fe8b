"""HTTP for registry answers: every answer has a wall-clock deadline and a size cap, and a
redirect never downgrades to plain http, never leaves the host unless allowed, and never
carries credentials to another host.

httpx's timeouts bound each socket operation, not the answer (encode/httpx#1450): a server
that drips one byte a second keeps every read short and the answer endless. So each socket
operation of a request is given, at most, the time left until the deadline of the thread
that runs it (`deadline()`); a drip is cut when the deadline passes, in headers or body.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_local = threading.local()


class Overdue(Exception):
    """The answer did not finish by its deadline."""


class TooLarge(Exception):
    """The answer is larger than its cap (by its Content-Length, or as it arrived)."""


class Refused(Exception):
    """An answer not taken: a redirect that downgrades or leaves the host, an encoding. Its
    text follows "the registry" or "the token server"."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    redirected: bool = False  # it came from another origin than the one asked (blob storage)


# ---------------------------------------------------------------- the deadline


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Every socket operation of this thread ends by `at` (time.monotonic()); nested
    deadlines keep the earlier one."""
    before = getattr(_local, "at", None)
    _local.at = at if before is None else min(at, before)
    try:
        yield
    finally:
        _local.at = before


def deadline_at() -> float | None:
    """This thread's deadline (time.monotonic()), None when it has none: for waits between
    tries, which no socket operation bounds."""
    return getattr(_local, "at", None)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The socket timeout to use: the operation's own, or less if the deadline is nearer."""
    at = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's own backend, each operation bounded by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.inner.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def client(**options: Any) -> httpx.Client:
    """An httpx.Client (no redirects followed by itself) whose connections obey `deadline()`.

    httpx has no public way to hand its pools a network backend, so the backend of each
    transport's httpcore pool (proxies from the environment included) is wrapped here; if
    a future httpx moves them, this fails loudly rather than losing the deadline quietly.
    """
    http = httpx.Client(follow_redirects=False, **options)
    transports = [http._transport, *http._mounts.values()]
    for transport in transports:
        if transport is None:
            continue
        pool = getattr(transport, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):
            http.close()
            raise RuntimeError(f"httpx {httpx.__version__}: no pool backend to bound in time")
        pool._network_backend = _Backend(pool._network_backend)
    return http


# ---------------------------------------------------------------- one answer


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def authority(url: httpx.URL) -> str:
    """`host` or `host:port` as a registry is named (IPv6 in brackets)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def fetch(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    until: float,
    cap: int,
    may_redirect: Callable[[httpx.URL, httpx.URL], str | None],
    headers: Mapping[str, str] | None = None,
    params: list[tuple[str, str]] | None = None,
    data: Mapping[str, str] | None = None,
) -> Answer:
    """One answer, whole, by `until`, its body at most `cap` bytes.

    Redirects of GET and HEAD are followed when `may_redirect(first, next)` finds no reason
    to refuse (it returns one); Authorization goes only to the origin it was meant for.
    Raises Overdue, TooLarge, Refused or httpx.HTTPError.
    """
    sent = dict(headers or {})
    sent["Accept-Encoding"] = "identity"  # a compressed body could inflate past any cap
    try:
        query = None if params is None else tuple(params)  # a tuple: httpx's types take any value
        first = target = http.build_request(method, url, params=query).url
    except (httpx.InvalidURL, ValueError) as err:  # IDNA errors are ValueErrors
        raise Refused(f"named an invalid URL ({type(err).__name__})") from None
    try:
        with deadline(until):
            for _ in range(MAX_REDIRECTS + 1):
                with http.stream(method, target, headers=sent, data=data) as response:
                    location = response.headers.get("location")
                    if response.status_code not in REDIRECTS or not location or data:
                        return Answer(response.status_code, response.headers,
                                      _body(response, method, cap),
                                      origin(target) != origin(first))  # fmt: skip
                try:
                    target = response.url.join(location)
                except (httpx.InvalidURL, ValueError):
                    raise Refused("redirected to an invalid URL") from None
                refusal = may_redirect(first, target)
                if refusal:
                    raise Refused(refusal)
                if origin(target) != origin(first):
                    sent.pop("Authorization", None)
            raise Refused(f"redirected more than {MAX_REDIRECTS} times")
    except httpx.TimeoutException:
        if time.monotonic() >= min(until, getattr(_local, "at", None) or until) - 0.01:
            raise Overdue from None
        raise
    except (httpx.InvalidURL, ValueError) as err:  # a Location whose host httpx cannot use
        raise Refused(f"redirected to an invalid URL ({type(err).__name__})") from None


def _body(response: httpx.Response, method: str, cap: int) -> bytes:
    if method == "HEAD":
        return b""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Refused(f"sent a {encoding[:20]!r}-encoded answer though none was asked for")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise TooLarge(length)
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > cap:
            raise TooLarge(str(len(body)))
    return bytes(body)


def redirect_refusal(
    first: httpx.URL, target: httpx.URL, *, allowed: Iterable[str] = (), plain: str | None = None
) -> str | None:
    """Why a redirect from `first` to `target` is not followed, or None to follow it.

    Never from https to http; plain http only to `plain`, the registry's own loopback host;
    another host only when `allowed` names it (`host:port` as in repos.yaml).
    """
    if target.scheme not in ("http", "https"):
        return f"redirected to a {target.scheme[:20]!r} URL; not following"
    if first.scheme == "https" and target.scheme == "http":
        return "redirected from https to http; not following (no downgrade)"
    if target.scheme == "http" and target.host != plain:
        return "redirected to plain http on another host; not following"
    if origin(target)[1:] != origin(first)[1:] and authority(target) not in allowed:
        return f"redirected to another host, {authority(target)[:100]}; not following"
    return None
