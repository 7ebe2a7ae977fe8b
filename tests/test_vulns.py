"""Vulnerabilities end to end: real images whose packages live in their layers, a real
registry, real buildah rebuilds that fetch packages from a loopback package server, a
scanner reading each image's package database from its layers (tests/scanner.py, Trivy
and Grype JSON with the real layer ids), and a GitOps deploy repository.

The fleet, on an external base (zlib, unfixed upstream; musl, with no fix anywhere):
- platform/parent: FROM the external base, installs libssl in its own layer;
- apps/child: FROM parent (inherits libssl and zlib);
- apps/own: FROM the external base, installs openssl in its own layer;
- apps/plain: FROM the external base, nothing installed (inherits zlib only);
and third/party, run by a workload and built by nobody here (curl).
"""

from __future__ import annotations

import json

import pytest
import yaml

from graphbuild import vulns
from graphbuild.config import load
from graphbuild.state import Scan, State, now
from graphbuild.workloads import Workload

from .oci import layer, sha
from .packages import PackageServer, database, make_base, scanner_argv, write_advisories
from .site import DEPLOYMENT, Runner, by_node, local_build, require

pytestmark = pytest.mark.timeout(900)

ADVISORIES = [
    {"id": "CVE-2026-1001", "package": "libssl", "severity": "high", "fixed": "1.1"},
    {"id": "CVE-2026-1002", "package": "openssl", "severity": "critical", "fixed": "1.1"},
    {"id": "CVE-2026-1003", "package": "zlib", "severity": "high", "fixed": "1.1"},
    {"id": "CVE-2026-1004", "package": "musl", "severity": "high", "fixed": ""},
    {"id": "CVE-2026-1005", "package": "curl", "severity": "high", "fixed": "7.1"},
    {"id": "CVE-2026-1006", "package": "openssl", "severity": "low", "fixed": "1.1"},
]
LIBSSL, OPENSSL, ZLIB, MUSL, CURL, OPENSSL_LOW = (a["id"] for a in ADVISORIES)


