"""Reading a repository's files at the state a sync read: a commit of its bare clone
(GitTree) or a local folder in place (DirTree), behind one Tree protocol.

Build contexts written from these trees for a builder are contexts.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from graphbuild.errors import CloneDamaged
from graphbuild.sources import FETCHED_REF, SYNC_REF, SyncResult, clone_dir

if TYPE_CHECKING:
    import git
    from gitdb.base import OInfo

    from graphbuild.config import RepoSpec

T = TypeVar("T")
_CHUNK = 2**20  # bytes read at a time to hash a local file
TREE_CACHE = "graphbuild-tree"  # in a clone: the file listing of the last commit read
FILE, EXECUTABLE, LINK = "100644", "100755", "120000"  # git's modes
LINK_TARGET = 4096  # bytes of a symlink target, as Linux allows (PATH_MAX)


class Tree(Protocol):
    """The files of one repository at the state a sync read."""

    def glob(self, pattern: str) -> list[str]:
        """Files matching a glob (`*` within a folder, `**/` across), sorted, POSIX paths."""
        ...

    def blob(self, path: str) -> str | None:
        """The git blob sha of `path`, or None when there is no such file."""
        ...

    def read(self, path: str) -> bytes: ...

    def size(self, path: str) -> int:
        """The size of `path` in bytes, known without reading it."""
        ...

    def content(self, folder: str) -> str:
        """One digest of every file under `folder` (paths, modes, blobs): a build context's
        identity, so a commit elsewhere in the repository changes nothing built here."""
        ...

    def close(self) -> None: ...


class GitTree:
    """A commit of a bare clone: one `ls-tree`, then blob reads through one cat-file.

    A commit's listing never changes, so the last one is kept in the clone
    (TREE_CACHE, with its commit and checksum): a sync where nothing moved runs
    no git process to list a thousand trees again.
    """

    def __init__(self, clone: Path, commit: str) -> None:
        self.clone = clone
        out = self._listing(commit)
        self.entries: dict[str, tuple[str, str]] = {}
        for item in out.split("\0"):
            if item:
                meta, _, path = item.partition("\t")
                mode, kind, sha = meta.split(" ")
                if kind == "blob":
                    self.entries[path] = (mode, sha)

    @functools.cached_property
    def repo(self) -> git.Repo:
        """The clone, opened when an object is read: a listing alone needs no git."""
        import git

        return git.Repo(self.clone)

    def _listing(self, commit: str) -> str:
        """`ls-tree -r` of the commit: the kept one when it is this commit's and whole."""
        kept = self.clone / TREE_CACHE
        with contextlib.suppress(OSError, ValueError):
            head, total, listing = kept.read_bytes().split(b"\n", 2)
            if head == commit.encode() and total == _sha256(listing):
                return listing.decode("utf-8", "surrogateescape")
        from git.exc import GitCommandError

        try:
            out = self.repo.git.ls_tree("-r", "-z", "--full-tree", commit)
        except GitCommandError:
            self._forget()
            raise CloneDamaged(
                f"{self.clone}: cannot list commit {commit[:12]} in this clone; "
                "the next `graphbuild sync` fetches it again"
            ) from None
        data = out.encode("utf-8", "surrogateescape")
        temp = kept.with_name(f".{TREE_CACHE}.{os.getpid()}.{threading.get_ident()}")
        try:
            temp.write_bytes(b"%s\n%s\n%s" % (commit.encode(), _sha256(data), data))
            os.replace(temp, kept)
        except OSError:  # a clone that cannot be written only costs the next sync a process
            temp.unlink(missing_ok=True)
        return out

    def glob(self, pattern: str) -> list[str]:
        regex = glob_regex(pattern)
        links = "120000"  # a symlink is not a second copy of its target
        return sorted(
            p for p, (mode, _) in self.entries.items() if mode != links and regex.match(p)
        )

    def blob(self, path: str) -> str | None:
        for _ in range(8):  # follow symlinks inside the repository
            entry = self.entries.get(path)
            if entry is None:
                return None
            mode, sha = entry
            if mode != "120000":
                return sha
            if self._info(sha).size > LINK_TARGET:
                return None  # no path is that long: not read into memory to find out
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

    def size(self, path: str) -> int:
        sha = self.blob(path)
        if sha is None:
            raise FileNotFoundError(path)
        return self._info(sha).size

    def content(self, folder: str) -> str:
        prefix = "" if folder in ("", ".") else folder.strip("/") + "/"
        return _content(
            (path[len(prefix) :], mode, sha)
            for path, (mode, sha) in self.entries.items()
            if path.startswith(prefix)
        )

    def _object(self, sha: str) -> bytes:
        return self._read_object(sha, lambda binsha: self.repo.odb.stream(binsha).read())

    def _info(self, sha: str) -> OInfo:
        return self._read_object(sha, self.repo.odb.info)

    def _read_object(self, sha: str, read: Callable[[bytes], T]) -> T:
        """An object of the commit, or CloneDamaged when the clone lacks it: then what the
        clone records as fetched is dropped, so the next sync fetches the commit anew."""
        from gitdb.exc import ODBError

        try:
            return read(bytes.fromhex(sha))
        except (ValueError, ODBError):  # GitPython's cat-file says "could not be resolved"
            self._forget()
            raise CloneDamaged(
                f"{self.clone}: object {sha[:12]} is missing from this clone; "
                "the next `graphbuild sync` fetches the commit again"
            ) from None

    def _forget(self) -> None:
        (self.clone / TREE_CACHE).unlink(missing_ok=True)
        for ref in (SYNC_REF, FETCHED_REF):
            with contextlib.suppress(Exception):  # a clone that broken: the sync says so
                self.repo.git.update_ref("-d", ref)

    def close(self) -> None:
        if "repo" in self.__dict__:
            self.repo.close()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


