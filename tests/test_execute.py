"""Gates as each image is built, end to end: real registry, buildah, git remotes, gate commands.

The fleet: `bb`, a busybox base in the loopback registry; `base` on it (platform),
`child` on base and `slow` on bb (apps). slow's build waits, in a RUN, for a mark
that base's gate sets as it starts (tests/gate_marks.py), so it is still building
when base's gate starts only if gates start as their image is built. Each gate is a
real command that writes its own start and end times; the order of things is read
from those and from the times state.db recorded, never from how long anything took.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from graphbuild.state import State

from .gate_marks import GATE, Marks, epoch, set_mark, wait_for
from .packages import make_base
from .site import DEPLOYMENT, Runner, base_and_apps, by_node, git, local_build, outcomes, require

pytestmark = pytest.mark.timeout(600)


class Fleet(Runner):
    """Site's way of running graphbuild, on a fleet whose one gate is GATE."""

    def __init__(self, root: Path, registry, remotes, marks: Marks) -> None:
        super().__init__(root, registry)
        h, at = self.host, marks.address
        self.marks = marks
        self.started: list[subprocess.Popen] = []
        make_base(registry, "external/bb:1", {}, root / "bases")
        self.platform = remotes("platform", {
            "base/Dockerfile": f"FROM {h}/external/bb:1\nCOPY f /base\n", "base/f": "base",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "child/Dockerfile": f"FROM {h}/platform/base:1\n{set_mark('child-building', at)}"
                                "COPY f /child\n",
            "child/f": "child",
            "slow/Dockerfile": f"FROM {h}/external/bb:1\n{wait_for('go-slow', at)}"
                               "COPY f /slow\n",
            "slow/f": "slow",
        })  # fmt: skip
        self.base, self.child, self.slow = (f"{h}/platform/base:1", f"{h}/apps/child:1",
                                            f"{h}/apps/slow:1")  # fmt: skip
        self.say("on-gate-base", "go-slow")  # base's gate lets slow's build end
        self.config = {
            **local_build(h, root),
            "repos": base_and_apps(h, self.platform.url, self.apps.url),
            "gates": [{"name": "smoke", "test": ["sh", "-c", GATE, "sh", "{repository}",
                                                 str(marks.root)]}],
        }  # fmt: skip
        self.write_config()

    def start(self, *args: str) -> subprocess.Popen:
        """graphbuild in the background, killed (with its group) after the test if still
        running: a test that fails while it runs must not leave it behind."""
        process = super().start(*args)
        self.started.append(process)
        return process

    def say(self, name: str, text: str = "") -> None:
        """A file the gate script reads (tests/gate_marks.py)."""
        (self.marks.root / name).write_text(text)

    def starts(self, name: str) -> int:
        return sum(1 for kind, n, _ in self.marks.stamps() if (kind, n) == ("start", name))


@pytest.fixture
def fleet(tmp_path, registry, remotes):
    require("buildah")
    require("git")
    require("busybox")
    marks = Marks(tmp_path / "gate").start()
    fleet = Fleet(tmp_path, registry, remotes, marks)
    yield fleet
    for process in fleet.started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its gates and builds die with it
            process.communicate()
    marks.stop()


def test_a_gate_starts_as_its_image_is_built_and_its_child_waits_for_it(fleet):
    """One build worker, busy with slow until base's gate has started: base's gate runs
    beside slow's build, in workers of its own; child is built only once it passed."""
    run = fleet.run("sweep", "--max-parallel", "1")
    assert outcomes(run) == dict.fromkeys([fleet.base, fleet.child, fleet.slow], "succeeded")
    nodes = by_node(run)
    assert fleet.marks.first("start", "base") < epoch(nodes[fleet.slow]["finished"])
    assert fleet.marks.first("end", "base") < epoch(nodes[fleet.child]["started"])
    gates = {(g["node"], g["gate"]): g["status"] for g in run["gates"]}
    assert gates == {(node, "smoke"): "passed" for node in (fleet.base, fleet.child, fleet.slow)}
    assert [fleet.starts(name) for name in ("base", "child", "slow")] == [1, 1, 1]


