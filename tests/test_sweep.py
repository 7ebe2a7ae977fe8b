"""The main job end to end: real git remotes, a real registry, real buildah builds.

A three-level tree across two repositories, on an upstream base in the
loopback registry: `platform` holds base (on upstream) and mid (on base),
`apps` holds app (on mid, with a COPY --from the upstream) and, to see
what is *not* rebuilt, solo (on nothing the others touch).
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphbuild import metrics
from graphbuild.state import State

from .oci import BASE_DIGEST, BASE_NAME
from .site import Runner, Site, alive, by_node, outcomes, require

pytestmark = pytest.mark.timeout(600)


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


def test_a_push_sweep_asks_and_reads_only_what_is_below_the_pushed_base(site, tmp_path):
    """Issue 17, point 4: `sweep --only BASE` (a push event's sweep) asks the registry only
    about what is built on BASE and what those are built on, reads only those images'
    sources, and leaves the freshness the last whole check recorded for the rest of the
    fleet (and /metrics' time of the last check) as they were. It used to check and plan
    the whole fleet, then keep what is built on BASE."""
    h = site.host
    unrelated = []  # folders of their own, on bases of their own: nothing the push touches
    for i in range(3):
        site.registry.image(f"other/base{i}", "1", content=f"other {i}")
        folder = tmp_path / f"other{i}"
        (folder / "img").mkdir(parents=True)
        (folder / "img" / "Dockerfile").write_text(f"FROM {h}/other/base{i}:1\nCOPY f /f\n")
        (folder / "img" / "f").write_text(f"other {i}")
        site.config["repos"].append({"name": f"other{i}", "path": str(folder), "images": [
            {"image": f"{h}/other/img{i}", "dockerfile": "img/Dockerfile", "context": "img",
             "tags": ["1"]}]})  # fmt: skip
        unrelated += [f"{h}/other/img{i}:1", f"{h}/other/base{i}:1"]
    unrelated.append(site.solo)
    site.write_config()
    assert site.run("sweep")["status"] == "succeeded"  # the whole fleet, built
    workspace = site.root / ".graphbuild"
    with State(workspace) as state:
        before = state.freshness()
    last_check = _last_check(workspace)
    assert last_check is not None

    site.push_upstream("upstream v2: the security fix")
    asked = {name: site.registry.requests(f"^/v2/{name}/") for name in
             ("other", "apps/solo", "upstream", "platform", "apps/app")}  # fmt: skip
    with _opens(tmp_path / "other0" / "img") as opened:
        run = site.run("sweep", "--only", site.upstream)
    assert set(outcomes(run)) == {site.base, site.mid, site.app}
    for name, n in asked.items():
        now = site.registry.requests(f"^/v2/{name}/")
        assert (now > n) == (name not in ("other", "apps/solo")), (name, n, now)
    assert "f" not in opened, "the plan read the source of an image the push does not touch"
    with State(workspace) as state:
        after = state.freshness()
    assert {n: after[n] for n in unrelated} == {n: before[n] for n in unrelated}
    for node in (site.upstream, site.base, site.mid, site.app):
        assert after[node].at > before[node].at
    assert after[site.upstream].status == "changed"
    assert _last_check(workspace) == last_check  # the last whole check's time
    roots = [site.upstream, site.solo, *(f"{h}/other/base{i}:1" for i in range(3))]
    every = site.gb("sweep", *(arg for root in roots for arg in ("--only", root)))
    assert every.returncode == 0, every.stderr  # a push's sweep whose part is every node
    with State(workspace) as state:
        assert all(row.at > after[node].at for node, row in state.freshness().items())
    assert _last_check(workspace) == last_check  # still not a whole check
    assert "Nothing to rebuild." in site.gb("sweep").stdout  # the whole check, after it
    assert _last_check(workspace) > last_check


def _last_check(workspace: Path) -> float | None:
    """/metrics' graphbuild_last_check_timestamp_seconds."""
    for line in metrics.render(workspace).decode().splitlines():
        if line.startswith("graphbuild_last_check_timestamp_seconds "):
            return float(line.split()[1])
    return None


IN_OPEN = 0x20


@contextlib.contextmanager
def _opens(folder: Path) -> Iterator[list[str]]:
    """The names of the files opened in `folder` while the block runs, filled when it ends
    (inotify, IN_OPEN): whether graphbuild read them, which neither a log nor git's trace
    would say."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    names: list[str] = []
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(folder), IN_OPEN) >= 0
        yield names
        with contextlib.suppress(BlockingIOError):  # no more events
            while data := os.read(fd, 65536):
                at = 0
                while at < len(data):  # struct inotify_event: wd, mask, cookie, len, name
                    _, _, _, size = struct.unpack_from("iIII", data, at)
                    names.append(data[at + 16 : at + 16 + size].rstrip(b"\0").decode())
                    at += 16 + size
    finally:
        os.close(fd)


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


def first_success(site: Site, sweep: subprocess.Popen, then_running: bool = False) -> str:
    """Wait until the running sweep has built one image (and is running the builder for
    the next); its run id."""
    state = site.root / ".graphbuild" / "state.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.02)
        if state.exists():
            with State(state.parent) as db:  # its migrations wait for the sweep's
                latest = db.runs(limit=1)
                run = db.run(latest[0].id) if latest else None
            if run is None:
                continue  # not created yet
            nodes = run.nodes
            building = any(n.status == "running" and n.log and Path(n.log).exists() for n in nodes)
            if any(n.status == "succeeded" for n in nodes) and (not then_running or building):
                return run.id
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


# ---------------------------------------------------------------- what a builder is sent

BUILDER = Path(__file__).with_name("context_builder.py")
RULE = "graphbuild does not send it to a builder"


class Fleet(Runner):
    """Repositories built by tests/context_builder.py, a `command` builder that pushes a listing
    of the build context it was given: what graphbuild sent, exactly."""

    def __init__(self, root: Path, registry) -> None:
        super().__init__(root, registry)
        self.control = root / "control"
        self.control.mkdir()
        self.config = {
            "registries": {self.host: {"insecure": True}},
            "builder": {"kind": "command", "argv": [
                sys.executable, str(BUILDER), "{tag}", "{digestfile}", "{context}",
                str(self.control)]},
            "repos": [],
        }  # fmt: skip

    def repos(self, *repos: dict) -> None:
        self.config["repos"] = list(repos)
        self.write_config()

    def image(self, repo: str, name: str, dockerfile: str, context: str) -> dict:
        return {"image": f"{self.host}/{repo}/{name}", "dockerfile": dockerfile,
                "context": context, "tags": ["1"]}  # fmt: skip

    def sent(self, ref: str) -> dict[str, list[str]]:
        """The build context the builder was given for the image `ref` serves."""
        return json.loads(self.files(ref)["content.txt"])

    def records(self, node: str) -> list[str]:
        """Digests state.db recorded as built for `node`, oldest first."""
        with State(self.root / ".graphbuild") as state:
            return [build.digest for build in state.builds(node)]


def file(text: str, mode: str = "0o644") -> list[str]:
    return ["file", mode, hashlib.sha256(text.encode()).hexdigest()]


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def gone_within(check, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def fleet(tmp_path, registry):
    require("git")
    return Fleet(tmp_path, registry)


def test_a_git_build_context_is_sent_exactly_as_its_key_covers_it(fleet, remotes):
    """Raw blobs, as the key hashes them: no export-subst, no export-ignore, any file name."""
    odd = os.fsdecode(b"odd-\xff-name")  # not UTF-8: git allows it
    good = remotes("good", {
        "app/Dockerfile": "FROM scratch\nCOPY . /\n",
        "app/f": "f\n",
        "app/.gitattributes": "* export-subst\nskipped export-ignore\n",
        "app/v": "$Format:%H$\n",
        "app/skipped": "skipped\n",
        f"app/{odd}": "odd\n",
        "app/sub/g": "g\n",
        "README.md": "not in the context\n",
    })  # fmt: skip
    (good.work / "app/run.sh").write_text("#!/bin/sh\n")
    (good.work / "app/run.sh").chmod(0o755)
    (good.work / "app/l").symlink_to("f")
    (good.work / "app/up").symlink_to("../README.md")  # inside the repository: sent as it is
    good.commit({})
    f = fleet
    f.repos({"name": "good", "url": str(good.url),
             "images": [f.image("good", "app", "app/Dockerfile", "app")]})  # fmt: skip
    run = f.run("sweep")
    node = f"{f.host}/good/app:1"
    assert outcomes(run) == {node: "succeeded"}
    assert f.sent(node) == {
        "Dockerfile": file("FROM scratch\nCOPY . /\n"),
        ".gitattributes": file("* export-subst\nskipped export-ignore\n"),
        "f": file("f\n"),
        "v": file("$Format:%H$\n"),
        "skipped": file("skipped\n"),
        odd: file("odd\n"),
        "sub": ["dir"],
        "sub/g": file("g\n"),
        "run.sh": file("#!/bin/sh\n", "0o755"),
        "l": ["link", "f"],
        "up": ["link", "../README.md"],
    }
    assert "Nothing to rebuild." in f.gb("sweep").stdout  # the key is stable


def test_hostile_git_build_contexts_fail_alone_naming_the_file_and_the_rule(fleet, remotes):
    """A context symlink out of the repository, or a context that is no folder, is a build
    failure of that image only, never an "internal error"; the rest of the fleet builds."""
    hostile = remotes("hostile", {
        "abs/Dockerfile": "FROM scratch\nCOPY . /\n",
        "rel/Dockerfile": "FROM scratch\nCOPY . /\n",
        "chain/Dockerfile": "FROM scratch\nCOPY . /\n",
        "chain/a/f": "f\n",
        "Dockerfile.lnk": "FROM scratch\nCOPY . /\n",
        "Dockerfile.gone": "FROM scratch\nCOPY . /\n",
        "ok/Dockerfile": "FROM scratch\nCOPY . /\n",
    })  # fmt: skip
    (hostile.work / "abs/x").symlink_to("/etc/passwd")
    (hostile.work / "rel/x").symlink_to("../../../../../../etc/passwd")
    (hostile.work / "chain/a/d").symlink_to("../..")  # the repository's root: inside
    (hostile.work / "chain/a/x").symlink_to("d/../..")  # through d: one level above the root
    (hostile.work / "lnkctx").symlink_to("/etc")
    hostile.commit({})
    f = fleet
    images = [f.image("hostile", "abs", "abs/Dockerfile", "abs"),
              f.image("hostile", "rel", "rel/Dockerfile", "rel"),
              f.image("hostile", "chain", "chain/Dockerfile", "chain"),
              f.image("hostile", "lnk", "Dockerfile.lnk", "lnkctx"),
              f.image("hostile", "gone", "Dockerfile.gone", "gone"),
              f.image("hostile", "ok", "ok/Dockerfile", "ok")]  # fmt: skip
    f.repos({"name": "hostile", "url": str(hostile.url), "images": images})
    run = f.run("sweep", code=1)
    nodes = by_node(run)
    h = f"{f.host}/hostile"
    assert outcomes(run) == {
        f"{h}/{name}:1": "failed" for name in ("abs", "rel", "chain", "lnk", "gone")
    } | {f"{h}/ok:1": "succeeded"}
    assert {n: node["error"] for n, node in nodes.items() if node["error"]} == {
        f"{h}/abs:1": f"hostile:abs/x: symlink points outside the repository (/etc/passwd); {RULE}",
        f"{h}/rel:1": "hostile:rel/x: symlink points outside the repository "
                      f"(../../../../../../etc/passwd); {RULE}",
        f"{h}/chain:1": f"hostile:chain/a/x: symlink points outside the repository (d/../..); "
                        f"{RULE}",
        f"{h}/lnk:1": "hostile:lnkctx: the build context is a symlink (to /etc), not a folder; "
                      "graphbuild sends a builder only a folder of the repository",
        f"{h}/gone:1": "hostile:gone: the build context is not a folder in the repository",
    }  # fmt: skip
    assert all(node["attempts"] == 1 for node in nodes.values())  # not worth a retry
    assert f.sent(f"{h}/ok:1") == {"Dockerfile": file("FROM scratch\nCOPY . /\n")}


def test_a_local_folder_sends_exactly_what_its_key_covers_and_nothing_outside(fleet, tmp_path):
    """A `path` repository is copied as git would record it: no `.git`, no FIFO; a context
    that is a symlink (as in a git repository), or a symlink out of it, is refused (rule 12)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("the build host's secret\n")
    local = tmp_path / "local"
    (local / "clean/sub").mkdir(parents=True)
    (local / "clean/.git").mkdir()
    (local / "clean/.git/HEAD").write_text("ref: refs/heads/main\n")
    (local / "clean/sub/.git").write_text("gitdir: elsewhere\n")  # a linked work tree's
    (local / "clean/Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (local / "clean/f").write_text("f\n")
    (local / "clean/sub/g").write_text("g\n")
    (local / "clean/l").symlink_to("f")
    os.mkfifo(local / "clean/fifo")  # a builder reading it would wait forever
    (local / "Dockerfile.leak").write_text("FROM scratch\nCOPY . /\n")
    (local / "leakctx").symlink_to(outside)
    (local / "abs").mkdir()
    (local / "abs/Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (local / "abs/x").symlink_to(outside / "secret")
    (local / "inside").symlink_to("clean")  # a context symlink, even one staying inside
    f = fleet
    images = [f.image("local", "clean", "clean/Dockerfile", "clean"),
              f.image("local", "leak", "Dockerfile.leak", "leakctx"),
              f.image("local", "abs", "abs/Dockerfile", "abs"),
              f.image("local", "inside", "clean/Dockerfile", "inside")]  # fmt: skip
    f.repos({"name": "local", "path": str(local), "images": images})
    run = f.run("sweep", code=1)
    h = f"{f.host}/local"
    assert outcomes(run) == {f"{h}/clean:1": "succeeded", f"{h}/inside:1": "failed",
                             f"{h}/leak:1": "failed", f"{h}/abs:1": "failed"}  # fmt: skip
    errors = {n: node["error"] for n, node in by_node(run).items() if node["error"]}
    assert errors == {
        f"{h}/leak:1": f"local:leakctx: the build context is a symlink (to {outside}), not a "
                       "folder; graphbuild sends a builder only a folder of the repository",
        f"{h}/inside:1": "local:inside: the build context is a symlink (to clean), not a "
                         "folder; graphbuild sends a builder only a folder of the repository",
        f"{h}/abs:1": f"local:abs/x: symlink points outside the repository ({outside}/secret); "
                      f"{RULE}",
    }  # fmt: skip
    clean = {"Dockerfile": file("FROM scratch\nCOPY . /\n"), "f": file("f\n"),
             "l": ["link", "f"], "sub": ["dir"], "sub/g": file("g\n")}  # fmt: skip
    assert f.sent(f"{h}/clean:1") == clean
    (local / "clean/.git/HEAD").write_text("ref: refs/heads/other\n")  # not sent: not keyed
    plan = json.loads(f.gb("plan", "--json").stdout)
    assert {step["node"] for step in plan["steps"]} == {f"{h}/leak:1", f"{h}/abs:1",
                                                         f"{h}/inside:1"}  # fmt: skip


def test_a_builder_dies_with_graphbuild_and_resume_leaves_no_orphan_to_push(fleet, remotes):
    """kill -9 of graphbuild mid-build: its builder dies at once, what the builder started is
    killed before resume builds, and the registry serves what the run recorded."""
    app = remotes("app", {"solo/Dockerfile": "FROM scratch\nCOPY . /\n", "solo/f": "f\n"})
    f = fleet
    f.repos({"name": "app", "url": str(app.url),
             "images": [f.image("app", "solo", "solo/Dockerfile", "solo")]})  # fmt: skip
    node = f"{f.host}/app/solo:1"
    (f.control / "hold").touch()
    sweep = f.start("sweep")
    assert gone_within(lambda: not (f.control / "helper").exists(), 120), sweep.communicate()
    leader, pgid, context = (f.control / "started").read_text().split()
    helper = int((f.control / "helper").read_text())
    runs = json.loads(f.gb("runs", "--json").stdout)
    try:
        os.kill(sweep.pid, signal.SIGKILL)  # graphbuild only: its builder runs in its own group
        sweep.communicate()
        assert gone_within(lambda: alive(int(leader))), "the builder outlived graphbuild"
        assert alive(helper)  # a helper in its group: it is the next run's to kill
        assert str(f.root / ".graphbuild") in context  # scratch in the workspace, left behind
        assert Path(context).is_dir()

        (f.control / "hold").unlink()
        resumed = f.run("resume", runs[0]["id"])
        assert resumed["status"] == "succeeded"
        assert group_members(int(pgid)) == [] and not alive(helper)
        (f.control / "release").touch()  # what a surviving helper was waiting for to push
        time.sleep(1)
        (recorded,) = [n["digest"] for n in resumed["nodes"]]
        assert f.digest(node) == recorded == f.records(node)[-1]
        assert not Path(context).exists()
        assert list((f.root / ".graphbuild" / "scratch").iterdir()) == []
    finally:  # whatever failed, leave nothing running
        for pid in group_members(int(pgid)):
            os.kill(pid, signal.SIGKILL)


def test_buildah_gets_no_file_from_outside_a_local_repository(fleet, tmp_path):
    """Defect: a `path` repository's context symlinked to a folder outside it was handed to
    buildah, and the outside file was pushed in the image. Now it is refused; and what an
    image does get is what its key covers (no `.git`)."""
    require("buildah")
    secret = "the build host's secret: 7f3a9c"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(secret)
    local = tmp_path / "local"
    (local / "clean/.git").mkdir(parents=True)
    (local / "clean/.git/HEAD").write_text("ref: refs/heads/main\n")
    (local / "clean/f").write_text("f\n")
    (local / "clean/Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    (local / "Dockerfile.leak").write_text("FROM scratch\nCOPY . /ctx/\n")
    (local / "leakctx").symlink_to(outside)
    f = fleet
    storage = tmp_path / "buildah"
    f.config["builder"] = {"kind": "buildah", "root": str(storage / "root"),
                           "runroot": str(storage / "run")}  # fmt: skip
    f.repos({"name": "local", "path": str(local), "images": [
        f.image("local", "clean", "clean/Dockerfile", "clean"),
        f.image("local", "leak", "Dockerfile.leak", "leakctx")]})  # fmt: skip
    run = f.run("sweep", code=1)
    h = f"{f.host}/local"
    assert outcomes(run) == {f"{h}/clean:1": "succeeded", f"{h}/leak:1": "failed"}
    assert by_node(run)[f"{h}/leak:1"]["error"] == (
        f"local:leakctx: the build context is a symlink (to {outside}), not a folder; "
        "graphbuild sends a builder only a folder of the repository"
    )
    assert f.registry.http.get("/v2/local/leak/manifests/1").status_code == 404
    for blob in (f.registry.folder / "data").rglob("data"):  # nothing pushed holds it
        data = blob.read_bytes()
        with contextlib.suppress(OSError, EOFError):
            data = gzip.decompress(data)
        assert secret.encode() not in data, blob
    files = f.files(f"{h}/clean:1")
    assert set(files) == {"ctx/Dockerfile", "ctx/f"}  # no .git


def test_buildah_gets_a_secret_build_arg_from_the_environment_and_nothing_keeps_it(
    fleet, tmp_path, monkeypatch
):
    """Real buildah reads `--build-arg NAME` from its environment: the value arrives (a LABEL
    shows it here), and no file graphbuild writes (logs, index.db, state.db, the config
    cache) holds it."""
    require("buildah")
    value = "npm-token-4d1c8e"
    monkeypatch.setenv("GB_TEST_SECRET_TOKEN", value)
    local = tmp_path / "local"
    local.mkdir()
    (local / "f").write_text("f\n")
    (local / "Dockerfile").write_text("FROM scratch\nARG TOKEN\nLABEL seen=$TOKEN\nCOPY f /f\n")
    f = fleet
    storage = tmp_path / "buildah"
    f.config["builder"] = {"kind": "buildah", "root": str(storage / "root"),
                           "runroot": str(storage / "run")}  # fmt: skip
    image = {**f.image("local", "app", "Dockerfile", "."),
             "secret_build_args": {"TOKEN": "GB_TEST_SECRET_TOKEN"}}  # fmt: skip
    f.repos({"name": "local", "path": str(local), "images": [image]})
    run = f.run("sweep")
    node = f"{f.host}/local/app:1"
    assert outcomes(run) == {node: "succeeded"}
    config_digest = f.manifest(node)["config"]["digest"]
    blob = f.registry.http.get(f"/v2/local/app/blobs/{config_digest}").json()
    assert blob["config"]["Labels"]["seen"] == value
    for path in (f.root / ".graphbuild").rglob("*"):
        assert not path.is_file() or value.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------- named build contexts


def test_a_base_that_comes_through_a_named_context_is_what_the_build_uses(fleet, remotes, tmp_path):
    """Defect: the graph linked `FROM base` to the `contexts:` image, but the build re-read
    the Dockerfile without contexts and buildah got no `--build-context`: the image was
    linked to one base and built on another (or not at all). Now the build is pinned to the
    context image's digest, rebuilt when it moves, and a local context folder is sent as
    exactly the content its key covers."""
    require("buildah")
    f = fleet
    first = f.registry.image("upstream", "1", content="upstream v1")
    repo = remotes("ctx", {
        "app/Dockerfile": "FROM base\nCOPY --from=src /s.txt /from-src\nCOPY f /app\n",
        "app/f": "app\n",
        "shared/s.txt": "shared v1\n",
    })  # fmt: skip
    storage = tmp_path / "buildah"
    f.config["builder"] = {"kind": "buildah", "root": str(storage / "root"),
                           "runroot": str(storage / "run")}  # fmt: skip
    upstream = f"{f.host}/upstream:1"
    spec = {**f.image("ctx", "app", "app/Dockerfile", "app"),
            "contexts": {"base": f"docker-image://{upstream}", "src": "shared"}}  # fmt: skip
    f.repos({"name": "ctx", "url": str(repo.url), "images": [spec]})
    node = f"{f.host}/ctx/app:1"

    def parents() -> dict[str, str]:
        with State(f.root / ".graphbuild") as state:
            return state.builds(node)[-1].parents

    run = f.run("sweep")
    assert outcomes(run) == {node: "succeeded"}, run
    notes = f.manifest(node)["annotations"]
    assert (notes[BASE_NAME], notes[BASE_DIGEST]) == (upstream, first)
    assert parents() == {upstream: first}
    files = f.files(node)
    assert (files["content.txt"], files["from-src"], files["app"]) == (
        b"upstream v1", b"shared v1\n", b"app\n")  # fmt: skip

    moved = f.registry.image("upstream", "1", content="upstream v2: the fix")
    run = f.run("sweep")
    assert [(n["node"], n["status"], n["reason"]) for n in run["nodes"]] == [
        (node, "succeeded", "base-changed")]  # fmt: skip
    notes = f.manifest(node)["annotations"]
    assert (notes[BASE_NAME], notes[BASE_DIGEST]) == (upstream, moved)
    assert parents() == {upstream: moved}
    assert f.files(node)["content.txt"] == b"upstream v2: the fix"

    repo.commit({"shared/s.txt": "shared v2\n"})  # the local context's content is its source
    f.gb("sync")
    run = f.run("sweep")
    assert [(n["node"], n["status"], n["reason"]) for n in run["nodes"]] == [
        (node, "succeeded", "source-changed")]  # fmt: skip
    assert f.files(node)["from-src"] == b"shared v2\n"
    assert "Nothing to rebuild." in f.gb("sweep").stdout
