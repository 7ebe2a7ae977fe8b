"""Repositories: fetch git ones into the workspace, read local folders in place.

Git repositories are kept as shallow bare clones: graphbuild only reads the
commit a sync fetched (`ls-tree` and blob reads), never a work tree. A sync
first asks the remote where the ref points (`ls-remote`, one round trip) and
fetches only when that moved, so an unchanged repository costs one cheap call.
The URL is given to git through its environment and never written into the
clone, so credentials in it stay out of the workspace. GitPython is imported
lazily so that queries, which never touch git, do not pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import os
import posixpath
import re
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from graphbuild.errors import CloneDamaged, ContextError
from graphbuild.urls import redact

if TYPE_CHECKING:
    import git
    from gitdb.base import OInfo, OStream

    from graphbuild.config import Config, RepoSpec

T = TypeVar("T")
_CHUNK = 2**20  # bytes read at a time to hash a local file
FETCH_TIMEOUT = 600  # seconds for one repository's fetch
PROBES = 32  # repositories synced at once; each git host still gets at most `jobs` of them
TREE_CACHE = "graphbuild-tree"  # in a clone: the file listing of the last commit read
CLONES = "repos"  # the workspace folder holding one bare clone per repository
SYNC_REF = "refs/graphbuild/head"  # the commit read; also keeps it alive in the clone
FETCHED_REF = "refs/graphbuild/fetched"  # what the remote ref named (a tag object for tags)
_ALLOWED = "https:ssh:git:file"  # and http, for a URL on loopback
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a schedule
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_ALLOW_PROTOCOL": _ALLOWED,  # enforced by git itself, redirects too
}
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_RULES = (
    "{}",
    "refs/{}",
    "refs/tags/{}",
    "refs/heads/{}",
    "refs/remotes/{}",
    "refs/remotes/{}/HEAD",
)  # fmt: skip - git's order for a short ref name


def git_env(url: str) -> dict[str, str]:
    """Environment for a git command on `url`: no prompts, safe transports, and the remote
    given as config (`GIT_CONFIG_COUNT`), never as an argument or in the clone's files.

    git hands a remote's URL to its helper on the command line (`git remote-https origin
    URL`), which every local user reads in /proc/*/cmdline. So an http(s) URL loses its
    `user:password@` on the way: the remote is the bare URL, and the credential goes as an
    `Authorization: Basic` header scoped to that URL (what actions/checkout does with
    `http.<url>.extraHeader`), in this environment only, which only the same user can read.
    Such a URL follows no redirect: git would send the header on to wherever it led.
    A user with no password (`https://name@host`) becomes `credential.<url>.username`, so
    a credential helper still answers for that name.
    """
    plain, user, password = _credential(url)
    config = [("remote.origin.url", plain)]
    if password is not None:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        config.append((f"http.{plain}.extraHeader", f"Authorization: Basic {basic}"))
        # git sends a redirected remote's later requests, header and all, to the new host
        config.append((f"http.{plain}.followRedirects", "false"))
    elif user is not None:
        config.append((f"credential.{plain}.username", user))
    env = {
        **_GIT_ENV,
        **({"GIT_ALLOW_PROTOCOL": _ALLOWED + ":http"} if urlsplit(url).scheme == "http" else {}),
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"  # no passphrase or host-key prompt
    return env


def _credential(url: str) -> tuple[str, str | None, str | None]:
    """An http(s) URL without its userinfo, and the user and password that were in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = (unquote(p) for p in userinfo.partition(":"))
    return urlunsplit(parts._replace(netloc=host)), user, password if colon else None


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
    """Fetch every git repository, `jobs` at a time; report each as it finishes.

    Asking a remote where its ref points (`ls-remote`) is one round trip, and in
    a fleet most answers are "unchanged": so up to PROBES repositories are asked
    at once, but never more than `jobs` connections to one git host (an ssh server
    drops connections past its MaxStartups, 10 by default), and only `jobs`
    fetches at a time. Clones of repositories that left the config are removed,
    so the workspace does not keep what nobody asked for.
    """
    fetches = threading.BoundedSemaphore(max(1, jobs))
    hosts = {host: threading.BoundedSemaphore(max(1, jobs))
             for host in {git_host(r.url) for r in config.sources} if host}  # fmt: skip

    def one(repo: RepoSpec) -> SyncResult:
        host = hosts.get(git_host(repo.url)) if repo.url else None
        result = _sync_one(repo, config.workspace, fetches, host or contextlib.nullcontext())
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs, PROBES)) as pool:
        results = list(pool.map(one, config.sources))
    keep = {clone_dir(config.workspace, r.name) for r in config.sources if r.url}
    for clone in (config.workspace / CLONES).glob("*.git"):
        if clone not in keep and (clone / "HEAD").is_file():
            shutil.rmtree(clone, ignore_errors=True)
    return results


