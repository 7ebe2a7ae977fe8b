"""The main job end to end: real git remotes, a real registry, real buildah builds.

A three-level tree across two repositories, on an upstream base in the
loopback registry: `platform` holds base (on upstream) and mid (on base),
`apps` holds app (on mid, with a COPY --from the upstream) and, to see
what is *not* rebuilt, solo (on nothing the others touch).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import require
from .oci import BASE_DIGEST, BASE_NAME, OCI_MANIFEST

pytestmark = pytest.mark.timeout(600)


class Site:
    """The fleet under test: remotes, a repos.yaml, and graphbuild run as users run it."""

    def __init__(self, root: Path, registry, remotes) -> None:
        self.root, self.registry, self.host = root, registry, registry.host
        h = self.host
        self.upstream = f"{h}/upstream/base:1"
        self.push_upstream("upstream v1")
        self.platform = remotes("platform", {
            "base/Dockerfile": f"FROM {h}/upstream/base:1\nCOPY f /platform-base\n",
            "base/f": "base",
            "mid/Dockerfile": f"ARG REG={h}\nFROM ${{REG}}/platform/base:1\nCOPY f /mid\n",
            "mid/f": "mid",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "app/Dockerfile": f"FROM {h}/platform/mid:1 AS run\n"
                              f"COPY --from={h}/upstream/base:1 /content.txt /from-upstream\n"
                              "COPY f /app\n",
            "app/f": "app",
            "solo/Dockerfile": "FROM scratch\nCOPY f /solo\n",
            "solo/f": "solo",
        })  # fmt: skip
        self.base, self.mid = f"{h}/platform/base:1", f"{h}/platform/mid:1"
        self.app, self.solo = f"{h}/apps/app:1", f"{h}/apps/solo:1"
        storage = root / "buildah"
        self.config = {
            "registries": {h: {"insecure": True}},
            "builder": {"kind": "buildah", "root": str(storage / "root"),
                        "runroot": str(storage / "run")},
            "repos": [
                {"name": "platform", "url": str(self.platform.url), "images": [
                    {"image": f"{h}/platform/base", "dockerfile": "base/Dockerfile",
                     "context": "base", "tags": ["1", "latest"]},
                    {"image": f"{h}/platform/mid", "dockerfile": "mid/Dockerfile",
                     "context": "mid", "tags": ["1"]},
                ]},
                {"name": "apps", "url": str(self.apps.url), "images": [
                    {"image": f"{h}/apps/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]},
                ]},
            ],
        }  # fmt: skip
        self.write_config()

    def write_config(self) -> None:
        (self.root / "repos.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    def image_spec(self, repo: str, image: str) -> dict:
        """The repos.yaml entry of one image, to change it."""
        (entry,) = [r for r in self.config["repos"] if r["name"] == repo]
        return next(i for i in entry["images"] if i["image"].endswith(image))

    def push_upstream(self, content: str) -> str:
        self.upstream_digest = self.registry.image("upstream/base", "1", content=content)
        return self.upstream_digest

    def start(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        env.pop("GRAPHBUILD_CONFIG", None)
        return subprocess.Popen(
            [sys.executable, "-m", "graphbuild", *args],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # a SIGKILL of the group takes buildah down with it
        )  # fmt: skip

    def gb(self, *args: str) -> subprocess.CompletedProcess:
        process = self.start(*args)
        out, err = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def run(self, *args: str, code: int = 0) -> dict:
        """A sweep/rebuild/resume with --json: its run document."""
        done = self.gb(*args, "--json")
        assert done.returncode == code, done.stderr + done.stdout
        return json.loads(done.stdout)

    def manifest(self, ref: str) -> dict:
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        answer = self.registry.http.get(
            f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        answer.raise_for_status()
        return {"digest": answer.headers["Docker-Content-Digest"], **answer.json()}

    def digest(self, ref: str) -> str:
        return self.manifest(ref)["digest"]


def outcomes(run: dict) -> dict[str, str]:
    return {node["node"]: node["status"] for node in run["nodes"]}


def by_node(run: dict) -> dict[str, dict]:
    return {node["node"]: node for node in run["nodes"]}


@pytest.fixture
def site(tmp_path, registry, remotes):
    require("buildah")
    require("git")
    return Site(tmp_path, registry, remotes)


def test_a_tree_is_built_from_nothing_in_waves_then_a_second_sweep_builds_nothing(site):
    planned = json.loads(site.gb("plan", "--json").stdout)
    run = site.run("sweep")
    assert run["status"] == "succeeded"
    nodes = by_node(run)
    assert [(s["node"], s["wave"], s["reason"]) for s in planned["steps"]] == [
        (n["node"], n["wave"], n["reason"]) for n in run["nodes"]
    ]  # the plan is exactly what the sweep did
    assert outcomes(run) == dict.fromkeys([site.base, site.mid, site.app, site.solo], "succeeded")
    assert [nodes[n]["wave"] for n in (site.base, site.mid, site.app)] == [0, 1, 2]
    assert nodes[site.solo]["wave"] == 0
    assert {n["reason"] for n in run["nodes"]} == {"missing"}
    for node in run["nodes"]:  # what the registry serves is what the run recorded
        assert site.digest(node["node"]) == node["digest"]
        assert Path(node["log"]).is_file()
    assert site.digest(f"{site.host}/platform/base:latest") == nodes[site.base]["digest"]

    # each child on the exact digest its parent just pushed
    for child, parent in [(site.mid, site.base), (site.app, site.mid)]:
        notes = site.manifest(child)["annotations"]
        assert notes[BASE_DIGEST] == nodes[parent]["digest"]
        assert notes[BASE_NAME] == parent  # as the Dockerfile names it: name:tag
        assert notes["io.graphbuild.run"] == run["id"]
        assert notes["io.graphbuild.reason"].startswith("missing")
    upstream = site.manifest(site.base)["annotations"]
    assert (upstream[BASE_NAME], upstream[BASE_DIGEST]) == (site.upstream, site.upstream_digest)
    assert not site.manifest(site.solo)["annotations"].get(BASE_DIGEST)  # FROM scratch: none

    again = site.gb("sweep")
    assert again.returncode == 0, again.stderr
    assert "Nothing to rebuild." in again.stdout
    assert site.run("sweep") == {"id": None, "status": "up-to-date", "nodes": []}
    listed = json.loads(site.gb("runs", "--json").stdout)
    assert [r["id"] for r in listed] == [run["id"]]  # no second run at all


def test_a_base_update_rebuilds_exactly_its_descendants_on_the_new_digests(site):
    first = by_node(site.run("sweep"))
    new = site.push_upstream("upstream v2: the security fix")
    plan = json.loads(site.gb("plan", "--json").stdout)
    assert plan["waves"] == [[site.base], [site.mid], [site.app]]

    run = site.run("sweep")
    nodes = by_node(run)
    assert set(nodes) == {site.base, site.mid, site.app}  # solo is untouched
    assert nodes[site.base]["reason"] == "base-changed"
    assert site.upstream in nodes[site.base]["detail"] and new in nodes[site.base]["detail"]
    assert nodes[site.mid]["chain"][-1] == site.upstream  # the root cause, for "why?"
    assert site.manifest(site.base)["annotations"][BASE_DIGEST] == new
    for child, parent in [(site.mid, site.base), (site.app, site.mid)]:
        assert nodes[parent]["digest"] != first[parent]["digest"]
        assert site.manifest(child)["annotations"][BASE_DIGEST] == nodes[parent]["digest"]
    assert site.digest(site.solo) == first[site.solo]["digest"]
    assert "Nothing to rebuild." in site.gb("sweep").stdout


def test_a_failing_build_blocks_only_its_descendants_and_resume_finishes_after_the_fix(site):
    site.platform.commit({"mid/f": None}, "break mid: COPY f has nothing to copy")
    run = site.run("sweep", code=1)
    assert run["status"] == "failed"
    assert outcomes(run) == {site.base: "succeeded", site.mid: "failed",
                             site.app: "blocked", site.solo: "succeeded"}  # fmt: skip
    nodes = by_node(run)
    assert nodes[site.mid]["error"] and nodes[site.mid]["attempts"] == 1  # not transient
    assert "f" in Path(nodes[site.mid]["log"]).read_text()
    assert nodes[site.app]["error"] == f"{site.mid} failed"
    shown = site.gb("runs", run["id"])
    assert "blocked" in shown.stdout and "failed" in shown.stdout

    site.platform.commit({"mid/f": "mid, fixed"}, "fix mid")
    resumed = site.run("resume", run["id"])
    assert resumed["id"] == run["id"] and resumed["status"] == "succeeded"
    after = by_node(resumed)
    assert set(outcomes(resumed).values()) == {"succeeded"}
    for done in (site.base, site.solo):  # built once, by the first attempt of the run
        assert after[done]["digest"] == nodes[done]["digest"] == site.digest(done)
        assert after[done]["finished"] == nodes[done]["finished"]
    assert site.manifest(site.app)["annotations"][BASE_DIGEST] == after[site.mid]["digest"]


def test_a_forced_rebuild_records_its_reason_on_every_image(site):
    site.run("sweep")
    quiet = site.run("rebuild", site.mid, "--reason", "CVE-2026-1234")
    assert set(outcomes(quiet).values()) == {"skipped"}  # this exact build is what is served
    assert {n["reason"] for n in quiet["nodes"]} == {"up-to-date"}

    run = site.run("rebuild", site.mid, "--force", "--reason", "CVE-2026-1234")
    assert run["kind"] == "rebuild" and run["reason"] == "CVE-2026-1234"
    assert outcomes(run) == {site.mid: "succeeded", site.app: "succeeded"}
    for node in run["nodes"]:
        assert (node["reason"], node["detail"]) == ("forced", "CVE-2026-1234")
        manifest = site.manifest(node["node"])
        assert manifest["annotations"]["io.graphbuild.reason"] == "forced: CVE-2026-1234"
        assert manifest["digest"] == node["digest"]
    only = site.run("rebuild", site.upstream, "--force", "--no-downstream", "--reason", "x")
    assert set(outcomes(only)) == {site.base, site.app}  # built on it directly: FROM, COPY


def first_success(site: Site, sweep: subprocess.Popen, then_running: bool = False) -> str:
    """Wait until the running sweep has built one image (and is running the builder for
    the next); its run id."""
    state = site.root / ".graphbuild" / "state.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.02)
        if state.exists():
            try:
                with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
                    rows = db.execute("SELECT run, status, log FROM run_nodes").fetchall()
            except sqlite3.OperationalError:
                continue  # not created yet
            building = any(s == "running" and log and Path(log).exists() for _, s, log in rows)
            if any(s == "succeeded" for _, s, _ in rows) and (not then_running or building):
                return rows[0][0]
    raise AssertionError("the sweep ended before it could be stopped")


@pytest.mark.parametrize("how", ["SIGTERM to graphbuild", "Ctrl-C in its terminal"])
def test_a_stop_lets_running_builds_finish_and_leaves_a_resumable_run(site, how):
    """A CronJob's deadline or `kill`; or Ctrl-C, which a terminal sends to the whole
    foreground process group: the build running must finish, not die with graphbuild's group."""
    sweep = site.start("sweep", "--max-parallel", "1")
    run_id = first_success(site, sweep, then_running=True)
    if how.startswith("SIGTERM"):
        sweep.send_signal(signal.SIGTERM)
    else:
        os.killpg(sweep.pid, signal.SIGINT)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, err
    assert f"graphbuild resume {run_id}" in err and f"{run_id}: interrupted" in out
    run = json.loads(site.gb("runs", run_id, "--json").stdout)
    assert run["status"] == "interrupted"
    statuses = list(outcomes(run).values())
    why = [(n["status"], n["error"]) for n in run["nodes"]]
    assert statuses.count("succeeded") >= 2, why  # the one running when the signal came finished
    assert "running" not in statuses and "failed" not in statuses and "blocked" not in statuses
    assert "pending" in statuses
    assert site.run("resume", run_id)["status"] == "succeeded"


