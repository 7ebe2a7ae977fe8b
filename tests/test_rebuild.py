"""The runbook's on-call path end to end (docs/runbook.md): `rebuild`, `runs`, `resume`, with
real buildah builds pushed to the loopback registry, on the fleet of tests/site.py."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from graphbuild.state import State

from .site import Runner, Site, by_node, outcomes, require

pytestmark = pytest.mark.timeout(600)

CVE = "CVE-2026-1234: openssl"


@pytest.fixture
def site(tmp_path, registry, remotes):
    require("buildah")
    require("git")
    return Site(tmp_path, registry, remotes)


def builds_of(site: Site, node: str) -> list[str]:
    """The runs of graphbuild's build records of `node`, oldest first."""
    state = site.root / ".graphbuild" / "state.db"
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT run_id FROM builds WHERE image = ? ORDER BY id", (node,))
        return [row[0] for row in rows]


def buds(log: str) -> list[list[str]]:
    """The argv of every `buildah bud` a build log records (process.run writes each)."""
    lines = Path(log).read_text().splitlines()
    return [line[2:].split() for line in lines if line.startswith("$ buildah ") and " bud " in line]


def rebuild(site: Runner, *args: str, code: int = 0) -> tuple[dict, str]:
    """`graphbuild rebuild ARGS --json`: its run document and what it said on stderr."""
    done = site.gb("rebuild", *args, "--json")
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout), done.stderr


