"""The web view over HTTP (`graphbuild serve`, `listen --ui`): each JSON twin is exactly
the matching command's `--json`, each page shows the same rows, every bad request is a
status and a reason, every answer carries the safety headers, and the token guards it.

The example's workspace after a real sweep is shared by the module (it takes ~25 s); the
small cases use `Site.get` directly, the rest a real `graphbuild serve` subprocess. The
browser tests are elsewhere."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from graphbuild import config, indexdb, web
from graphbuild.report import brief
from graphbuild.state import MIGRATIONS, State
from graphbuild.workspace import STATE

from . import example

SERVING = re.compile(r"Serving the web view of .* on http://127\.0\.0\.1:(\d+)/")
LISTENING = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)/hooks/acr")
TOKEN = "tok-" + "x7" * 12
SECRET = "s3cr3t-Shared-Value-9f8e7d"
ODD_PATH = "a b'q\"#x/Dockerfile"  # a Dockerfile path a link must quote
BROWSE = "https://git.example.com/odd/blob/main/{path}#L{line}"


# ---------------------------------------------------------------- helpers


class Server:
    """A `graphbuild` subprocess that serves HTTP, its port from its first line on stderr,
    and every later stderr line kept."""

    def __init__(self, root: Path, args: list[str], pattern: re.Pattern[str],
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphbuild", *args],
            cwd=root, env=example.environment(env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        self._pattern = pattern
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or not self.port:
            self.stop()
            raise AssertionError(f"no address in {self.lines}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if not self.port and (found := self._pattern.search(line)):
                self.port = int(found[1])
                self._ready.set()
        self._ready.set()

    def requests_logged(self, count: int, since: int) -> list[str]:
        """The lines logged since `since` once `count` have come (or 10 s passed)."""
        deadline = time.monotonic() + 10
        while len(self.lines) - since < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # a second line for one request would have come by now
        return self.lines[since:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)  # every line it wrote is in self.lines


class Tables(HTMLParser):
    """Each table with an id: its body rows, each cell's text and the links in it; the
    meta policy; the image sections' ids."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[tuple[str, list[str]]]]] = {}
        self.sections: list[str] = []
        self.meta_policy: str | None = None
        self._table: str | None = None
        self._depth = 0
        self._in_body = False
        self._cell: tuple[list[str], list[str]] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "meta" and found.get("http-equiv") == "Content-Security-Policy":
            self.meta_policy = found.get("content")
        if tag == "section" and found.get("class") == "image":
            self.sections.append(found.get("data-id") or "")
        if tag == "table":
            if self._table is None and found.get("id"):
                self._table, self._depth = found["id"], 0
                self.tables[self._table] = []
            self._depth += 1
        if self._table is None:
            return
        if tag == "tbody" and self._depth == 1:
            self._in_body = True
        elif tag == "tr" and self._in_body and self._depth == 1:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body and self._depth == 1:
            self._cell = ([], [])
        elif tag == "a" and self._cell is not None:
            self._cell[1].append(found.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if self._table is None:
            return
        if tag == "td" and self._cell is not None and self._depth == 1:
            self.tables[self._table][-1].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None
        elif tag == "tbody" and self._depth == 1:
            self._in_body = False
        elif tag == "table":
            self._depth -= 1
            if self._depth == 0:
                self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)

    def texts(self, table: str) -> list[list[str]]:
        return [[text for text, _ in row] for row in self.tables[table]]


