"""Image references, parsed and normalised as distribution/reference does.

BuildKit resolves `FROM` with ParseNormalizedNamed followed by TagNameOnly, so
graphbuild does the same: the same string always names the same node, and
`localhost:5000/x` or `myreg:443/team/img` are registries, not tags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from graphbuild.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
MAX_NAME = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?\Z", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}\Z")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True, order=True)
class Reference:
    """A parsed reference; `str()` keeps both tag and digest when both were given."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository, with its registry: `docker.io/library/python`."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def tagged(self) -> str:
        """`name:tag` without the digest: what a pinned reference says it follows."""
        return f"{self.name}:{self.tag}" if self.tag is not None else self.name

    @property
    def docker_ref(self) -> str:
        """ParseDockerRef's form: the digest decides, so a tag beside it is dropped."""
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return str(self)

    @property
    def familiar(self) -> str:
        """The short form people write: `python:3.12`, `user/app`, `ghcr.io/o/i:1`."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            if path.startswith(OFFICIAL_PREFIX) and path.count("/") == 1:
                path = path[len(OFFICIAL_PREFIX) :]
            out = path
        else:
            out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _split_domain(name: str) -> tuple[str, str]:
    slash = name.find("/")
    first = name[:slash]
    if slash == -1 or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[slash + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """ParseNormalizedNamed: add the default registry and `library/`, never a tag."""
    if _IDENTIFIER_RE.match(text):
        raise InvalidReference(text, "cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_domain(text)
    colon = remainder.find(":")
    remote = remainder[:colon] if colon > -1 else remainder
    if remote.lower() != remote:
        raise InvalidReference(text, "repository name must be lowercase")
    full = f"{domain}/{remainder}"
    match = _REFERENCE_RE.match(full)
    if match is None:
        if not text:
            raise InvalidReference(text, "repository name must have at least one component")
        raise InvalidReference(text, "invalid reference format")
    name, tag, digest = match.groups()
    if len(name) > MAX_NAME:
        raise InvalidReference(text, f"repository name must not be more than {MAX_NAME} characters")
    if digest is not None:
        algorithm, _, hexpart = digest.partition(":")
        want = _DIGEST_LENGTHS.get(algorithm)
        if want is None:
            raise InvalidReference(text, f"unsupported digest algorithm {algorithm!r}")
        if len(hexpart) != want:
            raise InvalidReference(text, "invalid checksum digest length")
    domain, _, path = name.partition("/")
    return Reference(domain, path, tag, digest)


def normalize(text: str) -> Reference:
    """ParseNormalizedNamed + TagNameOnly: `latest` only when neither tag nor digest."""
    ref = parse(text)
    if ref.tag is None and ref.digest is None:
        return Reference(ref.domain, ref.path, "latest", None)
    return ref


def repository(text: str) -> str:
    """A repository name as repos.yaml `image:` gives it: no tag and no digest."""
    ref = parse(text)
    if ref.tag is not None or ref.digest is not None:
        raise InvalidReference(text, "give the repository only; tags go in `tags:`")
    return ref.name


def upstream(ref: str, mirrors: Mapping[str, str]) -> str:
    """The reference a mirrored one stands for (`myacr.azurecr.io/mirror/library/python:3.12`
    -> `docker.io/library/python:3.12`), normalised; any other reference as it is. The
    longest mirror prefix wins, so nested mirrors do not depend on their order."""
    for source, target in sorted(mirrors.items(), key=lambda m: -len(m[1])):
        if ref.startswith(target + "/"):
            return _normal(source + ref[len(target) :])
    return ref


def mirrored(ref: str, mirrors: Mapping[str, str]) -> str | None:
    """Where the mirror keeps an upstream reference, or None when its registry is not mirrored."""
    for source, target in sorted(mirrors.items(), key=lambda m: -len(m[0])):
        if ref.startswith(source + "/"):
            return target + ref[len(source) :]
    return None


def _normal(text: str) -> str:
    try:
        return str(parse(text))
    except InvalidReference:
        return text
