"""Which git URLs graphbuild clones, and how a URL is shown: the URL policy.

Below both config (which checks every `url:` as repos.yaml is read) and sources
(which hands the URL to git), so that neither imports the other for it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from graphbuild.errors import UnsafeURL

SAFE_SCHEMES = frozenset({"https", "ssh", "git", "file"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRANSPORT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_RE = re.compile(r"^(?:[^@/:\s]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]*$")
_PASSWORD_RE = re.compile(r"(?<![\w.%+-])([\w.%+-]+):([^\s@/]+)@")  # user:secret@host
_URL_USER_RE = re.compile(r"(://)[^/@\s:]+@")  # https://TOKEN@host
_QUERY_SECRET_RE = re.compile(
    r"([?&][^=&\s]*(?:token|key|secret|password|sig)[^=&\s]*=)[^&\s]+", re.I
)


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
        if name == "http" and _loopback(url):
            return url
        if name == "http":
            raise UnsafeURL(
                "plain http is accepted only on loopback (127.0.0.1, ::1, localhost): "
                "elsewhere it carries credentials in clear; use https"
            )
        if name not in SAFE_SCHEMES:
            raise UnsafeURL(f"transport {name!r} is not accepted; use https, ssh, git or file")
        if name == "ssh" and ":" in urlsplit(url).netloc.rpartition("@")[0]:
            raise UnsafeURL(
                "ssh takes no password in the URL (git would put it on ssh's command line, "
                "which every local user can read); use a key"
            )
        return url
    if _SCP_RE.match(url):
        return url  # [user@]host:path, git's short ssh form (a colon before any slash)
    return os.path.abspath(base / url)


def _loopback(url: str) -> bool:
    """Does the URL name this machine, where plain http leaves nothing on a network?"""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname or "", parts.port  # a port must be a number
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address, or a port that is not a number
        return False


def redact(text: str) -> str:
    """Hide credentials in URLs (`user:token@`, `https://TOKEN@`, `?access_token=`)."""
    text = _PASSWORD_RE.sub(r"\1:***@", text)
    text = _URL_USER_RE.sub(r"\1***@", text)
    return _QUERY_SECRET_RE.sub(r"\1***", text)