class Fleet(Runner):
    def __init__(self, root, registry, remotes, fmt: str) -> None:
        super().__init__(root, registry)
        h = self.host
        self.packages = PackageServer().start()
        for name in ("libssl", "openssl"):
            self.packages.publish(name, "1.0")
        work = root / "images"
        work.mkdir()
        self.ext = f"{h}/ext/base:1"
        self.ext_digest = make_base(registry, "ext/base:1", {"zlib": "1.0", "musl": "1.0"},
                                    work, server=self.packages.address)  # fmt: skip
        self.third = f"{h}/third/party:1"
        make_base(registry, "third/party:1", {"curl": "7.0"}, work)
        self.platform = remotes("platform", {
            "parent/Dockerfile": f"FROM {self.ext}\nRUN pkg-install libssl\n",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "child/Dockerfile": f"FROM {h}/platform/parent:1\nCOPY f /child\n", "child/f": "c",
            "own/Dockerfile": f"FROM {self.ext}\nRUN pkg-install openssl\n",
            "plain/Dockerfile": f"FROM {self.ext}\nCOPY f /plain\n", "plain/f": "p",
        })  # fmt: skip
        self.parent = f"{h}/platform/parent:1"
        self.child, self.own, self.plain = (f"{h}/apps/{n}:1" for n in ("child", "own", "plain"))
        manifests = "---\n".join(
            DEPLOYMENT.format(name=name, image=image)
            for name, image in (("child", self.child), ("own", self.own),
                                ("plain", self.plain), ("party", self.third))
        )  # fmt: skip
        self.deploy = remotes("deploy", {"envs/dev/apps.yaml": manifests})
        self.advisories = write_advisories(root / "advisories.json", ADVISORIES)
        self.config = {
            **local_build(h, root),
            "repos": [
                {"name": "platform", "url": str(self.platform.url), "images": [
                    {"image": f"{h}/platform/parent", "dockerfile": "parent/Dockerfile",
                     "tags": ["1"]}]},
                {"name": "apps", "url": str(self.apps.url), "images": [
                    {"image": f"{h}/apps/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]}]},
            ],
            "vulnerabilities": {"scan": scanner_argv(fmt, self.advisories), "rebuild": True},
            "deployments": {
                "rings": [{"name": "dev"}],
                "repos": [{"name": "deploy", "url": str(self.deploy.url),
                           "rings": {"dev": ["envs/**"]}}],
            },
        }  # fmt: skip
        self.write_config()

    def json(self, *args: str, code: int = 0) -> object:
        done = self.gb(*args, "--json")
        assert done.returncode == code, done.stderr + done.stdout
        return json.loads(done.stdout)

    def carriers(self, query: str) -> dict[str, dict]:
        """`vulns QUERY --json` by image."""
        found = self.json("vulns", query)
        assert isinstance(found, list)
        return {c["image"]: c for c in found}


@pytest.fixture
def fleet(tmp_path, registry, remotes, request):
    require("buildah")
    require("git")
    made = Fleet(tmp_path, registry, remotes, getattr(request, "param", "trivy"))
    yield made
    made.packages.stop()


def diff_ids(fleet: Fleet, ref: str) -> list[str]:
    """The image's layers as its config in the registry lists them."""
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    config = fleet.manifest(ref)["config"]["digest"]
    return fleet.registry.http.get(f"/v2/{repo}/blobs/{config}").json()["rootfs"]["diff_ids"]


@pytest.mark.parametrize("fleet", ["trivy", "grype"], indirect=True)
def test_a_cve_is_rebuilt_exactly_where_a_rebuild_fixes_it_and_never_twice_in_vain(fleet):
    first = fleet.run("sweep")  # builds the fleet, scans what it built, deploys to dev
    assert first["status"] == "succeeded", first
    assert {n["reason"] for n in first["nodes"]} == {"missing"}

    # every digest was scanned by the sweep (its bases and the third-party image before the
    # plan, what it built after): a scan now scans nothing again
    outcomes = fleet.json("scan")
    assert {o["ref"]: o["status"] for o in outcomes} == dict.fromkeys(
        [fleet.ext, fleet.third, fleet.parent, fleet.child, fleet.own, fleet.plain,
         f"{fleet.child}@{by_node(first)[fleet.child]['digest']}",
         f"{fleet.own}@{by_node(first)[fleet.own]['digest']}",
         f"{fleet.plain}@{by_node(first)[fleet.plain]['digest']}"], "fresh")  # fmt: skip

    libssl = fleet.carriers(LIBSSL)  # one per image digest, named as the fleet names it
    assert set(libssl) == {fleet.parent, fleet.child}
    parent, child = libssl[fleet.parent], libssl[fleet.child]
    assert (parent["origin"], parent["base"], parent["fix"]) == (
        "own", None, f"rebuild {fleet.parent}")  # fmt: skip
    assert (child["origin"], child["base"], child["fix"]) == (
        "base", fleet.parent, f"rebuild {fleet.parent}")  # fmt: skip
    assert (child["installed"], child["fixed"], child["package"]) == ("1.0", "1.1", "libssl")
    assert child["digest"] == by_node(first)[fleet.child]["digest"]
    layers = fleet.manifest(fleet.parent)["layers"]
    assert parent["layer"] == child["layer"] == diff_ids(fleet, fleet.parent)[-1]
    assert len(layers) == 2 and parent["workloads"] == []
    assert child["workloads"] == [
        {
            "ring": "dev",
            "name": "Deployment//child (child)",
            "where": child["workloads"][0]["where"],
        }
    ]

    zlib = fleet.carriers(ZLIB)
    assert {image: (c["origin"], c["fix"]) for image, c in zlib.items()} == {
        fleet.ext: ("own", f"waiting on upstream {fleet.ext}"),
        fleet.parent: ("base", f"waiting on upstream {fleet.ext}"),
        fleet.child: ("base", f"waiting on upstream {fleet.ext}"),
        fleet.own: ("base", f"waiting on upstream {fleet.ext}"),
        fleet.plain: ("base", f"waiting on upstream {fleet.ext}"),
    }  # fmt: skip
    assert {c["fix"] for c in fleet.carriers(MUSL).values()} == {"none"}
    curl = fleet.carriers(CURL)
    assert list(curl) == [fleet.third]
    assert curl[fleet.third]["fix"] == f"waiting on upstream {fleet.third}"
    assert [w["name"] for w in curl[fleet.third]["workloads"]] == ["Deployment//party (party)"]

    # the fixes reach the package server: the plan rebuilds the parent (and its child) and
    # the image that installs openssl itself, and nothing that only waits on upstream
    for name in ("libssl", "openssl"):
        fleet.packages.publish(name, "1.1")
    planned = fleet.json("plan")
    assert {(s["node"], s["reason"]) for s in planned["steps"]} == {
        (fleet.parent, "vulnerable"), (fleet.child, "parent-rebuilt"), (fleet.own, "vulnerable"),
    }  # fmt: skip
    own_step = next(s for s in planned["steps"] if s["node"] == fleet.own)
    assert f"{OPENSSL} (critical): openssl 1.0 → 1.1 in its own layer sha256:" in own_step["detail"]
    assert OPENSSL_LOW not in own_step["detail"]  # below the configured severity (high)

    second = fleet.run("sweep")
    assert second["status"] == "succeeded", second
    assert {(n["node"], n["reason"], n["status"]) for n in second["nodes"]} == {
        (fleet.parent, "vulnerable", "succeeded"), (fleet.child, "parent-rebuilt", "succeeded"),
        (fleet.own, "vulnerable", "succeeded"),
    }  # fmt: skip
    assert fleet.packages.downloads["openssl"] == 2 and fleet.packages.downloads["libssl"] == 2
    # the exposure of both ended with this deploy, and the report says for how long
    assert sorted(e["id"] for e in second["exposures"]) == [LIBSSL, OPENSSL]
    assert all(e["seconds"] > 0 for e in second["exposures"])
    # the rebuilt images are clean of what the rebuild fixed; once a sync reads the deploy
    # repository the deploy pushed to, the old digests no longer run anywhere either
    assert fleet.gb("sync").returncode == 0
    assert fleet.carriers(LIBSSL) == {} and fleet.carriers(OPENSSL) == {}
    bad = fleet.gb("vulns", "--severity", "severe")
    assert bad.returncode == 2 and "--severity severe: expected one of unknown, low" in bad.stderr
    shown = fleet.gb("vulns", OPENSSL).stdout
    assert "No image carries CVE-2026-1002 in its last scan." in shown
    assert f"(by run {second['id']}): " in shown  # the exposure window, ended by that deploy
    assert set(fleet.carriers(fleet.own)) == {fleet.own}  # zlib and musl, from the base
    with State(fleet.root / ".graphbuild") as state:
        assert {(a.node, a.id, a.status) for a in state.fix_attempts()} == {
            (fleet.parent, LIBSSL, "fixed"), (fleet.own, OPENSSL, "fixed"),
        }  # fmt: skip
    assert fleet.json("plan")["steps"] == []

    # an advisory whose fixed version no package server has: rebuilt once, in vain, then not
    write_advisories(
        fleet.advisories,
        [
            *ADVISORIES,
            {"id": "CVE-2026-1007", "package": "openssl", "severity": "high", "fixed": "1.2"},
        ],
    )
    fleet.gb("scan", "--force")
    assert [(s["node"], s["reason"]) for s in fleet.json("plan")["steps"]] == [
        (fleet.own, "vulnerable")
    ]
    third = fleet.run("sweep")
    assert [(n["node"], n["status"]) for n in third["nodes"]] == [(fleet.own, "succeeded")]
    own = fleet.carriers("CVE-2026-1007")[fleet.own]
    assert (own["origin"], own["fix"]) == ("own", "none")
    assert own["note"] == "rebuild did not fix CVE-2026-1007 (openssl still at 1.1)"
    assert fleet.json("plan")["steps"] == []
    # until the scanner (its version or database) changes: then it may be worth a try
    fleet.config["vulnerabilities"]["scan"] += ["--scanner-version", "9.9.9"]
    fleet.write_config()
    assert fleet.gb("scan", "--force").returncode == 0
    assert [(s["node"], s["reason"]) for s in fleet.json("plan")["steps"]] == [
        (fleet.own, "vulnerable")
    ]


def test_rebuild_cve_rebuilds_the_images_whose_own_layers_carry_it_and_what_is_built_on_them(
    fleet,
):
    assert fleet.run("sweep")["status"] == "succeeded"
    fleet.config["vulnerabilities"]["rebuild"] = False  # monitoring only: on-call decides
    fleet.write_config()
    assert fleet.json("plan")["steps"] == []
    for name in ("libssl", "openssl"):
        fleet.packages.publish(name, "1.1")
    run = fleet.run("rebuild", "--cve", LIBSSL)
    assert run["reason"] == LIBSSL
    assert [(n["node"], n["reason"]) for n in run["nodes"]] == [
        (fleet.parent, "vulnerable"), (fleet.child, "parent-rebuilt")]  # fmt: skip
    # named by on-call, a CVE below the configured severity (low) is rebuilt for too
    run = fleet.run("rebuild", "--cve", OPENSSL_LOW)
    assert [(n["node"], n["reason"]) for n in run["nodes"]] == [(fleet.own, "vulnerable")]
    # inherited from a base nobody here builds: no rebuild can fix it
    done = fleet.gb("rebuild", "--cve", ZLIB, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["nodes"] == [], done.stderr
    assert f"No image's own layers carry a fixable {ZLIB}" in done.stderr

    # the external base moves to a digest without zlib's finding: what inherits it from
    # there is fixed by the rebuild the check already plans (base-changed), not waiting
    make_base(fleet.registry, "ext/base:1", {"zlib": "1.1", "musl": "1.0"},
              fleet.root / "images", server=fleet.packages.address)  # fmt: skip
    assert fleet.gb("scan").returncode == 0
    zlib = fleet.carriers(ZLIB)
    assert fleet.ext not in zlib  # its new digest is clean
    assert (zlib[fleet.plain]["origin"], zlib[fleet.plain]["fix"]) == (
        "base", f"rebuild {fleet.plain}")  # fmt: skip
    # the child inherits it through its parent, whose rebuild (on the moved base) fixes it
    child = zlib[fleet.child]
    assert (child["origin"], child["fix"]) == ("base", f"rebuild {fleet.parent}")
    planned = {s["node"]: s["reason"] for s in fleet.json("plan")["steps"]}
    assert planned[fleet.plain] == planned[fleet.own] == "base-changed"


def diff_id(files: dict[str, str]) -> str:
    return sha(layer(files)[1])


def test_each_platform_is_scanned_and_its_findings_attributed_on_its_own(
    tmp_path, registry, remotes
):
    """A multi-platform image on a multi-platform base: the arm64 base already has zlib's
    fix, the amd64 one not; the image installs openssl, fixed on arm64 only."""
    require("git")
    h = registry.host
    release = {"etc/alpine-release": "3.20.3\n"}
    base = {p: {**release, "lib/apk/db/installed": database({"zlib": v})}
            for p, v in (("linux/amd64", "1.0"), ("linux/arm64", "1.1"))}  # fmt: skip
    versions = (("linux/amd64", "1.0", "1.0"), ("linux/arm64", "1.1", "1.1"))
    own = {p: {"lib/apk/db/installed": database({"zlib": z, "openssl": o})}
           for p, z, o in versions}  # fmt: skip
    registry.index("ext/multi", "1", {p: registry.layered("ext/multi", None, [base[p]], p)
                                      for p in base})  # fmt: skip
    registry.index("apps/multi", "1", {p: registry.layered("apps/multi", None, [base[p], own[p]], p)
                                       for p in own})  # fmt: skip
    apps = remotes("apps", {"Dockerfile": f"FROM {h}/ext/multi:1\nRUN pkg-install openssl\n"})
    advisories = write_advisories(tmp_path / "advisories.json", ADVISORIES)
    runner = Runner(tmp_path, registry)
    runner.config = {
        "registries": {h: {"insecure": True}},
        "repos": [{"name": "apps", "url": str(apps.url), "images": [
            {"image": f"{h}/apps/multi", "dockerfile": "Dockerfile", "tags": ["1"],
             "platforms": ["linux/amd64", "linux/arm64"]}]}],
        "vulnerabilities": {"scan": scanner_argv("trivy", advisories)},
    }  # fmt: skip
    runner.write_config()
    scanned = json.loads(runner.gb("scan", "--json").stdout)
    assert sorted((o["ref"], o["platform"], o["status"]) for o in scanned) == [
        (f"{h}/apps/multi:1", "linux/amd64", "scanned"),
        (f"{h}/apps/multi:1", "linux/arm64", "scanned"),
        (f"{h}/ext/multi:1", "linux/amd64", "scanned"),
        (f"{h}/ext/multi:1", "linux/arm64", "scanned"),
    ]
    image = f"{h}/apps/multi:1"
    found = json.loads(runner.gb("vulns", image, "--json").stdout)
    assert sorted((c["id"], c["platform"], c["origin"], c["layer"], c["fix"]) for c in found) == [
        (OPENSSL, "linux/amd64", "own", diff_id(own["linux/amd64"]), f"rebuild {image}"),
        (ZLIB, "linux/amd64", "base", diff_id(base["linux/amd64"]),
         f"waiting on upstream {h}/ext/multi:1"),
    ]  # fmt: skip


def test_an_exposure_opens_again_when_a_rollback_brings_the_vulnerable_digest_back(tmp_path):
    """Windows are kept in state.db: the one a deploy closed stays closed, and a rollback to
    the digest that carries it opens a new one, from then."""
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    layer_ = "sha256:" + "1" * 64
    (tmp_path / "repos.yaml").write_text(yaml.safe_dump({
        "repos": [{"name": "r", "path": "."}],
        "vulnerabilities": {"scan": ["scanner", "{report}"]}}))  # fmt: skip
    config = load(tmp_path / "repos.yaml")

    def running(digest: str) -> list[Workload]:
        return [Workload("gitops", "prod", "r.test/app", "1", digest, "app", "deploy:a.yaml:1")]

    with State(tmp_path / ".graphbuild") as state:
        for digest, found in ((old, [("CVE-1", "high", "openssl", "1.0", "1.1", layer_)]),
                              (new, [])):  # fmt: skip
            state.record_scan(Scan(digest, digest, "r.test/app:1", "", now(), "trivy", [layer_]),
                              found)  # fmt: skip
            state.point(digest, digest, "")
        assert vulns.expose(config, state, running(old), "run1") == (["CVE-1"], [])
        assert vulns.expose(config, state, running(new), "run2") == ([], ["CVE-1"])
        assert vulns.expose(config, state, running(old), "run3") == (["CVE-1"], [])
        windows = state.exposures("CVE-1")
    assert [(w.run, w.closed is None) for w in windows] == [("run2", False), (None, True)]
    assert windows[1].opened > windows[0].closed


def test_a_vulnerable_steps_detail_names_each_finding_once_whatever_its_platforms():
    layer_ = "sha256:" + "1" * 64
    platforms = (("sha256:a", "linux/amd64"), ("sha256:b", "linux/arm64"))
    found = [vulns.Carrier("CVE-1", "high", "openssl", "1.0", "1.1", "r.test/app:1", digest,
                           platform, "own", None, layer_, [], "rebuild r.test/app:1")
             for digest, platform in platforms]  # fmt: skip
    assert vulns.reasons(found) == (
        "CVE-1 (high): openssl 1.0 → 1.1 in its own layer sha256:111111111111…"
    )
