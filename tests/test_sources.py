from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from graphbuild import config, sources, trees

from .git_http import seen_during, serving
from .site import git, graphbuild


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
    trees.GitTree(clone, first.commit).close()
    log = _logged_git(tmp_path, monkeypatch)
    again = sources.sync(cfg)[0]
    tree = trees.GitTree(clone, again.commit)
    try:
        assert tree.glob("images/*/Dockerfile") == ["images/a/Dockerfile"]
    finally:
        tree.close()
    assert (again.commit, again.fetched, again.error) == (first.commit, False, None)
    commands = [next(w for w in line.split() if not w.startswith("-"))
                for line in log.read_text().splitlines()]  # fmt: skip
    assert commands == ["ls-remote"]


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


def test_git_gone_from_path_is_said_for_every_repository_without_a_traceback(
    tmp_path, remotes, write_config
):
    """A machine whose git went away (an image rebuilt without it): every repository says
    so in the same words, and no thread's half-done import of GitPython escapes as a
    traceback."""
    seed = remotes("seed", {"Dockerfile": "FROM debian:12\n"})
    for i in range(8):
        git(tmp_path, "clone", "-q", "--bare", str(seed.url), str(tmp_path / f"r{i}.git"))
    write_config([{"name": f"r{i}", "url": str(tmp_path / f"r{i}.git"),
                   "images": [{"image": f"r.test/r{i}"}]} for i in range(8)])  # fmt: skip
    assert graphbuild("sync", cwd=tmp_path).returncode == 0
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    done = graphbuild("sync", "--json", cwd=tmp_path, env={"PATH": str(empty)})
    assert "Traceback" not in done.stderr
    assert done.returncode == 1
    repos = json.loads(done.stdout)["repos"]
    assert len(repos) == 8
    assert len({r["error"] for r in repos}) == 1
    assert all(r["error"].startswith("git is not usable: ") and r["commit"] is None
               for r in repos)  # fmt: skip
