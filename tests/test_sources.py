from __future__ import annotations

import base64
import contextlib
import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from graphbuild import config, sources
from graphbuild.errors import CloneDamaged, ContextError

from .git_http import seen_during, serving
from .site import GIT_ENV, git


def config_in(env: dict[str, str]) -> dict[str, str]:
    """The git config a git_env environment carries."""
    count = int(env["GIT_CONFIG_COUNT"])
    return {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(count)}


def test_git_env_moves_a_password_into_a_header_for_that_url():
    env = sources.git_env("https://bot:s3cr%40t@git.example.com/org/x.git")
    assert config_in(env) == {
        "remote.origin.url": "https://git.example.com/org/x.git",
        "http.https://git.example.com/org/x.git.extraHeader":
            "Authorization: Basic " + base64.b64encode(b"bot:s3cr@t").decode(),
        "http.https://git.example.com/org/x.git.followRedirects": "false",
    }  # fmt: skip
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh:git:file"


def test_git_env_keeps_a_user_name_for_credential_helpers():
    assert config_in(sources.git_env("https://myorg@dev.example.com/x.git")) == {
        "remote.origin.url": "https://dev.example.com/x.git",
        "credential.https://dev.example.com/x.git.username": "myorg",
    }


@pytest.mark.parametrize(
    "url", ["ssh://git@example.com/x.git", "git@example.com:x.git", "file:///srv/x.git", "/srv/x"]
)
def test_git_env_leaves_urls_without_a_password_as_they_are(url):
    assert config_in(sources.git_env(url)) == {"remote.origin.url": url}


def test_git_env_allows_plain_http_for_an_http_url_only():
    assert sources.git_env("http://127.0.0.1:9/x.git")["GIT_ALLOW_PROTOCOL"] == (
        "https:ssh:git:file:http"
    )


def _config(write_config, repos):
    return config.load(write_config(repos))


def test_sync_clones_then_fetches_only_what_changed(remotes, write_config):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])

    first = sources.sync(cfg)[0]
    assert first.error is None
    assert first.commit == git(remote.work, "rev-parse", "HEAD")
    assert first.fetched

    again = sources.sync(cfg)[0]
    assert (again.commit, again.fetched) == (first.commit, False)

    newer = remote.commit({"Dockerfile": "FROM alpine:3.21\n"})
    third = sources.sync(cfg)[0]
    assert (third.commit, third.fetched) == (newer, True)
    clone = sources.clone_dir(cfg.workspace, "app")
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    assert not (clone / "Dockerfile").exists(), "a bare clone: no work tree is written"


def test_an_unchanged_remote_is_asked_but_not_fetched(remotes, write_config):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    git(remote.work, "tag", "-a", "v1", "-m", "annotated")
    git(remote.work, "push", "-q", "origin", "v1")
    repos = [
        {"name": "tip", "url": str(remote.url)},
        {"name": "tag", "url": str(remote.url), "ref": "v1"},
    ]
    cfg = _config(write_config, repos)
    first = {r.repo: r for r in sources.sync(cfg)}
    fetch_heads = {n: sources.clone_dir(cfg.workspace, n) / "FETCH_HEAD" for n in ("tip", "tag")}
    stamps = {n: p.stat().st_mtime_ns for n, p in fetch_heads.items()}
    again = {r.repo: r for r in sources.sync(cfg)}
    assert {n: r.commit for n, r in again.items()} == {n: r.commit for n, r in first.items()}
    assert {n: p.stat().st_mtime_ns for n, p in fetch_heads.items()} == stamps, "fetched again"


def test_clones_of_repositories_that_left_the_config_are_removed(remotes, write_config):
    one, two = (
        remotes("one", {"Dockerfile": "FROM a\n"}),
        remotes("two", {"Dockerfile": "FROM b\n"}),
    )
    both = [{"name": "one", "url": str(one.url)}, {"name": "two", "url": str(two.url)}]
    cfg = _config(write_config, both)
    sources.sync(cfg)
    assert sources.clone_dir(cfg.workspace, "two").is_dir()
    cfg = _config(write_config, both[:1])
    sources.sync(cfg)
    assert sources.clone_dir(cfg.workspace, "one").is_dir()
    assert not sources.clone_dir(cfg.workspace, "two").exists()


