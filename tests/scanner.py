"""A vulnerability scanner for tests: Trivy- or Grype-format JSON from an image's real layers.

No real scanner can be installed where the tests run, so this one does the part graphbuild
depends on, for real: it pulls the image by digest from a plain-http registry, reads the
Alpine package database `lib/apk/db/installed` as each layer leaves it (a layer that writes
the file replaces it; an OCI whiteout deletes it), attributes each (package, version) to
the first layer whose database holds it with that version (as Trivy's applier does), and
judges the packages against an advisory file the test writes:

    [{"id": "CVE-1", "package": "openssl", "severity": "high", "fixed": "1.1"}, ...]

`fixed` "" means no fix exists (always affected); an optional `introduced` version bounds
it from below. Versions compare by numeric dot parts, then the `-rN` release.

    scanner.py --format trivy|grype --advisories FILE IMAGE REPORT

IMAGE is `host/name:tag@sha256:...` (or `host/name@sha256:...`), as graphbuild fills {image}.
Exit 0 with the report written; 1 with a message on stderr when the registry, the image or
the advisory file cannot be read.

The report's field names and shapes were checked against the projects' source:
- Trivy v0.74.0-6-gdc3c56eed5 (commit dc3c56eed58ab21c7e08d26757c517bc946a86c5):
  pkg/types/report.go (Report, TrivyInfo, Metadata, Result), pkg/types/vulnerability.go
  (DetectedVulnerability), pkg/fanal/types/artifact.go (Layer, OS) and the snapshot
  integration/testdata/alpine-310.json.golden.
- Grype v0.116.0-10-g4562c55c (commit 4562c55cebba5fe50a0c5afc7cec50a3b2392a87):
  grype/presenter/models/{document,match,package,source,descriptor,vulnerability,
  vulnerability_metadata,distribution}.go, grype/match/results.go (searchedBy/found),
  grype/vulnerability/{fix,provider}.go (fix states; the db block is cmd/grype/cli/commands/
  root.go dbInfo: {"status": ProviderStatus's MarshalJSON {schemaVersion, from, built, path,
  valid}, "providers"}; v6 schema 6.1.9 from grype/db/v6/db.go),
  and the snapshots grype/presenter/json/testdata/snapshot/TestJsonImgsPresenter.golden and
  grype/presenter/explain/testdata/chainguard-ruby-test.json (an apk match);
  with syft bf82010f3c38508e30dd01ed8053f158513c0c9d (syft/source/image_metadata.go,
  syft/file/{location,coordinates}.go: a location's layerID) and stereoscope
  4d73b6530b145f257c7067ecf475487bbc582c65 (pkg/image/layer_metadata.go: a layer's digest is
  its diff id).
Only fields those projects write are emitted; descriptive ones this scanner has no data for
(CVSS, URLs, descriptions) are left out where they are omitempty and empty where not.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import posixpath
import re
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DB = "lib/apk/db/installed"
RELEASE = "etc/alpine-release"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip
INDEXES = ("application/vnd.oci.image.index.v1+json",
           "application/vnd.docker.distribution.manifest.list.v2+json")  # fmt: skip


class ScanError(Exception):
    """Why there is no report: the message for stderr."""


@dataclass(frozen=True)
class Layer:
    digest: str  # the blob's digest in the manifest
    diff_id: str  # sha256 of the uncompressed tar, as rootfs.diff_ids names it
    size: int  # the blob's size
    media_type: str


@dataclass(frozen=True)
class Image:
    reference: str  # as given
    repository: str  # host/name
    tag: str
    repo_digest: str  # the digest the reference names (an index's, for a multi-platform one)
    manifest_digest: str  # the platform image's manifest
    manifest_media_type: str
    manifest: bytes
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]
    packages: tuple[tuple[str, str, int], ...]  # (name, version, layer index), by name
    release: str  # etc/alpine-release, "" without one


@dataclass(frozen=True)
class Match:
    id: str
    package: str
    version: str
    fixed: str
    severity: str  # lower case
    layer: Layer


# ---------------------------------------------------------------- reading the image


def split_reference(reference: str) -> tuple[str, str, str, str]:
    """host, name, tag, digest of `host/name[:tag][@sha256:...]`."""
    rest, _, digest = reference.partition("@")
    host, _, path = rest.partition("/")
    name, tag = path, ""
    if ":" in path.rsplit("/", 1)[-1]:
        name, tag = path.rsplit(":", 1)
    if not host or not name or not (digest or tag):
        raise ScanError(f"{reference}: not host/name:tag@sha256:... ")
    return host, name, tag, digest


def _get(url: str, accept: str = "") -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read(), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as err:
        raise ScanError(f"GET {url}: HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ScanError(f"GET {url}: {getattr(err, 'reason', err)}") from None


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _verified(data: bytes, digest: str, what: str) -> bytes:
    if _digest(data) != digest:
        raise ScanError(f"{what}: content does not match its digest {digest}")
    return data


def pull(reference: str) -> Image:
    """The image's manifest, config and layers, each checked against its digest, and the
    package database its layers leave."""
    host, name, tag, digest = split_reference(reference)
    base = f"http://{host}/v2/{name}"
    body, headers = _get(f"{base}/manifests/{digest or tag}", ACCEPT)
    if digest:
        _verified(body, digest, f"{reference} manifest")
    manifest_digest = digest or headers.get("docker-content-digest", _digest(body))
    repo_digest = manifest_digest
    manifest = _json(body, f"{reference} manifest")
    media_type = manifest.get("mediaType") or headers.get("content-type", "")
    if media_type in INDEXES:
        child = _platform_child(manifest, reference)
        manifest_digest = child["digest"]
        body, _ = _get(f"{base}/manifests/{manifest_digest}", ACCEPT)
        _verified(body, manifest_digest, f"{reference} platform manifest")
        manifest = _json(body, f"{reference} platform manifest")
        media_type = manifest.get("mediaType") or child.get("mediaType", "")
    try:
        config_digest = manifest["config"]["digest"]
        blobs = [(d["digest"], d["size"], d.get("mediaType", "")) for d in manifest["layers"]]
    except (KeyError, TypeError):
        raise ScanError(f"{reference}: not an image manifest") from None
    config_bytes = _verified(_get(f"{base}/blobs/{config_digest}")[0], config_digest, "config")
    diff_ids = _json(config_bytes, "config").get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(blobs):
        raise ScanError(f"{reference}: {len(blobs)} layers but {len(diff_ids)} diff ids")
    layers, states = [], []
    for (blob, size, kind), diff_id in zip(blobs, diff_ids, strict=True):
        data = _verified(_get(f"{base}/blobs/{blob}")[0], blob, f"layer {blob}")
        tar = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        if _digest(tar) != diff_id:
            raise ScanError(f"layer {blob}: uncompressed sha256 is not its diff id {diff_id}")
        layers.append(Layer(blob, diff_id, size, kind))
        states.append(_layer_files(tar, blob))
    database, release, own = None, "", []  # own: each layer's database if it wrote one
    for written in states:
        database = _apply(database, written, DB)
        release = _apply(release or None, written, RELEASE) or ""
        own.append(_packages(written[DB]) if isinstance(written.get(DB), str) else {})
    packages = []
    for pkg, version in sorted(_packages(database or "").items()):
        first = next(i for i, found in enumerate(own) if found.get(pkg) == version)
        packages.append((pkg, version, first))
    return Image(reference, f"{host}/{name}", tag, repo_digest, manifest_digest, media_type, body,
                 config_digest, config_bytes, tuple(layers), tuple(packages),
                 release.strip())  # fmt: skip


def _json(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise ScanError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ScanError(f"{what} is not a JSON object")
    return value


def _platform_child(index: dict, reference: str) -> dict:
    children = index.get("manifests") or []
    for child in children:
        platform = child.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return child
    if len(children) == 1:
        return children[0]
    raise ScanError(f"{reference}: an index with no linux/amd64 image")


_GONE = object()  # the path was deleted by a whiteout in this layer, and not written again


def _layer_files(tar: bytes, blob: str) -> dict[str, object]:
    """What one layer does to the files the scanner reads: path -> its text, or _GONE."""
    wanted, found = (DB, RELEASE), {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            for member in archive:
                path = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
                folder, leaf = posixpath.split(path)
                for target in wanted:
                    if leaf == ".wh..wh..opq" and target.startswith(folder + "/"):
                        found.setdefault(target, _GONE)  # lower layers' copy is hidden
                    elif leaf.startswith(".wh."):
                        gone = posixpath.join(folder, leaf[4:])
                        if target == gone or target.startswith(gone + "/"):
                            found.setdefault(target, _GONE)
                    elif path == target and member.isfile():
                        data = archive.extractfile(member)
                        found[target] = data.read().decode("utf-8", "replace") if data else ""
    except tarfile.TarError as err:
        raise ScanError(f"layer {blob} is not a tar: {err}") from None
    return found


def _apply(before: str | None, written: dict[str, object], path: str) -> str | None:
    after = written.get(path, before)
    return None if after is _GONE else after  # type: ignore[return-value]


def _packages(text: str) -> dict[str, str]:
    """name -> version of an apk `installed` database (blocks apart by blank lines)."""
    out = {}
    for block in re.split(r"\n\s*\n", text):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line[:2])
        if fields.get("P") and fields.get("V"):
            out[fields["P"]] = fields["V"]
    return out


# ---------------------------------------------------------------- judging


def version_key(version: str) -> tuple:
    """Numeric dot parts (a letter suffix after the number), then the -rN release."""
    main, _, release = version.partition("-r")
    parts = []
    for part in main.split("."):
        number, suffix = re.match(r"(\d*)(.*)", part).groups()  # type: ignore[union-attr]
        parts.append((int(number or 0), suffix))
    return tuple(parts), int(release) if release.isdigit() else 0


def read_advisories(path: Path) -> list[dict[str, str]]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ScanError(f"advisories {path}: {err}") from None
    if not isinstance(entries, list):
        raise ScanError(f"advisories {path}: not a JSON list")
    for entry in entries:
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(k), str) for k in ("id", "package", "severity", "fixed")
        )
        if not ok or not isinstance(entry.get("introduced", ""), str):
            raise ScanError(f"advisories {path}: bad entry {entry!r}")
    return entries


def judge(image: Image, advisories: list[dict[str, str]]) -> list[Match]:
    """Each (advisory, installed package) the advisory affects."""
    matches = []
    for pkg, version, index in image.packages:
        for entry in advisories:
            if entry["package"] != pkg:
                continue
            key, fixed = version_key(version), entry["fixed"]
            if entry.get("introduced") and key < version_key(entry["introduced"]):
                continue
            if not fixed or key < version_key(fixed):
                layer = image.layers[index]
                matches.append(Match(entry["id"], pkg, version, fixed,
                                     entry["severity"].lower(), layer))  # fmt: skip
    return matches


# ---------------------------------------------------------------- writing the reports

_TRIVY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def trivy_report(image: Image, matches: list[Match], version: str) -> dict:
    """Trivy's `--format json` for a container image (pkg/types/report.go)."""
    config = json.loads(image.config)
    release = image.release
    target = f"{image.reference} (alpine {release})" if release else image.reference
    vulns = [
        {
            "VulnerabilityID": m.id,
            "PkgID": f"{m.package}@{m.version}",
            "PkgName": m.package,
            "PkgIdentifier": {"PURL": _purl(m.package, m.version, release)},
            "InstalledVersion": m.version,
            **({"FixedVersion": m.fixed} if m.fixed else {}),
            "Status": "fixed" if m.fixed else "affected",
            "Layer": {"Digest": m.layer.digest, "DiffID": m.layer.diff_id},
            "Severity": m.severity.upper(),
        }
        for m in sorted(matches, key=lambda m: (m.package, m.version,
                                                _TRIVY_RANK.get(m.severity, 4), m.id))
    ]  # fmt: skip
    result = {"Target": target, "Class": "os-pkgs", "Type": "alpine"}
    if vulns:
        result["Vulnerabilities"] = vulns
    metadata = {
        "Size": sum(layer.size for layer in image.layers),
        **({"OS": {"Family": "alpine", "Name": release}} if release else {}),
        "ImageID": image.config_digest,
        "DiffIDs": [layer.diff_id for layer in image.layers],
        **({"RepoTags": [f"{image.repository}:{image.tag}"]} if image.tag else {}),
        "RepoDigests": [f"{image.repository}@{image.repo_digest}"],
        "Reference": image.reference,
        "ImageConfig": config,
        "Layers": [{"Size": layer.size, "Digest": layer.digest, "DiffID": layer.diff_id}
                   for layer in image.layers],
    }  # fmt: skip
    return {
        "SchemaVersion": 2,
        "Trivy": {"Version": version},
        "CreatedAt": _now(),
        "ArtifactName": image.reference,
        "ArtifactType": "container_image",
        "Metadata": metadata,
        "Results": [result],
    }