def test_a_killed_sweep_resumes_without_rebuilding_finished_images(site):
    sweep = site.start("sweep", "--max-parallel", "1")
    run_id = first_success(site, sweep)
    assert sweep.poll() is None, "the sweep ended before it could be killed"
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    before = by_node(json.loads(site.gb("runs", run_id, "--json").stdout))
    done = {n for n, node in before.items() if node["status"] == "succeeded"}
    assert done and done != set(before)

    resumed = site.run("resume", run_id)
    assert resumed["status"] == "succeeded"
    after = by_node(resumed)
    for node in done:  # not built again: same digest, same attempt, same finish time
        assert after[node]["digest"] == before[node]["digest"] == site.digest(node)
        assert (after[node]["finished"], after[node]["attempts"]) == (
            before[node]["finished"], before[node]["attempts"])  # fmt: skip
    assert set(outcomes(resumed).values()) == {"succeeded"}
    assert site.manifest(site.app)["annotations"][BASE_DIGEST] == after[site.mid]["digest"]
    assert "Nothing to rebuild." in site.gb("sweep").stdout


def test_a_plan_bigger_than_max_images_stops_before_building(site):
    stopped = site.gb("sweep", "--max-images", "3", "--json")
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout) == {
        "id": None, "status": "too-big", "planned": 4, "max_images": 3, "nodes": []
    }  # fmt: skip
    assert "more than --max-images 3" in stopped.stderr and "--yes" in stopped.stderr
    assert site.registry.http.get("/v2/platform/base/manifests/1").status_code == 404  # unbuilt
    dry = site.gb("sweep", "--dry-run", "--max-images", "3")
    assert dry.returncode == 0 and "4 images in 3 waves: 4 missing." in dry.stdout
    assert site.run("sweep", "--max-images", "3", "--yes")["status"] == "succeeded"