def test_a_child_of_an_image_that_failed_its_gate_is_not_built(fleet):
    fleet.say("fail-base")
    done = fleet.gb("sweep", "--json")
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert outcomes(run) == {fleet.base: "succeeded", fleet.child: "blocked",
                             fleet.slow: "succeeded"}  # fmt: skip
    assert by_node(run)[fleet.child]["error"] == f"{fleet.base} failed gate smoke"
    assert fleet.registry.http.get("/v2/apps/child/manifests/1").status_code == 404
    assert f"{fleet.base}: gate smoke failed" in done.stderr
    assert f"gating    {fleet.base} gate smoke\n" in done.stderr  # the log says it ran
    gates = {(g["node"], g["gate"]): g["status"] for g in run["gates"]}
    assert gates == {(fleet.base, "smoke"): "failed", (fleet.slow, "smoke"): "passed"}
    assert fleet.starts("base") == 1  # judged once: validation after the builds left it
    assert [h["node"] for h in run["held"]] == [fleet.base]


def test_with_hold_descendants_false_a_child_is_built_whatever_its_parents_gate_says(fleet):
    """Its parent's gate does not concern it: it neither waits for it nor is blocked."""
    fleet.config["deployments"] = {"hold_descendants": False}
    fleet.write_config()
    fleet.say("fail-base")
    fleet.say("wait-base", "child-building")  # base's gate ends once child's build has begun
    done = fleet.gb("sweep", "--json")
    assert done.returncode == 1, done.stderr  # base failed its gate
    run = json.loads(done.stdout)
    assert set(outcomes(run).values()) == {"succeeded"}
    assert epoch(by_node(run)[fleet.child]["started"]) < fleet.marks.first("end", "base")
    assert [h["node"] for h in run["held"]] == [fleet.base]


def test_build_during_gates_builds_the_child_while_its_parents_gate_runs(fleet):
    fleet.config["deployments"] = {"build_during_gates": True}
    fleet.write_config()
    fleet.say("wait-base", "child-building")  # base's gate ends once child's build has begun
    run = fleet.run("sweep")
    nodes = by_node(run)
    assert (fleet.marks.folder / "child-building").exists()  # child's RUN ran
    assert epoch(nodes[fleet.child]["started"]) < fleet.marks.first("end", "base")
    assert set(outcomes(run).values()) == {"succeeded"}


def test_no_more_gates_run_at_once_than_gate_concurrency(fleet):
    """Each gate waits (up to 3 s) for another to start: without the cap they overlap."""
    fleet.config["deployments"] = {"gate_concurrency": 1}
    fleet.write_config()
    for name in ("base", "child", "slow"):
        fleet.say(f"wait-{name}", "never")
        fleet.say(f"sleep-{name}", "0.5")
    gate = fleet.config["gates"][0]["test"]
    gate[2] = gate[2].replace("-ge 600", "-ge 30")  # wait 3 s, not 60
    fleet.write_config()
    run = fleet.run("sweep")
    assert set(outcomes(run).values()) == {"succeeded"}
    spans = sorted(
        (fleet.marks.first("start", name), fleet.marks.first("end", name))
        for name in ("base", "child", "slow")
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans  # one at a time


def test_a_resume_does_not_run_again_a_gate_that_passed_before_the_stop(fleet):
    """Stopped while slow builds (base built and judged): the resume builds child, judges
    child and slow, and leaves base's gate alone."""
    (fleet.marks.root / "on-gate-base").unlink()  # slow's build waits for the test
    sweep = fleet.start("sweep", "--max-parallel", "1")
    run_id = judged(fleet, sweep, fleet.base)
    sweep.send_signal(signal.SIGTERM)
    (fleet.marks.folder / "go-slow").touch()
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, err
    assert f"graphbuild resume {run_id}" in err
    stopped = json.loads(fleet.gb("runs", run_id, "--json").stdout)
    assert stopped["status"] == "interrupted"
    assert [(g["node"], g["status"]) for g in stopped["gates"]] == [(fleet.base, "passed")]
    resumed = fleet.run("resume", run_id)
    assert resumed["status"] == "succeeded"
    assert set(outcomes(resumed).values()) == {"succeeded"}
    assert {g["node"]: g["status"] for g in resumed["gates"]} == dict.fromkeys(
        [fleet.base, fleet.child, fleet.slow], "passed")  # fmt: skip
    assert [fleet.starts(name) for name in ("base", "child", "slow")] == [1, 1, 1]


def judged(fleet: Fleet, sweep, node: str) -> str:
    """Wait until the running sweep has recorded a gate result of `node`; its run id."""
    state = fleet.root / ".graphbuild" / "state.db"
    deadline = time.monotonic() + 60  # slow's build waits for the test, not for this
    while time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.05)
        if state.exists():
            with State(state.parent) as db:
                latest = db.runs(limit=1)
                run = db.run(latest[0].id) if latest else None
            if run is not None and any(g.node == node for g in run.gates):
                return run.id
    raise AssertionError(f"no gate of {node} was judged while the builds ran")


