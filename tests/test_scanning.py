"""`graphbuild scan` at its edges, run as users run it against a real loopback registry: the
rescan period, ignore entries with an end date, a scanner that fails or writes garbage, a
registry that is down, and a `vulnerabilities:` section that is wrong or missing.

The images are pushed over the registry's API (no buildah): an external base whose one layer
holds an apk database with zlib, and a fleet image built on it whose own second layer adds
openssl; tests/scanner.py reads those databases from the real layers and writes Trivy JSON
against the advisories below. The scanner runs through a wrapper that logs each run, so a
test counts the scans that happened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from graphbuild.state import State

from .packages import database, scanner_argv, write_advisories
from .site import alive, graphbuild

pytestmark = pytest.mark.timeout(300)

OPENSSL = "CVE-2026-1001"  # in the fleet image's own layer, fixed in 1.1: a rebuild fixes it
ZLIB = "CVE-2026-1002"  # in the base's layer, no fix yet
ADVISORIES = [
    {"id": OPENSSL, "package": "openssl", "severity": "high", "fixed": "1.1"},
    {"id": ZLIB, "package": "zlib", "severity": "critical", "fixed": ""},
]


def push(registry, repo: str, tag: str, layers: list[dict[str, str]]) -> str:
    """An image whose layers (base first) hold those files; its manifest digest."""
    return registry.layered(repo, tag, layers)


BASE_LAYER = {"lib/apk/db/installed": database({"zlib": "1.0"}), "etc/alpine-release": "3.20.3\n"}


class Fleet:
    """One repository folder with one image, HOST/fleet/app:1, built on HOST/external/base:1;
    both pushed; a repos.yaml whose `vulnerabilities:` runs the logging scanner."""

    def __init__(self, root: Path, registry, **vulnerabilities) -> None:
        self.root, self.registry, self.host = root, registry, registry.host
        self.runs = root / "scanner-runs"
        self.advisories = write_advisories(root / "advisories.json", ADVISORIES)
        self.base, self.app = f"{self.host}/external/base:1", f"{self.host}/fleet/app:1"
        self.node = self.app
        (root / "fleet/app").mkdir(parents=True)
        (root / "fleet/app/Dockerfile").write_text(f"FROM {self.base}\nRUN pkg-install openssl\n")
        self.base_digest = push(registry, "external/base", "1", [BASE_LAYER])
        self.app_digest = self.push_app("1.0")
        self.vulnerabilities = {"scan": self.scanner(), **vulnerabilities}
        self.write()

    def scanner(self, *argv: str) -> list[str]:
        """`argv` (tests/scanner.py by default) run through a wrapper that logs each run."""
        wrapped = list(argv) or scanner_argv("trivy", self.advisories)
        return ["sh", "-c", 'log="$1"; shift; echo "$1" >> "$log"; shift; exec "$@"', "sh",
                str(self.runs), "{image}", *wrapped]  # fmt: skip

    def push_app(self, openssl: str, note: str = "") -> str:
        own = {"lib/apk/db/installed": database({"zlib": "1.0", "openssl": openssl})}
        if note:  # another digest with the same packages
            own["note"] = note
        self.app_digest = push(self.registry, "fleet/app", "1", [BASE_LAYER, own])
        return self.app_digest

    def write(self, **top) -> None:
        config = {
            "registries": {self.host: {"insecure": True}},
            "repos": [{"name": "fleet", "path": "fleet", "images": [
                {"image": f"{self.host}/fleet/app", "dockerfile": "app/Dockerfile",
                 "tags": ["1"]}]}],
            "vulnerabilities": self.vulnerabilities,
            **top,
        }  # fmt: skip
        (self.root / "repos.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def gb(self, *args: str, code: int | None = 0):
        done = graphbuild(*args, cwd=self.root)
        if code is not None:
            assert done.returncode == code, done.stderr + done.stdout
        assert "Traceback" not in done.stderr
        return done

    def scan(self, *args: str, code: int = 0) -> dict[str, dict]:
        """`scan --json`: each outcome by reference."""
        done = self.gb("scan", "--json", *args, code=code)
        return {o["ref"]: o for o in json.loads(done.stdout)}

    def age(self, by: dt.timedelta) -> None:
        """Time passes: each stored scan is as the same scan that long ago would have left it."""
        with State(self.root / ".graphbuild") as state:
            for scan in state.scans():
                found = [(f.id, f.severity, f.package, f.installed, f.fixed, f.layer)
                         for f in state.findings(scan.digest)]  # fmt: skip
                old = (dt.datetime.fromisoformat(scan.at) - by).isoformat()
                state.record_scan(dataclasses.replace(scan, at=old), found)

    def scanned(self) -> list[str]:
        """The image each scanner run was given, in order."""
        return self.runs.read_text().splitlines() if self.runs.exists() else []

    def vulns(self, *args: str) -> list[dict]:
        return json.loads(self.gb("vulns", "--json", *args).stdout)

    def plan(self, code: int = 0) -> dict[str, dict]:
        """`plan --json`: each step by image."""
        done = self.gb("plan", "--json", code=code)
        return {s["node"]: s for s in json.loads(done.stdout)["steps"]}


@pytest.fixture
def fleet(tmp_path, registry) -> Fleet:
    return Fleet(tmp_path, registry)


def statuses(outcomes: dict[str, dict]) -> dict[str, str]:
    return {ref: o["status"] for ref, o in outcomes.items()}


# ---------------------------------------------------------------- the rescan period


def test_a_digest_scanned_within_the_rescan_period_is_not_scanned_again(fleet):
    """Fresh within `rescan` (the scanner is not run), again with --force, again once the
    period has passed, and at once for a new digest of the same tag."""
    first = fleet.scan()
    assert statuses(first) == {fleet.app: "scanned", fleet.base: "scanned"}
    assert first[fleet.app]["digest"] == fleet.app_digest
    assert first[fleet.app]["findings"] == 2  # openssl (high) and zlib (critical)
    assert sorted(fleet.scanned()) == sorted([f"{fleet.app}@{fleet.app_digest}",
                                              f"{fleet.base}@{fleet.base_digest}"])  # fmt: skip

    again = fleet.scan()
    assert statuses(again) == {fleet.app: "fresh", fleet.base: "fresh"}
    assert again[fleet.app]["digest"] == fleet.app_digest
    assert len(fleet.scanned()) == 2  # the scanner was not run

    forced = fleet.scan("--force")
    assert statuses(forced) == {fleet.app: "scanned", fleet.base: "scanned"}
    assert len(fleet.scanned()) == 4

    fleet.age(dt.timedelta(days=2))
    aged = fleet.scan()
    assert statuses(aged) == {fleet.app: "scanned", fleet.base: "scanned"}
    assert len(fleet.scanned()) == 6

    new = fleet.push_app("1.1")
    moved = fleet.scan()
    assert statuses(moved) == {fleet.app: "scanned", fleet.base: "fresh"}
    assert moved[fleet.app]["digest"] == new
    assert moved[fleet.app]["findings"] == 1  # openssl 1.1 is fixed; zlib is still there
    assert fleet.scanned()[6:] == [f"{fleet.app}@{new}"]


def test_a_scan_of_one_image_finds_its_base_layers_with_no_check_before_it(fleet):
    """`scan IMAGE` in a new workspace (no `check` has seen the base, and the base is not
    scanned with it) still finds which of the image's layers are its base's: zlib, fixed
    upstream but not in the base's digest now, is the base's and waits on upstream; it is no
    reason to rebuild the image, which would not fix it."""
    write_advisories(fleet.advisories, [{**ADVISORIES[1], "fixed": "1.1"}])
    fleet.vulnerabilities["rebuild"] = True
    fleet.write()

    def zlib_waits_on_upstream() -> dict[str, dict]:
        carriers = {v["image"]: v for v in fleet.vulns(ZLIB)}
        app = carriers[fleet.app]
        assert (app["origin"], app["base"], app["fix"]) == (
            "base", fleet.base, f"waiting on upstream {fleet.base}")  # fmt: skip
        assert fleet.plan() == {}
        return carriers

    assert statuses(fleet.scan(fleet.app)) == {fleet.app: "scanned"}
    assert set(zlib_waits_on_upstream()) == {fleet.app}
    assert statuses(fleet.scan()) == {fleet.app: "fresh", fleet.base: "scanned"}
    carriers = zlib_waits_on_upstream()
    assert carriers[fleet.base]["fix"] == f"waiting on upstream {fleet.base}"


# ---------------------------------------------------------------- ignore, until a date


@pytest.mark.parametrize("days", [30, 0, -1])
def test_an_ignore_entry_hides_a_finding_until_its_date(tmp_path, registry, days):
    """An `ignore` entry until a later date keeps the finding out of `vulns` (text and JSON;
    `vulns ID` shows it, saying so) and out of a `vulnerable` rebuild; once its date has
    passed, it is shown and rebuilt for again."""
    until = dt.date.today() + dt.timedelta(days=days)
    entry = {"id": OPENSSL, "until": until.isoformat(), "reason": "test"}
    fleet = Fleet(tmp_path, registry, rebuild=True, ignore=[entry])
    outcomes = fleet.scan()
    assert statuses(outcomes) == {fleet.app: "scanned", fleet.base: "scanned"}
    assert outcomes[fleet.app]["findings"] == (1 if days >= 0 else 2)  # counted: not ignored
    shown = {(v["id"], v["image"]) for v in fleet.vulns()}
    text = fleet.gb("vulns").stdout
    by_id = fleet.vulns(OPENSSL)
    by_ref = {v["id"] for v in fleet.vulns(fleet.app)}
    steps = fleet.plan()
    assert (ZLIB, fleet.app) in shown and ZLIB in text and ZLIB in by_ref  # not ignored
    if days >= 0:  # the entry counts on its last day
        assert (OPENSSL, fleet.app) not in shown
        assert OPENSSL not in text and "openssl" not in text
        assert OPENSSL not in by_ref
        # asked for by its id, it is shown, saying it is ignored and until when
        assert [(v["image"], v["note"]) for v in by_id] == [
            (fleet.app, f"ignored until {until.isoformat()} (test)")
        ]
        assert steps == {}
    else:
        assert (OPENSSL, fleet.app) in shown
        assert OPENSSL in text
        assert [(v["image"], v["origin"], v["fix"]) for v in by_id] == [
            (fleet.app, "own", f"rebuild {fleet.node}")
        ]
        assert OPENSSL in by_ref
        assert steps[fleet.node]["reason"] == "vulnerable"
        assert OPENSSL in steps[fleet.node]["detail"]


# ---------------------------------------------------------------- a scanner that fails


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("echo 'FATAL: unable to initialize the scanner' >&2; exit 3", "exited 3"),
        ('echo "<html>502 Bad Gateway</html>" > "$1"', "report.json is not JSON"),
        ('echo \'{"runs": []}\' > "$1"', "not a Trivy or Grype JSON report"),
        ('echo \'{"Results": [{"Vulnerabilities": "none"}]}\' > "$1"',
         "not a Trivy or Grype JSON report"),
        ('echo $$ >> "$1.pid"; exec sleep 60', "timed out after 1 s"),
    ],
    ids=["exit-3", "not-json", "sarif", "bad-trivy", "hung"],
)  # fmt: skip
def test_a_scanner_that_fails_leaves_the_digest_unscanned(tmp_path, registry, script, why):
    """Whatever the way it fails, `scan` says so on one line per image (naming it and why),
    says `failed` in its JSON, exits 1, stores no scan (the next `scan` runs it again),
    `vulns` shows nothing and no `vulnerable` rebuild is planned. A gate judging the same
    output fails closed: tests/test_gates.py
    test_a_scanner_without_a_readable_report_fails_the_image and
    test_a_scanner_that_times_out_is_retried_then_fails."""
    fleet = Fleet(tmp_path, registry, rebuild=True, timeout=1)
    fleet.vulnerabilities["scan"] = fleet.scanner("sh", "-c", script, "sh", "{report}")
    fleet.write()
    done = fleet.gb("scan", "--json", code=1)
    outcomes = {o["ref"]: o for o in json.loads(done.stdout)}
    assert statuses(outcomes) == {fleet.app: "failed", fleet.base: "failed"}
    for ref, digest in ((fleet.app, fleet.app_digest), (fleet.base, fleet.base_digest)):
        assert outcomes[ref]["digest"] == digest
        assert why in outcomes[ref]["detail"]
        (line,) = [x for x in done.stderr.splitlines() if x.startswith(f"{ref} (")]
        assert why in line and "not scanned" in line
    assert len(fleet.scanned()) == 2
    with State(fleet.root / ".graphbuild") as state:
        assert state.scans() == []
    pids = [int(pid) for file in (fleet.root / ".graphbuild/scans").glob("*/report.json.pid")
            for pid in file.read_text().split()]  # fmt: skip
    assert len(pids) == (2 if "sleep" in script else 0)
    assert not any(alive(pid) for pid in pids)  # a hung scanner is stopped

    text = fleet.gb("scan", code=1)  # tried again, not `fresh`
    assert len(fleet.scanned()) == 4
    assert "failed" in text.stdout and "fresh" not in text.stdout
    assert fleet.vulns() == []
    assert "Nothing is scanned yet" in fleet.gb("vulns").stderr
    assert fleet.plan() == {}


def test_a_scanner_that_fails_on_one_image_still_scans_the_others(fleet):
    """The failure is that image's alone (exit 1); and a scanner that exits 1 with a report,
    as `trivy --exit-code 1` does when it finds something, is judged by its report."""
    script = 'for a; do case "$a" in *external/base*) exit 2;; esac; done; "$@"; exit 1'
    argv = scanner_argv("trivy", fleet.advisories)
    fleet.vulnerabilities["scan"] = fleet.scanner("sh", "-c", script, "sh", *argv)
    fleet.write()
    outcomes = fleet.scan(code=1)
    assert statuses(outcomes) == {fleet.app: "scanned", fleet.base: "failed"}
    assert outcomes[fleet.app]["findings"] == 2
    assert {v["id"] for v in fleet.vulns()} == {OPENSSL, ZLIB}


def test_a_scanner_that_fails_later_rebuilds_nothing_on_what_it_did_not_scan(tmp_path, registry):
    """Findings of a scan older than the rescan period, which the scanner now fails to
    renew, are shown but not rebuilt for; a new digest it failed on shows nothing."""
    fleet = Fleet(tmp_path, registry, rebuild=True)
    fleet.scan()
    assert fleet.plan()[fleet.node]["reason"] == "vulnerable"  # the scan is fresh
    fleet.age(dt.timedelta(days=2))
    fleet.vulnerabilities["scan"] = fleet.scanner("sh", "-c", "exit 3", "sh", "{report}")
    fleet.write()
    assert statuses(fleet.scan(code=1)) == {fleet.app: "failed", fleet.base: "failed"}
    assert {v["id"] for v in fleet.vulns(fleet.app)} == {OPENSSL, ZLIB}  # what is known
    assert fleet.plan() == {}  # but too old to rebuild on

    new = fleet.push_app("1.0", note="same packages, another digest")
    outcomes = fleet.scan(code=1)
    assert (outcomes[fleet.app]["status"], outcomes[fleet.app]["digest"]) == ("failed", new)
    assert fleet.vulns(fleet.app) == []
    assert fleet.plan() == {}


# ---------------------------------------------------------------- a registry that is down


@pytest.mark.parametrize("scanned_before", [False, True])
def test_a_registry_that_is_down_is_named_once_and_nothing_is_scanned(
    tmp_path, registry, scanned_before
):
    """Each reference `unreachable`, the registry named once with what to check (as `check`
    does), exit 1, the scanner not run and no scan written; nothing planned on the images,
    even those a scan before the outage found vulnerable."""
    fleet = Fleet(tmp_path, registry, rebuild=True)
    if scanned_before:
        fleet.scan()
    with State(fleet.root / ".graphbuild") as state:
        before = state.scans()
    runs = len(fleet.scanned())
    registry.stop()
    done = fleet.gb("scan", "--json", code=1)
    outcomes = {o["ref"]: o for o in json.loads(done.stdout)}
    assert statuses(outcomes) == {fleet.app: "unreachable", fleet.base: "unreachable"}
    assert all(o["digest"] is None for o in outcomes.values())
    named = [line for line in done.stderr.splitlines() if "cannot be reached" in line]
    assert len(named) == 1, done.stderr
    assert named[0].startswith(f"Registry {fleet.host} cannot be reached (connection refused)")
    assert "Is it running" in named[0]
    assert len(fleet.scanned()) == runs
    with State(fleet.root / ".graphbuild") as state:
        assert state.scans() == before
    text = fleet.gb("scan", code=1)
    assert text.stdout.count("unreachable") >= 2
    assert fleet.plan(code=1) == {}


# ---------------------------------------------------------------- config errors

_REPOS = "repos:\n  - name: app\n    path: app\n    images: [{image: r.test/app}]\n"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("vulnerabilities:\n  severity: high\n",
         "repos.yaml:5: vulnerabilities.scan: missing: the scanner command to run"),
        ("vulnerabilities:\n  scan: [trivy, image, '{image}']\n",
         "repos.yaml:6: vulnerabilities.scan: must hold {report}"),
        ("vulnerabilities:\n  scan: [trivy, '{report}']\n  severity: urgent\n",
         "repos.yaml:7: vulnerabilities.severity: expected one of unknown, low, medium, high, "
         "critical"),
        ("vulnerabilities:\n  scan: [trivy, '{report}']\n  rescan_period: 10\n",
         "repos.yaml:7: vulnerabilities.rescan_period: unknown key (did you mean 'rescan'?)"),
        ("vulnerabilities:\n  scan: [trivy, '{report}']\n  ignore: [{id: CVE-1, until: soon}]\n",
         "repos.yaml:7: vulnerabilities.ignore[0].until: expected a date, YYYY-MM-DD"),
    ],
    ids=["no-scan", "no-report", "severity", "misspelt", "until"],
)  # fmt: skip
def test_a_wrong_vulnerabilities_section_exits_2_naming_file_line_and_key(
    tmp_path, section, message
):
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "repos.yaml").write_text(_REPOS + section)
    for command in ("scan", "vulns", "sync"):
        done = graphbuild(command, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("section", ["", "vulnerabilities:\n"], ids=["absent", "empty"])
def test_scan_and_vulns_without_a_vulnerabilities_section_say_what_to_add(tmp_path, section):
    """Exit 2 before anything is synced, on one line that says which section and key to add
    and what the scanner's argv must hold."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "repos.yaml").write_text(_REPOS + section)
    for command in (["scan"], ["vulns"], ["vulns", "CVE-2026-1"], ["rebuild", "--cve", "CVE-1"]):
        done = graphbuild(*command, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("graphbuild: repos.yaml: vulnerabilities: missing: add a "
                               "`vulnerabilities:` section"), line  # fmt: skip
        assert "`scan:`" in line and "{image}" in line and "{report}" in line, line
        assert not (tmp_path / ".graphbuild").exists()  # nothing synced


# ---------------------------------------------------------------- digests, platforms, bases


def test_an_index_pushed_again_around_the_same_image_keeps_its_findings(fleet):
    """buildx pushes a new index (another attestation) around an unchanged image manifest:
    the manifest is not scanned again, and its findings are still the tag's."""
    fleet.registry.index("fleet/app", "1", {"linux/amd64": fleet.app_digest})
    fleet.scan()
    again = fleet.registry.index("fleet/app", "1", {"linux/amd64": fleet.app_digest},
                                 attestation=True)  # fmt: skip
    assert fleet.scan()[fleet.app]["status"] == "fresh"
    assert [(v["image"], v["digest"]) for v in fleet.vulns(OPENSSL)] == [
        (fleet.app, fleet.app_digest)]  # fmt: skip
    assert fleet.plan() == {}  # rebuild: false; and with it on:
    fleet.vulnerabilities["rebuild"] = True
    fleet.write()
    fleet.gb("check", "--json")  # what the tag points at now (`again`), as a sweep learns it
    assert again and fleet.plan()[fleet.node]["reason"] == "vulnerable"


def test_an_image_for_one_other_platform_finds_its_base_layers(fleet):
    """`platforms: [linux/arm64]` pushes one manifest, not an index, on a multi-platform base:
    its base's layers are those of the base's arm64 image, as the image's config says."""
    amd = {**BASE_LAYER, "arch": "amd64"}
    arm = {**BASE_LAYER, "arch": "arm64"}
    children = {p: fleet.registry.layered("external/base", None, [layer], p)
                for p, layer in (("linux/amd64", amd), ("linux/arm64", arm))}  # fmt: skip
    fleet.registry.index("external/base", "1", children)
    own = {"lib/apk/db/installed": database({"zlib": "1.0", "openssl": "1.0"})}
    fleet.registry.layered("fleet/app", "1", [arm, own], "linux/arm64")
    fleet.write()
    config = yaml.safe_load((fleet.root / "repos.yaml").read_text())
    config["repos"][0]["images"][0]["platforms"] = ["linux/arm64"]
    (fleet.root / "repos.yaml").write_text(yaml.safe_dump(config))
    fleet.scan()
    found = {v["id"]: (v["origin"], v["fix"]) for v in fleet.vulns(fleet.app)}
    assert found == {OPENSSL: ("own", f"rebuild {fleet.node}"),
                     ZLIB: ("base", "none")}  # fmt: skip


def test_a_multi_platform_child_of_a_single_manifest_parent_is_fixed_by_the_parent(fleet):
    h = fleet.host
    parent_own = {"lib/apk/db/installed": database({"zlib": "1.0", "openssl": "1.0"})}
    fleet.registry.layered("fleet/parent", "1", [BASE_LAYER, parent_own])
    child = fleet.registry.layered("fleet/child", None, [BASE_LAYER, parent_own, {"c": "c"}])
    fleet.registry.index("fleet/child", "1", {"linux/amd64": child})
    for name, text in (("parent", f"FROM {fleet.base}\nRUN x\n"),
                       ("child", f"FROM {h}/fleet/parent:1\nCOPY c /c\n")):  # fmt: skip
        (fleet.root / "fleet" / name).mkdir()
        (fleet.root / "fleet" / name / "Dockerfile").write_text(text)
    config = yaml.safe_load((fleet.root / "repos.yaml").read_text())
    config["repos"][0]["images"] += [
        {"image": f"{h}/fleet/parent", "dockerfile": "parent/Dockerfile", "tags": ["1"]},
        {"image": f"{h}/fleet/child", "dockerfile": "child/Dockerfile", "tags": ["1"],
         "platforms": ["linux/amd64"]}]  # fmt: skip
    (fleet.root / "repos.yaml").write_text(yaml.safe_dump(config))
    fleet.scan()
    fixes = {v["image"]: (v["origin"], v["fix"]) for v in fleet.vulns(OPENSSL)}
    assert fixes[f"{h}/fleet/child:1"] == ("base", f"rebuild {h}/fleet/parent:1")


def test_an_image_whose_base_left_the_graph_since_its_scan_stops_nothing(fleet):
    """Scanned while built FROM external/base:1, its Dockerfile now names another base and the
    registry still serves the scanned digest: the inherited finding is not judged by a base
    the graph no longer has, and every command still answers."""
    write_advisories(fleet.advisories, [ADVISORIES[0], {**ADVISORIES[1], "fixed": "1.1"}])
    fleet.vulnerabilities["rebuild"] = True
    fleet.write()
    fleet.scan()
    push(fleet.registry, "external/other", "1", [BASE_LAYER])
    (fleet.root / "fleet/app/Dockerfile").write_text(
        f"FROM {fleet.host}/external/other:1\nRUN pkg-install openssl\n")  # fmt: skip
    fleet.gb("sync")
    (zlib,) = [v for v in fleet.vulns(ZLIB) if v["image"] == fleet.app]
    assert (zlib["origin"], zlib["fix"]) == ("base", "none")
    assert "no longer in the graph" in zlib["note"]
    # its own layer's openssl is still a rebuild's to fix
    assert fleet.plan()[fleet.node]["reason"] == "vulnerable"
    fleet.gb("sweep", "--dry-run", code=None)


def test_an_image_with_no_layers_is_scanned(fleet):
    fleet.registry.layered("fleet/app", "1", [])
    assert fleet.scan()[fleet.app]["status"] == "scanned"


def test_a_stop_while_a_sweep_scans_stops_the_sweep(tmp_path, registry):
    """SIGTERM (a CronJob's deadline, an eviction) while the scanner runs: the sweep ends
    there, interrupted; it neither plans nor builds."""
    fleet = Fleet(tmp_path, registry, rebuild=True, timeout=120)
    started, built = tmp_path / "scanner-started", tmp_path / "builder-ran"
    fleet.vulnerabilities["scan"] = ["sh", "-c", f"touch {started}; sleep 60", "sh", "{report}"]
    (tmp_path / "fleet/new").mkdir()
    (tmp_path / "fleet/new/Dockerfile").write_text(f"FROM {fleet.base}\n")
    fleet.write(builder={"kind": "command", "argv": ["sh", "-c", f"touch {built}", "{context}"]})
    config = yaml.safe_load((tmp_path / "repos.yaml").read_text())
    config["repos"][0]["images"].append(
        {"image": f"{fleet.host}/fleet/new", "dockerfile": "new/Dockerfile", "tags": ["1"]}
    )
    (tmp_path / "repos.yaml").write_text(yaml.safe_dump(config))
    sweep = subprocess.Popen([sys.executable, "-m", "graphbuild", "sweep", "--yes"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    assert "Interrupted while scanning" in err and "Traceback" not in err, err
    assert not built.exists()
