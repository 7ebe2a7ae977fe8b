"""Scan synced repositories into parsed image records, parsing only what changed.

The index lives in the workspace as index.db (SQLite): parse results keyed by
the Dockerfile's git blob sha and every option that changes the answer (build
args, target, platforms, named contexts), a stat cache for local folders, and
the linked graph itself (graph.py). Everything in it is derived from the
repositories, so deleting it costs one cold parse, nothing more.

Indexing runs in two steps so that an unchanged fleet costs almost nothing:
`scan` locates every Dockerfile and its blob sha and returns a fingerprint of
all inputs; only when that differs from the stored graph's does `parse` run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType, TracebackType

from graphbuild import __version__, dockerfile, indexdb, refs
from graphbuild.config import IMAGE_CONTEXT, Config, ImageSpec, RepoSpec
from graphbuild.dockerfile import Parsed
from graphbuild.errors import (
    ERROR,
    UNRESOLVED,
    WARNING,
    CloneDamaged,
    DockerfileError,
    InvalidReference,
    Problem,
)
from graphbuild.expand import shorten
from graphbuild.sources import SyncResult
from graphbuild.trees import Tree, blob_sha, open_tree

PARSER_REVISION = "7"  # bump when parsing changes, so cached answers are not reused
# Parsing one repository may take this long per sync; what is left waits for the next one.
# A repository of many pathological Dockerfiles (each within its own bounds) must not hold
# the sync of the whole fleet: bounded work per file is not bounded work per repository.
REPO_SECONDS = 60.0


@dataclass(frozen=True)
class BuildOptions:
    """Everything both the parse and the build of an image depend on, as one value.

    The index makes it from repos.yaml, the graph stores its fields on the image's
    node, and the build reads the Dockerfile with exactly it and hands it on to the
    builder: a build can then never use other options (named contexts above all) than
    the ones the graph linked the image with.
    """

    dockerfile: str  # path in the repository
    context: str  # folder in the repository
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platforms: tuple[str, ...] = ()
    contexts: Mapping[str, str] = field(default_factory=dict)  # name -> docker-image://… or folder
    # build-arg name -> environment variable: names only; the build reads the values
    secret_build_args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:  # frozen all the way down: no one edits it on its way
        object.__setattr__(self, "build_args", MappingProxyType(dict(self.build_args)))
        object.__setattr__(self, "platforms", tuple(self.platforms))
        object.__setattr__(self, "contexts", MappingProxyType(dict(self.contexts)))
        secret = MappingProxyType(dict(self.secret_build_args))
        object.__setattr__(self, "secret_build_args", secret)

    def parse(self, data: bytes | str) -> Parsed:  # `dockerfile` here is the field
        """The Dockerfile read as the build reads it."""
        return dockerfile.parse(
            data,
            build_args=self.build_args,
            target=self.target,
            platforms=self.platforms or (dockerfile.DEFAULT_PLATFORM,),
            contexts=self.contexts,
        )

    @property
    def folders(self) -> dict[str, str]:
        """The named contexts that are folders of the repository: name -> folder."""
        return {k: v for k, v in self.contexts.items() if not v.startswith(IMAGE_CONTEXT)}

    def attrs(self) -> indexdb.BuildFields:
        """Plain values for the graph node (stored as JSON in index.db); secret_build_args
        only when there are any, so every other node is as it was."""
        fields = indexdb.BuildFields(
            dockerfile=self.dockerfile, context=self.context, build_args=dict(self.build_args),
            target=self.target, platforms=list(self.platforms), contexts=dict(self.contexts),
        )  # fmt: skip
        if self.secret_build_args:
            fields["secret_build_args"] = dict(self.secret_build_args)
        return fields

    @classmethod
    def of(cls, attrs: indexdb.BuildFields) -> BuildOptions:
        """Back from a graph node's attributes: the same value the index made."""
        return cls(attrs["dockerfile"], attrs["context"], attrs["build_args"], attrs["target"],
                   tuple(attrs["platforms"]), attrs["contexts"],
                   attrs.get("secret_build_args", {}))  # fmt: skip


