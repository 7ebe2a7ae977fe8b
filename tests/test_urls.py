"""The git URL policy: which transports and forms reach git, and credentials hidden in text."""

from __future__ import annotations

import pytest

from graphbuild import urls
from graphbuild.errors import UnsafeURL


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/docker-library/python.git",
        "ssh://git@example.com/org/repo.git",
        "git://example.com/repo.git",
        "file:///srv/git/repo.git",
        "git@github.com:org/repo.git",
        "http://127.0.0.1:8080/repo.git",
        "http://bot:s3cr3t@localhost/repo.git",
        "http://[::1]:3000/repo.git",
    ],
)
def test_safe_transports_are_accepted(url, tmp_path):
    assert urls.safe_git_url(url, tmp_path) == url


def test_local_paths_resolve_against_the_config_folder(tmp_path):
    assert urls.safe_git_url("../other/repo", tmp_path / "conf") == str(tmp_path / "other/repo")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ext::sh -c touch% /tmp/pwned", "ext:: transport can run commands"),
        ("fd::17", "fd:: transport"),
        ("--upload-pack=touch /tmp/pwned", "looks like a git option"),
        ("-oProxyCommand=x", "looks like a git option"),
        ("http://example.com/repo.git", "plain http is accepted only on loopback"),
        ("http://127.0.0.1.example.com/repo.git", "plain http is accepted only on loopback"),
        ("http://127.0.0.1:port/repo.git", "plain http is accepted only on loopback"),
        ("ssh://bot:s3cr3t@example.com/repo.git", "ssh takes no password in the URL"),
        ("ftp://example.com/repo.git", "transport 'ftp' is not accepted"),
        ("https://example.com/a\nb", "control characters"),
    ],
)
def test_unsafe_urls_are_refused(url, says, tmp_path):
    with pytest.raises(UnsafeURL, match=says):
        urls.safe_git_url(url, tmp_path)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "cannot fetch https://bot:s3cr3t@git.example.com/x.git",
            "https://bot:***@git.example.com",
        ),
        ("https://s3cr3t@github.com/org/x.git", "https://***@github.com/org/x.git"),
        ("bot:s3cr3t@host:org/x.git", "bot:***@host:org/x.git"),
        ("https://h.example/x.git?access_token=s3cr3t&ref=1", "?access_token=***&ref=1"),
        ("git@github.com:org/x.git", "git@github.com:org/x.git"),
    ],
)
def test_redact_hides_credentials(text, shown):
    assert "s3cr3t" not in urls.redact(text)
    assert shown in urls.redact(text)