def test_a_change_to_an_images_own_source_is_rebuilt_and_nothing_else(site):
    """A base that did not move is not the only reason to build: rule 1, keys."""
    site.run("sweep")
    site.apps.commit({"README.md": "docs only\n"}, "a commit that changes no build context")
    assert "Nothing to rebuild." in site.gb("sweep").stdout
    site.platform.commit({"mid/f": "mid, patched"}, "change mid's context")
    plan = json.loads(site.gb("plan", "--json").stdout)  # plan syncs first, as sweep does
    assert [(s["node"], s["reason"]) for s in plan["steps"]] == [
        (site.mid, "source-changed"), (site.app, "parent-rebuilt")
    ]  # fmt: skip
    run = site.run("sweep")
    assert outcomes(run) == {site.mid: "succeeded", site.app: "succeeded"}
    assert "Nothing to rebuild." in site.gb("sweep").stdout


def test_a_new_tag_in_the_config_is_pushed_then_the_sweep_settles(site):
    site.run("sweep")
    site.image_spec("platform", "platform/mid")["tags"] = ["1", "stable"]
    site.write_config()
    run = site.run("sweep")
    assert by_node(run)[site.mid]["reason"] == "missing"
    assert by_node(run)[site.mid]["status"] == "succeeded"
    assert site.digest(f"{site.host}/platform/mid:stable") == site.digest(site.mid)
    assert "Nothing to rebuild." in site.gb("sweep").stdout