def rollout_to(fleet: Fleet, remotes, dev_health: str) -> tuple[object, Path]:
    """A deploy repository where dev runs base, and prod base and slow; dev `as_ready`, its
    health check `dev_health` (sh, with the mark that ends slow's build as $3). Each ring's
    health check first writes `RING EPOCH` to the log returned."""
    log = fleet.marks.root / "health.log"
    deploy = remotes("deploy", {
        "envs/dev/base.yaml": DEPLOYMENT.format(name="base", image=fleet.base),
        "envs/prod/base.yaml": DEPLOYMENT.format(name="base", image=fleet.base),
        "envs/prod/slow.yaml": DEPLOYMENT.format(name="slow", image=fleet.slow),
    })  # fmt: skip
    stamp = 'echo "$1 $(date +%s.%N)" >> "$2"; '
    fleet.config["deployments"] = {
        "rings": [
            {"name": "dev", "as_ready": True, "health": [
                "sh", "-c", stamp + dev_health, "sh", "{ring}", str(log),
                str(fleet.marks.folder / "go-slow")]},
            {"name": "prod", "health": ["sh", "-c", stamp, "sh", "{ring}", str(log)]},
        ],
        "repos": [{"name": "deploy", "url": str(deploy.url), "branch": "main",
                   "rings": {"dev": ["envs/dev/**"], "prod": ["envs/prod/**"]}}],
    }  # fmt: skip
    fleet.write_config()
    return deploy, log


def test_an_as_ready_ring_deploys_once_its_images_are_validated_not_after_the_run(fleet, remotes):
    """dev runs base only; its health check lets slow's build end. So slow is still
    building when dev is deployed only if dev goes as soon as base is validated; prod,
    which runs slow too, goes after the run, one commit as before."""
    (fleet.marks.root / "on-gate-base").unlink()  # slow's build waits for dev's health check
    deploy, log = rollout_to(fleet, remotes, 'touch "$3"')
    run = fleet.run("sweep")
    nodes = by_node(run)
    dev, prod = (float(line.split()[1]) for line in log.read_text().splitlines())
    assert dev < epoch(nodes[fleet.slow]["finished"]) < prod
    assert {r["ring"]: r["status"] for r in run["rings"]} == {"dev": "healthy", "prod": "healthy"}
    assert sorted((d["ring"], d["node"], d["status"]) for d in run["deploys"]) == sorted([
        ("dev", fleet.base, "deployed"), ("prod", fleet.base, "deployed"),
        ("prod", fleet.slow, "deployed")])  # fmt: skip
    commits = git(deploy.url, "log", "--format=%s", "main").splitlines()
    assert commits[:2] == ["graphbuild: deploy 2 images to prod",
                           "graphbuild: deploy 1 image to dev"]  # fmt: skip
    shown = git(deploy.url, "show", "main:envs/dev/base.yaml")
    assert f"image: {fleet.base}@{nodes[fleet.base]['digest']}" in shown


def test_an_as_ready_ring_that_is_not_healthy_stops_the_later_rings(fleet, remotes):
    deploy, log = rollout_to(fleet, remotes, "echo down; exit 3")
    done = fleet.gb("sweep", "--json")
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert set(outcomes(run).values()) == {"succeeded"}
    assert [(r["ring"], r["status"]) for r in run["rings"]] == [("dev", "unhealthy")]
    assert "exited 3: down" in run["rings"][0]["detail"]
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["dev"]  # once
    assert "dev: unhealthy" in done.stderr
    assert not git(deploy.url, "diff", "main~1", "main", "--", "envs/prod")  # prod untouched


