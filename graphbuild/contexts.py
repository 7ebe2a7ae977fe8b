"""Build contexts written for a builder: a folder of a tree copied into a new folder,
exactly what its key covers (design rule 12), never through a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from graphbuild.errors import ContextError
from graphbuild.trees import (
    EXECUTABLE,
    LINK,
    LINK_TARGET,
    DirTree,
    GitTree,
    Tree,
    _content,
    blob_sha,
)

if TYPE_CHECKING:
    from gitdb.base import OStream


NOT_SENT = "graphbuild does not send it to a builder"
LINK_HOPS = 40  # symlinks one path may pass through, as Linux allows
LINK_STEPS = 1_000_000  # path steps all of a context's symlinks may take to check


def export(tree: Tree, repo: str, folder: str, dest: Path) -> tuple[Path, str]:
    """The build context `folder` written under `dest` (a new folder), and the digest of
    exactly what was written: the one `tree.content(folder)` gives, so the build key covers
    what the builder gets (design rule 12).

    A symlink leading out of the repository, a path git refuses (`..`, `.git`),
    a context that is no folder: a ContextError naming `repo:path` and the rule.
    Nothing is ever written through a symlink.
    """
    if isinstance(tree, DirTree):
        return _export_dir(tree, repo, folder, dest)
    assert isinstance(tree, GitTree)
    return _export_git(tree, repo, folder, dest)


def _export_git(tree: GitTree, repo: str, folder: str, dest: Path) -> tuple[Path, str]:
    """The blobs themselves, not `git archive`: the repository's `.gitattributes` would
    substitute text (export-subst), leave files out (export-ignore) or run filters."""
    folder = posixpath.normpath(folder)
    prefix = "" if folder == "." else folder + "/"
    if folder in tree.entries:
        mode, sha = tree.entries[folder]
        if mode != LINK:
            raise ContextError(f"{repo}:{folder}: the build context is a file, not a folder")
        target = _link_target(tree, repo, folder, sha)
        raise ContextError(f"{repo}:{folder}: the build context is a symlink (to {target}), "
                           "not a folder; graphbuild sends a builder only a folder of the "
                           "repository")  # fmt: skip
    entries = {path: entry for path, entry in tree.entries.items() if path.startswith(prefix)}
    if not entries:
        raise ContextError(f"{repo}:{folder}: the build context is not a folder in the repository")
    links = {}
    for path, (mode, sha) in sorted(entries.items()):
        for part in path.split("/"):
            if part in ("", ".", "..") or part.lower() == ".git":
                raise ContextError(f"{repo}:{path}: a path git refuses to check out "
                                   f"({part!r}); {NOT_SENT}")  # fmt: skip
        if mode == LINK:
            links[path] = _link_target(tree, repo, path, sha)
    _check_links(repo, links)
    with _Writer(repo, dest) as writer:
        for path, (mode, sha) in sorted(entries.items()):
            if mode == LINK:
                writer.link(path, links[path])
            else:
                chunks = _chunks(tree, repo, path, sha)
                try:
                    writer.file(path, chunks, mode == EXECUTABLE)
                finally:
                    chunks.close()  # now, while the clone's cat-file still answers
    return dest / folder, tree.content(folder)


def _export_dir(tree: DirTree, repo: str, folder: str, dest: Path) -> tuple[Path, str]:
    """`folder` copied under `dest` as `content` sees it, and the digest of exactly what
    was copied: a builder never reads the folder in place, where `.git`, a FIFO, or a
    file changed after the key was made would reach it."""
    where = posixpath.normpath(folder)
    top = tree.root if where == "." else tree.root / where
    if where.startswith("../") or where == "..":
        raise ContextError(f"{repo}:{folder}: the build context resolves outside the "
                           "repository; graphbuild sends a builder only what is inside "
                           "it")  # fmt: skip
    _no_links_to(tree.root, repo, folder, where)
    if not top.is_dir():
        raise ContextError(f"{repo}:{folder}: the build context is not a folder in the "
                           "repository")  # fmt: skip
    try:
        found = list(tree._walk(top, strict=True))
        links = {_join(where, rel): os.readlink(full) for rel, mode, full in found
                 if mode == LINK}  # fmt: skip
    except OSError as err:
        path = os.path.relpath(err.filename or top, tree.root)
        raise ContextError(f"{repo}:{path}: cannot read it ({err.strerror})") from None
    _check_links(repo, links)
    entries = []
    with _Writer(repo, dest) as writer:
        for rel, mode, _ in found:
            path = _join(where, rel)
            if mode == LINK:
                writer.link(path, links[path])
                sha = blob_sha(os.fsencode(links[path]))
            else:
                try:  # opened below the root one folder at a time, through no symlink:
                    source = _open_beneath(tree.root, path)  # a folder swapped for one
                except OSError as err:  # since the walk leads nowhere outside
                    raise ContextError(f"{repo}:{path}: cannot read it ({err.strerror}); "
                                       f"{NOT_SENT}") from None  # fmt: skip
                sha = _copy(repo, path, source, writer, mode == EXECUTABLE)
            entries.append((rel, mode, sha))
    return dest / where, _content(entries)


def _no_links_to(root: Path, repo: str, folder: str, where: str) -> None:
    """Refuse a context with a symlink on its way from the root, as for a git repository:
    a builder gets a folder of the repository, not wherever a link points today."""
    at = root
    for part in () if where == "." else where.split("/"):
        at = at / part
        if at.is_symlink():
            target = os.readlink(at)
            raise ContextError(f"{repo}:{folder}: the build context is a symlink (to "
                               f"{target}), not a folder; graphbuild sends a builder only "
                               "a folder of the repository")  # fmt: skip


def _blob(tree: GitTree, repo: str, path: str, sha: str, limit: int | None = None) -> OStream:
    """A blob as a stream from the clone's one `cat-file --batch`; read it to its end."""
    from git.exc import BadObject

    try:
        info = tree._info(sha)
        kind = info.type.decode("ascii", "replace")
        if kind != "blob":
            raise ContextError(f"{repo}:{path}: its tree entry names a {kind}, not a file; "
                               f"{NOT_SENT}")  # fmt: skip
        if limit is not None and info.size > limit:
            raise ContextError(f"{repo}:{path}: symlink target longer than {limit} bytes; "
                               f"{NOT_SENT}")  # fmt: skip
        return tree._read_object(sha, tree.repo.odb.stream)
    except (BadObject, ValueError, OSError):
        raise ContextError(f"{repo}:{path}: cannot read it from the clone") from None