def test_sync_follows_a_branch_a_tag_or_a_commit(remotes, write_config):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    first = git(remote.work, "rev-parse", "HEAD")
    git(remote.work, "tag", "v1")
    git(remote.work, "push", "-q", "origin", "v1")
    remote.commit({"Dockerfile": "FROM alpine:3.21\n"})
    repos = [
        {"name": "by-tag", "url": str(remote.url), "ref": "v1"},
        {"name": "by-commit", "url": str(remote.url), "ref": first},
        {"name": "by-branch", "url": str(remote.url), "ref": "main"},
    ]
    results = {r.repo: r for r in sources.sync(_config(write_config, repos))}
    assert results["by-tag"].commit == first
    assert results["by-commit"].commit == first
    assert results["by-branch"].commit == git(remote.work, "rev-parse", "HEAD")


def test_an_unreachable_repository_is_reported_and_the_others_sync(remotes, write_config, tmp_path):
    good = remotes("good", {"Dockerfile": "FROM alpine:3.20\n"})
    repos = [
        {"name": "gone", "url": str(tmp_path / "no-such-remote.git")},
        {"name": "good", "url": str(good.url)},
    ]
    results = {r.repo: r for r in sources.sync(_config(write_config, repos))}
    assert results["good"].error is None and results["good"].commit
    assert results["gone"].commit is None
    assert "cannot fetch" in results["gone"].error
    assert "no-such-remote.git" in results["gone"].error


def test_a_failed_fetch_keeps_the_last_good_commit(remotes, write_config):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    path = write_config([{"name": "app", "url": str(remote.url)}])
    first = sources.sync(config.load(path))[0]
    moved = remote.url.with_name("moved.git")
    remote.url.rename(moved)
    failed = sources.sync(config.load(path))[0]
    assert failed.error and failed.commit == first.commit


def test_a_missing_branch_names_the_ref(remotes, write_config):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url), "ref": "nope"}])
    result = sources.sync(cfg)[0]
    assert result.commit is None
    assert "ref 'nope'" in result.error


def test_credentials_in_a_url_never_reach_the_error_or_the_workspace(write_config, remotes):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    repos = [
        {"name": "down", "url": "https://bot:s3cr3t@127.0.0.1:9/org/repo.git"},  # nothing listens
        {"name": "up", "url": f"file://bot:s3cr3t@{remote.url}"},
    ]
    cfg = _config(write_config, repos)
    results = {r.repo: r for r in sources.sync(cfg)}
    assert "s3cr3t" not in results["down"].error
    assert len(results["down"].error.splitlines()) == 1
    assert results["up"].error is None and results["up"].commit
    for path in cfg.workspace.rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path


def test_a_missing_local_folder_is_reported(write_config):
    cfg = _config(write_config, [{"name": "local", "path": "nowhere"}])
    result = sources.sync(cfg)[0]
    assert "no such folder" in result.error


def test_git_tree_reads_blobs_and_follows_symlinks(remotes, write_config):
    remote = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    (remote.work / "Dockerfile").symlink_to("images/a/Dockerfile")
    remote.commit({})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    tree = sources.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)
    try:
        assert tree.glob("**/Dockerfile") == ["images/a/Dockerfile"]  # the link is no copy
        assert tree.glob("images/*/Dockerfile") == ["images/a/Dockerfile"]
        assert tree.blob("Dockerfile") == tree.blob("images/a/Dockerfile")
        assert tree.read("Dockerfile") == b"FROM alpine:3.20\n"
        assert tree.blob("missing") is None
    finally:
        tree.close()