def stop_during_bases_gate(fleet: Fleet) -> None:
    """A sweep sent SIGTERM while base's gate runs (a gate that would wait a minute)."""
    fleet.say("wait-base", "never")
    sweep = fleet.start("sweep")
    deadline = time.monotonic() + 120
    while not (fleet.marks.folder / "gate-base").exists():
        assert time.monotonic() < deadline and sweep.poll() is None, "base's gate never started"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=30)  # well before the gate's minute is up
    assert sweep.returncode == 1, err


def test_a_stop_cancels_the_gates_running_and_a_resume_runs_them(fleet):
    """As after the builds: the first Ctrl-C or SIGTERM stops a gate (which would take a
    minute here); the run is left interrupted, and its resume judges the image."""
    stop_during_bases_gate(fleet)
    assert not any(s[:2] == ("end", "base") for s in fleet.marks.stamps())
    run_id = json.loads(fleet.gb("runs", "--json").stdout)[0]["id"]
    stopped = json.loads(fleet.gb("runs", run_id, "--json").stdout)
    assert stopped["status"] == "interrupted"
    assert not any(g["node"] == fleet.base for g in stopped["gates"])
    (fleet.marks.root / "wait-base").unlink()
    resumed = fleet.run("resume", run_id)
    assert set(outcomes(resumed).values()) == {"succeeded"}
    assert {g["node"]: g["status"] for g in resumed["gates"]} == dict.fromkeys(
        [fleet.base, fleet.child, fleet.slow], "passed")  # fmt: skip


# ---------------------------------------------------------------- found in review


def test_an_image_skipped_as_served_on_a_digest_that_failed_a_gate_holds_its_child_back(fleet):
    """`rebuild BASE --skip-served` finds base served and skips it; the digest it serves
    failed a gate in the sweep before, so nothing may be built on it."""
    fleet.say("fail-base")
    first = json.loads(fleet.gb("sweep", "--json").stdout)
    assert outcomes(first)[fleet.child] == "blocked"
    again = fleet.gb("rebuild", fleet.base, "--skip-served", "--json")
    run = json.loads(again.stdout)
    assert again.returncode == 1 and outcomes(run)[fleet.child] == "blocked", again.stderr
    assert f"failed gate smoke in run {first['id']}" in by_node(run)[fleet.child]["error"]


def test_a_parent_that_failed_a_gate_before_blocks_its_child_until_judged_again(fleet):
    """Each sweep refuses to build on a digest that failed a gate, and says which run
    judged it; once the finding is accepted, `graphbuild resume` of that run judges it
    again and builds the child."""
    fleet.say("fail-base")
    first = json.loads(fleet.gb("sweep", "--json").stdout)
    assert outcomes(first)[fleet.child] == "blocked"
    again = fleet.gb("sweep", "--json")
    error = by_node(json.loads(again.stdout))[fleet.child]["error"]
    assert again.returncode == 1 and f"`graphbuild resume {first['id']}`" in error
    (fleet.marks.root / "fail-base").unlink()  # the gate passes now, as an allowlist would
    resumed = json.loads(fleet.gb("resume", first["id"], "--json").stdout)
    assert outcomes(resumed)[fleet.child] == "succeeded"
    assert "Nothing to rebuild." in fleet.gb("sweep").stdout