def git_host(url: str | None) -> str:
    """The host a git URL connects to ("" for a folder or file:// on this machine), so that
    connections to one server can be counted."""
    if not url:
        return ""
    if "://" in url:
        parts = urlsplit(url)
        return "" if parts.scheme == "file" else (parts.hostname or "")
    head, colon, _ = url.partition(":")  # scp-like user@host:path; a path has a / first
    return head.rpartition("@")[2] if colon and "/" not in head else ""


def _sync_one(
    repo: RepoSpec,
    workspace: Path,
    fetches: threading.BoundedSemaphore,
    host: contextlib.AbstractContextManager[object],
) -> SyncResult:
    if repo.path is not None:
        if not repo.path.is_dir():
            return SyncResult(repo.name, None, f"{repo.path}: no such folder")
        return SyncResult(repo.name, None)
    try:
        import git
    except ImportError as err:  # GitPython refuses to load without a git executable
        return SyncResult(repo.name, None, f"git is not usable: {err}".splitlines()[0])

    assert repo.url is not None
    clone = clone_dir(workspace, repo.name)
    env = git_env(repo.url)
    previous = None
    want = repo.ref or "HEAD"
    try:
        seen = None
        if (clone / "HEAD").exists():  # read with no git process: most repositories stop here
            previous, seen = _read_ref(clone, SYNC_REF), _read_ref(clone, FETCHED_REF)
        if previous and want == previous:
            return SyncResult(repo.name, previous)  # a commit asked by its sha never moves
        if previous and seen:
            with host:
                advertised = _advertised(clone, want, env)
            if advertised == seen:
                return SyncResult(repo.name, previous)  # unchanged: nothing fetched
        with fetches, host:
            if (clone / "HEAD").exists():
                bare = git.Repo(clone)
            else:
                bare = git.Repo.init(clone, bare=True, mkdir=True)
            with bare:
                bare.git.fetch(
                    "--depth=1", "--no-tags", "--quiet", "origin", want,
                    env=env, kill_after_timeout=FETCH_TIMEOUT,
                )  # fmt: skip
                fetched = (clone / "FETCH_HEAD").read_text().split("\t", 1)[0].strip()
                commit = bare.git.rev_parse("FETCH_HEAD^{commit}")
                bare.git.update_ref(SYNC_REF, commit)
                bare.git.update_ref(FETCHED_REF, fetched)
                return SyncResult(repo.name, commit, fetched=commit != previous)
    except git.CommandError as err:
        where = f"ref {repo.ref!r} of " if repo.ref else ""
        detail = git_reason(err, url=repo.url)
        return SyncResult(repo.name, previous, redact(f"cannot fetch {where}{repo.url}: {detail}"))
    except (git.InvalidGitRepositoryError, OSError) as err:
        return SyncResult(repo.name, previous, f"{clone}: {err}")


def _advertised(clone: Path, ref: str, env: dict[str, str]) -> str | None:
    """Where the remote's `ref` points now, resolved the way `git fetch` resolves it."""
    out = _git(clone, ["ls-remote", "origin", ref], env)
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    refs = {name: sha for sha, name in pairs}
    for rule in _REF_RULES:
        if (sha := refs.get(rule.format(ref))) is not None:
            return sha
    return None


def _git(clone: Path, args: list[str], env: dict[str, str]) -> str:
    """A git command on the clone as GitPython runs one (C locale, the same errors, in
    graphbuild's process group so that a Ctrl-C reaches it), minus what a warm sync of a
    thousand repositories would pay a thousand times: a watchdog thread each. Past
    FETCH_TIMEOUT it is killed with what it started (a remote helper, upload-pack)."""
    from git import GitCommandError

    argv = ["git", f"--git-dir={clone}", *args]
    env = {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **env}
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:  # fmt: skip
        try:
            out, err = process.communicate(timeout=FETCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(process.pid), process.pid]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            process.communicate()
            command = " ".join(["git", *args])  # GitPython's words, as before
            said = f'Timeout: the command "{command}" did not complete in {FETCH_TIMEOUT:g} secs.'
            raise GitCommandError(argv, "timeout", said) from None
    if process.returncode != 0:
        raise GitCommandError(argv, process.returncode, err.rstrip(b"\n"), out.rstrip(b"\n"))
    return out.decode("utf-8", "replace")


