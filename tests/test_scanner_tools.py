"""The vulnerability tests' own tooling, proven on real parts: a base made by buildah with a
package database in its layer, a child that installs a package from the loopback package
server in its RUN layer, and tests/scanner.py reading both back from the real registry in
Trivy's and Grype's formats, which graphbuild's report reader reads and its scan gate judges."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from graphbuild.config import GateSpec
from graphbuild.gates import Finding, check, findings, placeholders
from graphbuild.state import GateStatus

from .oci import OCI_MANIFEST
from .packages import (
    PackageServer,
    build_image,
    make_base,
    package_tar,
    scanner_argv,
    write_advisories,
)
from .scanner import DB, _apply, _layer_files, version_key
from .site import require

pytestmark = pytest.mark.timeout(600)

ADVISORIES = [
    {"id": "CVE-2026-0001", "package": "openssl", "severity": "high", "fixed": "1.1"},
    {"id": "CVE-2026-0002", "package": "zlib", "severity": "medium", "fixed": ""},
    {"id": "CVE-2026-0003", "package": "zlib", "severity": "critical", "fixed": "0.9"},
    {"id": "CVE-2026-0004", "package": "curl", "severity": "low", "fixed": "9"},
]


@pytest.fixture
def packages():
    server = PackageServer().start()
    yield server
    server.stop()


def scan(
    fmt: str, image: str, tmp_path: Path, *extra: str, code: int = 0
) -> subprocess.CompletedProcess:
    report = tmp_path / f"report-{fmt}.json"
    report.unlink(missing_ok=True)
    advisories = write_advisories(tmp_path / "advisories.json", ADVISORIES)
    argv = placeholders(scanner_argv(fmt, advisories), image, report)
    argv[2:2] = extra
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    return done


def report_of(fmt: str, tmp_path: Path) -> dict:
    return json.loads((tmp_path / f"report-{fmt}.json").read_text())


def config_of(registry, repo: str, digest: str) -> tuple[dict, dict]:
    """The manifest and config the registry serves, read apart from the scanner."""
    manifest = registry.http.get(
        f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}
    ).json()
    config = registry.http.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}").json()
    return manifest, config


def layer_files(registry, repo: str, blob: str) -> dict[str, bytes]:
    """The regular files of one layer blob."""
    data = registry.http.get(f"/v2/{repo}/blobs/{blob}").content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def layer_of(report: dict, fmt: str, package: str) -> str:
    """The diff id the report attributes `package`'s findings to."""
    if fmt == "trivy":
        (layers,) = {
            v["Layer"]["DiffID"]
            for r in report["Results"]
            for v in r.get("Vulnerabilities", [])
            if v["PkgName"] == package
        }
        return layers
    (layers,) = {
        loc["layerID"]
        for m in report["matches"]
        if m["artifact"]["name"] == package
        for loc in m["artifact"]["locations"]
    }
    return layers


def test_versions_compare_by_numeric_parts_then_release():
    assert version_key("1.0") < version_key("1.1") < version_key("1.10") < version_key("2")
    assert version_key("1.1-r0") < version_key("1.1-r1") < version_key("1.1-r10")
    assert version_key("1.1.1c-r0") < version_key("1.1.1d-r0")