def test_a_parent_a_stopped_run_built_but_never_judged_is_judged_before_its_child(fleet):
    """A stop cancels the gates while the builds finish, and an interrupted run validates
    nothing after its builds: base is pushed but never judged. The next sweep, which does
    not rebuild base, runs base's gates on that digest before it builds child on it; a
    failure blocks child as a rebuilt parent's would, and resuming that sweep judges base
    again. It used to build child on base and deploy it on child's own gates alone."""
    stop_during_bases_gate(fleet)
    stopped = json.loads(fleet.gb("runs", "--json").stdout)[0]
    assert stopped["status"] == "interrupted"
    pushed = by_node(json.loads(fleet.gb("runs", stopped["id"], "--json").stdout))[fleet.base]
    (fleet.marks.root / "wait-base").unlink()
    fleet.say("fail-base")
    done = fleet.gb("sweep", "--json")
    run = json.loads(done.stdout)
    assert done.returncode == 1 and outcomes(run)[fleet.child] == "blocked", done.stderr
    assert fleet.base not in outcomes(run)  # not rebuilt: judged as it is
    assert f"{fleet.base} failed gate smoke" in by_node(run)[fleet.child]["error"]
    assert [(g["node"], g["digest"], g["status"]) for g in run["gates"]] == [
        (fleet.base, pushed["digest"], "failed")]  # fmt: skip
    assert fleet.starts("base") == 2  # the stopped one, then this sweep's
    (fleet.marks.root / "fail-base").unlink()  # the gate passes now, as an allowlist would
    resumed = json.loads(fleet.gb("resume", run["id"], "--json").stdout)
    assert outcomes(resumed)[fleet.child] == "succeeded"
    assert {g["node"]: g["status"] for g in resumed["gates"]}[fleet.base] == "passed"
    assert "Nothing to rebuild." in fleet.gb("sweep").stdout


def test_an_image_a_stopped_run_built_and_found_served_is_judged_as_it_is(fleet):
    """`rebuild BASE --skip-served` after the stop: base is served and skipped, and its
    gates run on that digest; a failure fails the run (exit 1) even with nothing built on
    base, and the run's resume judges base again. Then child is built on it."""
    stop_during_bases_gate(fleet)
    (fleet.marks.root / "wait-base").unlink()
    fleet.say("fail-base")
    done = fleet.gb("rebuild", fleet.base, "--skip-served", "--no-downstream", "--json")
    run = json.loads(done.stdout)
    assert (done.returncode, run["status"], outcomes(run)) == (
        1, "failed", {fleet.base: "skipped"}), done.stderr  # fmt: skip
    assert [(g["node"], g["status"]) for g in run["gates"]] == [(fleet.base, "failed")]
    (fleet.marks.root / "fail-base").unlink()
    resumed = json.loads(fleet.gb("resume", run["id"], "--json").stdout)
    assert resumed["status"] == "succeeded"
    assert [(g["node"], g["status"]) for g in resumed["gates"]] == [(fleet.base, "passed")]
    built = fleet.run("rebuild", fleet.base, "--skip-served")
    assert outcomes(built) == {fleet.base: "skipped", fleet.child: "succeeded"}
    assert fleet.starts("base") == 3  # stopped, failed, passed: judged once since


