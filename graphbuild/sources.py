"""Repositories: fetch git ones into the workspace (reading them is trees.py).

Git repositories are kept as shallow bare clones: graphbuild only reads the
commit a sync fetched (`ls-tree` and blob reads), never a work tree. A sync
first asks the remote where the ref points (`ls-remote`, one round trip) and
fetches only when that moved, so an unchanged repository costs one cheap call.
The URL is given to git through its environment and never written into the
clone, so credentials in it stay out of the workspace. GitPython is imported
only to fetch, so that queries, which never touch git, and a sync where nothing
moved do not pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from graphbuild.urls import redact

if TYPE_CHECKING:
    import git

    from graphbuild.config import Config, RepoSpec

FETCH_TIMEOUT = 600  # seconds for one repository's fetch
PROBES = 32  # repositories synced at once; each git host still gets at most `jobs` of them
CLONES = "repos"  # the workspace folder holding one bare clone per repository
SYNC_REF = "refs/graphbuild/head"  # the commit read; also keeps it alive in the clone
FETCHED_REF = "refs/graphbuild/fetched"  # what the remote ref named (a tag object for tags)
_ALLOWED = "https:ssh:git:file"  # and http, for a URL on loopback
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a schedule
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_ALLOW_PROTOCOL": _ALLOWED,  # enforced by git itself, redirects too
}
_IMPORTING = threading.Lock()  # see _no_gitpython
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
    """One repository: asked with one `ls-remote` and no GitPython, fetched if it moved."""
    if repo.path is not None:
        if not repo.path.is_dir():
            return SyncResult(repo.name, None, f"{repo.path}: no such folder")
        return SyncResult(repo.name, None)
    assert repo.url is not None
    clone = clone_dir(workspace, repo.name)
    env = git_env(repo.url)
    previous = None
    want = repo.ref or "HEAD"
    try:
        if (clone / "HEAD").exists():  # read with no git process: most repositories stop here
            previous, seen = _read_ref(clone, SYNC_REF), _read_ref(clone, FETCHED_REF)
            if previous and seen and want != previous:  # a commit asked by its sha never moves
                with host:
                    advertised = _advertised(clone, want, env)
                if advertised == seen:
                    return SyncResult(repo.name, previous)  # unchanged: nothing fetched
    except GitFailed as err:
        return SyncResult(repo.name, previous, _cannot_fetch(repo, err))
    except OSError as err:
        if unusable := _no_gitpython():  # no git at all: said as GitPython says it
            return SyncResult(repo.name, None, unusable)
        return SyncResult(repo.name, previous, f"{clone}: {err}")
    return _fetch(repo, clone, env, previous, fetches, host)


def _fetch(
    repo: RepoSpec,
    clone: Path,
    env: dict[str, str],
    previous: str | None,
    fetches: threading.BoundedSemaphore,
    host: contextlib.AbstractContextManager[object],
) -> SyncResult:
    """Fetch the ref into the clone (made if missing) through GitPython."""
    if unusable := _no_gitpython():
        return SyncResult(repo.name, None, unusable)
    import git

    want = repo.ref or "HEAD"
    if previous and want == previous:
        return SyncResult(repo.name, previous)
    try:
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
        return SyncResult(repo.name, previous, _cannot_fetch(repo, err))
    except (git.InvalidGitRepositoryError, OSError) as err:
        return SyncResult(repo.name, previous, f"{clone}: {err}")


def _no_gitpython() -> str | None:
    """Why GitPython cannot be used (it refuses to load without a git executable), or None.
    One thread at a time: threads importing a failing module at once do not all fail."""
    with _IMPORTING:
        try:
            import git  # noqa: F401
        except ImportError as err:
            return f"git is not usable: {err}".splitlines()[0]
    return None


def _cannot_fetch(repo: RepoSpec, err: GitFailed | git.CommandError) -> str:
    where = f"ref {repo.ref!r} of " if repo.ref else ""
    return redact(f"cannot fetch {where}{repo.url}: {git_reason(err, url=repo.url)}")


def _advertised(clone: Path, ref: str, env: dict[str, str]) -> str | None:
    """Where the remote's `ref` points now, resolved the way `git fetch` resolves it."""
    out = _git(clone, ["ls-remote", "origin", ref], env)
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    refs = {name: sha for sha, name in pairs}
    for rule in _REF_RULES:
        if (sha := refs.get(rule.format(ref))) is not None:
            return sha
    return None


class GitFailed(Exception):
    """A git command run without GitPython failed: what it printed and its exit status,
    the attributes `git_reason` reads on GitPython's own errors."""

    def __init__(self, status: int | str, stderr: str, stdout: str = "") -> None:
        super().__init__(stderr or f"exit status {status}")
        self.status, self.stderr, self.stdout = status, stderr, stdout


def _git(clone: Path, args: list[str], env: dict[str, str]) -> str:
    """A git command on the clone as GitPython runs one (C locale, the same error text, in
    graphbuild's process group so that a Ctrl-C reaches it), minus what a warm sync of a
    thousand repositories would pay a thousand times: importing GitPython and a watchdog
    thread each. Past FETCH_TIMEOUT it is killed with what it started (a remote helper,
    upload-pack)."""
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
            raise GitFailed("timeout", said) from None
    if process.returncode != 0:
        raise GitFailed(process.returncode, _text(err), _text(out))
    return out.decode("utf-8", "replace")


def _text(printed: bytes) -> str:
    """What git printed, decoded as GitPython decodes it for its errors."""
    return printed.rstrip(b"\n").decode("utf-8", "surrogateescape")


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
    err: GitFailed | git.CommandError,
    marks: tuple[tuple[str, ...], ...] = (),
    url: str | None = None,
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
