"""The read-only web view (`graphbuild serve`, `listen --ui`): each page drawn from the
same data its JSON twin under /api/ returns, and that data is exactly what the matching
command's `--json` prints (the same functions of queries.py and report.py make both).

Nothing here writes: index.db is read in one snapshot per request, state.db read-only,
so a sweep can run beside it. Every request is answered with a page or a status and a
one-line reason, never a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from graphbuild import errors, indexdb, pages, queries, report, state
from graphbuild.config import Config
from graphbuild.report import note

MAX_QUERY = 2048  # characters of a query string: a reference is far shorter
MAX_LOG = 2 * 1024 * 1024  # a build log's last bytes, served as text
Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body: what is sent
HTML = "text/html; charset=utf-8"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


OPEN_WARNING = (
    "The web view answers anyone who can reach this address: set --token-env, or put an "
    "authenticating proxy in front (docs/web.md)."
)


def token(variable: str) -> str:
    """The bearer token, from the environment; surrounding whitespace is not part of it."""
    if not variable:
        raise errors.GraphbuildError("--token-env needs the name of a variable holding the token")
    value = os.environ.get(variable, "").strip()
    if len(value) < 16 or not value.isascii() or not value.isprintable():
        raise errors.GraphbuildError(
            f"--token-env {variable}: ${variable} must hold the web view's bearer token, 16 or "
            "more printable ASCII characters"
        )
    return value


def loopback(host: str) -> bool:
    """Whether `host` is reached from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)

    def all_headers(self) -> list[tuple[str, str]]:
        """What every answer carries: the page's policy also as a header (frame-ancestors
        works only there), no sniffing, no referrer, no caching of a view that changes."""
        fixed = {
            "Content-Type": self.content_type,
            "Content-Security-Policy": pages.policy(served=True) + "; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return list({**fixed, **self.headers}.items())


class _Refused(Exception):
    """A request answered with a status and a reason: 400, 401, 404, 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Site:
    """The routes. `get(path, query, headers)` answers one GET; thread-safe, as each call
    opens its own connections."""

    def __init__(self, config: Config, token: str | None = None) -> None:
        self.config, self.token = config, token
        self.links = {r.name: r.browse for r in config.repos if r.browse}
        state.current(config.workspace)  # read-only: never migrated from here
        self.routes: dict[str, Callable[[dict[str, str]], Reply]] = {
            "/": self._search,
            "/api/uses": self._uses_json,
            "/image": self._image,
            "/api/image": self._image_json,
            "/graph": self._graph,
            "/api/graph": self._graph_json,
            "/runs": self._runs,
            "/api/runs": self._runs_json,
            "/bases": self._bases,
            "/api/bases": self._bases_json,
            "/metrics": self._metrics,
        }

    def get(
        self, path: str, query: str, headers: Message
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One GET, answered; what the HTTP server sends."""
        reply = self._answer(path, query, headers)
        return reply.status, reply.all_headers(), reply.body

    def _answer(self, path: str, query: str, headers: Message) -> Reply:
        api = path.startswith("/api/")
        try:
            self._authorise(headers)
            return self._route(unquote(path), _params(query))
        except _Refused as refused:
            return _error(refused.status, str(refused), api, refused.status == 401)
        except errors.NotFound as err:
            return _error(404, str(err), api)
        except errors.InvalidReference as err:
            return _error(400, str(err), api)
        except errors.GraphbuildError as err:  # a store it cannot read: not the request's fault
            return _error(503, str(err), api)
        except Exception as err:  # a fault of ours: one line in the log, none to the client
            where = traceback.extract_tb(err.__traceback__)[-1]
            note(f"serve: GET {path}: internal error {type(err).__name__} at "
                 f"{Path(where.filename).name}:{where.lineno}")  # fmt: skip
            return _error(500, "internal error; the server's log says where", api)

    def _authorise(self, headers: Message) -> None:
        if self.token is None:
            return
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        ):
            raise _Refused(401, "a bearer token is required (Authorization: Bearer …)")

    def _route(self, path: str, params: dict[str, str]) -> Reply:
        if path in self.routes:
            return self.routes[path](params)
        parts = path.strip("/").split("/")
        if parts[0] == "runs" and len(parts) == 2:
            return Reply(200, pages.run_page(self._run(parts[1]), served=True).encode())
        if parts[:2] == ["api", "runs"] and len(parts) == 3:
            return _json(report.run_document(self._run(parts[2])))
        if parts[0] == "runs" and len(parts) == 4 and parts[2] == "logs":
            return self._log(parts[1], parts[3])
        raise _Refused(404, f"no page at {path}")

    # -- search: `uses`

    def _uses(self, params: dict[str, str]) -> list[dict[str, Any]]:
        ref = _ref(params, "ref")
        depth = _depth(params, "depth")
        if _flag(params, "direct"):
            depth = 1
        with self._index() as db:
            return queries.uses_document(queries.uses(db, self.config, ref, depth))

    def _search(self, params: dict[str, str]) -> Reply:
        ref = params.get("ref", "").strip()
        rows = self._uses(params) if ref else []
        near: list[str] = []
        if ref and not rows:
            with self._index() as db:
                near = [] if indexdb.match(db, ref) else queries.suggest(db, ref)
        return Reply(200, pages.search_page(ref, rows, self.links, near).encode())

    def _uses_json(self, params: dict[str, str]) -> Reply:
        return _json(self._uses(params))

    # -- an image: `show`

    def _show(self, params: dict[str, str]) -> list[dict[str, Any]]:
        ref = _ref(params, "ref")
        with self._index() as db:
            return queries.show(db, self.config, ref)

    def _image(self, params: dict[str, str]) -> Reply:
        return Reply(200, pages.image_page(self._show(params), self.links).encode())

    def _image_json(self, params: dict[str, str]) -> Reply:
        return _json(self._show(params))

    # -- the graph: `graph --format json`

    def _graph_document(self, params: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
        focus = params.get("focus", "").strip() or None
        depth = _depth(params, "depth")
        if focus is None and depth is not None:
            raise _Refused(400, "depth needs a focus")
        with self._index() as db:
            return queries.graph(db, focus, depth)

    def _graph(self, params: dict[str, str]) -> Reply:
        focus = params.get("focus", "").strip()
        if not focus:
            with self._index() as db:
                count = db.execute("SELECT count(*) FROM graph_nodes").fetchone()[0]
                edges = db.execute("SELECT count(*) FROM graph_edges").fetchone()[0]
            if not _flag(params, "all"):
                return Reply(200, pages.graph_start(count).encode())
            if count > pages.MOST_NODES or edges > pages.MOST_EDGES:  # refused unloaded
                return Reply(200, pages.graph_page({"nodes": [], "edges": []}, {}, None, None,
                                                   too_large=(count, edges)).encode())  # fmt: skip
        document = self._graph_document(params)
        with self._state() as s:
            fresh = {node: f.status for node, f in (s.freshness() if s else {}).items()}
        depth = _depth(params, "depth")
        return Reply(200, pages.graph_page(document, fresh, focus or None, depth).encode())

    def _graph_json(self, params: dict[str, str]) -> Reply:
        return _json(self._graph_document(params))

    # -- runs: `runs`, `runs ID`

    def _runs_documents(self) -> list[dict[str, Any]]:
        with self._state() as s:
            return [report.run_document(r) for r in (s.runs() if s else [])]

    def _runs(self, params: dict[str, str]) -> Reply:
        return Reply(200, pages.runs_page(self._runs_documents()).encode())

    def _runs_json(self, params: dict[str, str]) -> Reply:
        return _json(self._runs_documents())

    def _run(self, run_id: str) -> state.Run:
        with self._state() as s:
            run = s.run(run_id) if s else None
        if run is None:
            raise errors.NotFound(f"there is no run with ID {run_id!r}")
        return run

    def _log(self, run_id: str, name: str) -> Reply:
        """A build log of the run, by its file name; only a file the run recorded, and only
        inside the workspace's runs/ folder."""
        run = self._run(run_id)
        logs = {Path(n.log).name: Path(n.log) for n in run.nodes if n.log}
        path = logs.get(name)
        if path is None:
            raise errors.NotFound(f"run {run_id} has no log named {name!r}")
        folder = (self.config.workspace / "runs").resolve()
        try:
            real = path.resolve()
            if not real.is_relative_to(folder):
                raise _Refused(404, f"run {run_id} has no log named {name!r}")
            with real.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(size - MAX_LOG, 0))
                body = f.read(MAX_LOG)
        except OSError as err:
            raise _Refused(404, f"the log {name} cannot be read: {err.strerror}") from None
        if size > MAX_LOG:
            body = f"[the first {size - MAX_LOG} bytes are left out]\n".encode() + body
        return Reply(200, body, TEXT)

    # -- bases: `bases`

    def _bases_rows(self) -> list[dict[str, Any]]:
        with self._index() as db:
            return queries.bases(db, self.config.workspace)

    def _bases(self, params: dict[str, str]) -> Reply:
        return Reply(200, pages.bases_page(self._bases_rows()).encode())

    def _bases_json(self, params: dict[str, str]) -> Reply:
        return _json(self._bases_rows())

    # -- metrics

    def _metrics(self, params: dict[str, str]) -> Reply:
        from graphbuild import metrics  # prometheus_client: only when scraped

        try:
            return Reply(200, metrics.render(self.config.workspace), metrics.CONTENT_TYPE)
        except errors.GraphbuildError as err:  # a state.db of another schema: not the client's
            raise _Refused(503, str(err)) from None

    # -- the stores

    @contextmanager
    def _index(self) -> Iterator[sqlite3.Connection]:
        unsynced = _Refused(503, "no index yet: run `graphbuild sync` (or a sweep) first")
        opened = indexdb.reader(self.config.workspace)  # another's schema: 503, untouched
        if opened is None:
            raise unsynced
        with closing(opened) as db:
            if indexdb.meta(db) is None:
                raise unsynced
            db.execute("BEGIN")  # one snapshot per request
            yield db

    @contextmanager
    def _state(self) -> Iterator[state.State | None]:
        s = state.reading(self.config.workspace)
        try:
            yield s
        finally:
            if s:
                s.db.close()