@dataclass
class Image:
    """One buildable image: a Dockerfile of a repository with its build options."""

    repo: str
    image: str  # normalised repository, e.g. docker.io/library/python
    tags: list[str]  # full references; the first is the node id
    options: BuildOptions
    commit: str | None = None
    blob: str | None = None
    parsed: dockerfile.Parsed | None = None

    @property
    def id(self) -> str:
        return self.tags[0]

    @property
    def dockerfile(self) -> str:
        return self.options.dockerfile


@dataclass
class Index:
    images: list[Image]
    problems: list[Problem]
    parsed: int = 0  # Dockerfiles parsed in this run
    cached: int = 0  # answered from the cache
    deferred: int = 0  # left for the next sync: their repository had its REPO_SECONDS


@dataclass(frozen=True)
class _Found:
    repo: RepoSpec
    spec: ImageSpec
    path: str
    blob: str
    commit: str | None


class Indexer:
    """One indexing pass over synced repositories: `scan`, then `parse` if anything changed."""

    def __init__(self, config: Config, synced: list[SyncResult], db: sqlite3.Connection) -> None:
        self.config, self.synced, self.db = config, synced, db
        self.known_stats = indexdb.file_stats(db)
        self.stats: dict[str, tuple[int, int, str]] = {}  # what this scan saw, for next time
        self.trees: dict[str, Tree] = {}
        self.found: list[_Found] = []
        self.problems: list[Problem] = []

    def __enter__(self) -> Indexer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        for tree in self.trees.values():
            tree.close()
        if self.stats != self.known_stats:
            indexdb.keep_file_stats(self.db, self.stats)

    def scan(self) -> str:
        """Locate every Dockerfile and its blob; return a fingerprint of all inputs."""
        digest = hashlib.sha256(f"{__version__}/{PARSER_REVISION}\0".encode())
        digest.update(self.config.file.read_bytes())
        results = {r.repo: r for r in self.synced}
        for repo in self.config.repos:
            result = results[repo.name]
            digest.update(f"\0{repo.name}\0{result.commit}\0{result.error}".encode())
            if result.error:
                self.problems.append(Problem(ERROR, repo.name, result.error))
            if (repo.url is not None and result.commit is None) or (repo.path and result.error):
                continue
            try:
                self._scan(repo, result, digest)
            except CloneDamaged as err:  # its images are left out; the next sync fetches anew
                digest.update(f"\0{err}".encode())
                self.problems.append(Problem(ERROR, repo.name, str(err)))
        return digest.hexdigest()

    def _scan(self, repo: RepoSpec, result: SyncResult, digest: hashlib._Hash) -> None:
        tree = self.trees[repo.name] = open_tree(
            repo, result, self.config.workspace, self.known_stats, self.stats
        )
        for spec in repo.images:
            for path in self._paths(repo, spec, tree):
                blob = tree.blob(path)
                digest.update(f"\0{spec.key}\0{path}\0{blob}".encode())
                if blob is None:
                    message = f"no such Dockerfile ({spec.key}.dockerfile)"
                    self.problems.append(Problem(ERROR, repo.name, message, path))
                else:
                    self.found.append(_Found(repo, spec, path, blob, result.commit))

    def _paths(self, repo: RepoSpec, spec: ImageSpec, tree: Tree) -> list[str]:
        if not spec.is_glob:
            return [spec.dockerfile]
        matches = tree.glob(spec.dockerfile)
        if not matches:
            message = f"{spec.key}.dockerfile: {spec.dockerfile!r} matches no file"
            self.problems.append(Problem(WARNING, repo.name, message, spec.dockerfile))
        return matches

    def parse(self) -> Index:
        """Parse every located Dockerfile, from the cache where the same input was parsed.

        A Dockerfile that fails is cached too, as its error: a hostile file costs its
        bounded parse once per change, not once per sync.
        """
        index = Index([], self.problems)
        new: dict[str, str] = {}
        used: set[str] = set()
        spent: dict[str, float] = {}  # seconds of parsing per repository in this pass
        for found in self.found:
            image = _image(found, index)
            if image is None:
                continue
            key, cached = _cache_key(image), None
            try:
                cached = new.get(key) or indexdb.parse_of(self.db, key)
                if cached is None and spent.get(image.repo, 0.0) > REPO_SECONDS:
                    message = (f"not read in this sync: the repository's Dockerfiles took more "
                               f"than {REPO_SECONDS:g} s, the most one repository gets in a "
                               "sync; the next sync reads on")  # fmt: skip
                    index.problems.append(Problem(ERROR, image.repo, message, image.dockerfile))
                    index.deferred += 1
                    continue
                if cached is None:
                    began = time.monotonic()
                    try:
                        image.parsed = self._parse(found, image)
                    finally:
                        spent[image.repo] = spent.get(image.repo, 0.0) + time.monotonic() - began
                    key = _cache_key(image)  # the blob read may differ from the scanned one
                    new[key] = json.dumps(image.parsed.to_dict())
                    index.parsed += 1
                else:
                    result = json.loads(cached)
                    index.cached += 1
                    if "error" in result:
                        raise DockerfileError(*result["error"])
                    image.parsed = dockerfile.Parsed.from_dict(result)
            except DockerfileError as err:
                if cached is None:
                    index.parsed += 1
                    key = _cache_key(image)
                    if not isinstance(err, dockerfile.OutOfMemory):  # the machine's, not the file's
                        new[key] = json.dumps({"error": [err.line, err.message]})
                index.problems.append(
                    Problem(ERROR, image.repo, err.message, image.dockerfile, err.line or None)
                )
            except CloneDamaged as err:  # the next sync fetches it again
                index.problems.append(Problem(ERROR, image.repo, str(err), image.dockerfile))
                continue
            except Exception as err:  # a parser bug must not hide the rest of the fleet
                message = f"internal error, please report it: {type(err).__name__}: {err}"
                index.problems.append(Problem(ERROR, image.repo, message, image.dockerfile))
                continue
            used.add(key)
            if image.parsed is None:
                continue
            _report(image, index)
            index.images.append(image)
        indexdb.keep_parses(self.db, new, used)
        return index

    def _parse(self, found: _Found, image: Image) -> dockerfile.Parsed:
        tree = self.trees[found.repo.name]
        dockerfile.check_size(tree.size(found.path))  # before reading: memory stays bounded
        data = tree.read(found.path)
        image.blob = blob_sha(data)  # a local file may have changed since the scan
        return image.options.parse(data)


