"""Repositories: fetch git ones into the workspace, read local folders in place.

Git repositories are kept as shallow bare clones: graphbuild only reads the
commit a sync fetched (`ls-tree` and blob reads), never a work tree, so a sync
of an unchanged repository transfers nothing and writes nothing. GitPython is
imported lazily so that queries, which never touch git, do not pay for it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from graphbuild.errors import UnsafeURL

if TYPE_CHECKING:
    import git

    from graphbuild.config import Config, RepoSpec

SAFE_SCHEMES = frozenset({"https", "ssh", "git", "file"})
FETCH_TIMEOUT = 600  # seconds for one repository's fetch
SYNC_REF = "refs/graphbuild/head"  # keeps the synced commit alive in the bare clone
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRANSPORT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_RE = re.compile(r"^(?:[^@/:\s]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]*$")
_USERINFO_RE = re.compile(r"(://)[^/@\s]+@")
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a schedule
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_ALLOW_PROTOCOL": "https:ssh:git:file",  # enforced by git itself, redirects too
}


def safe_git_url(url: str, base: Path) -> str:
    """The URL to clone, or UnsafeURL: https, ssh, git, file and local paths only.

    `ext::` runs a command and `--upload-pack=...` is an option, not a URL; both
    are refused before git ever sees them. Local paths resolve against `base`.
    """
    if any(ord(c) < 32 for c in url):
        raise UnsafeURL(f"{redact(url)!r} contains control characters")
    if url.startswith("-"):
        raise UnsafeURL(f"{redact(url)!r} looks like a git option, not a URL; refused")
    if _TRANSPORT_RE.match(url):
        transport = url.split("::", 1)[0]
        raise UnsafeURL(
            f"the {transport}:: transport can run commands; use https, ssh, git or file"
        )
    scheme = _SCHEME_RE.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name not in SAFE_SCHEMES:
            raise UnsafeURL(f"transport {name!r} is not accepted; use https, ssh, git or file")
        return url
    if _SCP_RE.match(url):
        return url  # [user@]host:path, git's short ssh form (a colon before any slash)
    return os.path.abspath(base / url)


def redact(text: str) -> str:
    """Hide credentials in URLs (`https://user:token@host`) before anything prints them."""
    return _USERINFO_RE.sub(r"\1***@", text)


@dataclass(frozen=True)
class SyncResult:
    """What one repository's sync read: the commit, or why it could not."""

    repo: str
    commit: str | None  # git: the commit read (the last good one after an error)
    error: str | None = None
    fetched: bool = False  # a new commit arrived


def sync(
    config: Config, jobs: int = 8, on_done: Callable[[SyncResult], None] | None = None
) -> list[SyncResult]:
    """Fetch every git repository, several at a time; report each as it finishes."""

    def one(repo: RepoSpec) -> SyncResult:
        result = _sync_one(repo, config.workspace)
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, config.repos))


def _sync_one(repo: RepoSpec, workspace: Path) -> SyncResult:
    if repo.path is not None:
        if not repo.path.is_dir():
            return SyncResult(repo.name, None, f"{repo.path}: no such folder")
        return SyncResult(repo.name, None)
    import git

    assert repo.url is not None
    clone = clone_dir(workspace, repo.name)
    previous = None
    try:
        if (clone / "HEAD").exists():
            bare = git.Repo(clone)
            previous = _synced_commit(bare)
        else:
            bare = git.Repo.init(clone, bare=True, mkdir=True)
        with bare:
            if previous and repo.ref == previous:
                return SyncResult(repo.name, previous)  # a pinned commit never moves
            reader, section = bare.config_reader(), 'remote "origin"'
            if not reader.has_section(section) or reader.get_value(section, "url") != repo.url:
                with bare.config_writer() as writer:
                    writer.set_value(section, "url", repo.url)
            bare.git.fetch(
                "--depth=1", "--no-tags", "--quiet", "origin", repo.ref or "HEAD",
                env=_GIT_ENV, kill_after_timeout=FETCH_TIMEOUT,
            )  # fmt: skip
            fetched = (clone / "FETCH_HEAD").read_text().split("\t", 1)[0].strip()
            if fetched == previous:
                return SyncResult(repo.name, previous)  # the common case: one git process
            commit = bare.git.rev_parse("FETCH_HEAD^{commit}")
            bare.git.update_ref(SYNC_REF, commit)
            return SyncResult(repo.name, commit, fetched=commit != previous)
    except git.GitCommandError as err:
        detail = (err.stderr or str(err)).strip().removeprefix("stderr:").strip(" '\n")
        where = f"ref {repo.ref!r} of " if repo.ref else ""
        message = f"cannot fetch {where}{redact(repo.url)}: {redact(detail) or 'git failed'}"
        return SyncResult(repo.name, previous, message)
    except (git.InvalidGitRepositoryError, OSError) as err:
        return SyncResult(repo.name, previous, f"{clone}: {err}")