def test_dir_tree_blob_matches_git_and_stays_inside_the_folder(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM alpine:3.20\n")
    (tmp_path / "secret").write_text("x")
    (root / "escape").symlink_to(tmp_path / "secret")
    seen: dict = {}
    tree = sources.DirTree(root, {}, seen)
    expected = git(tmp_path, "hash-object", str(root / "Dockerfile"))
    assert tree.blob("Dockerfile") == expected
    assert tree.blob("escape") is None
    assert tree.blob("../secret") is None
    assert list(seen) == [str(root / "Dockerfile")]


def test_dir_tree_uses_the_stat_cache(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.20\n")
    st = (tmp_path / "Dockerfile").stat()
    key = str((tmp_path / "Dockerfile").resolve())
    known = {key: (st.st_mtime_ns, st.st_size, "cached-sha")}
    seen: dict = {}
    assert sources.DirTree(tmp_path, known, seen).blob("Dockerfile") == "cached-sha"
    assert seen == known
    Path(tmp_path / "Dockerfile").write_text("FROM alpine:3.21\n")
    assert sources.DirTree(tmp_path, known, seen).blob("Dockerfile") != "cached-sha"


GLOB_FILES = {
    "Dockerfile": "FROM alpine\n",
    "images/a/Dockerfile": "FROM alpine\n",
    "images/b/c/Dockerfile": "FROM alpine\n",
    ".hidden/Dockerfile": "FROM alpine\n",
    "v1/Dockerfile.b": "FROM alpine\n",
    "v1/Dockerfile.c": "FROM alpine\n",
    "i1/Dockerfile": "FROM alpine\n",
    "i2/Dockerfile": "FROM alpine\n",
}
PATTERNS = ["images/*/Dockerfile", "**/Dockerfile", "v?/Dockerfile.[ab]", "i[!1]/Dockerfile",
            "**/**/**/c/Dockerfile", "*/Dockerfile"]  # fmt: skip


def test_local_folders_and_git_commits_glob_alike(remotes, write_config):
    remote = remotes("app", GLOB_FILES)
    (remote.work / "images/a/loop").symlink_to("..")  # a folder symlink: not followed
    (remote.work / "images/a/Dockerfile.link").symlink_to("Dockerfile")
    (remote.work / "Dockerfile.copy").symlink_to("images/a/Dockerfile")
    remote.commit({})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    in_git = sources.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)
    on_disk = sources.DirTree(remote.work, {}, {})
    try:
        for pattern in PATTERNS:
            assert on_disk.glob(pattern) == in_git.glob(pattern), pattern
    finally:
        in_git.close()
    assert on_disk.glob("**/Dockerfile") == [
        ".hidden/Dockerfile", "Dockerfile", "i1/Dockerfile", "i2/Dockerfile",
        "images/a/Dockerfile", "images/b/c/Dockerfile",
    ]  # fmt: skip
    assert on_disk.glob("i[!1]/Dockerfile") == ["i2/Dockerfile"]
    assert on_disk.glob("*/Dockerfile") == [".hidden/Dockerfile", "i1/Dockerfile", "i2/Dockerfile"]


def test_a_symlink_loop_does_not_trap_the_walk(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/Dockerfile").write_text("FROM alpine\n")
    (tmp_path / "a/l1").symlink_to("..")
    (tmp_path / "a/l2").symlink_to("..")
    assert sources.DirTree(tmp_path, {}, {}).glob("**/Dockerfile") == ["a/Dockerfile"]


# ---------------------------------------------------------------- credentials over HTTP

TOKEN = "tok3n-d0-not-leak"


@pytest.fixture
def git_http(tmp_path):
    """A smart-HTTP git server on loopback for the bare repositories `remotes` makes."""
    with serving(tmp_path / "remotes", TOKEN) as server:
        yield server


def test_a_token_in_an_http_url_is_in_no_command_line_nor_file(remotes, write_config, git_http):
    """git-remote-http used to carry `http://bot:TOKEN@…` in its argv, which every local user
    reads in /proc/*/cmdline while a fetch runs."""
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    url = f"http://bot:{TOKEN}@127.0.0.1:{git_http.port}/app.git"
    cfg = _config(write_config, [{"name": "app", "url": url}])

    lines, (result,) = seen_during(git_http, "git-upload-pack", lambda: sources.sync(cfg))
    helpers = [cmd for cmd in lines.values() if b"remote-http" in cmd]
    assert helpers, "the fetch's git-remote-http was not running when the processes were read"
    assert [cmd for cmd in lines.values() if TOKEN.encode() in cmd] == []
    assert result.error is None, result.error
    assert result.commit == git(remote.work, "rev-parse", "HEAD")
    assert git_http.authorizations and set(git_http.authorizations) == {git_http.expected}

    remote.commit({"Dockerfile": "FROM alpine:3.21\n"})
    lines, (again,) = seen_during(git_http, "git-upload-pack", lambda: sources.sync(cfg))
    assert any(b"remote-http" in cmd for cmd in lines.values())  # ls-remote, then the fetch
    assert [cmd for cmd in lines.values() if TOKEN.encode() in cmd] == []
    assert (again.error, again.commit) == (None, git(remote.work, "rev-parse", "HEAD"))
    assert set(git_http.authorizations) == {git_http.expected}

    for path in cfg.workspace.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_wrong_token_fails_the_sync_and_is_not_shown(remotes, write_config, git_http):
    remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    url = f"http://bot:wr0ng-{TOKEN}@127.0.0.1:{git_http.port}/app.git"
    (result,) = sources.sync(_config(write_config, [{"name": "app", "url": url}]))
    assert result.commit is None
    assert result.error == (
        f"cannot fetch http://bot:***@127.0.0.1:{git_http.port}/app.git: fatal: could not read "
        f"Username for 'http://127.0.0.1:{git_http.port}': terminal prompts disabled (the server "
        "refused the credentials in the URL)"
    )


def test_a_redirect_never_takes_the_token_to_another_server(remotes, write_config, git_http):
    """The header goes with the first request, and git sends a redirected remote's later
    requests straight to the new server: so a URL with a token follows no redirect."""
    remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    with serving(git_http.root, None) as elsewhere:
        git_http.redirect = f"http://127.0.0.1:{elsewhere.port}"
        url = f"http://bot:{TOKEN}@127.0.0.1:{git_http.port}/app.git"
        (result,) = sources.sync(_config(write_config, [{"name": "app", "url": url}]))
        assert git_http.expected not in elsewhere.authorizations
        assert result.commit is None
        assert result.error == (
            f"cannot fetch http://bot:***@127.0.0.1:{git_http.port}/app.git: fatal: unable to "
            f"access 'http://127.0.0.1:{git_http.port}/app.git/': The requested URL returned "
            "error: 302"
        )
        assert elsewhere.authorizations == []


# ---------------------------------------------------------------- build contexts

NOT_SENT = "graphbuild does not send it to a builder"


def _synced_tree(write_config, remote):
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    result = sources.sync(cfg)[0]
    assert result.error is None, result.error
    return sources.GitTree(sources.clone_dir(cfg.workspace, "app"), result.commit)


def _listing(top: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink():
            found[rel] = ("link", str(path.readlink()))
        elif path.is_dir():
            found[rel] = ("dir",)
        else:
            found[rel] = ("file", path.stat().st_mode & 0o777, path.read_bytes())
    return found


def _craft(remote, entries: str, blobs: dict[str, bytes]) -> None:
    """Commit a tree git's own commands would refuse to make (`..`, `.git`, a name twice),
    as a hostile pusher can: `entries` are mktree lines under `ctx/`, `{name}` a blob's id."""

    def run(*args: str, data: bytes | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=remote.work, input=data, capture_output=True,
                              check=True, env={**os.environ, **GIT_ENV})  # fmt: skip
        return done.stdout.decode().strip()

    ids = {name: run("hash-object", "-w", "--stdin", data=data) for name, data in blobs.items()}
    sub = run("mktree", data=f"100644 blob {ids['f']}\tf\n".encode())
    other = run("mktree", data=f"100644 blob {ids['f']}\tg\n".encode())
    lines = entries.format(sub=sub, other=other, **ids)
    raw = b"".join(  # mktree checks an entry's mode against its object: write the tree itself
        f"{mode} {name}\0".encode() + bytes.fromhex(sha)
        for mode, _, rest in (line.split(" ", 2) for line in lines.splitlines())
        for sha, name in [rest.split("\t")]
    )
    ctx = run("hash-object", "-t", "tree", "-w", "--stdin", "--literally", data=raw)
    root = run("mktree", data=f"040000 tree {ctx}\tctx\n".encode())
    commit = run("commit-tree", root, "-m", "crafted")
    run("push", "-q", "-f", "origin", f"{commit}:refs/heads/main")


def test_a_commit_and_its_work_tree_export_alike_and_as_their_key_says(
    remotes, write_config, tmp_path
):
    remote = remotes("app", {"ctx/Dockerfile": "FROM scratch\n", "ctx/sub/f": "f\n",
                             "ctx/.gitattributes": "* export-subst\n", "ctx/v": "$Format:%H$\n",
                             "other/secret": "not in the context\n"})  # fmt: skip
    (remote.work / "ctx/run").write_text("#!/bin/sh\n")
    (remote.work / "ctx/run").chmod(0o755)
    (remote.work / "ctx/l").symlink_to("sub/f")
    (remote.work / "ctx/up").symlink_to("../other")
    remote.commit({})
    tree = _synced_tree(write_config, remote)
    try:
        in_git, git_digest = sources.export(tree, "app", "ctx", tmp_path / "git")
        assert git_digest == tree.content("ctx")
    finally:
        tree.close()
    folder = sources.DirTree(remote.work, {}, {})
    on_disk, disk_digest = sources.export(folder, "app", "ctx", tmp_path / "disk")
    assert (in_git, on_disk) == (tmp_path / "git/ctx", tmp_path / "disk/ctx")
    assert disk_digest == git_digest == folder.content("ctx")
    assert (
        _listing(in_git)
        == _listing(on_disk)
        == {
            ".gitattributes": ("file", 0o644, b"* export-subst\n"),
            "Dockerfile": ("file", 0o644, b"FROM scratch\n"),
            "l": ("link", "sub/f"),
            "run": ("file", 0o755, b"#!/bin/sh\n"),
            "sub": ("dir",),
            "sub/f": ("file", 0o644, b"f\n"),
            "up": ("link", "../other"),  # inside the repository, not sent: it leads nowhere
            "v": ("file", 0o644, b"$Format:%H$\n"),  # the blob, not git archive's substitution
        }
    )
    assert not (tmp_path / "git/other").exists()


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        pytest.param("040000 tree {sub}\t..\n", f"app:ctx/../f: a path git refuses to check out "
                     f"('..'); {NOT_SENT}", id="dot-dot"),
        pytest.param("040000 tree {sub}\t.GIT\n", f"app:ctx/.GIT/f: a path git refuses to check "
                     f"out ('.GIT'); {NOT_SENT}", id="dot-git"),
        pytest.param("100644 blob {f}\tx\n040000 tree {sub}\tx\n", "app:ctx/x/f: the tree holds "
                     f"this path twice (as a file or symlink, and as a folder); {NOT_SENT}",
                     id="file-and-folder"),
        pytest.param("120000 blob {d_link}\tx\n040000 tree {sub}\tx\n040000 tree {other}\td\n",
                     "app:ctx/x/f: the tree holds this path twice (as a file or symlink, and as "
                     f"a folder); {NOT_SENT}", id="written-through-a-link"),
        pytest.param("120000 blob {loop_a}\ta\n120000 blob {loop_b}\tb\n", "app:ctx/a: symlink "
                     f"loop, or a chain of more than 40 symlinks; {NOT_SENT}", id="loop"),
        pytest.param("120000 blob {nul}\tx\n", f"app:ctx/x: symlink target is not a path; "
                     f"{NOT_SENT}", id="nul"),
        pytest.param("120000 blob {long}\tx\n", f"app:ctx/x: symlink target longer than 4096 "
                     f"bytes; {NOT_SENT}", id="long"),
        pytest.param("100644 blob {sub}\tx\n", f"app:ctx/x: its tree entry names a tree, not a "
                     f"file; {NOT_SENT}", id="tree-as-a-file"),
    ],
)  # fmt: skip
def test_a_crafted_tree_is_refused_naming_the_path_and_the_rule(
    remotes, write_config, tmp_path, entries, says
):
    remote = remotes("app", {"ctx/Dockerfile": "FROM scratch\n"})
    blobs = {"f": b"f\n", "d_link": b"d", "loop_a": b"b", "loop_b": b"a", "nul": b"a\0b",
             "long": b"a/" * 3000}  # fmt: skip
    _craft(remote, entries, blobs)
    tree = _synced_tree(write_config, remote)
    try:
        with pytest.raises(ContextError) as refused:
            sources.export(tree, "app", "ctx", tmp_path / "context")
    finally:
        tree.close()
    assert str(refused.value) == says
    assert not (tmp_path / "context/ctx/d/f").exists()  # nothing written through a link


def test_symlinks_past_the_steps_graphbuild_checks_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "LINK_STEPS", 50)
    (tmp_path / "ctx").mkdir()
    for i in range(20):
        (tmp_path / f"ctx/l{i}").symlink_to("a/b/c/../../../f")
    with pytest.raises(ContextError, match=r"^app:ctx/l\d+: more symlinks than graphbuild "
                       rf"checks \(50 steps\); {NOT_SENT}$"):  # fmt: skip
        sources.export(sources.DirTree(tmp_path, {}, {}), "app", "ctx", tmp_path / "out")