def _params(query: str) -> dict[str, str]:
    """The query's parameters, each once; a long or malformed query is a 400."""
    if len(query) > MAX_QUERY:
        raise _Refused(400, f"the query is longer than {MAX_QUERY} characters")
    try:
        parsed = parse_qs(query, keep_blank_values=True, max_num_fields=16, errors="strict")
    except (ValueError, UnicodeDecodeError) as err:
        raise _Refused(400, f"the query cannot be read: {err}") from None
    if any(len(values) > 1 for values in parsed.values()):
        raise _Refused(400, "each parameter may be given once")
    found = {key: values[0] for key, values in parsed.items()}
    if any(not text.isprintable() for pair in found.items() for text in pair):
        raise _Refused(400, "a parameter holds control characters")
    return found


def _ref(params: dict[str, str], key: str) -> str:
    ref = params.get(key, "").strip()
    if not ref:
        raise _Refused(400, f"`{key}` is required: a base or an image, e.g. ?{key}=python:3.12")
    return ref


def _flag(params: dict[str, str], key: str) -> bool:
    """`?direct`, `?direct=1` or `=true` turn it on; `=0` or `=false`, or no key, leave it off."""
    value = params.get(key)
    if value is None or value.lower() in ("0", "false"):
        return False
    if value.lower() in ("", "1", "true"):
        return True
    raise _Refused(400, f"`{key}` is a flag: give it alone, or as {key}=1 or {key}=0")


def _depth(params: dict[str, str], key: str) -> int | None:
    text = params.get(key)
    if text is None or text == "all":
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
        raise _Refused(400, f"`{key}` must be a whole number from 1, or `all` (the commands' "
                       "--depth)")  # fmt: skip
    return int(text)


def _json(value: Any) -> Reply:
    return Reply(200, report.json_text(value).encode(), JSON)


def _error(status: int, message: str, api: bool, challenge: bool = False) -> Reply:
    headers = {"WWW-Authenticate": 'Bearer realm="graphbuild"'} if challenge else {}
    if api:
        return Reply(status, report.json_text({"error": message}).encode(), JSON, headers)
    return Reply(status, pages.error_page(status, message).encode(), HTML, headers)