def tar_of(entries: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def test_a_layer_writes_the_database_or_a_whiteout_deletes_it():
    """A written database replaces the one below; a whiteout of the file, of a folder above
    it or an opaque folder deletes it; an opaque folder the same layer writes into keeps
    the new file."""
    db = "lib/apk/db/installed"
    written = _layer_files(tar_of({f"./{db}": "P:a\nV:1\n\n"}), "blob")
    assert _apply("old", written, DB) == "P:a\nV:1\n\n"
    assert _apply("old", _layer_files(tar_of({"etc/x": ""}), "blob"), DB) == "old"
    for whiteout in ("lib/apk/db/.wh.installed", "lib/.wh.apk", "lib/apk/.wh..wh..opq"):
        assert _apply("old", _layer_files(tar_of({whiteout: ""}), "blob"), DB) is None
    both = _layer_files(tar_of({"lib/apk/db/.wh..wh..opq": "", db: "new"}), "blob")
    assert _apply("old", both, DB) == "new"


def test_a_package_tar_holds_its_version():
    with tarfile.open(fileobj=io.BytesIO(package_tar("openssl", "1.1"))) as tar:
        member = tar.extractfile("usr/share/pkgs/openssl")
        assert member is not None and member.read() == b"1.1\n"


def test_the_scanner_reads_packages_from_real_layers_in_both_formats_and_a_rebuild_fixes(
    registry, packages, tmp_path
):
    """zlib from the base's layer, openssl from the child's RUN layer, each attributed to
    the real diff id; graphbuild's reader reads both formats; a --no-cache rebuild after a
    new package is published installs it, and the scan no longer shows openssl."""
    require("buildah")
    require("busybox")
    packages.publish("openssl", "1.0")
    base = make_base(registry, "external/base:1", {"zlib": "1.0"}, tmp_path, packages.address)
    _, base_config = config_of(registry, "external/base", base)
    (base_layer,) = base_config["rootfs"]["diff_ids"]

    context = tmp_path / "child"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {registry.host}/external/base@{base}\nRUN pkg-install openssl\n"
    )
    child = build_image(registry, "fleet/child:1", context, tmp_path)
    assert packages.downloads["openssl"] == 1
    manifest, config = config_of(registry, "fleet/child", child)
    assert config["rootfs"]["diff_ids"][0] == base_layer
    child_layer = config["rootfs"]["diff_ids"][-1]
    assert child_layer != base_layer
    image = f"{registry.host}/fleet/child:1@{child}"

    for fmt in ("trivy", "grype"):
        scan(fmt, image, tmp_path, "--scanner-version", "9.9.9",
             "--db-built", "2026-12-01T10:00:00+01:00")  # fmt: skip
        report = report_of(fmt, tmp_path)
        assert layer_of(report, fmt, "zlib") == base_layer
        assert layer_of(report, fmt, "openssl") == child_layer
        # zlib 1.0 is not below 0.9, curl is not installed; each finding with its layer
        assert sorted(findings(report), key=lambda f: f.id) == [
            Finding("CVE-2026-0001", "high", "openssl", "1.0", "1.1", _target(fmt, image),
                    child_layer),
            Finding("CVE-2026-0002", "medium", "zlib", "1.0", "", _target(fmt, image),
                    base_layer),
        ]  # fmt: skip
    trivy, grype = report_of("trivy", tmp_path), report_of("grype", tmp_path)
    assert trivy["Trivy"] == {"Version": "9.9.9"}
    assert grype["descriptor"]["version"] == "9.9.9"
    assert grype["descriptor"]["db"]["status"]["built"] == "2026-12-01T09:00:00Z"
    assert trivy["Metadata"]["ImageID"] == manifest["config"]["digest"]
    assert trivy["Metadata"]["DiffIDs"] == config["rootfs"]["diff_ids"]
    assert trivy["Metadata"]["RepoDigests"] == [f"{registry.host}/fleet/child@{child}"]
    openssl = next(v for v in trivy["Results"][0]["Vulnerabilities"] if v["PkgName"] == "openssl")
    assert openssl["Layer"]["Digest"] == manifest["layers"][-1]["digest"]
    target = grype["source"]["target"]
    assert (target["imageID"], target["manifestDigest"]) == (manifest["config"]["digest"], child)
    assert [layer["digest"] for layer in target["layers"]] == config["rootfs"]["diff_ids"]
    unfixed = next(m for m in grype["matches"] if m["vulnerability"]["id"] == "CVE-2026-0002")
    assert unfixed["vulnerability"]["fix"] == {"versions": [], "state": "not-fixed"}

    # graphbuild's own scan gate runs it and judges its reports
    advisories = tmp_path / "advisories.json"
    for fmt in ("trivy", "grype"):
        gate = GateSpec(fmt, "scan", tuple(scanner_argv(fmt, advisories)), fail_on="high")
        result = check(gate, image, tmp_path / "gate.log", threading.Event(),
                       dt.date.today(), tmp_path / "scratch")  # fmt: skip
        assert (result.status, result.summary) == (GateStatus.FAILED, "1 high at or above high")
        assert [f.id for f in result.findings] == ["CVE-2026-0001"]

    # a multi-platform index: its linux/amd64 image is the one scanned
    other = registry.image("fleet/child", "arm", platform="linux/arm64")
    registry.sizes[child] = len(
        registry.http.get(
            f"/v2/fleet/child/manifests/{child}", headers={"Accept": OCI_MANIFEST}
        ).content
    )
    index = registry.index("fleet/child", "multi", {"linux/arm64": other, "linux/amd64": child})
    scan("grype", f"{registry.host}/fleet/child:multi@{index}", tmp_path)
    target = report_of("grype", tmp_path)["source"]["target"]
    assert (target["manifestDigest"], target["repoDigests"]) == (
        child,
        [f"{registry.host}/fleet/child@{index}"],
    )
    assert {f.package for f in findings(report_of("grype", tmp_path))} == {"openssl", "zlib"}

    packages.publish("openssl", "1.1")
    fixed = build_image(registry, "fleet/child:1", context, tmp_path, no_cache=True)
    assert packages.downloads["openssl"] == 2
    assert fixed != child
    manifest, config = config_of(registry, "fleet/child", fixed)
    assert config["rootfs"]["diff_ids"][0] == base_layer
    files = layer_files(registry, "fleet/child", manifest["layers"][-1]["digest"])
    assert files["usr/share/pkgs/openssl"] == b"1.1\n"
    assert b"P:openssl\nV:1.1\n" in files["lib/apk/db/installed"]
    for fmt in ("trivy", "grype"):
        scan(fmt, f"{registry.host}/fleet/child:1@{fixed}", tmp_path)
        assert {f.package for f in findings(report_of(fmt, tmp_path))} == {"zlib"}