def grype_report(
    image: Image, matches: list[Match], version: str, db_built: str, source: Path
) -> dict:
    """Grype's `-o json` for an image (grype/presenter/models/document.go); its database is
    the advisory file `source`, built at `db_built` (RFC 3339, as ProviderStatus writes it)."""
    config = json.loads(image.config)
    release = image.release
    minor = ".".join(release.split(".")[:2])
    namespace = f"alpine:distro:alpine:{minor}"
    return {
        "matches": [_grype_match(m, release, namespace) for m in sorted(
            matches, key=lambda m: (m.id, m.package, m.version))],
        "source": {
            "type": "image",
            "target": {
                "userInput": image.reference,
                "imageID": image.config_digest,
                "manifestDigest": image.manifest_digest,
                "mediaType": image.manifest_media_type,
                "tags": [f"{image.repository}:{image.tag}"] if image.tag else [],
                "imageSize": sum(layer.size for layer in image.layers),
                "layers": [{"mediaType": layer.media_type, "digest": layer.diff_id,
                            "size": layer.size} for layer in image.layers],
                "manifest": base64.b64encode(image.manifest).decode(),
                "config": base64.b64encode(image.config).decode(),
                "repoDigests": [f"{image.repository}@{image.repo_digest}"],
                "architecture": config.get("architecture", ""),
                "os": config.get("os", ""),
            },
        },
        "distro": {"name": "alpine", "version": release, "idLike": []} if release else {
            "name": "", "version": "", "idLike": None},
        "descriptor": {
            "name": "grype",
            "version": version,
            "db": {
                "status": {"schemaVersion": "v6.1.9", "from": source.resolve().as_uri(),
                           "built": db_built, "path": str(source.resolve()), "valid": True},
                "providers": {},
            },
            "timestamp": _now(),
        },
    }  # fmt: skip