def test_a_multi_platform_image_rebuilt_serves_only_the_new_images(site):
    """buildah adds to a manifest list of the same name: each build must start its own."""
    site.image_spec("apps", "apps/{dir}")["platforms"] = ["linux/amd64", "linux/arm64"]
    site.config["repos"][1]["images"] = [
        {"image": f"{site.host}/apps/solo", "dockerfile": "solo/Dockerfile", "tags": ["1"],
         "platforms": ["linux/amd64", "linux/arm64"]},
    ]  # fmt: skip
    site.write_config()
    site.run("sweep")
    site.apps.commit({"solo/f": "solo, patched"}, "patch solo")
    run = site.run("sweep")
    assert by_node(run)[site.solo]["reason"] == "source-changed"
    index = site.registry.http.get(
        "/v2/apps/solo/manifests/1",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    ).json()
    platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert platforms == ["amd64", "arm64"]


def test_a_registry_that_does_not_answer_fails_the_sweep_instead_of_calling_it_done(site):
    site.run("sweep")
    site.registry.stop()
    down = site.gb("sweep", "--json")
    assert down.returncode == 1
    answer = json.loads(down.stdout)
    assert (answer["id"], answer["status"]) == (None, "incomplete")
    assert site.upstream in answer["unanswered"]
    assert "got no answer from their registry" in down.stderr


def test_only_the_latest_run_of_its_images_can_be_resumed(site):
    """Resuming an old run would push images on older digests over a later run's."""
    site.platform.commit({"mid/f": None}, "break mid")
    failed = site.run("sweep", code=1)
    site.platform.commit({"mid/f": "mid, fixed"}, "fix mid")
    assert site.run("sweep")["status"] == "succeeded"  # a later sweep did the work
    refused = site.gb("resume", failed["id"])
    assert refused.returncode == 2
    assert f"run {failed['id']} cannot be resumed" in refused.stderr