def _target(fmt: str, image: str) -> str:
    return f"{image} (alpine 3.20.3)" if fmt == "trivy" else "/lib/apk/db/installed"


def test_an_upgrade_in_a_later_layer_is_attributed_to_that_layer_and_a_whiteout_removes_it(
    registry, packages, tmp_path
):
    """A package the base lists, upgraded by the child, belongs to the child's layer at its
    new version; a child that deletes the database has no packages left."""
    require("buildah")
    packages.publish("zlib", "1.2")
    base = make_base(registry, "external/base:1", {"zlib": "1.0"}, tmp_path, packages.address)
    context = tmp_path / "child"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {registry.host}/external/base@{base}\nARG PKG_SERVER\nRUN pkg-install zlib\n"
    )
    child = build_image(registry, "fleet/up:1", context, tmp_path,
                        "--build-arg", f"PKG_SERVER={packages.address}")  # fmt: skip
    _, config = config_of(registry, "fleet/up", child)
    scan("trivy", f"{registry.host}/fleet/up:1@{child}", tmp_path)
    report = report_of("trivy", tmp_path)
    assert layer_of(report, "trivy", "zlib") == config["rootfs"]["diff_ids"][-1]
    assert {(f.package, f.installed) for f in findings(report)} == {("zlib", "1.2")}

    (context / "Dockerfile").write_text(
        f"FROM {registry.host}/external/base@{base}\nRUN rm /lib/apk/db/installed\n"
    )
    gone = build_image(registry, "fleet/gone:1", context, tmp_path)
    scan("grype", f"{registry.host}/fleet/gone:1@{gone}", tmp_path)
    assert findings(report_of("grype", tmp_path)) == []


def test_the_scanner_fails_with_a_message_when_the_registry_cannot_be_read(tmp_path, registry):
    """A registry that is not there, and an image it does not hold: exit 1, no report."""
    missing = "sha256:" + "0" * 64
    for image in (f"127.0.0.1:9/fleet/app:1@{missing}", f"{registry.host}/fleet/app:1@{missing}"):
        done = scan("trivy", image, tmp_path, code=1)
        assert done.stderr.startswith("scanner: GET http://")
        assert not (tmp_path / "report-trivy.json").exists()


def test_the_scanner_runs_as_its_own_script():
    """graphbuild runs it as `python tests/scanner.py`, with no package around it."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("scanner.py")), "-h"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--advisories" in done.stdout