def test_rebuild_rebuilds_what_is_served_runs_shows_it_and_resume_finishes_a_failed_one(site):
    sweep = site.run("sweep")
    swept = by_node(sweep)

    # step 4: the base has not moved and every image's exact build is served: rebuilt anyway,
    # each child on the digest its parent just pushed, with --no-cache given to buildah
    run, said = rebuild(site, site.upstream, "--reason", CVE, "--no-cache")
    assert run["kind"] == "rebuild" and run["reason"] == CVE and run["status"] == "succeeded"
    assert outcomes(run) == dict.fromkeys([site.base, site.mid, site.app], "succeeded")
    assert run["options"]["no_cache"] is True
    for node in run["nodes"]:
        name = node["node"]
        assert (node["reason"], node["detail"]) == ("forced", CVE)
        assert builds_of(site, name) == [sweep["id"], run["id"]]  # a new build record
        manifest = site.manifest(name)  # and it is what the registry serves now
        assert manifest["digest"] == node["digest"] != swept[name]["digest"]
        assert manifest["annotations"]["io.graphbuild.run"] == run["id"]
        assert manifest["annotations"]["io.graphbuild.reason"] == f"forced: {CVE}"
        assert [("--no-cache" in argv) for argv in buds(node["log"])] == [True]
        assert f"building  {name} (attempt 1)" in said.splitlines()
    nodes = by_node(run)
    for child, parent in [(site.mid, site.base), (site.app, site.mid)]:
        notes = site.manifest(child)["annotations"]
        assert notes["org.opencontainers.image.base.digest"] == nodes[parent]["digest"]
    assert builds_of(site, site.solo) == [sweep["id"]]  # not built on it: untouched

    # step 5: runs lists the run with its reason, and shows each image's outcome
    listed = site.gb("runs")
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(run["id"])]
    assert row.split()[1:3] == ["rebuild", "succeeded"] and row.endswith(CVE)
    shown = site.gb("runs", run["id"]).stdout
    assert all(name in shown for name in (site.base, site.mid, site.app))

    # the skip, asked for: what is served is skipped, said to be skipped and why, never built
    quiet, said = rebuild(site, site.upstream, "--skip-served", "--no-downstream", "--reason", CVE)
    assert outcomes(quiet) == {site.base: "skipped", site.app: "skipped"}  # FROM and COPY --from
    assert {n["reason"] for n in quiet["nodes"]} == {"up-to-date"}
    assert quiet["options"]["force"] is False
    assert "building" not in said
    skipped = [line for line in said.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and all("this exact build is served" in s for s in skipped)
    assert builds_of(site, site.base)[-1] == run["id"]
    both = site.gb("rebuild", site.mid, "--force", "--skip-served")
    assert both.returncode == 2 and "--skip-served" in both.stderr

    # step 6: a rebuild that fails blocks what is built on the image; once the fix is merged
    # (here: the very content the served build has), resume rebuilds it and what it blocked.
    # `--force`, the old way to ask for this, is still taken: it is the default
    site.platform.commit({"mid/f": None}, "break mid: COPY f has nothing to copy")
    failed, _ = rebuild(site, site.mid, "--reason", CVE, "--force", "--no-cache", code=1)
    assert outcomes(failed) == {site.mid: "failed", site.app: "blocked"}
    site.platform.commit({"mid/f": "mid"}, "fix mid")
    done = site.gb("resume", failed["id"], "--json")
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["id"] == failed["id"] and resumed["status"] == "succeeded"
    assert outcomes(resumed) == {site.mid: "succeeded", site.app: "succeeded"}
    for node in resumed["nodes"]:
        assert builds_of(site, node["node"])[-1] == failed["id"]
        assert site.digest(node["node"]) == node["digest"]
        assert "--no-cache" in buds(node["log"])[-1]  # the run keeps its --no-cache
        assert f"building  {node['node']} (attempt 1)" in done.stderr.splitlines()
    (row,) = [line for line in site.gb("runs").stdout.splitlines() if line.startswith(failed["id"])]
    assert row.split()[1:3] == ["rebuild", "succeeded"]


def test_rebuild_asks_the_registry_only_about_the_rebuilt_part(site):
    """An emergency rebuild checks what it rebuilds and what those are built on, as a push's
    sweep does, not the whole fleet (issue 17): it used to ask about every image first."""
    assert site.run("sweep")["status"] == "succeeded"
    with State(site.root / ".graphbuild") as state:
        before = state.freshness()
        whole = state.last_whole_check()
    asked = {name: site.registry.requests(f"^/v2/{name}/")
             for name in ("apps/solo", "upstream", "platform/base")}  # fmt: skip
    run, _ = rebuild(site, site.mid, "--reason", CVE)
    assert outcomes(run) == {site.mid: "succeeded", site.app: "succeeded"}
    after = {name: site.registry.requests(f"^/v2/{name}/") for name in asked}
    assert after["apps/solo"] == asked["apps/solo"], "asked about an image it does not rebuild"
    assert after["upstream"] > asked["upstream"] and after["platform/base"] > asked["platform/base"]
    with State(site.root / ".graphbuild") as state:
        assert state.freshness()[site.solo] == before[site.solo]
        assert state.freshness()[site.base].at > before[site.base].at
        assert state.freshness()[site.upstream].at > before[site.upstream].at  # all above mid
        assert state.last_whole_check() == whole


RECORDER = """import pathlib, sys
digestfile, record, *flags = sys.argv[1:]
with open(record, "a") as out:
    out.write(" ".join(flags) + "\\n")
pathlib.Path(digestfile).write_text("sha256:" + "ab" * 32)
"""


def test_no_cache_reaches_a_command_builder_through_its_template_or_is_said_not_to(
    tmp_path, registry
):
    """A `command` builder gets `--no-cache` where its template has `{no-cache}`; without it,
    the rebuild says the builder cannot be asked, rather than let it pass for done."""
    require("git")
    local = tmp_path / "local"
    local.mkdir()
    (local / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (local / "f").write_text("f\n")
    record = tmp_path / "flags"
    site = Runner(tmp_path, registry)
    image = f"{site.host}/local/solo"
    argv = [sys.executable, "-c", RECORDER, "{digestfile}", str(record)]
    site.config = {
        "registries": {site.host: {"insecure": True}},
        "builder": {"kind": "command", "argv": [*argv, "{no-cache}"]},
        "repos": [{"name": "local", "path": str(local),
                   "images": [{"image": image, "dockerfile": "Dockerfile", "tags": ["1"]}]}],
    }  # fmt: skip
    site.write_config()
    rebuild(site, f"{image}:1", "--no-cache")
    rebuild(site, f"{image}:1")
    assert record.read_text().splitlines() == ["--no-cache", ""]

    site.config["builder"]["argv"] = argv
    site.write_config()
    run, said = rebuild(site, f"{image}:1", "--no-cache")
    assert outcomes(run) == {f"{image}:1": "succeeded"}
    assert "builder.argv has no {no-cache}" in said
    assert "{no-cache}" not in rebuild(site, f"{image}:1")[1]  # not asked: nothing to say
