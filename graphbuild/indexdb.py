"""index.db: every table in it, and the walks answered straight from it.

index.db holds what is derived from the repositories: the linked graph, the
Dockerfile parses cached by blob, the stat cache of local folders, and the
workloads found in deploy repositories. This module alone knows its tables;
index.py, workloads.py and the queries call the functions below.

A `uses` or `parents` query reads only the rows it walks through, by index,
instead of loading ten thousand images into networkx first: that is what keeps
one query well under half a second on a large fleet. graph.py builds and
checks the graph with networkx; this module stores it and reads it back.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, NotRequired, TypedDict, cast

from graphbuild import refs
from graphbuild.console import note
from graphbuild.errors import GraphbuildError, NotFound
from graphbuild.workspace import INDEX, damaged, discard_index, unusable

IMAGE: Final = "image"
EXTERNAL: Final = "external"
# index.db is derived data: another version is dropped, not migrated. 2: image nodes carry
# every field of index.BuildOptions (`contexts` was missing), which builds read back. 3: every
# table is made here, when the file is (parses, files and deploy_repos were made by their users)
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_nodes (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, tag TEXT, digest TEXT,
    attrs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS graph_nodes_name ON graph_nodes (name);
CREATE TABLE IF NOT EXISTS graph_tags (tag TEXT PRIMARY KEY, node TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graph_edges (
    source TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL, repo TEXT NOT NULL,
    dockerfile TEXT NOT NULL, line INTEGER NOT NULL, attrs TEXT NOT NULL,
    PRIMARY KEY (source, target));
CREATE INDEX IF NOT EXISTS graph_edges_target ON graph_edges (target);
CREATE TABLE IF NOT EXISTS graph_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parses (key TEXT PRIMARY KEY, result TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, blob TEXT);
CREATE TABLE IF NOT EXISTS deploy_repos (
    repo TEXT PRIMARY KEY, key TEXT NOT NULL, workloads TEXT NOT NULL, problems TEXT NOT NULL);
"""
_EDGE_COLUMNS = ("kind", "repo", "dockerfile", "line")


# The graph's node and edge data: networkx attribute dicts while graph.py links and checks the
# graph, JSON in index.db, the same dicts read back. Declared here, not in graph.py, because the
# queries read them without importing networkx. graph.py's accessors hand them out typed.


class Unresolved(TypedDict):
    """A base reference of the image's Dockerfile that could not be worked out, and why."""

    kind: str
    raw: str
    line: int
    reason: str | None


class BuildFields(TypedDict):
    """index.BuildOptions as plain values (BuildOptions.attrs; BuildOptions.of reads them back)."""

    dockerfile: str  # path in the repository
    context: str  # folder in the repository
    build_args: dict[str, str]
    target: str | None
    platforms: list[str]
    contexts: dict[str, str]  # name -> docker-image://… or folder
    secret_build_args: NotRequired[dict[str, str]]  # name -> environment variable; no values


class ImageNode(BuildFields):
    """An image the fleet builds; its id is its first tag."""

    kind: Literal["image"]
    image: str  # normalised repository
    tags: list[str]  # full references
    repo: str  # repos.yaml name
    commit: str | None
    blob: str | None
    unresolved: list[Unresolved]
    base: str | None  # the node its final stage is built on: what OCI base annotations name


class ExternalNode(TypedDict):
    """A base the fleet pulls but does not build; its id is its normalised reference."""

    kind: Literal["external"]
    name: str
    tag: str | None
    digest: str | None
    pinned: bool


Node = ImageNode | ExternalNode


class BaseUse(TypedDict):
    """One use of a base by an image's Dockerfile: a FROM, COPY --from, RUN --mount, syntax."""

    kind: str  # dockerfile.FROM, COPY, MOUNT, SYNTAX
    line: int
    ref: str  # as the Dockerfile names it, normalised
    pinned: bool  # by digest
    platform: str | None  # FROM --platform
    platforms: list[str]  # the target platforms whose build pulls it
    via: NotRequired[str]  # "ONBUILD of <image>" for a trigger of the base's own Dockerfile


class Edge(BaseUse):
    """base -> image: the first (or the FROM) use, and every other use in `also`."""

    repo: str
    dockerfile: str
    also: list[BaseUse]


def connect(workspace: Path) -> sqlite3.Connection:
    """The workspace's index.db; recreated if an older graphbuild wrote it or it is damaged."""
    path = workspace / INDEX
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            return _open(path)
        except sqlite3.DatabaseError as err:
            if not damaged(err):
                raise
            discard_index(path, err, note)
            return _open(path)
    except (OSError, sqlite3.Error) as err:
        raise unusable(err, workspace) or GraphbuildError(f"{path}: cannot open: {err}") from None