Stat = tuple[int, int, str]  # (mtime_ns, size, blob sha) of a local file


class DirTree:
    """A local folder read in place; blob shas cached by (mtime, size) like git's index."""

    def __init__(self, root: Path, known: Mapping[str, Stat], seen: dict[str, Stat]) -> None:
        self.root = root.resolve()
        self.known = known  # from the last scan, by absolute path
        self.seen = seen  # filled by this scan

    def glob(self, pattern: str) -> list[str]:
        """Walk from the pattern's fixed prefix, never through symlinks, as git would see it."""
        regex = glob_regex(pattern)
        parts = pattern.split("/")
        fixed: list[str] = []
        for part in parts[:-1]:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        top = os.path.join(self.root, *fixed)
        if os.path.islink(top) or not os.path.isdir(top):
            return []
        levels = None if "**" in pattern else len(parts) - len(fixed) - 1
        found = []
        stack = [(top, "/".join(fixed), 0)]
        while stack:
            folder, rel, depth = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name != ".git" and (levels is None or depth < levels):
                            stack.append((entry.path, path, depth + 1))
                    elif entry.is_file(follow_symlinks=False) and regex.match(path):
                        found.append(path)
        return sorted(found)

    def _file(self, path: str) -> Path | None:
        """The file `path` names inside the repository; None where it resolves outside,
        loops, or cannot be resolved at all (content the repository holds, not an error)."""
        try:
            full = (self.root / path).resolve()
        except (RuntimeError, OSError):  # RuntimeError: Python 3.11's word for a symlink loop
            return None
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
        cached = self.known.get(key)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            self.seen[key] = cached  # a path is cached only after the check below passed
            return cached[2]
        full = self._file(path)
        if full is None:
            return None
        sha = _file_sha(full, path)
        self.seen[key] = (st.st_mtime_ns, st.st_size, sha)
        return sha

    def read(self, path: str) -> bytes:
        full = self._file(path)
        if full is None:
            raise FileNotFoundError(path)
        return _read_file(full, path)

    def size(self, path: str) -> int:
        full = self._file(path)
        if full is None:
            raise FileNotFoundError(path)
        return full.stat().st_size

    def content(self, folder: str) -> str:
        """As git would record the folder: files and symlinks (their target), `.git` left out."""
        top = self._file(folder)
        entries: list[tuple[str, str, str | None]] = []
        for rel, mode, full in self._walk(top, strict=False) if top is not None else ():
            if mode == LINK:
                entries.append((rel, mode, blob_sha(os.fsencode(os.readlink(full)))))
            else:
                entries.append((rel, mode, self.blob(os.path.relpath(full, self.root))))
        return _content(entries)

    def _walk(self, top: Path, strict: bool) -> Iterator[tuple[str, str, str]]:
        """(path below `top`, git mode, full path) of each file and symlink under `top`, as
        git would record them: `.git` left out, folder symlinks not followed, FIFOs and
        devices skipped. `strict`: an unreadable folder is an error, not left out."""

        def fail(err: OSError) -> None:
            raise err

        for base, dirs, files in os.walk(top, onerror=fail if strict else None):
            links = [d for d in dirs if os.path.islink(os.path.join(base, d))]
            dirs[:] = sorted(d for d in dirs if d != ".git" and d not in links)
            for name in sorted(files + links):
                full = os.path.join(base, name)
                rel = os.path.relpath(full, top).replace(os.sep, "/")
                if name == ".git":
                    continue
                if os.path.islink(full):
                    yield rel, LINK, full
                elif os.path.isfile(full):
                    yield rel, EXECUTABLE if os.access(full, os.X_OK) else FILE, full

    def close(self) -> None:
        pass


def _read_file(full: Path, path: str) -> bytes:
    """A local file's bytes; FileNotFoundError when it is no longer a regular file. A FIFO
    put in its place would otherwise hold the reader forever."""
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as data:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(path)
        return data.read()


def _file_sha(full: Path, path: str) -> str:
    """git's blob id of a local file, read a chunk at a time: a build context's big file
    costs no memory. FileNotFoundError when it is no longer a regular file."""
    fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as data:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(path)
        digest = hashlib.sha1(b"blob %d\0" % st.st_size, usedforsecurity=False)
        left = st.st_size
        while left > 0 and (chunk := data.read(min(left, _CHUNK))):
            digest.update(chunk)
            left -= len(chunk)
        return digest.hexdigest()


def _content(entries: Iterable[tuple[str, str, str | None]]) -> str:
    digest = hashlib.sha256()
    for path, mode, sha in sorted(entries):  # a name that is not UTF-8 goes in as its bytes
        digest.update(f"{path}\0{mode}\0{sha}\0".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def blob_sha(data: bytes) -> str:
    """The id git gives these bytes, so local folders share the git parse cache."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay inside one folder, `**/` spans folders.
    Kept per pattern: a fleet's repositories mostly share a few, and a sync asks a
    thousand times."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            while pattern.startswith("**/", i):  # `**/**/` is `**/`: no needless backtracking
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
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def open_tree(
    repo: RepoSpec,
    result: SyncResult,
    workspace: Path,
    known: Mapping[str, Stat],
    seen: dict[str, Stat],
) -> Tree:
    if repo.path is not None:
        return DirTree(repo.path, known, seen)
    assert result.commit is not None
    return GitTree(clone_dir(workspace, repo.name), result.commit)
