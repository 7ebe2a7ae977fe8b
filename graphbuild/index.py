"""Scan synced repositories into parsed image records, parsing only what changed.

Parse results are cached in the workspace (index.db, SQLite) under a key made
of the Dockerfile's git blob sha and every option that changes the answer
(build args, target, platforms, named contexts), so a sync after no change
parses nothing and a sync after one commit parses only the files it touched.
The cache is disposable: deleting it costs one cold parse, nothing more.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from graphbuild import dockerfile, refs
from graphbuild.config import Config, ImageSpec, RepoSpec
from graphbuild.errors import DockerfileError, InvalidReference
from graphbuild.sources import SyncResult, Tree, open_tree

PARSER_REVISION = "1"  # bump when parsing changes, so cached answers are not reused
ERROR, UNRESOLVED, WARNING = "error", "unresolved", "warning"


@dataclass(frozen=True)
class Problem:
    """Something a user should fix or know, located as `repo:path:line`."""

    level: str  # error | unresolved | warning
    repo: str
    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.repo, self.path, self.line) if p)
        return f"{where}: {self.message}"


@dataclass
class Image:
    """One buildable image: a Dockerfile of a repository with its build options."""

    repo: str
    dockerfile: str
    image: str  # normalised repository, e.g. docker.io/library/python
    tags: list[str]  # full references; the first is the node id
    context: str
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    platforms: list[str] = field(default_factory=list)
    contexts: dict[str, str] = field(default_factory=dict)
    commit: str | None = None
    blob: str | None = None
    parsed: dockerfile.Parsed | None = None

    @property
    def id(self) -> str:
        return self.tags[0]


@dataclass
class Index:
    images: list[Image]
    problems: list[Problem]
    parsed: int = 0  # Dockerfiles parsed in this run
    cached: int = 0  # answered from the cache


def build(config: Config, synced: list[SyncResult]) -> Index:
    """Parse every image of every repository that has something to read."""
    db_path = config.workspace / "index.db"
    config.workspace.mkdir(parents=True, exist_ok=True)
    with closing(_open(db_path)) as db:
        stat_cache = {
            path: (mtime, size, blob)
            for path, mtime, size, blob in db.execute(
                "SELECT path, mtime_ns, size, blob FROM files"
            )
        }
        known_stats = dict(stat_cache)
        index = Index([], [])
        new_parses: dict[str, str] = {}
        results = {r.repo: r for r in synced}
        for repo in config.repos:
            result = results[repo.name]
            if result.error:
                index.problems.append(Problem(ERROR, repo.name, result.error))
            if repo.url is not None and result.commit is None:
                continue
            if repo.path is not None and result.error:
                continue
            tree = open_tree(repo, result, config.workspace, stat_cache)
            try:
                _index_repo(repo, result, tree, db, new_parses, index)
            finally:
                tree.close()
        with db:
            db.executemany("INSERT OR REPLACE INTO parses VALUES (?, ?)", new_parses.items())
            changed = [(p, *v) for p, v in stat_cache.items() if known_stats.get(p) != v]
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", changed)
    return index


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS parses (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS files "
        "(path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, blob TEXT)"
    )
    return db


def _index_repo(
    repo: RepoSpec,
    result: SyncResult,
    tree: Tree,
    db: sqlite3.Connection,
    new_parses: dict[str, str],
    index: Index,
) -> None:
    all_paths: list[str] | None = None
    for spec in repo.images:
        if spec.is_glob:
            if all_paths is None:
                all_paths = sorted(tree.paths())
            regex = glob_regex(spec.dockerfile)
            matches = [p for p in all_paths if regex.match(p)]
            if not matches:
                index.problems.append(
                    Problem(
                        WARNING,
                        repo.name,
                        f"{spec.key}.dockerfile: {spec.dockerfile!r} matches no file",
                        spec.dockerfile,
                    )
                )
        else:
            matches = [spec.dockerfile]
        for path in matches:
            image = _image(repo, spec, path, result.commit, index)
            if image is None:
                continue
            image.blob = tree.blob(path)
            if image.blob is None:
                index.problems.append(
                    Problem(ERROR, repo.name, f"no such Dockerfile ({spec.key}.dockerfile)", path)
                )
                continue
            key = _cache_key(image)
            cached = new_parses.get(key) or _cached(db, key)
            try:
                if cached is not None:
                    image.parsed = dockerfile.Parsed.from_dict(json.loads(cached))
                    index.cached += 1
                else:
                    image.parsed = dockerfile.parse(
                        tree.read(path),
                        build_args=image.build_args,
                        target=image.target,
                        platforms=image.platforms or (dockerfile.DEFAULT_PLATFORM,),
                        contexts=image.contexts,
                    )
                    new_parses[key] = json.dumps(image.parsed.to_dict())
                    index.parsed += 1
            except DockerfileError as err:
                line = err.line or None
                index.problems.append(Problem(ERROR, repo.name, err.message, path, line))
                continue
            for ref in image.parsed.refs:
                if ref.unresolved:
                    message = f"{ref.kind} {ref.raw!r} unresolved: {ref.unresolved}"
                    index.problems.append(Problem(UNRESOLVED, repo.name, message, path, ref.line))
            for warning in image.parsed.warnings:
                index.problems.append(
                    Problem(WARNING, repo.name, warning.message, path, warning.line or None)
                )
            index.images.append(image)


def _image(
    repo: RepoSpec, spec: ImageSpec, path: str, commit: str | None, index: Index
) -> Image | None:
    folder = PurePosixPath(path).parent
    name = folder.name or repo.name

    def fill(text: str) -> str:
        return text.replace("{dir}", name)

    try:
        image = refs.repository(fill(spec.image))
        tags = [str(refs.parse(f"{image}:{fill(tag)}")) for tag in spec.tags]
    except InvalidReference as err:
        index.problems.append(Problem(ERROR, repo.name, f"{spec.key}: {err}", path))
        return None
    return Image(
        repo=repo.name,
        dockerfile=path,
        image=image,
        tags=tags,
        context=fill(spec.context) if spec.context else str(folder),
        build_args=dict(spec.build_args),
        target=fill(spec.target) if spec.target else None,
        platforms=list(spec.platforms),
        contexts=dict(spec.contexts),
        commit=commit,
    )


def _cache_key(image: Image) -> str:
    options = [
        PARSER_REVISION,
        image.blob,
        sorted(image.build_args.items()),
        image.target,
        image.platforms,
        sorted(image.contexts.items()),
    ]
    return hashlib.sha256(json.dumps(options).encode()).hexdigest()


def _cached(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT result FROM parses WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay inside one folder, `**/` spans folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 1)) > i + 1:
            out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")
