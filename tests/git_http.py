"""A git server over smart HTTP on loopback: git's own `git http-backend` run as CGI behind a
small HTTP server that asks for Basic credentials and can hold a request, so that a test can
look at the processes of a fetch or push while it is under way."""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .site import require

STALL_LIMIT = 60  # seconds a held request waits for the test before it goes on anyway


class GitHttp:
    """Serves the bare repositories under `root` as http://127.0.0.1:port/<name>.git to the
    one user `user` with password `token`; anyone else gets 401. Without a token it serves
    anyone; with `redirect` set it sends every request there instead (302)."""

    def __init__(self, root: Path, user: str, token: str | None) -> None:
        self.root = root
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        self.expected = None if token is None else f"Basic {basic}"
        self.redirect: str | None = None  # http://host:port, where every request is sent
        self.authorizations: list[str | None] = []  # what each request carried, in order
        self.services: list[str] = []  # the service each authorised request asked for
        self.stall_on: str | None = None  # hold the next request naming this service
        self.stalled = threading.Event()  # set while a request is held
        self.release = threading.Event()
        self.errors: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> GitHttp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def hold(self, service: str) -> None:
        """Hold the next request for `service` (git-upload-pack, git-receive-pack) until
        `release` is set."""
        self.stalled.clear()
        self.release.clear()
        self.stall_on = service

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                given = self.headers.get("Authorization")
                server.authorizations.append(given)
                if server.redirect:
                    self.send_response(302)
                    self.send_header("Location", server.redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.expected is not None and given != server.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                url = urlsplit(self.path)
                service = url.query.removeprefix("service=") or url.path.rsplit("/", 1)[-1]
                server.services.append(service)
                if server.stall_on is not None and server.stall_on == service:
                    server.stall_on = None
                    server.stalled.set()
                    server.release.wait(STALL_LIMIT)
                self._cgi(url.path, url.query)

            def _cgi(self, path: str, query: str) -> None:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    server.errors.append("a chunked request body: not served here")
                    self.send_error(411)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": "/usr/bin:/bin",
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REMOTE_USER": "bot",  # authenticated: receive-pack is allowed
                    "REMOTE_ADDR": "127.0.0.1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                done = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
                )
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                if done.returncode != 0:
                    server.errors.append(done.stderr.decode(errors="replace"))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def command_lines() -> dict[int, bytes]:
    """Every process's command line, as any local user can read it in /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # it ended while we looked
                continue
    return found


@contextmanager
def serving(root: Path, token: str | None) -> Iterator[GitHttp]:
    """The server for the bare repositories under `root` (user `bot`), stopped afterwards;
    the server itself must not have broken."""
    require("git")
    root.mkdir(parents=True, exist_ok=True)
    server = GitHttp(root, "bot", token).start()
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == []


def seen_during(server: GitHttp, service: str, run: Callable[[], Any]) -> tuple[dict, Any]:
    """Run `run` in a thread, hold its first request for `service`, and return every
    process's command line read while git waits on it, and what `run` returned."""
    server.hold(service)
    out = {}
    worker = threading.Thread(target=lambda: out.update(result=run()))
    worker.start()
    try:
        assert server.stalled.wait(STALL_LIMIT), f"git never asked for {service}"
        lines = command_lines()
    finally:
        server.release.set()
        worker.join(2 * STALL_LIMIT)
    assert not worker.is_alive()
    return lines, out["result"]