def _synced_commit(bare: git.Repo) -> str | None:
    """The commit the last sync read, from the ref files (no git process)."""
    from git.refs.symbolic import SymbolicReference

    try:
        return SymbolicReference.dereference_recursive(bare, SYNC_REF)
    except ValueError:
        return None


def clone_dir(workspace: Path, name: str) -> Path:
    return workspace / "repos" / f"{name}.git"


# ---------------------------------------------------------------- reading trees


class Tree(Protocol):
    """The files of one repository at the state a sync read."""

    def glob(self, pattern: str) -> list[str]:
        """Files matching a glob (`*` within a folder, `**/` across), sorted, POSIX paths."""
        ...

    def blob(self, path: str) -> str | None:
        """The git blob sha of `path`, or None when there is no such file."""
        ...

    def read(self, path: str) -> bytes: ...

    def close(self) -> None: ...


class GitTree:
    """A commit of a bare clone: one `ls-tree`, then blob reads through one cat-file."""

    def __init__(self, clone: Path, commit: str) -> None:
        import git

        self.repo = git.Repo(clone)
        out = self.repo.git.ls_tree("-r", "-z", "--full-tree", commit)
        self.entries: dict[str, tuple[str, str]] = {}
        for item in out.split("\0"):
            if item:
                meta, _, path = item.partition("\t")
                mode, kind, sha = meta.split(" ")
                if kind == "blob":
                    self.entries[path] = (mode, sha)

    def glob(self, pattern: str) -> list[str]:
        regex = glob_regex(pattern)
        return sorted(p for p, (mode, _) in self.entries.items() if regex.match(p))

    def blob(self, path: str) -> str | None:
        for _ in range(8):  # follow symlinks inside the repository
            entry = self.entries.get(path)
            if entry is None:
                return None
            mode, sha = entry
            if mode != "120000":
                return sha
            target = self._object(sha).decode("utf-8", "replace")
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if path.startswith(".."):
                return None
        return None

    def read(self, path: str) -> bytes:
        sha = self.blob(path)
        if sha is None:
            raise FileNotFoundError(path)
        return self._object(sha)

    def _object(self, sha: str) -> bytes:
        return self.repo.odb.stream(bytes.fromhex(sha)).read()

    def close(self) -> None:
        self.repo.close()


class DirTree:
    """A local folder read in place; blob shas cached by (mtime, size) like git's index."""

    def __init__(self, root: Path, stat_cache: dict[str, tuple[int, int, str]]) -> None:
        self.root = root.resolve()
        self.cache = stat_cache  # absolute path -> (mtime_ns, size, blob); updated in place

    def glob(self, pattern: str) -> list[str]:
        found = glob.glob(pattern, root_dir=self.root, recursive=True, include_hidden=True)
        return sorted(p for p in found if ".git" not in p.split("/") and (self.root / p).is_file())

    def _file(self, path: str) -> Path | None:
        full = (self.root / path).resolve()
        if not full.is_relative_to(self.root):
            return None
        return full

    def blob(self, path: str) -> str | None:
        key = f"{self.root}/{path}"
        try:
            st = os.stat(key)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        cached = self.cache.get(key)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]  # a path is cached only after the check below passed
        full = self._file(path)
        if full is None:
            return None
        sha = blob_sha(full.read_bytes())
        self.cache[key] = (st.st_mtime_ns, st.st_size, sha)
        return sha

    def read(self, path: str) -> bytes:
        full = self._file(path)
        if full is None:
            raise FileNotFoundError(path)
        return full.read_bytes()

    def close(self) -> None:
        pass


def blob_sha(data: bytes) -> str:
    """The id git gives these bytes, so local folders share the git parse cache."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


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


def open_tree(repo: RepoSpec, result: SyncResult, workspace: Path, stat_cache: dict) -> Tree:
    if repo.path is not None:
        return DirTree(repo.path, stat_cache)
    assert result.commit is not None
    return GitTree(clone_dir(workspace, repo.name), result.commit)
