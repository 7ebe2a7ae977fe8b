"""Manifest media types, digests, and choosing a platform out of an index.

A tag is resolved with all four manifest types in Accept: without the list
type, a Docker registry answers a multi-arch tag with its amd64 child, whose
digest looks plausible and is wrong. Everything here reads registry answers,
which are input: every field is type-checked, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field

from graphbuild import platforms

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
KNOWN_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
MAX_SIZE = 4 * 1024 * 1024  # distribution refuses manifests above 4 MiB; so do we

BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class InvalidManifest(ValueError):
    """The registry sent something that is not a manifest."""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> bool:
    """A sha256 digest, the only kind graphbuild follows (it also goes into URL paths)."""
    return isinstance(value, str) and bool(_DIGEST_RE.match(value))


def media_type(content_type: str | None) -> str:
    """The bare media type: parameters on Content-Type are ignored."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Manifest:
    """One manifest as the registry sent it: its digest, type, annotations, children."""

    digest: str
    media_type: str
    annotations: dict[str, str] = field(default_factory=dict)
    children: dict[str, str] = field(default_factory=dict)  # platform -> digest (indexes)
    config: str = ""  # an image manifest's config blob: its layers' diff ids are there


def parse(data: bytes, content_type: str | None, digest: str) -> Manifest:
    """The manifest in `data`: a known type, schema version 2, an index with its list of
    manifests or an image manifest with its config; anything else is InvalidManifest."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InvalidManifest(f"manifest {digest} is not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidManifest(f"manifest {digest} is not a JSON object")
    kind = media_type(content_type)
    if kind not in KNOWN_TYPES:  # e.g. served as application/json: trust the body's own type
        kind = str(doc.get("mediaType") or "")
    annotations = _strings(doc.get("annotations"))
    children: dict[str, str] = {}
    if kind in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidManifest(f"index {digest} has no list of manifests")
        for entry in entries:
            if not isinstance(entry, dict) or not is_digest(entry.get("digest")):
                continue
            key = platform_key(entry.get("platform"))
            if (
                key is None
                or _strings(entry.get("annotations")).get("vnd.docker.reference.type")
                == "attestation-manifest"
            ):
                continue  # attestations (unknown/unknown) are not images to run
            children.setdefault(key, entry["digest"])
    elif kind not in KNOWN_TYPES:
        raise InvalidManifest(f"manifest {digest} has an unknown media type {kind[:100]!r}")
    elif not isinstance(config := doc.get("config"), dict) or not isinstance(
        config.get("digest"), str
    ):
        raise InvalidManifest(f"manifest {digest} has no config: not an image manifest")
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise InvalidManifest(f"manifest {digest} is not of schema version 2")
    config_digest = "" if kind in INDEX_TYPES else doc["config"]["digest"]
    if config_digest and not is_digest(config_digest):  # it goes into a blob URL's path
        raise InvalidManifest(f"manifest {digest} names a config that is not a sha256 digest")
    return Manifest(digest, kind, annotations, children, config_digest)


def diff_ids(data: bytes, digest: str) -> tuple[str, list[str]]:
    """The platform (`os/arch[/variant]`) and `rootfs.diff_ids` of an image config: each
    layer's uncompressed digest, base layers first, the ids scanners name a layer by."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InvalidManifest(f"config {digest} is not JSON ({err})") from None
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(is_digest(i) for i in ids):
        raise InvalidManifest(f"config {digest} has no list of sha256 rootfs.diff_ids")
    return platform_key(doc) or "", ids


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def platform_key(platform: object) -> str | None:
    """`os/arch[/variant]`, or None for an attestation's `unknown/unknown`."""
    if not isinstance(platform, dict):
        return None
    os_name, arch, variant = (platform.get(k) for k in ("os", "architecture", "variant"))
    if not isinstance(os_name, str) or not isinstance(arch, str) or "unknown" in (os_name, arch):
        return None
    if not os_name or not arch:
        return None
    return (
        f"{os_name}/{arch}/{variant}"
        if isinstance(variant, str) and variant
        else f"{os_name}/{arch}"
    )


def pick(children: dict[str, str], wanted: str) -> str | None:
    """The child digest for `wanted` (os/arch[/variant]), both sides read as containerd
    reads a platform: `linux/arm` is `linux/arm/v7`, `linux/arm64/v8` is `linux/arm64`.
    With no variant asked, any variant of that os/arch, the normalised default first."""
    if wanted in children:
        return children[wanted]
    try:
        want = platforms.parse(wanted)
    except ValueError:
        return None
    normal: dict[platforms.Platform, str] = {}
    for key, digest in children.items():
        with contextlib.suppress(ValueError):  # a child no builder could ask for
            normal.setdefault(platforms.parse(key), digest)
    if want in normal:
        return normal[want]
    if not want.variant:
        for platform, digest in normal.items():
            if (platform.os, platform.arch) == (want.os, want.arch):
                return digest
    return None