def test_with_build_during_gates_a_resume_judges_again_a_parent_it_failed(fleet):
    """build_during_gates: the sweep after the stop builds child (its source changed)
    while base's gate runs on the stopped run's digest; base fails, so child is built but
    held back. Once the gate passes, the sweep's resume, which has nothing left to build,
    judges base again and deploys child."""
    fleet.config["deployments"] = {"build_during_gates": True}
    fleet.write_config()
    stop_during_bases_gate(fleet)
    (fleet.marks.root / "wait-base").unlink()
    fleet.say("fail-base")
    fleet.apps.commit({"child/f": "child, changed"})
    done = fleet.gb("sweep", "--json")
    run = json.loads(done.stdout)
    assert done.returncode == 1 and outcomes(run)[fleet.child] == "succeeded", done.stderr
    assert {h["node"]: h["reason"] for h in run["held"] if h["workload"] is None} == {
        fleet.child: f"built on {fleet.base}, which failed a gate"}  # fmt: skip
    (fleet.marks.root / "fail-base").unlink()
    resumed = fleet.gb("resume", run["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["held"] == []
    assert fleet.starts("base") == 3


def test_a_resume_runs_a_gate_a_stop_cancelled_on_a_digest_it_did_not_build(fleet):
    """build_during_gates: the sweep after the stop builds child while base's gate runs on
    the stopped run's digest, and is stopped in turn before that gate ends. Its resume has
    nothing left to build, and must still judge base: child would otherwise deploy on a
    digest no gate ever judged."""
    stop_during_bases_gate(fleet)
    fleet.config["deployments"] = {"build_during_gates": True}
    fleet.write_config()
    fleet.apps.commit({"child/f": "child, changed"})
    sweep = fleet.start("sweep", "--json")
    deadline = time.monotonic() + 180
    while not (fleet.marks.folder / "gate-child").exists():  # child built, base still judged
        assert time.monotonic() < deadline and sweep.poll() is None, "child's gate never started"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=60)
    stopped = json.loads(out)
    assert stopped["status"] == "interrupted" and outcomes(stopped)[fleet.child] == "succeeded"
    assert fleet.starts("base") == 2
    (fleet.marks.root / "wait-base").unlink()
    fleet.say("fail-base")
    resumed = fleet.gb("resume", stopped["id"], "--json")
    assert resumed.returncode == 1, resumed.stderr
    assert fleet.starts("base") == 3
    held = json.loads(resumed.stdout)["held"]
    assert {h["node"]: h["reason"] for h in held if h["workload"] is None} == {
        fleet.child: f"built on {fleet.base}, which failed a gate"}  # fmt: skip


def test_a_gate_since_removed_holds_nothing_back(fleet):
    fleet.say("fail-base")
    assert outcomes(json.loads(fleet.gb("sweep", "--json").stdout))[fleet.child] == "blocked"
    fleet.config["gates"][0]["name"] = "smoke2"  # the failing gate retired, another in place
    (fleet.marks.root / "fail-base").unlink()
    fleet.write_config()
    done = json.loads(fleet.gb("sweep", "--json").stdout)
    assert outcomes(done)[fleet.child] == "succeeded"


def test_a_stop_during_an_as_ready_rings_health_check_keeps_the_deploys_that_landed(fleet, remotes):
    deploy, log = rollout_to(fleet, remotes, "sleep 60")
    sweep = fleet.start("sweep")
    deadline = time.monotonic() + 240
    while not (log.exists() and "dev" in log.read_text()):  # dev's health check runs
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    sweep.communicate(timeout=120)
    run_id = json.loads(fleet.gb("runs", "--json").stdout)[0]["id"]
    stopped = json.loads(fleet.gb("runs", run_id, "--json").stdout)
    commits = git(deploy.url, "log", "--format=%s", "main").splitlines()
    assert commits[0] == "graphbuild: deploy 1 image to dev"
    assert [(d["ring"], d["status"]) for d in stopped["deploys"]] == [("dev", "deployed")]


def test_a_resume_deploys_rings_in_order_after_a_ring_of_an_earlier_pass(fleet, remotes):
    """dev was deployed in the first pass, staging was not healthy; the resume builds what
    failed. dev must get it, and be healthy, before staging does."""
    h = fleet.host
    deploy = remotes("deploy", {
        f"envs/{ring}/{name}.yaml": DEPLOYMENT.format(name=name, image=image)
        for ring in ("dev", "staging") for name, image in (("base", fleet.base),
                                                            ("slow", fleet.slow))})  # fmt: skip
    log, down = fleet.marks.root / "health.log", fleet.marks.root / "staging-down"
    down.touch()
    stamp = 'echo "$1 $(date +%s.%N)" >> "$2"; [ ! -f "$3" ]'
    fleet.config["deployments"] = {
        "rings": [{"name": ring, "as_ready": True,
                   "health": ["sh", "-c", stamp, "sh", "{ring}", str(log), str(gone)]}
                  for ring, gone in (("dev", fleet.marks.root / "never"), ("staging", down))],
        "repos": [{"name": "deploy", "url": str(deploy.url), "branch": "main",
                   "rings": {"dev": ["envs/dev/**"], "staging": ["envs/staging/**"]}}],
    }  # fmt: skip
    fleet.write_config()
    good = (fleet.apps.work / "slow/Dockerfile").read_text()
    fleet.apps.commit({"slow/Dockerfile": f"FROM {h}/external/bb:1\nRUN false\n"}, "break slow")
    first = json.loads(fleet.gb("sweep", "--json").stdout)
    assert outcomes(first)[fleet.slow] == "failed"
    fleet.apps.commit({"slow/Dockerfile": good}, "fix slow")
    down.unlink()
    resumed = fleet.gb("resume", first["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    commits = git(deploy.url, "log", "--format=%s", "main").splitlines()
    assert commits[0].endswith("to staging") and commits[1].endswith("to dev"), commits