def test_a_file_is_written_with_its_mode_whatever_the_umask(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/f").write_text("f")
    (tmp_path / "ctx/x").write_text("x")
    (tmp_path / "ctx/x").chmod(0o700)
    old = os.umask(0o077)
    try:
        top, _ = sources.export(sources.DirTree(tmp_path, {}, {}), "app", "ctx", tmp_path / "o")
    finally:
        os.umask(old)
    assert [(p.name, p.stat().st_mode & 0o777) for p in sorted(top.iterdir())] == [
        ("f", 0o644), ("x", 0o755)]  # fmt: skip


@pytest.mark.timeout(30)
def test_a_local_file_swapped_for_a_fifo_is_gone_not_waited_on(tmp_path):
    """Between the sync and the build a Dockerfile becomes a FIFO: reading it must not hang."""
    os.mkfifo(tmp_path / "Dockerfile")
    with pytest.raises(FileNotFoundError):
        sources.DirTree(tmp_path, {}, {}).read("Dockerfile")


def test_a_big_local_file_is_hashed_as_git_does_in_little_memory(tmp_path):
    """A context's 32 MiB file costs a chunk of memory to hash, not its size."""
    import tracemalloc

    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        for i in range(32):
            out.write(bytes([i]) * 2**20)
    tracemalloc.start()
    try:
        sha = sources.DirTree(tmp_path, {}, {}).blob("big.bin")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sha == git(tmp_path, "hash-object", "big.bin")
    assert peak < 4 * 2**20, f"hashing took {peak} bytes"


def test_a_local_context_that_is_a_symlink_loop_is_refused_by_name(tmp_path):
    (tmp_path / "ctx").symlink_to("ctx")
    tree = sources.DirTree(tmp_path, {}, {})
    assert tree.content("ctx") == sources.DirTree(tmp_path, {}, {}).content("nothing-here")
    with pytest.raises(ContextError) as refused:
        sources.export(tree, "local", "ctx", tmp_path / "out")
    assert str(refused.value) == (
        "local:ctx: the build context is a symlink (to ctx), not a folder; graphbuild sends a "
        "builder only a folder of the repository"
    )


def test_a_local_folder_swapped_for_a_symlink_after_the_walk_is_not_read_through(tmp_path):
    """A file is opened folder by folder from the root, never through a symlink: a folder
    that becomes a link to /etc between the walk and the copy leads nowhere."""
    (tmp_path / "ctx/sub").mkdir(parents=True)
    (tmp_path / "ctx/sub/passwd").write_text("mine")
    assert os.read(sources._open_beneath(tmp_path, "ctx/sub/passwd"), 10) == b"mine"
    (tmp_path / "ctx/sub/passwd").unlink()
    (tmp_path / "ctx/sub").rmdir()
    (tmp_path / "ctx/sub").symlink_to("/etc")
    with pytest.raises(OSError) as refused:
        sources._open_beneath(tmp_path, "ctx/sub/passwd")
    assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)


