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

import hashlib
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
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
CLONES = "repos"  # the workspace folder holding one bare clone per repository
SYNC_REF = "refs/graphbuild/head"  # the commit read; also keeps it alive in the clone
FETCHED_REF = "refs/graphbuild/fetched"  # what the remote ref named (a tag object for tags)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRANSPORT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_RE = re.compile(r"^(?:[^@/:\s]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]*$")
_PASSWORD_RE = re.compile(r"(?<![\w.%+-])([\w.%+-]+):([^\s@/]+)@")  # user:secret@host
_URL_USER_RE = re.compile(r"(://)[^/@\s:]+@")  # https://TOKEN@host
_QUERY_SECRET_RE = re.compile(
    r"([?&][^=&\s]*(?:token|key|secret|password|sig)[^=&\s]*=)[^&\s]+", re.I
)
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a schedule
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_ALLOW_PROTOCOL": "https:ssh:git:file",  # enforced by git itself, redirects too
}
_REF_RULES = (
    "{}",
    "refs/{}",
    "refs/tags/{}",
    "refs/heads/{}",
    "refs/remotes/{}",
    "refs/remotes/{}/HEAD",
)  # fmt: skip - git's order for a short ref name


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
    """Hide credentials in URLs (`user:token@`, `https://TOKEN@`, `?access_token=`)."""
    text = _PASSWORD_RE.sub(r"\1:***@", text)
    text = _URL_USER_RE.sub(r"\1***@", text)
    return _QUERY_SECRET_RE.sub(r"\1***", text)


def git_env(url: str) -> dict[str, str]:
    """Environment for a git command on `url`: no prompts, safe transports, and the URL
    given as config, so a token in it never lands in a clone's files."""
    env = {
        **_GIT_ENV,
        # the remote's URL, as command-line config: never stored in the clone
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "remote.origin.url",
        "GIT_CONFIG_VALUE_0": url,
    }
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"  # no passphrase or host-key prompt
    return env


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
    """Fetch every git repository, several at a time; report each as it finishes.

    Clones of repositories that left the config are removed, so the workspace
    does not keep what nobody asked for.
    """

    def one(repo: RepoSpec) -> SyncResult:
        result = _sync_one(repo, config.workspace)
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, config.sources))
    keep = {clone_dir(config.workspace, r.name) for r in config.sources if r.url}
    for clone in (config.workspace / CLONES).glob("*.git"):
        if clone not in keep and (clone / "HEAD").is_file():
            shutil.rmtree(clone, ignore_errors=True)
    return results


def _sync_one(repo: RepoSpec, workspace: Path) -> SyncResult:
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
    try:
        if (clone / "HEAD").exists():
            bare = git.Repo(clone)
            previous, seen = _read_ref(bare, SYNC_REF), _read_ref(bare, FETCHED_REF)
        else:
            bare, seen = git.Repo.init(clone, bare=True, mkdir=True), None
        with bare:
            want = repo.ref or "HEAD"
            if previous and (want == previous or (seen and _advertised(bare, want, env) == seen)):
                return SyncResult(repo.name, previous)  # unchanged: nothing fetched
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
        detail = _first_error_line(str(err.stderr or err))
        return SyncResult(repo.name, previous, redact(f"cannot fetch {where}{repo.url}: {detail}"))
    except (git.InvalidGitRepositoryError, OSError) as err:
        return SyncResult(repo.name, previous, f"{clone}: {err}")


def _advertised(bare: git.Repo, ref: str, env: dict[str, str]) -> str | None:
    """Where the remote's `ref` points now, resolved the way `git fetch` resolves it."""
    out = bare.git.ls_remote("origin", ref, env=env, kill_after_timeout=FETCH_TIMEOUT)
    refs = dict(reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
    for rule in _REF_RULES:
        if (sha := refs.get(rule.format(ref))) is not None:
            return sha
    return None


def _read_ref(bare: git.Repo, ref: str) -> str | None:
    """A ref's sha read from the ref files, with no git process."""
    from git.refs.symbolic import SymbolicReference

    try:
        return SymbolicReference.dereference_recursive(bare, ref)
    except ValueError:
        return None


def _first_error_line(stderr: str) -> str:
    lines = [line.strip(" '") for line in stderr.splitlines()]
    lines = [line.removeprefix("stderr:").strip(" '") for line in lines if line.strip(" '")]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[0] if lines else "git failed"


def export(workspace: Path, name: str, commit: str, folder: str, dest: Path) -> Path:
    """`folder` of a repository at `commit`, written under `dest`: a build context on disk.

    `git archive` of the synced commit, extracted with tarfile's `data` filter
    (no links out of `dest`, no device files, no absolute paths).
    """
    import tarfile

    import git

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.with_suffix(".tar")
    with git.Repo(clone_dir(workspace, name)) as clone, archive.open("wb") as out:
        clone.git.archive("--format=tar", commit, "--", folder, output_stream=out)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest / folder


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
        return self.repo.odb.info(bytes.fromhex(sha)).size

    def content(self, folder: str) -> str:
        prefix = "" if folder in ("", ".") else folder.strip("/") + "/"
        return _content(
            (path[len(prefix) :], mode, sha)
            for path, (mode, sha) in self.entries.items()
            if path.startswith(prefix)
        )

    def _object(self, sha: str) -> bytes:
        return self.repo.odb.stream(bytes.fromhex(sha)).read()

    def close(self) -> None:
        self.repo.close()


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
        cached = self.known.get(key)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            self.seen[key] = cached  # a path is cached only after the check below passed
            return cached[2]
        full = self._file(path)
        if full is None:
            return None
        sha = blob_sha(full.read_bytes())
        self.seen[key] = (st.st_mtime_ns, st.st_size, sha)
        return sha

    def read(self, path: str) -> bytes:
        full = self._file(path)
        if full is None:
            raise FileNotFoundError(path)
        return full.read_bytes()

    def size(self, path: str) -> int:
        full = self._file(path)
        if full is None:
            raise FileNotFoundError(path)
        return full.stat().st_size

    def content(self, folder: str) -> str:
        """As git would record the folder: files and symlinks (their target), `.git` left out."""
        top = self._file(folder)
        entries = []
        for base, dirs, files in os.walk(top) if top is not None else ():
            links = [d for d in dirs if os.path.islink(os.path.join(base, d))]
            dirs[:] = sorted(d for d in dirs if d != ".git" and d not in links)
            for name in files + links:
                full = os.path.join(base, name)
                rel = os.path.relpath(full, top).replace(os.sep, "/")
                if os.path.islink(full):
                    entries.append((rel, "120000", blob_sha(os.readlink(full).encode())))
                elif os.path.isfile(full):
                    mode = "100755" if os.access(full, os.X_OK) else "100644"
                    entries.append((rel, mode, self.blob(os.path.relpath(full, self.root))))
        return _content(entries)

    def close(self) -> None:
        pass


def _content(entries: Iterable[tuple[str, str, str | None]]) -> str:
    digest = hashlib.sha256()
    for path, mode, sha in sorted(entries):
        digest.update(f"{path}\0{mode}\0{sha}\0".encode())
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