def reader(workspace: Path) -> sqlite3.Connection | None:
    """index.db opened read-only, for the web view: never created, dropped or rebuilt (as
    `connect` does to one another graphbuild wrote); None before any sync."""
    path = workspace / INDEX
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                             check_same_thread=False)  # fmt: skip
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as err:
        raise GraphbuildError(f"{path}: cannot read it: {err}") from None
    if version == 0:  # a first sync's, not written yet
        db.close()
        return None
    if version != SCHEMA_VERSION:
        db.close()
        raise GraphbuildError(f"{path} was written by another graphbuild (schema {version}, "
                              f"not {SCHEMA_VERSION}); a sync by this one rebuilds it")  # fmt: skip
    return db


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        with db:
            for (table,) in tables:
                db.execute(f'DROP TABLE "{table}"')
        db.executescript(_SCHEMA)  # only here: a query that opens the index writes nothing
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


def save(
    db: sqlite3.Connection,
    nodes: Iterator[tuple[str, Node]],
    edges: Iterator[tuple[str, str, Edge]],
    meta: dict[str, Any],
) -> None:
    """Replace the stored graph in one transaction: readers see the old one or the new one."""
    node_rows: list[tuple[str, str, str, str | None, str | None, str]] = []
    tag_rows: list[tuple[str, str]] = []
    for node, attrs in nodes:
        if attrs["kind"] == IMAGE:
            node_rows.append((node, IMAGE, attrs["image"], None, None, json.dumps(attrs)))
            tag_rows += [(tag, node) for tag in attrs["tags"]]
        else:
            row = (node, EXTERNAL, attrs["name"], attrs["tag"], attrs["digest"], json.dumps(attrs))
            node_rows.append(row)
    edge_rows = [
        (u, v, d["kind"], d["repo"], d["dockerfile"], d["line"],
         json.dumps({k: x for k, x in d.items() if k not in _EDGE_COLUMNS}))
        for u, v, d in edges
    ]  # fmt: skip
    meta = {**meta, "synced_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with db:
        for table in ("graph_nodes", "graph_tags", "graph_edges", "graph_meta"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        db.executemany("INSERT INTO graph_nodes VALUES (?, ?, ?, ?, ?, ?)", node_rows)
        db.executemany("INSERT INTO graph_tags VALUES (?, ?)", tag_rows)
        db.executemany("INSERT INTO graph_edges VALUES (?, ?, ?, ?, ?, ?, ?)", edge_rows)
        db.executemany(
            "INSERT INTO graph_meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
        )


def meta(db: sqlite3.Connection) -> dict[str, Any] | None:
    """What the last successful link recorded (fingerprint, problems, repos), or None."""
    try:
        rows = db.execute("SELECT key, value FROM graph_meta").fetchall()
    except sqlite3.OperationalError:
        return None
    return {k: json.loads(v) for k, v in rows} or None


def nodes(db: sqlite3.Connection) -> Iterator[tuple[str, Node]]:
    for node, attrs in db.execute("SELECT id, attrs FROM graph_nodes"):
        yield node, _node(attrs)


def _node(stored: str) -> Node:
    """A node's data as save() stored it: the JSON of the attribute dict graph.py made."""
    return cast(Node, json.loads(stored))


def edges(db: sqlite3.Connection) -> Iterator[tuple[str, str, Edge]]:
    for u, v, kind, repo, dockerfile, line, attrs in db.execute("SELECT * FROM graph_edges"):
        data = {"kind": kind, "repo": repo, "dockerfile": dockerfile, "line": line,
                **json.loads(attrs)}  # fmt: skip
        yield u, v, cast(Edge, data)  # the columns save() took out of the dict, put back


# ---------------------------------------------------------------- queries


def match(db: sqlite3.Connection, text: str) -> list[str]:
    """Nodes a user's REF names: no tag = every tag; a tag also matches its pinned forms.
    A mirror's name (repos.yaml `mirrors:`) means the upstream base it mirrors."""
    row = db.execute("SELECT value FROM graph_meta WHERE key = 'mirrors'").fetchone()
    query = refs.parse(refs.upstream(str(refs.parse(text)), json.loads(row[0]) if row else {}))
    if query.digest is not None:
        sql, args = "kind = 'external' AND digest = ?", [query.digest]
    elif query.tag is not None:
        sql, args = "kind = 'external' AND tag = ?", [query.tag]
    else:
        sql, args = "1", []
    select = f"SELECT id FROM graph_nodes WHERE name = ? AND {sql}"  # noqa: S608 - fixed SQL
    rows = db.execute(select, [query.name, *args])
    found = {row[0] for row in rows}
    if query.tag is not None and query.digest is None:
        tagged = db.execute("SELECT node FROM graph_tags WHERE tag = ?", (query.tagged,))
        found |= {row[0] for row in tagged}
    return sorted(found)


def match_all(db: sqlite3.Connection, names: Sequence[str]) -> list[str]:
    """The nodes each of `names` means; a name that means nothing is bad input."""
    found = []
    for name in names:
        nodes = match(db, name)
        if not nodes:
            raise NotFound(f"{name} is not in the graph; see `graphbuild images`")
        found += nodes
    return found


@dataclass(frozen=True)
class Use:
    """An image built on the queried base, and the edge that first reaches it."""

    image: str
    depth: int
    base: str  # the node it is built on, one level up
    kind: str
    repo: str
    dockerfile: str
    line: int


def uses(db: sqlite3.Connection, starts: list[str], max_depth: int | None = None) -> list[Use]:
    """Every image built on `starts`, breadth first: the shortest chain decides the depth."""
    depth = dict.fromkeys(starts, 0)
    queue = deque(starts)
    found: list[Use] = []
    sql = ("SELECT target, kind, repo, dockerfile, line FROM graph_edges "
           "WHERE source = ? ORDER BY target")  # fmt: skip
    while queue:
        node = queue.popleft()
        if max_depth is not None and depth[node] >= max_depth:
            continue
        for child, kind, repo, dockerfile, line in db.execute(sql, (node,)):
            if child in depth:
                continue
            depth[child] = depth[node] + 1
            found.append(Use(child, depth[child], node, kind, repo, dockerfile, line))
            queue.append(child)
    return sorted(found, key=lambda u: (u.depth, u.image))


@dataclass(frozen=True)
class Parent:
    """One step down the chain: `image` is built on `base`."""

    image: str
    base: str
    depth: int
    kind: str
    line: int
    repo: str
    dockerfile: str
    external: bool


def parents(db: sqlite3.Connection, image: str) -> list[Parent]:
    """The bases of `image`, their bases, and so on down to external roots."""
    depth = {image: 0}
    queue = deque([image])
    found: list[Parent] = []
    sql = (
        "SELECT e.source, e.kind, e.line, e.repo, e.dockerfile, n.kind FROM graph_edges e "
        "JOIN graph_nodes n ON n.id = e.source WHERE e.target = ? ORDER BY e.source"
    )
    while queue:
        node = queue.popleft()
        for base, kind, line, repo, dockerfile, base_kind in db.execute(sql, (node,)):
            found.append(Parent(node, base, depth[node] + 1, kind, line, repo, dockerfile,
                                base_kind == EXTERNAL))  # fmt: skip
            if base not in depth:
                depth[base] = depth[node] + 1
                queue.append(base)
    return found


def kind_of(db: sqlite3.Connection, node: str) -> str | None:
    row = db.execute("SELECT kind FROM graph_nodes WHERE id = ?", (node,)).fetchone()
    return row[0] if row else None


def attrs(db: sqlite3.Connection, node: str) -> Node | None:
    row = db.execute("SELECT attrs FROM graph_nodes WHERE id = ?", (node,)).fetchone()
    return _node(row[0]) if row else None


# ---------------------------------------------------------------- parses and file stats


def parse_of(db: sqlite3.Connection, key: str) -> str | None:
    """A Dockerfile's cached parse (its refs or its error, as JSON) under its cache key."""
    row = db.execute("SELECT result FROM parses WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def keep_parses(db: sqlite3.Connection, new: dict[str, str], used: set[str]) -> None:
    """Add the new parses and forget the ones no image uses any more."""
    with db:
        db.executemany("INSERT OR REPLACE INTO parses VALUES (?, ?)", new.items())
        db.execute("CREATE TEMP TABLE IF NOT EXISTS used (key TEXT PRIMARY KEY)")
        db.execute("DELETE FROM used")
        db.executemany("INSERT INTO used VALUES (?)", ((k,) for k in used))
        db.execute("DELETE FROM parses WHERE key NOT IN (SELECT key FROM used)")


def file_stats(db: sqlite3.Connection) -> dict[str, tuple[int, int, str]]:
    """Local folders' files as the last scan saw them: path -> (mtime_ns, size, blob)."""
    rows = db.execute("SELECT path, mtime_ns, size, blob FROM files")
    return {path: (mtime, size, blob) for path, mtime, size, blob in rows}


def keep_file_stats(db: sqlite3.Connection, stats: dict[str, tuple[int, int, str]]) -> None:
    with db:
        db.execute("DELETE FROM files")
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)",
                       ((path, *stat) for path, stat in stats.items()))  # fmt: skip


# ---------------------------------------------------------------- deploy repositories


def deploy_repos(db: sqlite3.Connection) -> list[str]:
    return [repo for (repo,) in db.execute("SELECT repo FROM deploy_repos")]


def forget_deploy_repos(db: sqlite3.Connection, repos: Iterable[str]) -> None:
    with db:
        db.executemany("DELETE FROM deploy_repos WHERE repo = ?", ((r,) for r in repos))


def deploy_repo(db: sqlite3.Connection, repo: str) -> tuple[str, str] | None:
    """What the last read of a deploy repository was keyed by, and the problems it found."""
    row = db.execute("SELECT key, problems FROM deploy_repos WHERE repo = ?", (repo,)).fetchone()
    return (row[0], row[1]) if row else None


def keep_deploy_repo(
    db: sqlite3.Connection, repo: str, key: str, workloads: str, problems: str
) -> None:
    with db:
        db.execute("INSERT OR REPLACE INTO deploy_repos VALUES (?, ?, ?, ?)",
                   (repo, key, workloads, problems))  # fmt: skip


def deploy_workloads(db: sqlite3.Connection) -> list[str]:
    """Each deploy repository's workloads as stored (JSON lists), by repository."""
    return [w for (w,) in db.execute("SELECT workloads FROM deploy_repos ORDER BY repo")]