def _grype_match(m: Match, release: str, namespace: str) -> dict:
    constraint = f"< {m.fixed} (apk)" if m.fixed else "none (apk)"
    return {
        "vulnerability": {
            "id": m.id,
            "dataSource": "",
            "namespace": namespace,
            "severity": m.severity.title(),
            "urls": [],
            "cvss": [],
            "fix": {"versions": [m.fixed] if m.fixed else [],
                    "state": "fixed" if m.fixed else "not-fixed"},
            "advisories": [],
            "risk": 0,
        },
        "relatedVulnerabilities": [],
        "matchDetails": [{
            "type": "exact-direct-match",
            "matcher": "apk-matcher",
            "searchedBy": {
                "distro": {"type": "alpine", "version": release},
                "namespace": namespace,
                "package": {"name": m.package, "version": m.version},
            },
            "found": {"versionConstraint": constraint, "vulnerabilityID": m.id},
            **({"fix": {"suggestedVersion": m.fixed}} if m.fixed else {}),
        }],
        "artifact": {
            "id": hashlib.sha256(f"{m.package}@{m.version}".encode()).hexdigest()[:16],
            "name": m.package,
            "version": m.version,
            "type": "apk",
            "locations": [{"path": f"/{DB}", "layerID": m.layer.diff_id,
                           "accessPath": f"/{DB}", "annotations": {"evidence": "primary"}}],
            "language": "",
            "licenses": [],
            "cpes": [],
            "purl": _purl(m.package, m.version, release),
            "upstreams": [],
        },
    }  # fmt: skip