def _descendants(pid: int) -> list[int]:
    """The processes under `pid`, deepest last, from Linux's /proc (none elsewhere)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [p for child in map(int, children) for p in (child, *_descendants(child))]


def _read_ref(clone: Path, ref: str) -> str | None:
    """A ref's sha read from the clone's files (loose, else packed), with no git process.
    graphbuild writes its refs with `update-ref`: never symbolic."""
    try:
        text = (clone / ref).read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        text = ""
        with contextlib.suppress(FileNotFoundError):
            for line in (
                (clone / "packed-refs").read_bytes().decode("ascii", "replace").splitlines()
            ):
                sha, _, name = line.partition(" ")
                if name == ref:
                    text = sha
    except (IsADirectoryError, UnicodeDecodeError):
        return None
    return text if _SHA_RE.fullmatch(text) else None


def git_reason(
    err: git.CommandError, marks: tuple[tuple[str, ...], ...] = (), url: str | None = None
) -> str:
    """Why a git command failed, in one line with credentials hidden: the first line it
    printed that starts with one of `marks` (tried in order, then `fatal:` and `error:`),
    else its first line, else its exit status. Given the `url`, a refused credential from
    it is said as such: git, which never saw it, says it could not prompt for one."""
    printed = "\n".join(_unwrap(out) for out in (err.stderr, err.stdout))
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    found = next((line for group in (*marks, ("fatal:", "error:")) for line in lines
                  if line.startswith(group)), lines[0] if lines else None)  # fmt: skip
    if found is None:
        return f"exit status {err.status}, and git said nothing"
    if url and "terminal prompts disabled" in found and _credential(url)[2] is not None:
        found += " (the server refused the credentials in the URL)"
    return redact(found)


def _unwrap(printed: str | None) -> str:
    """What git printed, out of GitPython's `\n  stderr: '…'` wrapping."""
    text = (printed or "").strip()
    for name in ("stderr", "stdout"):
        if text.startswith(f"{name}: '") and text.endswith("'"):
            return text[len(name) + 3 : -1]
    return text


def clone_dir(workspace: Path, name: str) -> Path:
    return workspace / CLONES / f"{name}.git"


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

    def export(self, repo: str, folder: str, dest: Path) -> tuple[Path, str]:
        """`folder` copied under `dest` as `content` sees it, and the digest of exactly what
        was copied: a builder never reads the folder in place, where `.git`, a FIFO, or a
        file changed after the key was made would reach it."""
        where = posixpath.normpath(folder)
        top = self.root if where == "." else self.root / where
        if where.startswith("../") or where == "..":
            raise ContextError(f"{repo}:{folder}: the build context resolves outside the "
                               "repository; graphbuild sends a builder only what is inside "
                               "it")  # fmt: skip
        self._no_links_to(repo, folder, where)
        if not top.is_dir():
            raise ContextError(f"{repo}:{folder}: the build context is not a folder in the "
                               "repository")  # fmt: skip
        try:
            found = list(self._walk(top, strict=True))
            links = {_join(where, rel): os.readlink(full) for rel, mode, full in found
                     if mode == LINK}  # fmt: skip
        except OSError as err:
            path = os.path.relpath(err.filename or top, self.root)
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
                        source = _open_beneath(self.root, path)  # a folder swapped for one
                    except OSError as err:  # since the walk leads nowhere outside
                        raise ContextError(f"{repo}:{path}: cannot read it ({err.strerror}); "
                                           f"{NOT_SENT}") from None  # fmt: skip
                    sha = _copy(repo, path, source, writer, mode == EXECUTABLE)
                entries.append((rel, mode, sha))
        return dest / where, _content(entries)

    def _no_links_to(self, repo: str, folder: str, where: str) -> None:
        """Refuse a context with a symlink on its way from the root, as for a git repository:
        a builder gets a folder of the repository, not wherever a link points today."""
        at = self.root
        for part in () if where == "." else where.split("/"):
            at = at / part
            if at.is_symlink():
                target = os.readlink(at)
                raise ContextError(f"{repo}:{folder}: the build context is a symlink (to "
                                   f"{target}), not a folder; graphbuild sends a builder only "
                                   "a folder of the repository")  # fmt: skip

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


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay inside one folder, `**/` spans folders."""
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


# ---------------------------------------------------------------- build contexts

FILE, EXECUTABLE, LINK = "100644", "100755", "120000"  # git's modes
NOT_SENT = "graphbuild does not send it to a builder"
LINK_HOPS = 40  # symlinks one path may pass through, as Linux allows
LINK_STEPS = 1_000_000  # path steps all of a context's symlinks may take to check
LINK_TARGET = 4096  # bytes of a symlink target, as Linux allows (PATH_MAX)


def export(tree: Tree, repo: str, folder: str, dest: Path) -> tuple[Path, str]:
    """The build context `folder` written under `dest` (a new folder), and the digest of
    exactly what was written: the one `tree.content(folder)` gives, so the build key covers
    what the builder gets (design rule 12).

    A symlink leading out of the repository, a path git refuses (`..`, `.git`),
    a context that is no folder: a ContextError naming `repo:path` and the rule.
    Nothing is ever written through a symlink.
    """
    if isinstance(tree, DirTree):
        return tree.export(repo, folder, dest)
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