# ---------------------------------------------------------------- a warm sync


def _logged_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a `git` first on PATH that logs each command graphbuild runs, then runs git."""
    log, folder = tmp_path / "git.log", tmp_path / "logged-bin"
    folder.mkdir()
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout
    wrapper = folder / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real.strip()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def test_an_unchanged_repository_costs_one_git_command_and_its_tree_none(
    remotes, write_config, tmp_path, monkeypatch
):
    """A warm sync of a thousand remotes is a thousand `ls-remote`s and nothing else."""
    remote = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    clone = sources.clone_dir(cfg.workspace, "app")
    first = sources.sync(cfg)[0]
    sources.GitTree(clone, first.commit).close()
    log = _logged_git(tmp_path, monkeypatch)
    again = sources.sync(cfg)[0]
    tree = sources.GitTree(clone, again.commit)
    try:
        assert tree.glob("images/*/Dockerfile") == ["images/a/Dockerfile"]
    finally:
        tree.close()
    assert (again.commit, again.fetched, again.error) == (first.commit, False, None)
    commands = [next(w for w in line.split() if not w.startswith("-"))
                for line in log.read_text().splitlines()]  # fmt: skip
    assert commands == ["ls-remote"]


def test_a_kept_listing_serves_only_its_own_commit_and_only_whole(remotes, write_config):
    remote = remotes("app", {"images/a/Dockerfile": "FROM alpine:3.20\n"})
    cfg = _config(write_config, [{"name": "app", "url": str(remote.url)}])
    clone = sources.clone_dir(cfg.workspace, "app")
    sources.GitTree(clone, sources.sync(cfg)[0].commit).close()
    remote.commit({"images/b/Dockerfile": "FROM alpine:3.21\n"})
    newer = sources.sync(cfg)[0].commit
    both = ["images/a/Dockerfile", "images/b/Dockerfile"]
    for damage in (
        lambda data: data,  # kept for the commit before
        lambda data: data.replace(b"images/b", b"images/c"),  # right commit, changed listing
        lambda data: data[: len(data) // 2],
        lambda data: b"",
    ):
        kept = clone / sources.TREE_CACHE
        kept.write_bytes(damage(kept.read_bytes()))
        tree = sources.GitTree(clone, newer)
        try:
            assert tree.glob("images/*/Dockerfile") == both
            assert tree.read("images/b/Dockerfile") == b"FROM alpine:3.21\n"
        finally:
            tree.close()


@pytest.mark.timeout(120)
def test_a_remote_that_never_answers_is_given_up_at_the_timeout(remotes, write_config, monkeypatch):
    remote = remotes("app", {"Dockerfile": "FROM alpine:3.20\n"})
    first = sources.sync(_config(write_config, [{"name": "app", "url": str(remote.url)}]))[0]
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/app.git"
        monkeypatch.setattr(sources, "FETCH_TIMEOUT", 2)
        (result,) = sources.sync(_config(write_config, [{"name": "app", "url": url}]))
    assert result.commit == first.commit
    assert result.error == (f'cannot fetch {url}: Timeout: the command "git ls-remote origin '
                            'HEAD" did not complete in 2 secs.')  # fmt: skip
    left = []  # git's remote helper, which held the connection, is gone with it
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if url.encode() in (entry / "cmdline").read_bytes():
                left.append(entry.name)
    assert left == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://github.com/org/repo.git", "github.com"),
        ("ssh://git@git.example.com:2222/org/repo.git", "git.example.com"),
        ("git@github.com:org/repo.git", "github.com"),
        ("file:///srv/git/repo.git", ""),
        ("/srv/git/repo.git", ""),
        ("../repo", ""),
        ("./dir:with/colon", ""),
    ],
)
def test_the_host_a_git_url_connects_to(url, host):
    assert sources.git_host(url) == host


FAKE_SSH = """#!/bin/sh
# an ssh that runs the remote command here and counts the connections open at once
[ "$1" = "-G" ] && exit 0
mkdir -p "{dir}/open" && touch "{dir}/open/$$"
ls "{dir}/open" | wc -l >> "{dir}/counts"
sleep 0.2
for last; do :; done
sh -c "$last"; code=$?
rm -f "{dir}/open/$$"
exit $code
"""


def test_one_git_host_gets_at_most_jobs_connections_at_once(tmp_path, monkeypatch, remotes):
    """An ssh server drops connections past its MaxStartups (10 by default): a warm sync of
    many repositories on one host asks `--jobs` of them at a time, not all it could."""
    seed = remotes("seed", {"Dockerfile": "FROM debian:12\n"})
    for i in range(12):
        git(tmp_path, "clone", "-q", "--bare", str(seed.url), str(tmp_path / f"r{i}.git"))
    ssh = tmp_path / "fakessh"
    ssh.write_text(FAKE_SSH.format(dir=tmp_path / "ssh"))
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    repos = [{"name": f"r{i}", "url": f"ssh://gitserver{tmp_path}/r{i}.git",
              "images": [{"image": f"r.test/r{i}"}]} for i in range(12)]  # fmt: skip
    (tmp_path / "repos.yaml").write_text(yaml.safe_dump({"repos": repos}))
    cfg = config.load(tmp_path / "repos.yaml")
    assert all(r.error is None for r in sources.sync(cfg, jobs=3))
    (tmp_path / "ssh" / "counts").unlink()
    warm = sources.sync(cfg, jobs=3)
    assert all(r.error is None and not r.fetched for r in warm)
    counts = [int(n) for n in (tmp_path / "ssh" / "counts").read_text().split()]
    assert len(counts) == 12 and max(counts) <= 3


def test_a_clone_that_lost_its_objects_says_so_and_is_fetched_again(tmp_path, remotes):
    """A bad disk or a partial restore empties a clone that graphbuild still lists from its
    kept listing: reading it names the clone, not an internal error, and the next sync
    fetches the commit anew instead of trusting what the clone says it has."""
    remote = remotes("app", {"Dockerfile": "FROM debian:12\n"})
    repo = {"name": "app", "url": str(remote.url), "images": [{"image": "r.test/app"}]}
    (tmp_path / "repos.yaml").write_text(yaml.safe_dump({"repos": [repo]}))
    cfg = config.load(tmp_path / "repos.yaml")
    clone = sources.clone_dir(cfg.workspace, "app")

    def wipe() -> None:
        for item in (clone / "objects").iterdir():
            if item.name not in ("info", "pack"):
                shutil.rmtree(item)
        for pack in (clone / "objects" / "pack").iterdir():
            pack.unlink()

    def read(result: sources.SyncResult) -> bytes:
        tree = sources.open_tree(cfg.sources[0], result, cfg.workspace, {}, {})
        try:
            return tree.read("Dockerfile")
        finally:
            tree.close()

    (first,) = sources.sync(cfg)
    assert read(first) == b"FROM debian:12\n"  # the listing is kept in the clone now
    wipe()
    with pytest.raises(CloneDamaged, match=r"app\.git: object [0-9a-f]{12} is missing"):
        read(first)
    (again,) = sources.sync(cfg)
    assert again == sources.SyncResult("app", first.commit, fetched=True)
    assert read(again) == b"FROM debian:12\n"
    wipe()  # and with no listing kept: the listing itself cannot be made
    (clone / sources.TREE_CACHE).unlink()
    with pytest.raises(CloneDamaged, match=r"cannot list commit [0-9a-f]{12} in this clone"):
        read(again)
    assert sources.sync(cfg) == [sources.SyncResult("app", first.commit, fetched=True)]