def _purl(name: str, version: str, release: str) -> str:
    distro = f"&distro=alpine-{release}" if release else ""
    return f"pkg:apk/alpine/{name}@{version}?arch=x86_64{distro}"


def _rfc3339(text: str) -> str:
    """An ISO time as Go's time.RFC3339 writes it in UTC: 2026-01-01T00:00:00Z."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text}") from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("trivy", "grype"), required=True)
    parser.add_argument("--advisories", type=Path, required=True)
    parser.add_argument("--scanner-version", help="Trivy's or Grype's version to write "
                        "(default 0.74.0 for trivy, 0.116.0 for grype)")  # fmt: skip
    parser.add_argument("--db-built", type=_rfc3339, default="2026-01-01T00:00:00Z",
                        help="Grype's descriptor.db.status.built (ISO time)")  # fmt: skip
    parser.add_argument("image")
    parser.add_argument("report", type=Path)
    args = parser.parse_args(argv)
    try:
        advisories = read_advisories(args.advisories)
        image = pull(args.image)
    except ScanError as err:
        print(f"scanner: {err}", file=sys.stderr)
        return 1
    matches = judge(image, advisories)
    if args.format == "trivy":
        report = trivy_report(image, matches, args.scanner_version or "0.74.0")
    else:
        version = args.scanner_version or "0.116.0"
        report = grype_report(image, matches, version, args.db_built, args.advisories)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
