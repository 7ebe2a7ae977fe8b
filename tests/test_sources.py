from __future__ import annotations

from pathlib import Path

import pytest

from graphbuild import config, sources
from graphbuild.errors import UnsafeURL

from .conftest import git


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/docker-library/python.git",
        "ssh://git@example.com/org/repo.git",
        "git://example.com/repo.git",
        "file:///srv/git/repo.git",
        "git@github.com:org/repo.git",
    ],
)
def test_safe_transports_are_accepted(url, tmp_path):
    assert sources.safe_git_url(url, tmp_path) == url


def test_local_paths_resolve_against_the_config_folder(tmp_path):
    assert sources.safe_git_url("../other/repo", tmp_path / "conf") == str(tmp_path / "other/repo")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ext::sh -c touch% /tmp/pwned", "ext:: transport can run commands"),
        ("fd::17", "fd:: transport"),
        ("--upload-pack=touch /tmp/pwned", "looks like a git option"),
        ("-oProxyCommand=x", "looks like a git option"),
        ("http://example.com/repo.git", "transport 'http' is not accepted"),
        ("ftp://example.com/repo.git", "transport 'ftp' is not accepted"),
        ("https://example.com/a\nb", "control characters"),
    ],
)
def test_unsafe_urls_are_refused(url, says, tmp_path):
    with pytest.raises(UnsafeURL, match=says):
        sources.safe_git_url(url, tmp_path)


def test_redact_hides_credentials():
    text = "cannot fetch https://bot:s3cr3t@git.example.com/x.git"
    assert "s3cr3t" not in sources.redact(text)
    assert "https://***@git.example.com/x.git" in sources.redact(text)


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


def test_credentials_in_a_url_never_reach_the_error(write_config):
    url = "https://bot:s3cr3t@127.0.0.1:9/org/repo.git"  # port 9: nothing listens
    result = sources.sync(_config(write_config, [{"name": "x", "url": url}]))[0]
    assert result.error
    assert "s3cr3t" not in result.error


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
        assert tree.glob("**/Dockerfile") == ["Dockerfile", "images/a/Dockerfile"]
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
    cache: dict = {}
    tree = sources.DirTree(root, cache)
    expected = git(tmp_path, "hash-object", str(root / "Dockerfile"))
    assert tree.blob("Dockerfile") == expected
    assert tree.blob("escape") is None
    assert tree.blob("../secret") is None
    assert str(root / "Dockerfile") in cache


def test_dir_tree_uses_the_stat_cache(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.20\n")
    st = (tmp_path / "Dockerfile").stat()
    key = str((tmp_path / "Dockerfile").resolve())
    cache = {key: (st.st_mtime_ns, st.st_size, "cached-sha")}
    assert sources.DirTree(tmp_path, cache).blob("Dockerfile") == "cached-sha"
    Path(tmp_path / "Dockerfile").write_text("FROM alpine:3.21\n")
    assert sources.DirTree(tmp_path, cache).blob("Dockerfile") != "cached-sha"


def test_dir_tree_glob_matches_git_tree_glob(tmp_path):
    for name in (
        "Dockerfile",
        "images/a/Dockerfile",
        "images/b/c/Dockerfile",
        ".hidden/Dockerfile",
        "v1/Dockerfile.b",
        "v1/Dockerfile.c",
        ".git/Dockerfile",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("FROM alpine\n")
    tree = sources.DirTree(tmp_path, {})
    assert tree.glob("images/*/Dockerfile") == ["images/a/Dockerfile"]
    assert tree.glob("**/Dockerfile") == [
        ".hidden/Dockerfile",
        "Dockerfile",
        "images/a/Dockerfile",
        "images/b/c/Dockerfile",
    ]
    assert tree.glob("v?/Dockerfile.[ab]") == ["v1/Dockerfile.b"]
    for pattern in ("images/*/Dockerfile", "**/Dockerfile", "v?/Dockerfile.[ab]"):
        regex = sources.glob_regex(pattern)
        on_disk = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
        in_git = sorted(p for p in on_disk if regex.match(p) and not p.startswith(".git/"))
        assert in_git == tree.glob(pattern), pattern