def _link_target(tree: GitTree, repo: str, path: str, sha: str) -> str:
    """A symlink's target as the file system takes it (bytes that are not UTF-8 kept)."""
    return os.fsdecode(_blob(tree, repo, path, sha, LINK_TARGET).read())


def _chunks(tree: GitTree, repo: str, path: str, sha: str) -> Generator[bytes, None, None]:
    """A blob's bytes; asked for only once its file is made, and always read to the end
    (cat-file answers in order: a blob half read would be the next one's start)."""
    stream = _blob(tree, repo, path, sha)
    try:
        while chunk := stream.read(1 << 20):
            yield chunk
    finally:
        with contextlib.suppress(ValueError, OSError):  # cat-file gone: nothing left to keep
            while stream.read(1 << 20):
                pass


def _open_beneath(root: Path, path: str) -> int:
    """`path` opened for reading from `root`, each folder below the one before and nothing
    through a symlink (O_NOFOLLOW at every step): a folder or file swapped for a symlink
    since the walk fails with ELOOP or ENOTDIR instead of leading outside; O_NONBLOCK: a
    file swapped for a FIFO does not hold the build."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        *folders, name = path.split("/")
        for part in folders:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)  # fmt: skip
            os.close(fd)
            fd = below
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                       dir_fd=fd)  # fmt: skip
    finally:
        os.close(fd)


def _copy(repo: str, path: str, source: int, writer: _Writer, executable: bool) -> str:
    """Copy one local file from its open `source`, hashing what is copied: the blob sha of
    exactly those bytes."""
    with os.fdopen(source, "rb") as data:
        st = os.fstat(source)
        if not stat.S_ISREG(st.st_mode):
            raise ContextError(f"{repo}:{path}: changed while graphbuild copied it; try again")
        size = st.st_size
        digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
        copied = 0

        def chunks() -> Iterator[bytes]:
            nonlocal copied
            try:
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                    copied += len(chunk)
                    yield chunk
            except OSError as err:
                raise ContextError(f"{repo}:{path}: cannot read it ({err.strerror})") from None

        writer.file(path, chunks(), executable)
    if copied != size:
        raise ContextError(f"{repo}:{path}: changed while graphbuild copied it; try again")
    return digest.hexdigest()


def _check_links(repo: str, links: Mapping[str, str]) -> None:
    """Refuse a symlink that, followed from where it is through the others, leads out of the
    repository: an absolute one, or one with `..` past the root. A builder that follows it
    would put a file of the build host into the image."""
    budget = [LINK_STEPS]
    for path, target in sorted(links.items()):
        if not target or "\0" in target:
            raise ContextError(f"{repo}:{path}: symlink target is not a path; {NOT_SENT}")
        outside = target.startswith("/") or _leaves(
            links, f"{posixpath.dirname(path)}/{target}", budget, repo, path
        )
        if outside is None:
            raise ContextError(f"{repo}:{path}: symlink loop, or a chain of more than "
                               f"{LINK_HOPS} symlinks; {NOT_SENT}")  # fmt: skip
        if outside:
            raise ContextError(f"{repo}:{path}: symlink points outside the repository "
                               f"({target}); {NOT_SENT}")  # fmt: skip


def _leaves(
    links: Mapping[str, str], path: str, budget: list[int], repo: str, link: str
) -> bool | None:
    """Does `path` (from the repository's root), resolved through `links` the way the kernel
    does, go above the root? None: more than LINK_HOPS symlinks on the way. A name that is
    no symlink counts as a folder: where it is not one, the kernel stops short instead."""
    todo = path.split("/")[::-1]
    at: list[str] = []
    hops = 0
    while todo:
        budget[0] -= 1
        if budget[0] < 0:
            raise ContextError(f"{repo}:{link}: more symlinks than graphbuild checks "
                               f"({LINK_STEPS} steps); {NOT_SENT}")  # fmt: skip
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not at:
                return True
            at.pop()
            continue
        at.append(part)
        target = links.get("/".join(at))
        if target is None:
            continue
        hops += 1
        if hops > LINK_HOPS:
            return None
        if target.startswith("/"):
            return True
        at.pop()
        todo.extend(target.split("/")[::-1])
    return False


def _join(folder: str, rel: str) -> str:
    return rel if folder == "." else f"{folder}/{rel}"


class _Writer:
    """Writes a build context into a new folder, never through a symlink: each folder is
    opened below the one before with O_NOFOLLOW, each file and link created anew (O_EXCL),
    so a name that comes twice, or a link where a folder goes, is refused, not followed."""

    def __init__(self, repo: str, dest: Path) -> None:
        self.repo = repo
        try:
            dest.mkdir()  # new: nothing is in it but what is written here
            self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise ContextError(f"{repo}: cannot make the build context folder {dest} "
                               f"({err.strerror})") from None  # fmt: skip
        self.last: tuple[str, int] | None = None  # the folder written into last, open

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.last is not None:
            os.close(self.last[1])
        os.close(self.root)

    def file(self, path: str, chunks: Iterable[bytes], executable: bool) -> None:
        mode = 0o755 if executable else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._create(path, lambda name, at: os.open(name, flags, mode, dir_fd=at))
        assert fd is not None
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, mode)  # whatever the umask: the mode is part of what is built
            try:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
            except OSError as err:
                raise ContextError(f"{self.repo}:{path}: cannot write it into the build "
                                   f"context ({err.strerror})") from None  # fmt: skip

    def link(self, path: str, target: str) -> None:
        self._create(path, lambda name, at: os.symlink(target, name, dir_fd=at))

    def _create(self, path: str, make: Callable[[str, int], int | None]) -> int | None:
        """`make(name, folder_fd)` for the last part of `path`, in its folder."""
        folder, _, name = path.rpartition("/")
        try:
            return make(name, self._folder(folder, path))
        except (FileExistsError, NotADirectoryError):
            raise self._twice(path) from None
        except OSError as err:
            raise ContextError(f"{self.repo}:{path}: cannot write it into the build context "
                               f"({err.strerror})") from None  # fmt: skip

    def _folder(self, folder: str, path: str) -> int:
        """`folder` (made as needed), open; never a symlink."""
        if self.last is not None and self.last[0] == folder:
            return self.last[1]
        fd = os.dup(self.root)
        try:
            for part in folder.split("/") if folder else ():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
                except OSError as err:
                    if err.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise self._twice(path) from None
                    raise
                os.close(fd)
                fd = below
        except BaseException:
            os.close(fd)
            raise
        if self.last is not None:
            os.close(self.last[1])
        self.last = (folder, fd)
        return fd

    def _twice(self, path: str) -> ContextError:
        return ContextError(f"{self.repo}:{path}: the tree holds this path twice (as a file or "
                            f"symlink, and as a folder); {NOT_SENT}")  # fmt: skip
