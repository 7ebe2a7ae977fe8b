"""Manifest media types, digests, and choosing a platform out of an index.

A tag is resolved with all four manifest types in Accept: without the list
type, a Docker registry answers a multi-arch tag with its amd64 child, whose
digest looks plausible and is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class InvalidManifest(ValueError):
    """The registry sent something that is not a manifest."""


def parse(data: bytes, content_type: str | None, digest: str) -> Manifest:
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise InvalidManifest(f"manifest {digest} is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest(f"manifest {digest} is not a JSON object")
    kind = media_type(content_type) or str(doc.get("mediaType", ""))
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    children: dict[str, str] = {}
    if kind in INDEX_TYPES:
        for entry in doc.get("manifests") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                continue
            key = platform_key(entry.get("platform") or {})
            note = entry.get("annotations") or {}
            if key is None or note.get("vnd.docker.reference.type") == "attestation-manifest":
                continue  # attestations (unknown/unknown) are not images to run
            children.setdefault(key, entry["digest"])
    return Manifest(digest, kind, {str(k): str(v) for k, v in annotations.items()}, children)


def platform_key(platform: dict) -> str | None:
    """`os/arch[/variant]`, or None for an attestation's `unknown/unknown`."""
    if not isinstance(platform, dict):
        return None
    os_name, arch = platform.get("os"), platform.get("architecture")
    if not os_name or not arch or os_name == "unknown" or arch == "unknown":
        return None
    variant = platform.get("variant")
    return f"{os_name}/{arch}/{variant}" if variant else f"{os_name}/{arch}"


def pick(children: dict[str, str], wanted: str) -> str | None:
    """The child digest for `wanted` (os/arch[/variant]); arm64 is arm64/v8 too."""
    if wanted in children:
        return children[wanted]
    parts = wanted.split("/")
    if len(parts) == 2:  # no variant asked: any variant of that os/arch, the default first
        default = {"arm64": "v8", "arm": "v7"}.get(parts[1])
        if default and f"{wanted}/{default}" in children:
            return children[f"{wanted}/{default}"]
        for key, digest in children.items():
            if key.startswith(wanted + "/"):
                return digest
    elif len(parts) == 3 and parts[1] == "arm64" and parts[2] == "v8":
        return children.get("/".join(parts[:2]))
    return None