def _report(image: Image, index: Index) -> None:
    assert image.parsed is not None
    for ref in image.parsed.refs:
        if ref.unresolved:
            message = f"{ref.kind} {shorten(ref.raw)} unresolved: {ref.unresolved}"
            index.problems.append(
                Problem(UNRESOLVED, image.repo, message, image.dockerfile, ref.line)
            )
    for warning in image.parsed.warnings:
        index.problems.append(
            Problem(WARNING, image.repo, warning.message, image.dockerfile, warning.line or None)
        )


def _image(found: _Found, index: Index) -> Image | None:
    repo, spec, path = found.repo, found.spec, found.path
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
    options = BuildOptions(
        dockerfile=path,
        context=fill(spec.context) if spec.context else str(folder),
        build_args=spec.build_args,
        target=fill(spec.target) if spec.target else None,
        platforms=spec.platforms,
        contexts=spec.contexts,
        secret_build_args=spec.secret_build_args,
    )
    return Image(repo.name, image, tags, options, commit=found.commit, blob=found.blob)


def _cache_key(image: Image) -> str:
    o = image.options
    options = [PARSER_REVISION, image.blob, sorted(o.build_args.items()), o.target,
               list(o.platforms), sorted(o.contexts.items())]  # fmt: skip
    if o.secret_build_args:  # without them, the key is what it was before they existed
        options.append(sorted(o.secret_build_args.items()))
    return hashlib.sha256(json.dumps(options).encode()).hexdigest()