def cli_json(root: Path, *args: str) -> Any:
    done = example.graphbuild(root, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def get(site: web.Site, path: str, query: str = "", **headers: str) -> tuple[int, dict, str]:
    message = Message()
    for name, value in headers.items():
        message[name] = value
    status, pairs, body = site.get(path, query, message)
    return status, dict(pairs), body.decode(errors="replace")


def query(**params: str) -> str:
    return urlencode(params)


def target(href: str) -> tuple[str, dict[str, list[str]]]:
    """A link's path and its parameters, decoded."""
    url = urlsplit(href)
    return url.path, parse_qs(url.query)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(example_workspace) -> tuple[Path, str]:
    """The example's workspace after a real sweep: (its folder, its registry's host); the
    session's, shared with the browser's tests (tests/conftest.py). Tests here leave it
    as they found it."""
    return example_workspace


@pytest.fixture(scope="module")
def demo_site(demo) -> web.Site:
    return web.Site(config.load(demo[0] / "repos.yaml"))


@pytest.fixture(scope="module")
def served(demo) -> Iterator[Server]:
    """`graphbuild serve --port 0` on the example's workspace."""
    server = Server(demo[0], ["serve", "--port", "0"], SERVING)
    yield server
    server.client.close()
    server.stop()


def write_fleet(root: Path, browse: str | None = BROWSE) -> Path:
    """Two images of one name (tags 1 and 2), one from a Dockerfile whose path needs
    quoting in a URL, read in place: a fleet a sync alone indexes (no registry)."""
    (root / "src" / ODD_PATH).parent.mkdir(parents=True)
    (root / "src" / ODD_PATH).write_text("FROM python:3.12\nRUN true\n")
    (root / "src/other").mkdir()
    (root / "src/other/Dockerfile").write_text("FROM python:3.12\n")
    link = f"    browse: {json.dumps(browse)}\n" if browse else ""
    (root / "repos.yaml").write_text(
        "repos:\n  - name: odd\n    path: src\n" + link + "    images:\n"
        "      - image: registry.example.com/team/app\n"
        f"        dockerfile: {json.dumps(ODD_PATH)}\n        tags: ['1']\n"
        "      - image: registry.example.com/team/app\n"
        "        dockerfile: other/Dockerfile\n        tags: ['2']\n"
    )  # fmt: skip
    return root / "repos.yaml"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """The small fleet, synced."""
    root = tmp_path_factory.mktemp("fleet")
    write_fleet(root)
    done = example.graphbuild(root, "sync")
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def fleet_site(fleet) -> web.Site:
    return web.Site(config.load(fleet / "repos.yaml"))


def run_id(demo_site: web.Site) -> str:
    status, _, body = get(demo_site, "/api/runs")
    assert status == 200
    return json.loads(body)[0]["id"]


# ---------------------------------------------------------------- 1. JSON twins


def refs_of(host: str) -> list[str]:
    """A base, a floating base used by mount, images by a tag and an alias tag, and names
    without a tag."""
    return [f"{host}/upstream/os:1", f"{host}/upstream/toolbox:1",
            f"{host}/platform/base:stable", f"{host}/platform/runtime:1.4",
            f"{host}/platform/runtime", f"{host}/tools/count"]  # fmt: skip


VARIANTS = [({}, []), ({"depth": "1"}, ["--depth", "1"]), ({"depth": "2"}, ["--depth", "2"]),
            ({"direct": "1"}, ["--direct"]), ({"direct": ""}, ["--direct"]),
            ({"direct": "0"}, [])]  # fmt: skip


def test_uses_json_twin_is_uses_json(demo, served):
    root, host = demo
    for ref in refs_of(host):
        for params, flags in VARIANTS:
            reply = served.client.get("/api/uses", params={"ref": ref, **params})
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "application/json"
            assert reply.json() == cli_json(root, "uses", ref, *flags), (ref, params)
    whole = served.client.get("/api/uses", params={"ref": f"{host}/upstream/os:1"}).json()
    assert sum(len(row["workloads"]) for row in whole) == 4  # workloads by ring, compared too
    assert {row["depth"] for row in whole} == {1, 2, 3, 4}  # a deep answer, so depth is tested
    assert whole != served.client.get("/api/uses", params={"ref": f"{host}/upstream/os:1",
                                                           "depth": "2"}).json()  # fmt: skip


def test_image_json_twin_is_show_json(demo, served):
    root, host = demo
    for ref in refs_of(host)[2:]:
        reply = served.client.get("/api/image", params={"ref": ref})
        assert reply.status_code == 200, reply.text
        assert reply.json() == cli_json(root, "show", ref)
    answer = served.client.get("/api/image", params={"ref": f"{host}/platform/runtime"}).json()
    assert [image["id"] for image in answer] == [f"{host}/platform/runtime:1"]
    assert answer[0]["tags"] == [f"{host}/platform/runtime:1", f"{host}/platform/runtime:1.4"]
    assert answer[0]["builds"] and answer[0]["gates"] and answer[0]["freshness"]


def test_image_json_twin_of_a_name_with_several_images(fleet, fleet_site):
    status, _, body = get(fleet_site, "/api/image", query(ref="registry.example.com/team/app"))
    assert status == 200
    document = json.loads(body)
    assert [i["id"] for i in document] == ["registry.example.com/team/app:1",
                                           "registry.example.com/team/app:2"]  # fmt: skip
    assert document == cli_json(fleet, "show", "registry.example.com/team/app")
    status, _, body = get(fleet_site, "/api/uses", query(ref="python"))
    assert json.loads(body) == cli_json(fleet, "uses", "python")


def test_runs_and_bases_json_twins(demo, served):
    root, _ = demo
    runs = served.client.get("/api/runs").json()
    assert runs == cli_json(root, "runs") and len(runs) == 1
    one = served.client.get(f"/api/runs/{runs[0]['id']}")
    assert one.status_code == 200
    assert one.json() == cli_json(root, "runs", runs[0]["id"])
    assert len(one.json()["nodes"]) == 6
    bases = served.client.get("/api/bases").json()
    assert bases == cli_json(root, "bases") and len(bases) == 2


# ---------------------------------------------------------------- 2. pages show the same rows


def test_search_page_has_a_row_per_uses_entry(demo, served):
    root, host = demo
    for ref in refs_of(host):
        expected = cli_json(root, "uses", ref)
        page = Tables(served.client.get("/", params={"ref": ref}).text)
        if not expected:
            assert "uses" not in page.tables
            continue
        assert page.texts("uses") == [
            [str(u["depth"]), u["image"], u["base"], u["kind"],
             f"{u['repo']}:{u['dockerfile']}:{u['line']}"] for u in expected]  # fmt: skip
        running = sorted((w["ring"], w["name"], u["image"], w["where"])
                         for u in expected for w in u["workloads"])  # fmt: skip
        if running:
            assert [tuple(row) for row in page.texts("workloads")] == running
        else:
            assert "workloads" not in page.tables
        links = [row[1][1] for row in page.tables["uses"]]
        assert [[target(href) for href in hrefs] for hrefs in links] == [
            [("/image", {"ref": [u["image"]]})] for u in expected]  # fmt: skip


def test_image_page_has_a_section_per_show_entry(demo, served, fleet_site):
    root, host = demo
    for ref in [*refs_of(host)[2:], f"{host}/shop/api:latest", f"{host}/tools/report"]:
        expected = cli_json(root, "show", ref)
        page = Tables(served.client.get("/image", params={"ref": ref}).text)
        assert page.sections == [image["id"] for image in expected]
        image = expected[0]
        assert [row[1] for row in page.texts("parents")] == [p["base"] for p in image["parents"]]
        if image["children"]:
            assert [row[0] for row in page.texts("children")] == [
                c["image"] for c in image["children"]]  # fmt: skip
        # digests cut to 12 hex digits, whole in each cell's title
        assert [row[1] for row in page.texts("builds")] == [brief(b["digest"])
                                                            for b in image["builds"]]  # fmt: skip
        assert page.texts("workloads") if image["workloads"] else "workloads" not in page.tables
        if image["workloads"]:
            assert page.texts("workloads") == [[w["ring"], w["name"], w["where"]]
                                               for w in image["workloads"]]  # fmt: skip
    _, _, body = get(fleet_site, "/image", query(ref="registry.example.com/team/app"))
    assert Tables(body).sections == ["registry.example.com/team/app:1",
                                     "registry.example.com/team/app:2"]  # fmt: skip


def test_runs_and_bases_pages_have_a_row_each(demo, served):
    root, _ = demo
    runs = cli_json(root, "runs")
    page = Tables(served.client.get("/runs").text)
    assert [row[:3] for row in page.texts("runs")] == [[r["id"], r["kind"], r["status"]]
                                                        for r in runs]  # fmt: skip
    assert page.tables["runs"][0][0][1] == [f"/runs/{runs[0]['id']}"]
    bases = cli_json(root, "bases")
    page = Tables(served.client.get("/bases").text)
    assert [(row[0], row[1], row[2], row[3]) for row in page.texts("bases")] == [
        (b["id"], "pinned" if b["pinned"] else "floating", str(b["images"]),
         str(b["all_images"])) for b in bases]  # fmt: skip


# ---------------------------------------------------------------- 3. bad requests


def bad_requests(host: str, run: str) -> list[tuple[str, int]]:
    """Each with the status it must get."""
    os_base = f"{host}/upstream/os:1"
    return [
        ("/nope", 404), ("/api/nope", 404), ("/api/uses", 400), ("/api/image", 400),
        ("/image", 400), ("/api/uses?ref=", 400), ("/api/uses?ref=%20", 400),
        (f"/api/uses?ref={os_base}&depth=0", 400),
        (f"/api/uses?ref={os_base}&depth=1234567890", 400),
        (f"/api/uses?ref={os_base}&depth=abc", 400), (f"/api/uses?ref={os_base}&depth=-1", 400),
        (f"/api/uses?ref={os_base}&depth=%EF%BC%91", 400),  # a fullwidth digit one
        (f"/?ref={os_base}&depth=0", 400),
        ("/api/uses?ref=a&ref=b", 400), ("/?ref=a&ref=a", 400),
        ("/api/uses?ref=" + "a" * 2100, 400), ("/?ref=" + "a" * 2100, 400),
        ("/api/uses?ref=python%00", 400), ("/api/uses?ref=python%0a", 400),
        ("/api/image?ref=%1b%5b31m", 400), ("/?ref=python%0d%0a", 400),
        ("/api/bases?x%0a=1", 400), ("/api/bases?%00=1", 400),
        ("/api/uses?ref=%ff", 400), ("/api/image?ref=caf%e9", 400), ("/?ref=%C3%28", 400),
        ("/api/uses?ref=NOT//A:REF", 400),
        ("/api/uses?" + "&".join(f"k{i}=1" for i in range(20)), 400),
        ("/api/image?ref=registry.example.com/nobody:1", 404), ("/image?ref=nobody", 404),
        (f"/api/image?ref={os_base}", 404),  # a base is not an image
        ("/runs/nope", 404), ("/api/runs/nope", 404), ("/runs/nope/logs/x.log", 404),
        (f"/api/runs/{run}/more", 404), (f"/runs/{run}/logs/deploy.log", 404),
        (f"/runs/{run}/logs/report.json", 404),
        (f"/runs/{run}/logs/..%2F..%2F..%2Frepos.yaml", 404),
        (f"/runs/{run}/logs/%2E%2E", 404), (f"/runs/{run}/logs/", 404),
        (f"/runs/{run}/logs/../../../repos.yaml", 404),
    ]  # fmt: skip


def raw_get(port: int, target: str) -> tuple[int, dict[str, str], str]:
    """GET `target` exactly as written (httpx would resolve `..` and re-encode)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", target)
        reply = connection.getresponse()
        headers = {name.lower(): value for name, value in reply.getheaders()}
        return reply.status, headers, reply.read().decode(errors="replace")
    finally:
        connection.close()


def check_refusal(path: str, status: int, code: int, headers: Any, body: str) -> None:
    assert code == status, (path, body)
    assert "Traceback" not in body and 'File "' not in body
    if urlsplit(path).path.startswith("/api/"):
        assert headers["content-type"] == "application/json", path
        answer = json.loads(body)
        assert list(answer) == ["error"] and answer["error"].strip(), path
    else:
        assert headers["content-type"].startswith("text/html"), path
        assert f"<h1>{status}</h1>" in body


def test_bad_requests_get_a_status_and_a_reason(demo, demo_site):
    run = run_id(demo_site)
    for path, status in bad_requests(demo[1], run):
        url = urlsplit(path)
        code, headers, body = get(demo_site, url.path, url.query)
        check_refusal(path, status, code, {k.lower(): v for k, v in headers.items()}, body)


def test_bad_requests_over_http_and_one_log_line_each(demo, demo_site, served):
    cases = bad_requests(demo[1], run_id(demo_site))
    since = len(served.lines)
    for path, status in cases:
        code, headers, body = raw_get(served.port, path)
        check_refusal(path, status, code, headers, body)
    logged = served.requests_logged(len(cases), since)
    expected = [f"serve: GET {urlsplit(path).path} {status}" for path, status in cases]
    assert sorted(logged) == sorted(expected)  # a reply is read before its thread logs it
    assert not any("Traceback" in line for line in served.lines)


def test_a_real_log_is_served_as_text(demo_site, served):
    run = run_id(demo_site)
    _, _, body = get(demo_site, f"/api/runs/{run}")
    node = json.loads(body)["nodes"][0]
    log = Path(node["log"])
    reply = served.client.get(f"/runs/{run}/logs/{log.name}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.content == log.read_bytes() and reply.content
    page = Tables(served.client.get(f"/runs/{run}").text)
    assert page.tables == {}  # the run page's tables have no ids; its links are checked here:
    assert f'href="/runs/{run}/logs/{log.name}"' in served.client.get(f"/runs/{run}").text


@pytest.fixture
def swapped_log(demo_site) -> Iterator[tuple[str, Path]]:
    """One of the run's logs, put back as it was after the test: (run, its path)."""
    run = run_id(demo_site)
    _, _, body = get(demo_site, f"/api/runs/{run}")
    log = Path(json.loads(body)["nodes"][1]["log"])
    kept = log.with_suffix(".kept")
    shutil.copy2(log, kept)
    yield run, log
    log.unlink(missing_ok=True)
    kept.rename(log)


def test_a_long_log_is_served_as_its_last_2_mib(demo_site, swapped_log):
    run, log = swapped_log
    content = b"".join(f"line {i:07d}\n".encode() for i in range(300_000))  # 3.6 MB
    log.write_bytes(content)
    status, headers, _ = get(demo_site, f"/runs/{run}/logs/{log.name}")
    _, _, raw = demo_site.get(f"/runs/{run}/logs/{log.name}", "", Message())
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    left_out = len(content) - web.MAX_LOG
    note = f"[the first {left_out} bytes are left out]\n".encode()
    assert web.MAX_LOG == 2 * 1024 * 1024
    assert raw == note + content[-2 * 1024 * 1024 :]


def test_a_log_that_leads_outside_the_runs_folder_is_not_served(demo, demo_site, swapped_log,
                                                                 tmp_path):  # fmt: skip
    run, log = swapped_log
    outside = tmp_path / "secret.txt"
    outside.write_text("not a log: the contents of some other file\n")
    log.unlink()
    log.symlink_to(outside)
    status, _, body = get(demo_site, f"/runs/{run}/logs/{log.name}")
    assert status == 404 and "some other file" not in body
    log.unlink()
    log.symlink_to(demo[0] / "repos.yaml")  # in the workspace's folder, not in runs/
    assert get(demo_site, f"/runs/{run}/logs/{log.name}")[0] == 404
    log.unlink()  # gone
    status, _, body = get(demo_site, f"/runs/{run}/logs/{log.name}")
    assert status == 404 and "Traceback" not in body


def test_no_index_yet_is_503_and_runs_no_sync(tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    site = web.Site(config.load(write_fleet(root)))
    workspace = root / ".graphbuild"
    for path, q, api in [("/", "ref=python", False), ("/api/uses", "ref=python", True),
                         ("/image", "ref=python", False), ("/api/bases", "", True),
                         ("/bases", "", False)]:  # fmt: skip
        status, _, body = get(site, path, q)
        assert status == 503, (path, body)
        assert "graphbuild sync" in (json.loads(body)["error"] if api else body)
    assert get(site, "/api/runs")[:3:2] == (200, "[]\n")
    assert not (workspace / indexdb.INDEX).exists()  # no sync, and nothing written
    assert not workspace.exists() or not any(p.name.startswith("index.db")
                                             for p in workspace.iterdir())  # fmt: skip


def test_stores_of_another_graphbuild_are_read_never_rewritten(fleet, tmp_path):
    """The viewer never writes: an index.db of another schema is a 503 and stays as it is
    (connect() would drop and rebuild it); an older state.db stops serve at its start,
    unmigrated (a sweeper of that version must go on reading it)."""
    root = tmp_path / "copy"
    shutil.copytree(fleet, root)
    workspace = root / ".graphbuild"
    index = workspace / indexdb.INDEX
    with closing(sqlite3.connect(index)) as db:
        db.execute(f"PRAGMA user_version = {indexdb.SCHEMA_VERSION + 1}")
        db.commit()
        nodes = db.execute("SELECT count(*) FROM graph_nodes").fetchone()[0]
    site = web.Site(config.load(root / "repos.yaml"))
    status, _, body = get(site, "/api/bases")
    assert status == 503 and "another graphbuild" in json.loads(body)["error"]
    with closing(sqlite3.connect(index)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == indexdb.SCHEMA_VERSION + 1
        assert db.execute("SELECT count(*) FROM graph_nodes").fetchone()[0] == nodes > 0
    with State(workspace):
        pass
    with closing(sqlite3.connect(workspace / STATE)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        db.commit()
    done = example.graphbuild(root, "serve", "--port", "0")
    assert done.returncode == 2 and "older graphbuild" in done.stderr, done.stderr
    with closing(sqlite3.connect(workspace / STATE)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) - 1


# ---------------------------------------------------------------- 4. headers


def test_every_answer_carries_the_safety_headers(demo, demo_site, served):
    host, run = demo[1], run_id(demo_site)
    paths = ["/", f"/?ref={host}/upstream/os:1", f"/image?ref={host}/shop/api", "/runs",
             f"/runs/{run}", "/bases", f"/api/uses?ref={host}/upstream/os:1",
             f"/api/image?ref={host}/shop/api", "/api/runs", f"/api/runs/{run}", "/api/bases",
             "/nope", "/api/nope", "/api/uses", "/?ref=%ff", "/api/image?ref=nobody"]  # fmt: skip
    _, _, body = get(demo_site, f"/api/runs/{run}")
    paths.append(f"/runs/{run}/logs/{Path(json.loads(body)['nodes'][0]['log']).name}")
    for path in paths:
        reply = served.client.get(served.url + path)
        policy = reply.headers["content-security-policy"]
        directives = [d.strip() for d in policy.split(";")]
        assert "default-src 'none'" in directives and "frame-ancestors 'none'" in directives
        assert not any("unsafe" in d or "script-src" in d for d in directives)
        assert reply.headers["x-content-type-options"] == "nosniff", path
        assert reply.headers["referrer-policy"] == "no-referrer", path
        assert reply.headers["cache-control"] == "no-store", path
        assert len(reply.headers.get_list("content-security-policy")) == 1
        if reply.headers["content-type"].startswith("text/html"):
            # the same, but frame-ancestors, which a browser takes from a header only (and
            # warns of in a meta policy)
            meta = "; ".join(d for d in directives if not d.startswith("frame-ancestors"))
            assert Tables(reply.text).meta_policy == meta, path


# ---------------------------------------------------------------- 5. token, bind, POST


def test_token_guards_everything_but_healthz(fleet, monkeypatch):
    server = Server(fleet, ["serve", "--port", "0", "--token-env", "WEB_TOKEN"], SERVING,
                    {"WEB_TOKEN": f"  {TOKEN}\n"})  # fmt: skip
    try:
        for path in ["/", "/api/bases", "/api/uses?ref=python", "/runs", "/nope"]:
            for headers in [{}, {"Authorization": "Bearer wrong-token-of-some-length"},
                            {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}]:  # fmt: skip
                reply = server.client.get(path, headers=headers)
                assert reply.status_code == 401, (path, headers)
                assert reply.headers["www-authenticate"].startswith("Bearer")
                assert "Traceback" not in reply.text
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert server.client.get("/", headers=right).status_code == 200
        assert server.client.get("/api/bases", headers=right).json() == cli_json(fleet, "bases")
        assert server.client.get("/nope", headers=right).status_code == 404
        health = server.client.get("/healthz")
        assert health.status_code == 200 and health.text == "ok\n"
    finally:
        server.client.close()
        server.stop()
    assert not any(TOKEN in line for line in server.lines)


@pytest.mark.parametrize("value", [None, "short-token", "  ", "tøken-that-is-not-ascii-x"])
def test_a_missing_or_weak_token_stops_serve(fleet, value):
    env = {"WEB_TOKEN": value} if value is not None else {}
    if value is None:
        os.environ.pop("WEB_TOKEN", None)
    done = example.graphbuild(fleet, "serve", "--port", "0", "--token-env", "WEB_TOKEN",
                              env=env)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "WEB_TOKEN" in lines[0], done.stderr
    assert "Serving" not in done.stderr
    if value and value.strip():
        assert value not in done.stderr + done.stdout


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            found = probe.getsockname()[0]
        except OSError:
            return None
    return None if web.loopback(found) or found == "0.0.0.0" else found


def test_serve_binds_loopback_and_takes_no_post(fleet):
    server = Server(fleet, ["serve", "--port", "0"], SERVING)
    try:
        assert server.client.get("/").status_code == 200
        for path in ["/", "/api/bases", "/hooks/acr", "/hooks/dockerhub", "/healthz"]:
            reply = server.client.post(path, content=b"{}", headers={"X-Secret": "x"})
            assert reply.status_code == 404, path
        address = non_loopback_address()
        if address is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, server.port), timeout=5).close()
    finally:
        server.client.close()
        server.stop()
    assert not any("answers anyone" in line for line in server.lines)
    assert server.process.returncode == 0 and server.lines[-1] == "Stopped."
    if address is None:
        pytest.skip("this machine has no address but loopback: only the printed one checked")


# ---------------------------------------------------------------- 6. listen --ui


def acr_event(action: str, host: str) -> bytes:
    return json.dumps({
        "id": "cb8c3971", "timestamp": "2026-12-06T10:00:00Z", "action": action,
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                   "digest": "sha256:" + "ab" * 32, "repository": "nobody/uses-this", "tag": "9"},
        "request": {"id": "1", "host": host, "method": "DELETE"},
    }).encode()  # fmt: skip


def test_listen_ui_serves_hooks_and_pages_on_one_port(demo):
    root, host = demo
    env = {"GRAPHBUILD_WEBHOOK_SECRET": SECRET}
    args = ["listen", "--port", "0", "--host", "127.0.0.1", "--window", "0.1", "--max-wait", "1"]
    server = Server(root, [*args, "--ui"], LISTENING, env)
    try:
        hook = server.url + "/hooks/acr"
        assert httpx.post(hook, content=acr_event("delete", host),
                          headers={"X-Secret": "wrong"}).status_code == 401  # fmt: skip
        from graphbuild.events import SECRET_HEADER

        ignored = httpx.post(hook, content=acr_event("delete", host),
                             headers={SECRET_HEADER: SECRET})  # fmt: skip
        assert ignored.status_code == 202 and "ignored" in ignored.text
        bad = httpx.post(hook, content=b"not json", headers={SECRET_HEADER: SECRET})
        assert bad.status_code == 400
        assert server.client.get("/").status_code == 200
        assert server.client.get("/api/bases").json() == cli_json(root, "bases")
        assert server.client.get("/healthz").text == "ok\n"
    finally:
        server.client.close()
        server.stop()
    assert any("The web view is on http://127.0.0.1:" in line for line in server.lines)

    plain = Server(root, args, LISTENING, env)
    try:
        assert plain.client.get("/").status_code == 404
        assert plain.client.get("/api/bases").status_code == 404
        assert plain.client.get("/healthz").status_code == 200
    finally:
        plain.client.close()
        plain.stop()


def test_listen_token_env_needs_ui(fleet):
    done = example.graphbuild(fleet, "listen", "--port", "0", "--token-env", "WEB_TOKEN",
                              env={"GRAPHBUILD_WEBHOOK_SECRET": SECRET,
                                   "WEB_TOKEN": TOKEN})  # fmt: skip
    assert done.returncode == 2
    assert "--ui" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert TOKEN not in done.stderr


# ---------------------------------------------------------------- 7. browse links


def test_browse_link_quotes_the_path(fleet_site):
    status, _, body = get(fleet_site, "/", query(ref="python:3.12"))
    assert status == 200
    rows = Tables(body).tables["uses"]
    where = {row[1][0]: row[4] for row in rows}
    assert where["registry.example.com/team/app:1"] == (
        f"odd:{ODD_PATH}:1",
        ["https://git.example.com/odd/blob/main/a%20b%27q%22%23x/Dockerfile#L1"],
    )
    assert where["registry.example.com/team/app:2"] == (
        "odd:other/Dockerfile:1",
        ["https://git.example.com/odd/blob/main/other/Dockerfile#L1"],
    )


def test_no_browse_no_link(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    write_fleet(root, browse=None)
    assert example.graphbuild(root, "sync").returncode == 0
    site = web.Site(config.load(root / "repos.yaml"))
    rows = Tables(get(site, "/", query(ref="python:3.12"))[2]).tables["uses"]
    assert [row[4] for row in rows] == [(f"odd:{ODD_PATH}:1", []), ("odd:other/Dockerfile:1", [])]


@pytest.mark.parametrize("template", [
    "https://git.example.com/team/app/blob/main/{path}#L{line}",
    "http://git.internal/app/-/blob/main/{path}", "https://h/plain/no/fields", "https://h/{{x}}/{path}",
])  # fmt: skip
def test_browse_accepts_an_http_url_template(tmp_path, template):
    root = tmp_path / "ok"
    root.mkdir()
    write_fleet(root, browse=template)
    loaded = config.load(root / "repos.yaml")
    assert loaded.repos[0].browse == template


@pytest.mark.parametrize("template", [
    "javascript:alert(1)", "./blob/{path}", "//git.example.com/{path}", "/blob/{path}",
    "https://h/{other}", "https://h/{path!r}", "https://h/{path:>10}", "https://h/{", "https://h/}",
    "https://h/{}", "https://h/{0}", "https://h/{path.__class__}", "https://h/{path[0]}",
    "data:text/html,{path}", "ftp://h/{path}",
])  # fmt: skip
def test_browse_refuses_other_templates(tmp_path, template):
    root = tmp_path / "bad"
    root.mkdir()
    write_fleet(root, browse=template)
    done = example.graphbuild(root, "images")
    assert done.returncode == 2
    assert "repos.yaml:4:" in done.stderr and "browse" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- 8. show


def test_show_text(demo):
    root, host = demo
    done = example.graphbuild(root, "show", f"{host}/platform/runtime")
    assert done.returncode == 0, done.stderr
    document = cli_json(root, "show", f"{host}/platform/runtime")[0]
    lines = done.stdout.splitlines()
    assert lines[0] == f"{host}/platform/runtime:1"
    assert f"  tags:       {host}/platform/runtime:1, {host}/platform/runtime:1.4" in lines
    assert "  built from: platform:runtime/Dockerfile" in lines
    assert f"  digest:     {document['digest']}" in lines
    assert any(line.startswith("  freshness:  up-to-date (") for line in lines)
    assert f"  built on:   from {host}/platform/base:stable" in lines
    assert f"  children:   {host}/shop/api:1.0, {host}/tools/lint:latest" in lines
    assert any(line.startswith("  gate:       smoke passed") for line in lines)
    assert any(line.startswith("  built:      ") and document["builds"][0]["run"] in line
               for line in lines)  # fmt: skip


@pytest.mark.parametrize("ref", ["NOPE", "nope", "registry.example.com/nobody:1"])
def test_show_of_no_image_exits_2(fleet, ref):
    done = example.graphbuild(fleet, "show", ref)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_request_target_that_is_no_url_is_a_400(served):
    """urlsplit refuses `http://[/` (an unclosed IPv6 host): answered, not hung up on."""
    since = len(served.lines)
    for method in (b"GET", b"POST"):
        answer = raw_request(served.port, method + b" http://[/api/bases HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 400 "), answer
        assert b"Traceback" not in answer
    logged = served.requests_logged(2, since)
    assert len(logged) == 2 and all("400" in line for line in logged), logged


def test_search_page_says_what_a_ref_names(demo, demo_site):
    host = demo[1]
    _, _, body = get(demo_site, "/", query(ref="upstream/os"))  # docker.io/upstream/os
    assert f"/?{query(ref=f'{host}/upstream/os:1')}" in body.replace("&amp;", "&")
    assert "Did you mean" in body and "uses" not in Tables(body).tables
    _, _, body = get(demo_site, "/", query(ref=f"{host}/tools/report"))  # a leaf
    assert "No image is built on" in body and "Did you mean" not in body
    status, _, body = get(demo_site, "/")
    assert status == 200 and Tables(body).tables == {}


def test_listen_ui_token_guards_the_pages_not_the_hooks(demo):
    root, host = demo
    from graphbuild.events import SECRET_HEADER

    env = {"GRAPHBUILD_WEBHOOK_SECRET": SECRET, "WEB_TOKEN": TOKEN}
    server = Server(root, ["listen", "--port", "0", "--host", "127.0.0.1", "--ui",
                           "--token-env", "WEB_TOKEN"], LISTENING, env)  # fmt: skip
    try:
        hook = httpx.post(server.url + "/hooks/acr", content=acr_event("delete", host),
                          headers={SECRET_HEADER: SECRET})  # fmt: skip
        assert hook.status_code == 202
        assert server.client.get("/api/bases").status_code == 401
        assert server.client.get("/api/bases", headers={"Authorization": SECRET}).status_code == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert server.client.get("/api/bases", headers=right).json() == cli_json(root, "bases")
    finally:
        server.client.close()
        server.stop()
    assert not any(TOKEN in line or SECRET in line for line in server.lines)


def test_serve_on_a_busy_port_exits_2(fleet):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = example.graphbuild(fleet, "serve", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert "cannot listen on 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr


def test_serve_beyond_loopback_warns_without_a_token(fleet):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    pattern = re.compile(rf"Serving the web view of .* on http://{re.escape(address)}:(\d+)/")
    for env, warned in [({}, True), ({"WEB_TOKEN": TOKEN}, False)]:
        args = ["serve", "--host", address, "--port", "0"]
        server = Server(fleet, args + (["--token-env", "WEB_TOKEN"] if env else []), pattern, env)
        server.client.close()
        server.stop()
        assert any("answers anyone" in line for line in server.lines) == warned, server.lines


def test_an_empty_token_env_name_is_refused_not_ignored(demo, fleet):
    """`--token-env ""` (an unset chart value, say) must not serve without a token."""
    done = example.graphbuild(fleet, "serve", "--port", "0", "--token-env", "")
    assert done.returncode == 2, done.stderr
    assert "--token-env" in done.stderr and "Serving" not in done.stderr
    env = {"GRAPHBUILD_WEBHOOK_SECRET": SECRET}
    done = example.graphbuild(demo[0], "listen", "--port", "0", "--ui", "--token-env", "", env=env)
    assert done.returncode == 2, done.stderr
    assert "--token-env" in done.stderr and "Listening" not in done.stderr


def test_repository_content_is_text_on_every_page(tmp_path):
    """A Dockerfile path and a base name made of markup: shown as text, in no element or
    attribute of the page (the browser test checks the same in Chromium)."""
    hostile = "<img src=x onerror=alert(1)>"
    (tmp_path / "src" / hostile).mkdir(parents=True)
    (tmp_path / "src" / hostile / "Dockerfile").write_text("FROM python:3.12\n")
    (tmp_path / "repos.yaml").write_text(
        "repos:\n  - name: x\n    path: src\n    browse: 'https://h/{path}#L{line}'\n"
        "    images:\n      - image: registry.example.com/x/app\n"
        f"        dockerfile: {json.dumps(hostile + '/Dockerfile')}\n"
    )  # fmt: skip
    assert example.graphbuild(tmp_path, "sync").returncode == 0
    site = web.Site(config.load(tmp_path / "repos.yaml"))
    pages = [("/", query(ref="python:3.12")), ("/image", query(ref="registry.example.com/x/app")),
             ("/", query(ref=hostile)), ("/nope" + hostile, "")]  # fmt: skip
    for path, q in pages:
        status, _, body = get(site, path, q)
        assert status in (200, 400, 404), (path, body)
        assert "<img" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body, path


def test_a_store_it_cannot_read_is_503_not_the_clients_fault(tmp_path):
    """state.db of a newer graphbuild: the server cannot answer now; the request was fine."""
    root = tmp_path / "newer"
    root.mkdir()
    write_fleet(root)
    assert example.graphbuild(root, "sync").returncode == 0
    site = web.Site(config.load(root / "repos.yaml"))
    with sqlite3.connect(root / ".graphbuild/state.db") as db:
        db.execute("PRAGMA user_version = 999")
    db.close()
    image = query(ref="registry.example.com/team/app")
    for path, q in [("/api/runs", ""), ("/runs", ""), ("/api/image", image), ("/image", image)]:
        status, _, body = get(site, path, q)
        assert status == 503, (path, body)
        assert "state.db" in body and "Traceback" not in body
    assert get(site, "/api/uses", query(ref="NOT//A"))[0] == 400  # a bad reference still is


def test_a_flag_may_be_given_bare_and_a_trailing_ampersand_is_harmless(demo, demo_site):
    root, host = demo
    ref = f"{host}/upstream/os:1"
    status, _, body = get(demo_site, "/api/uses", f"ref={ref}&direct&")
    assert status == 200 and json.loads(body) == cli_json(root, "uses", ref, "--direct")
    status, _, body = get(demo_site, "/api/uses", f"ref={ref}&direct=maybe")
    assert status == 400 and "flag" in json.loads(body)["error"]


def test_any_depth_the_commands_take_the_twins_take(demo, demo_site):
    root, host = demo
    ref = f"{host}/upstream/os:1"
    status, _, body = get(demo_site, "/api/uses", f"ref={ref}&depth=11")
    assert status == 200 and json.loads(body) == cli_json(root, "uses", ref, "--depth", "11")
    done = example.graphbuild(root, "graph", "--focus", ref, "--depth", "11")
    status, _, body = get(demo_site, "/api/graph", f"focus={ref}&depth=11")
    assert status == 200 and json.loads(body) == json.loads(done.stdout)


def test_head_is_a_get_without_its_body(served):
    for path in ("/", "/bases", "/api/bases", "/healthz", "/nope"):
        head = served.client.head(served.url + path)
        got = served.client.get(served.url + path)
        assert head.status_code == got.status_code, path
        assert head.content == b"" and got.content, path
        assert head.headers["content-length"] == str(len(got.content)), path


def test_a_state_db_an_older_graphbuild_writes_after_serve_started_is_never_migrated(tmp_path):
    """serve up before an older graphbuild's first sweep: the pages that read state.db
    answer 503, and its schema stays the older one, which that sweeper goes on writing."""
    root = tmp_path / "late"
    root.mkdir()
    write_fleet(root)
    assert example.graphbuild(root, "sync").returncode == 0
    workspace = root / ".graphbuild"
    (workspace / STATE).unlink(missing_ok=True)
    site = web.Site(config.load(root / "repos.yaml"))
    with closing(sqlite3.connect(workspace / STATE)) as db:  # as an older graphbuild leaves it
        for migration in MIGRATIONS[:-1]:
            db.executescript(migration)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        db.commit()
    for path, query in (("/api/runs", ""), ("/runs", ""), ("/api/bases", ""),
                        ("/api/image", "ref=registry.example.com/team/app:1")):  # fmt: skip
        status, _, body = get(site, path, query)
        assert status == 503 and "older graphbuild" in body, (path, body)
    with closing(sqlite3.connect(workspace / STATE)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) - 1
    # the CLI, a writer, migrates it before it reads
    assert example.graphbuild(root, "bases", "--json").returncode == 0
    with closing(sqlite3.connect(workspace / STATE)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_the_whole_graph_is_drawn_only_when_asked_and_counted_before_it_is_loaded(
    fleet_site, monkeypatch
):
    from graphbuild import pages

    for query in ("", "all=0", "all=false"):
        status, _, body = get(fleet_site, "/graph", query)
        assert status == 200 and 'id="graph"' not in body and "draw all" in body, query
    status, _, body = get(fleet_site, "/graph", "all=1")
    assert status == 200 and 'id="graph"' in body
    monkeypatch.setattr(pages, "MOST_NODES", 1)  # the fleet has more: refused by its count
    status, _, body = get(fleet_site, "/graph", "all=1")
    assert status == 200 and 'id="graph"' not in body and "More than 1 nodes" in body


def test_empty_stores_a_first_run_has_not_written_are_no_stores_yet(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    write_fleet(root)
    workspace = root / ".graphbuild"
    workspace.mkdir()
    (workspace / STATE).touch()
    (workspace / indexdb.INDEX).touch()
    site = web.Site(config.load(root / "repos.yaml"))  # an empty state.db is no older one
    status, _, body = get(site, "/api/bases")
    assert status == 503 and "no index yet" in json.loads(body)["error"]
    assert get(site, "/api/runs")[:3:2] == (200, "[]\n")
