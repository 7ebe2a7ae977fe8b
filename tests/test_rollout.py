"""Validate and deploy, end to end: real registry, real buildah builds, real git remotes.

The fleet: `base` on an upstream image in the loopback registry; `web`, `bad`
and `badchild` (on `bad`) in `apps`. A scanner gate (a real command that
writes a Trivy JSON report) fails `bad`. A GitOps deploy repository holds
the manifests of two rings, dev and prod, in the shapes people write: a
multi-document file with a two-container pod and a comment naming the image,
a kustomization, Helm values, and a CRLF file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .site import Site, base_and_apps, git, local_build, require

pytestmark = pytest.mark.timeout(900)

FIXTURES = Path(__file__).parent / "fixtures" / "gates"

DEV_WEB = """\
# the web tier; image: {h}/apps/web:1 stays as it is in this comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: "{web}"   # same image, quoted
      containers:
        - name: web
          image: {web}
        - name: proxy
          image: docker.io/library/nginx:1.25
---
apiVersion: v1
kind: Service
metadata:
  name: web
"""
DEV_KUSTOMIZATION = """\
resources:
  - web.yaml
images:
  - name: {h}/apps/bad
    newTag: "1"
"""
DEV_VALUES = """\
badchild:
  image:
    repository: {h}/apps/badchild
    tag: "1"
"""
PROD_WEB = (
    "apiVersion: apps/v1\r\nkind: Deployment\r\nmetadata:\r\n  name: web\r\nspec:\r\n"
    "  template:\r\n    spec:\r\n      containers:\r\n        - name: web\r\n"
    "          image: {web} # kept by graphbuild\r\n"
)


class Fleet(Site):
    """Site's way of running graphbuild, on a fleet with gates and a deploy repository."""

    def __init__(self, root: Path, registry, remotes) -> None:
        self.root, self.registry, self.host = root, registry, registry.host
        h = self.host
        self.push_upstream("upstream v1")
        self.platform = remotes("platform", {
            "base/Dockerfile": f"FROM {h}/upstream/base:1\nCOPY f /base\n", "base/f": "base",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "web/Dockerfile": f"FROM {h}/platform/base:1\nCOPY f /web\n", "web/f": "web",
            "bad/Dockerfile": f"FROM {h}/platform/base:1\nCOPY f /bad\n", "bad/f": "bad",
            "badchild/Dockerfile": f"FROM {h}/apps/bad:1\nCOPY f /c\n", "badchild/f": "c",
        })  # fmt: skip
        self.web_tag = f"{h}/apps/web:1"
        self.deploy = remotes("deploy", self.manifests(self.web_tag))
        self.health_log = root / "health.log"
        scan = ('case "$1" in *apps/bad:*) cp "$2/trivy-alpine.json" "$3";; '
                '*) cp "$2/trivy-clean.json" "$3";; esac')  # fmt: skip
        self.config = {
            **local_build(h, root),
            "repos": base_and_apps(h, self.platform.url, self.apps.url),
            "gates": [
                {"name": "trivy", "scan": ["sh", "-c", scan, "sh", "{image}", str(FIXTURES),
                                           "{report}"], "fail_on": "high"},
                {"name": "pinned", "test": ["sh", "-c", 'case "$1" in *@sha256:*) ;; '
                                            '*) exit 1;; esac', "sh", "{image}"]},
            ],
            "deployments": {
                "rings": [
                    {"name": "dev", "health": ["sh", "-c", 'echo "$1 $2" >> "$3"', "sh",
                                               "{ring}", "{run}", str(self.health_log)]},
                    {"name": "prod"},
                ],
                "repos": [{"name": "deploy", "url": str(self.deploy.url), "branch": "main",
                           "rings": {"dev": ["envs/dev/**"], "prod": ["envs/prod/**"]}}],
            },
        }  # fmt: skip
        self.write_config()

    def manifests(self, web: str) -> dict[str, str]:
        h = self.host
        return {
            "envs/dev/web.yaml": DEV_WEB.format(h=h, web=web),
            "envs/dev/kustomization.yaml": DEV_KUSTOMIZATION.format(h=h),
            "envs/dev/values.yaml": DEV_VALUES.format(h=h),
            "envs/prod/web.yaml": PROD_WEB.format(web=web),
        }

    def shown(self, path: str) -> str:
        """A file of the deploy repository's main branch, byte for byte (CRLF kept)."""
        done = subprocess.run(["git", "--git-dir", str(self.deploy.url), "show", f"main:{path}"],
                              check=True, capture_output=True)  # fmt: skip
        return done.stdout.decode()

    def commits(self) -> list[str]:
        return git(self.deploy.url, "log", "--format=%s", "main").splitlines()

    def at(self, digest: str) -> str:
        return f"{self.web_tag}@{digest}"


@pytest.fixture
def fleet(tmp_path, registry, remotes):
    require("buildah")
    require("git")
    return Fleet(tmp_path, registry, remotes)


def deploys(run: dict) -> dict[tuple[str, str], str]:
    return {(d["ring"], d["name"]): d["status"] for d in run["deploys"]}


def rings(run: dict) -> dict[str, str]:
    return {r["ring"]: r["status"] for r in run["rings"]}


def test_base_update_rebuilds_validates_and_deploys_ring_by_ring(fleet):
    h = fleet.host
    untouched = {p: fleet.shown(p) for p in ("envs/dev/kustomization.yaml",
                                             "envs/dev/values.yaml")}  # fmt: skip
    first = fleet.run("sweep", code=1)  # `bad` fails its scan: the run says so
    web1 = fleet.digest(fleet.web_tag)
    assert fleet.shown("envs/dev/web.yaml") == DEV_WEB.format(h=h, web=fleet.at(web1))
    assert fleet.shown("envs/prod/web.yaml") == PROD_WEB.format(web=fleet.at(web1))
    assert rings(first) == {"dev": "healthy", "prod": "healthy"}

    fleet.push_upstream("upstream v2: the security fix")
    commits = len(fleet.commits())
    run = fleet.run("sweep", code=1)
    web2 = fleet.digest(fleet.web_tag)
    assert web2 != web1
    assert {n["node"]: n["status"] for n in run["nodes"]} == {
        **dict.fromkeys([f"{h}/platform/base:1", f"{h}/apps/web:1", f"{h}/apps/bad:1"],
                        "succeeded"),
        f"{h}/apps/badchild:1": "blocked",  # nothing is built on an image that failed a gate
    }  # fmt: skip
    gates = {(g["node"], g["gate"]): g["status"] for g in run["gates"]}
    assert gates[(f"{h}/apps/bad:1", "trivy")] == "failed"
    assert gates[(f"{h}/apps/web:1", "trivy")] == "passed"
    assert not any(node == f"{h}/apps/badchild:1" for node, _ in gates)
    assert all(s == "passed" for (_, gate), s in gates.items() if gate == "pinned")
    bad_gate = next(g for g in run["gates"] if g["node"] == f"{h}/apps/bad:1"
                    and g["gate"] == "trivy")  # fmt: skip
    assert "critical" in bad_gate["summary"]
    assert bad_gate["findings"] and bad_gate["findings"][0]["severity"] in ("critical", "high")

    # GitOps: one commit per ring, only the reference changed, byte for byte
    assert fleet.shown("envs/dev/web.yaml") == DEV_WEB.format(h=h, web=fleet.at(web2))
    assert fleet.shown("envs/prod/web.yaml") == PROD_WEB.format(web=fleet.at(web2))
    assert {p: fleet.shown(p) for p in untouched} == untouched  # bad and badchild held
    log = fleet.commits()
    assert len(log) == commits + 2
    assert log[:2] == ["graphbuild: deploy 1 image to prod", "graphbuild: deploy 1 image to dev"]
    message = git(fleet.deploy.url, "log", "-1", "--format=%B", "main~1")
    assert f"Graphbuild-Run: {run['id']}" in message
    assert f"{h}/apps/web:1: stale: built on {h}/platform/base:1" in message  # why, and what
    assert f"- envs/dev/web.yaml: {fleet.at(web2)}" in message
    assert deploys(run) == {
        ("dev", "Deployment/shop/web (migrate)"): "deployed",
        ("dev", "Deployment/shop/web (web)"): "deployed",
        ("prod", "Deployment//web (web)"): "deployed",
    }
    assert rings(run) == {"dev": "healthy", "prod": "healthy"}
    assert fleet.health_log.read_text().splitlines()[-1] == f"dev {run['id']}"

    # the run says what was deployed where, and why the rest was not
    shown = fleet.gb("runs", run["id"])
    assert "ring prod: healthy" in shown.stdout
    assert "failed" in shown.stdout and "trivy" in shown.stdout
    report = (fleet.root / ".graphbuild" / "runs" / run["id"] / "report.md").read_text()
    assert "## Gates" in report and "## Deploys" in report
    again = fleet.run("sweep", code=1)  # badchild, never built, is not built on bad now either
    assert [(n["node"], n["status"], n["error"]) for n in again["nodes"]] == [
        (f"{h}/apps/badchild:1", "blocked", f"{h}/apps/bad:1 failed gate trivy in run "
         f"{run['id']} (judged again by `graphbuild resume {run['id']}`, or rebuild the image)")
    ]  # fmt: skip
    assert len(fleet.commits()) == commits + 2  # a second sweep commits nothing
    assert not again["held"] and not again["gates"]

    uses = json.loads(fleet.gb("uses", f"{h}/upstream/base:1", "--json").stdout)
    workloads = {(u["image"], w["ring"], w["name"]) for u in uses for w in u["workloads"]}
    assert (f"{h}/apps/web:1", "prod", "Deployment//web (web)") in workloads
    assert (f"{h}/apps/bad:1", "dev", "kustomization") in workloads
    assert (f"{h}/apps/badchild:1", "dev", "badchild.image") in workloads


def test_an_unhealthy_ring_stops_the_later_rings(fleet):
    fleet.config["deployments"]["rings"][0]["health"] = ["sh", "-c", "echo down; exit 3"]
    fleet.write_config()
    before = fleet.shown("envs/prod/web.yaml")
    run = fleet.run("sweep", code=1)
    web = fleet.digest(fleet.web_tag)
    assert fleet.shown("envs/dev/web.yaml") == DEV_WEB.format(h=fleet.host, web=fleet.at(web))
    assert fleet.shown("envs/prod/web.yaml") == before
    assert rings(run) == {"dev": "unhealthy"}
    assert "exited 3: down" in run["rings"][0]["detail"]
    assert all(ring == "dev" for ring, _ in deploys(run))


def test_a_manual_ring_waits_for_graphbuild_deploy(fleet):
    fleet.config["deployments"]["rings"][1]["manual"] = True
    fleet.write_config()
    before = fleet.shown("envs/prod/web.yaml")
    run = fleet.run("sweep", code=1)
    assert rings(run) == {"dev": "healthy", "prod": "manual"}
    assert fleet.shown("envs/prod/web.yaml") == before
    web = fleet.digest(fleet.web_tag)
    plain = fleet.run("deploy", run["id"], code=1)  # without --ring: up to the manual ring
    assert rings(plain) == {"dev": "healthy", "prod": "manual"}
    assert fleet.shown("envs/prod/web.yaml") == before

    preview = fleet.gb("deploy", run["id"], "--ring", "prod", "--dry-run")
    assert preview.returncode == 1, preview.stderr  # `bad` is still held: the run failed a gate
    assert f"-          image: {fleet.web_tag} # kept by graphbuild\n" in preview.stdout
    assert f"+          image: {fleet.at(web)} # kept by graphbuild\n" in preview.stdout
    assert fleet.shown("envs/prod/web.yaml") == before  # a dry run changes nothing

    done = fleet.run("deploy", run["id"], "--ring", "prod", code=1)
    assert fleet.shown("envs/prod/web.yaml") == PROD_WEB.format(web=fleet.at(web))
    assert rings(done)["prod"] == "healthy"
    again = fleet.run("deploy", run["id"], "--ring", "prod", code=1)
    assert deploys(again)[("prod", "Deployment//web (web)")] == "unchanged"

    fleet.push_upstream("upstream v2")
    later = fleet.run("sweep", code=1)
    newer = fleet.digest(fleet.web_tag)
    assert fleet.shown("envs/dev/web.yaml") == DEV_WEB.format(h=fleet.host, web=fleet.at(newer))
    refused = fleet.gb("deploy", run["id"], "--ring", "dev")
    assert refused.returncode == 2
    assert f"run {later['id']} has rebuilt images of run {run['id']}" in refused.stderr
    back = fleet.run("deploy", run["id"], "--ring", "dev", "--rollback", code=1)
    assert rings(back)["dev"] == "healthy"
    assert fleet.shown("envs/dev/web.yaml") == DEV_WEB.format(h=fleet.host, web=fleet.at(web))


def test_a_failed_gate_is_on_record_with_its_child_and_their_workloads(fleet):
    """`bad` fails its scan: bad and badchild (built on it, during bad's gates) are held,
    each naming bad as the cause, and so are the workloads running them (the kustomization
    and the Helm values in dev), in the run document, `runs ID` and report.md; once, however
    often the run is judged again."""
    fleet.config["deployments"]["build_during_gates"] = True  # badchild is built on bad
    fleet.write_config()
    h = fleet.host
    bad, child = f"{h}/apps/bad:1", f"{h}/apps/badchild:1"
    run = fleet.run("sweep", code=1)
    digest = {n["node"]: n["digest"] for n in run["nodes"]}
    held = {(x["node"], x["name"]): x for x in run["held"]}
    assert list(held) == [(bad, None), (bad, "kustomization"), (child, None),
                          (child, "badchild.image")]  # fmt: skip
    failed = held[(bad, None)]["reason"]
    assert failed.startswith("failed gate trivy: ") and "critical" in failed
    because = f"built on {bad}, which failed a gate"
    for (node, name), x in held.items():
        assert x["digest"] == digest[node]
        assert x["cause"] == bad
        assert x["reason"] == (failed if node == bad else because)
        assert x["ring"] == (None if name is None else "dev")
    assert held[(bad, "kustomization")]["workload"].startswith(
        "deploy:envs/dev/kustomization.yaml#"
    )
    assert held[(child, "badchild.image")]["workload"].startswith("deploy:envs/dev/values.yaml#")
    assert not any(x["node"] == f"{h}/apps/web:1" for x in run["held"])

    assert json.loads(fleet.gb("runs", run["id"], "--json").stdout)["held"] == run["held"]
    table = fleet.gb("runs", run["id"]).stdout
    assert "Held back from deploy:" in table and "Workloads held back:" in table
    assert any(line.split()[:3] == ["dev", "badchild.image", f"{h}/apps/badchild:1"]
               for line in table.splitlines())  # fmt: skip
    report = (fleet.root / ".graphbuild" / "runs" / run["id"] / "report.md").read_text()
    section = report.split("## Held back\n", 1)[1]
    assert f"| `{child}` | `{digest[child]}` | {because} | `{bad}` |" in section
    assert f"| dev | badchild.image | `{child}` | {because} |" in section

    again = fleet.run("deploy", run["id"], code=1)  # judged again: the same rows, once
    assert again["held"] == run["held"]


# -- which images may deploy, without builds: a run and a graph as data

BASE, MID, APP, OTHER = "r.test/base:1", "r.test/mid:1", "r.test/app:1", "r.test/other:1"


def small_run(gate_status: dict[str, str], hold: bool = True, gate_images=()):
    import networkx as nx

    from graphbuild.config import Config, Deployments, GateSpec
    from graphbuild.state import GateRecord, Run, RunNode

    g = nx.DiGraph([(BASE, MID), (MID, APP)])
    g.add_node(OTHER)
    for node in g:
        g.nodes[node].update(kind="image", image=node.rsplit(":", 1)[0], tags=[node])
    digest = {n: "sha256:" + str(i) * 64 for i, n in enumerate(g)}
    nodes = [RunNode(n, 0, "stale", "", [], status="succeeded", digest=digest[n]) for n in g]
    gates = [GateRecord(n, "scan", digest[n], s, f"{s} summary", []) for n, s in
             gate_status.items()]  # fmt: skip
    run = Run("r1", "sweep", None, "", None, "succeeded", {}, nodes, gates)
    spec = GateSpec("scan", "scan", ("x", "{report}"), tuple(gate_images))
    config = Config(Path("repos.yaml"), Path("ws"), (), gates=(spec,),
                    deployments=Deployments(hold_descendants=hold))  # fmt: skip
    return config, g, run, digest


def test_a_failed_gate_holds_the_image_and_what_is_built_on_it(tmp_path):
    from graphbuild import rollout
    from graphbuild.state import State

    passed = dict.fromkeys([BASE, APP, OTHER], "passed")
    config, g, run, digest = small_run({**passed, MID: "failed"})
    ok, held = rollout.deployable(config, g, run, State(tmp_path))
    assert ok == {BASE: digest[BASE], OTHER: digest[OTHER]}
    assert held == {
        MID: rollout.Held(digest[MID], "failed gate scan: failed summary", MID),
        APP: rollout.Held(digest[APP], f"built on {MID}, which failed a gate", MID),
    }


def test_hold_descendants_false_lets_what_is_built_on_a_failed_image_deploy(tmp_path):
    from graphbuild import rollout
    from graphbuild.state import State

    passed = dict.fromkeys([BASE, APP, OTHER], "passed")
    config, g, run, _ = small_run({**passed, MID: "failed"}, hold=False)
    ok, held = rollout.deployable(config, g, run, State(tmp_path))
    assert set(ok) == {BASE, APP, OTHER}
    assert set(held) == {MID}


def test_an_image_whose_gate_has_not_run_is_not_validated(tmp_path):
    from graphbuild import rollout
    from graphbuild.state import State

    config, g, run, digest = small_run({BASE: "passed", MID: "passed", APP: "passed"})
    ok, held = rollout.deployable(config, g, run, State(tmp_path))
    assert held == {OTHER: rollout.Held(digest[OTHER], "not validated: gate scan has not run",
                                        OTHER)}  # fmt: skip
    config, g, run, _ = small_run({BASE: "passed"}, gate_images=["r.test/base"])
    ok, held = rollout.deployable(config, g, run, State(tmp_path))  # the gate applies to base only
    assert set(ok) == {BASE, MID, APP, OTHER} and not held


def test_a_gate_that_failed_runs_again_and_one_that_passed_does_not(tmp_path):
    """resume and deploy judge again what failed (an allowlist added since, a scanner that
    could not run); what passed on this digest stays passed."""
    import threading

    import networkx as nx

    from graphbuild import rollout
    from graphbuild.config import Config, GateSpec
    from graphbuild.state import RunNode, State

    flag = tmp_path / "healthy"
    gate = GateSpec("smoke", "test", ("sh", "-c", 'test -f "$1"', "sh", str(flag)))
    config = Config(tmp_path / "repos.yaml", tmp_path / "ws", (), gates=(gate,))
    g = nx.DiGraph()
    g.add_node(APP, image="r.test/app", tags=[APP])
    with State(config.workspace) as state:
        run_id = state.create_run("sweep", None, {}, [RunNode(APP, 0, "stale", "", [])])
        node = RunNode(APP, 0, "stale", "", [], status="succeeded", digest="sha256:" + "a" * 64)
        state.update_node(run_id, node)

        def validate() -> list[str]:
            run = state.run(run_id)
            found = rollout.validate(config, g, state, run, threading.Event(), say=lambda _: None)
            return [r.status for r in found]

        assert validate() == ["failed"]
        flag.touch()
        assert validate() == ["passed"]
        assert validate() == []
        assert [r.status for r in state.run(run_id).gates] == ["passed"]


def test_an_image_built_on_a_parent_that_failed_a_gate_in_an_earlier_run_is_held(tmp_path):
    """Run 1 built mid and it failed its gate; run 2 rebuilt only app (its own source
    changed), on that same mid digest: app must not deploy."""
    from graphbuild import rollout
    from graphbuild.state import GateRecord, State

    config, g, run, digest = small_run(dict.fromkeys([BASE, MID, APP, OTHER], "passed"))
    run.nodes = [n for n in run.nodes if n.node == APP]  # run 2 built app only
    run.gates = [gate for gate in run.gates if gate.node == APP]
    with State(tmp_path) as state:
        state.record_gate("run1", GateRecord(MID, "scan", digest[MID], "failed", "1 critical", []))
        state.record_build(MID, digest[MID], {BASE: digest[BASE]}, "run1")
        state.record_build(APP, digest[APP], {MID: digest[MID]}, "run2")
        ok, held = rollout.deployable(config, g, run, state)
        assert (ok, held) == (
            {},
            {APP: rollout.Held(digest[APP], f"built on {MID}, which failed a gate", MID)},
        )
        state.record_gate("run3", GateRecord(MID, "scan", digest[MID], "passed", "allowed", []))
        assert rollout.deployable(config, g, run, state) == ({APP: digest[APP]}, {})
        # a gate since removed holds nothing back (it used to hold app back for good)
        state.record_gate("run4", GateRecord(MID, "retired", digest[MID], "failed", "x", []))
        assert rollout.deployable(config, g, run, state) == ({APP: digest[APP]}, {})


def test_a_run_records_the_images_and_workloads_a_failed_gate_held_back(tmp_path):
    """mid fails its gate: mid and app (built on it) are held, each with the image that
    caused it, and so are the workloads running them; base and other are not. A second
    pass over the run (resume, deploy) records them once, and a pass clears them."""
    import networkx as nx

    from graphbuild import rollout
    from graphbuild.config import Config, GateSpec
    from graphbuild.state import HeldRecord, RunNode, State
    from graphbuild.workloads import KUBECTL, Workload

    verdict = tmp_path / "mid-fails"
    verdict.touch()
    gate = GateSpec("smoke", "test", ("sh", "-c", 'case "$1" in *mid*) test ! -f "$2";; esac',
                                      "sh", "{image}", str(verdict)))  # fmt: skip
    config = Config(tmp_path / "repos.yaml", tmp_path / "ws", (), gates=(gate,))
    g = nx.DiGraph([(BASE, MID), (MID, APP)])
    g.add_node(OTHER)
    for node in g:
        g.nodes[node].update(kind="image", image=node.rsplit(":", 1)[0], tags=[node])
    digest = {n: "sha256:" + str(i) * 64 for i, n in enumerate(g)}
    targets = [Workload(KUBECTL, ring, n.rsplit(":", 1)[0], "1", None, f"{ring}-{n[7:10]}",
                        f"deployments.workloads[{i}]")
               for i, (ring, n) in enumerate([("dev", MID), ("prod", MID), ("dev", APP),
                                              ("dev", OTHER)])]  # fmt: skip
    said: list[str] = []
    with State(config.workspace) as state:
        run_id = state.create_run("sweep", None, {}, [RunNode(n, 0, "stale", "", []) for n in g])
        for n in g:
            state.update_node(run_id, RunNode(n, 0, "stale", "", [], status="succeeded",
                                              digest=digest[n]))  # fmt: skip
        state.finish_run(run_id, "succeeded")  # the builds did
        assert not rollout.roll_out(config, g, state, run_id, targets, say=said.append)
        mid_failed = next(r.reason for r in state.run(run_id).held if r.node == MID)
        assert mid_failed.startswith("failed gate smoke: ")
        app_held = f"built on {MID}, which failed a gate"
        expected = [
            HeldRecord(APP, digest[APP], app_held, MID),
            HeldRecord(APP, digest[APP], app_held, MID, "kubectl:dev-app", "dev-app", "dev"),
            HeldRecord(MID, digest[MID], mid_failed, MID),
            HeldRecord(MID, digest[MID], mid_failed, MID, "kubectl:dev-mid", "dev-mid", "dev"),
            HeldRecord(MID, digest[MID], mid_failed, MID, "kubectl:prod-mid", "prod-mid", "prod"),
        ]  # fmt: skip
        assert state.run(run_id).held == expected
        assert f"{APP}: not deployed, {app_held}" in said

        assert not rollout.roll_out(config, g, state, run_id, targets, say=said.append)
        assert state.run(run_id).held == expected  # judged again: the same, once
        assert state.run(run_id).status == "failed"  # exit code 1, as before

        verdict.unlink()  # the finding is allowed now: the gate passes on a rerun
        assert rollout.roll_out(config, g, state, run_id, targets, say=said.append)
        assert state.run(run_id).held == []


def test_an_image_held_for_a_parent_that_failed_in_an_earlier_run_names_that_parent(tmp_path):
    from graphbuild import rollout
    from graphbuild.state import GateRecord, HeldRecord, State

    config, g, run, digest = small_run(dict.fromkeys([BASE, MID, APP, OTHER], "passed"))
    run.nodes = [n for n in run.nodes if n.node == APP]
    run.gates = [gate for gate in run.gates if gate.node == APP]
    with State(tmp_path) as state:
        state.record_gate("run1", GateRecord(MID, "scan", digest[MID], "failed", "1 critical", []))
        state.record_build(MID, digest[MID], {BASE: digest[BASE]}, "run1")
        state.record_build(APP, digest[APP], {MID: digest[MID]}, "run2")
        _, held = rollout.deployable(config, g, run, state)
        assert rollout.held_records(g, state, [], held) == [
            HeldRecord(APP, digest[APP], f"built on {MID}, which failed a gate", MID)
        ]


# -- deploy ring by ring with the gitops deployer, on a real deploy repository

POD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n" \
      "    - name: web\n      image: r.test/app:1\n"  # fmt: skip
APP_DIGEST = "sha256:" + "a" * 64


class Rollout:
    """A deploy repository with the app in rings dev and prod, a run that built the app, and
    `deploy()` as a sweep calls it; `said` is what it told the person."""

    def __init__(self, tmp_path, remotes, rings, reason=None) -> None:
        import networkx as nx

        from graphbuild import discovery, trees
        from graphbuild.config import Config, Deployments, DeployRepoSpec
        from graphbuild.state import RunNode, State

        self.remote = remotes("deploy", {"envs/dev/web.yaml": POD, "envs/prod/web.yaml": POD})
        where = {"dev": ("envs/dev/**",), "prod": ("envs/prod/**",)}
        spec = DeployRepoSpec("deploy", str(self.remote.url), "main", rings=where)
        tree = trees.DirTree(self.remote.work, {}, {})
        self.targets, problems = discovery.discover(spec, tree)
        assert problems == []
        deployments = Deployments(rings=tuple(rings), repos=(spec,))
        self.config = Config(tmp_path / "repos.yaml", tmp_path / "ws", (), deployments=deployments)
        self.graph = nx.DiGraph()
        self.graph.add_node(APP, image="r.test/app", tags=[APP])
        self.state = State(self.config.workspace)
        self.run_id = self.state.create_run(
            "sweep", reason, {}, [RunNode(APP, 0, "stale", "built on x", [])]
        )
        self.state.update_node(self.run_id, RunNode(APP, 0, "stale", "built on x", [],
                                                    "succeeded", digest=APP_DIGEST))  # fmt: skip
        self.said: list[str] = []

    def deploy(self, rings=None, dry_run=False, cancel=None) -> bool:
        import threading

        from graphbuild import rollout

        run = self.state.run(self.run_id)
        planned = rollout.changes(self.graph, self.state, self.targets, {APP: APP_DIGEST})
        return rollout.deploy(self.config, self.state, run, planned, cancel or threading.Event(),
                              rings, dry_run, self.said.append)  # fmt: skip

    def rings(self) -> list[tuple[str, str, str]]:
        return [(r.ring, r.status, r.detail) for r in self.state.run(self.run_id).rings]

    def deploys(self) -> list[tuple[str, str, str]]:
        return [(d.ring, d.reference, d.status) for d in self.state.run(self.run_id).deploys]

    def shown(self, path: str) -> str:
        return git(self.remote.url, "show", f"main:{path}") + "\n"


PINNED = POD.replace("r.test/app:1", f"r.test/app:1@{APP_DIGEST}")


def test_changes_point_each_workload_running_the_image_at_its_new_digest(tmp_path, remotes):
    from graphbuild import rollout
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev")])
    planned = rollout.changes(site.graph, site.state, site.targets, {APP: APP_DIGEST})
    assert [(c.workload.ring, c.workload.file, c.reference) for c in planned] == [
        ("dev", "envs/dev/web.yaml", f"r.test/app:1@{APP_DIGEST}"),
        ("prod", "envs/prod/web.yaml", f"r.test/app:1@{APP_DIGEST}"),
    ]
    assert rollout.changes(site.graph, site.state, site.targets, {}) == []


def test_rings_deploy_in_order_each_healthy_before_the_next(tmp_path, remotes):
    from graphbuild.config import RingSpec

    checked = tmp_path / "health"
    health = ("sh", "-c", 'echo "$1 $2" >> "$3"', "sh", "{ring}", "{run}", str(checked))
    site = Rollout(tmp_path, remotes, [RingSpec("dev", health=health), RingSpec("prod")])
    assert site.deploy() is True
    assert site.rings() == [
        ("dev", "healthy", "1 deployed, 0 already there, health check passed"),
        ("prod", "healthy", "1 deployed, 0 already there, no health check configured"),
    ]
    reference = f"r.test/app:1@{APP_DIGEST}"
    assert site.deploys() == [("dev", reference, "deployed"), ("prod", reference, "deployed")]
    assert checked.read_text() == f"dev {site.run_id}\n"  # {ring} and {run} filled in
    assert site.shown("envs/dev/web.yaml") == PINNED
    assert site.shown("envs/prod/web.yaml") == PINNED
    assert site.said == [
        "dev: 1 deployed, 0 already there, health check passed",
        "prod: 1 deployed, 0 already there, no health check configured",
    ]
    message = git(site.remote.url, "log", "-1", "--format=%B", "main")
    assert f"sweep {site.run_id}\n{APP}: stale: built on x" in message  # why, per image

    assert site.deploy() is True  # again: nothing to push, the ring is still healthy
    assert site.rings()[0] == ("dev", "healthy", "0 deployed, 1 already there, "
                               "health check passed")  # fmt: skip


def test_a_manual_ring_waits_until_it_is_named(tmp_path, remotes):
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev"), RingSpec("prod", manual=True)])
    assert site.deploy() is True
    wait = f"deploy it with `graphbuild deploy {site.run_id} --ring prod`"
    assert site.rings() == [("dev", "healthy", "1 deployed, 0 already there, no health check "
                             "configured"), ("prod", "manual", wait)]  # fmt: skip
    assert site.said[-1] == f"prod: manual; {wait}"
    assert site.shown("envs/prod/web.yaml") == POD  # not touched
    assert site.deploy(rings=["prod"]) is True  # a person takes it on
    assert site.shown("envs/prod/web.yaml") == PINNED
    assert site.rings()[-1] == ("prod", "healthy", "1 deployed, 0 already there, no health "
                                "check configured")  # fmt: skip


def test_an_unhealthy_ring_stops_the_rollout_before_the_next(tmp_path, remotes):
    from graphbuild.config import RingSpec

    sick = ("sh", "-c", "echo 'pods not ready' >&2; exit 3")
    site = Rollout(tmp_path, remotes, [RingSpec("dev", health=sick), RingSpec("prod")])
    assert site.deploy() is False
    why = "health check of dev exited 3: pods not ready"
    assert site.rings() == [("dev", "unhealthy", why)]  # prod: not even recorded
    assert site.said == [f"dev: unhealthy ({why}); later rings not deployed"]
    assert site.shown("envs/prod/web.yaml") == POD


def test_a_ring_nobody_runs_the_images_in_is_nothing_to_deploy(tmp_path, remotes):
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev"), RingSpec("staging"), RingSpec("prod")])
    assert site.deploy() is True
    assert [(ring, status) for ring, status, _ in site.rings()] == [
        ("dev", "healthy"), ("staging", "nothing-to-deploy"), ("prod", "healthy")
    ]  # fmt: skip
    assert site.rings()[1][2] == "no workload runs these"


def test_a_failed_deploy_fails_its_ring_and_stops_the_rollout(tmp_path, remotes):
    import shutil

    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev"), RingSpec("prod")])
    shutil.rmtree(site.remote.url)  # the deploy repository cannot be cloned
    assert site.deploy() is False
    ((ring, status, detail),) = site.rings()
    assert (ring, status) == ("dev", "failed")
    assert detail.startswith("1 deploy failed, first Pod//web (web): ")
    assert site.deploys() == [("dev", f"r.test/app:1@{APP_DIGEST}", "failed")]
    assert site.said == [f"dev: {detail}; later rings not deployed"]


def test_a_dry_run_shows_the_diffs_and_records_and_pushes_nothing(tmp_path, remotes):
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev"), RingSpec("prod", manual=True)])
    before = git(site.remote.url, "rev-parse", "main")
    assert site.deploy(dry_run=True) is True
    assert site.rings() == [] and site.deploys() == []
    assert git(site.remote.url, "rev-parse", "main") == before
    diff, manual = site.said
    assert diff.startswith("# deploy -> main\n--- a/envs/dev/web.yaml\n+++ b/envs/dev/web.yaml")
    assert f"-      image: r.test/app:1\n+      image: r.test/app:1@{APP_DIGEST}" in diff
    assert manual.startswith("prod: manual; ")


def test_a_dry_run_with_nothing_to_deploy_says_so_for_each_ring(tmp_path, remotes):
    """A preview that would change nothing says so, instead of printing nothing."""
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev"), RingSpec("qa")])
    assert site.deploy() is True  # dev now runs the run's digest; no workload is in qa
    site.said.clear()
    assert site.deploy(dry_run=True) is True
    assert site.said == [
        "dev: nothing to deploy (its workloads already run this run's images)",
        "qa: nothing to deploy (no workload in it runs an image of this run)",
    ]


def test_a_cancel_before_a_ring_starts_raises_and_deploys_nothing(tmp_path, remotes):
    import threading

    from graphbuild.config import RingSpec
    from graphbuild.errors import CommandFailed

    site = Rollout(tmp_path, remotes, [RingSpec("dev")])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CommandFailed, match=r"^deploy of dev: cancelled$"):
        site.deploy(cancel=cancel)
    assert site.rings() == [] and site.shown("envs/dev/web.yaml") == POD


def test_a_run_with_a_reason_gives_it_to_the_deploy_commit(tmp_path, remotes):
    from graphbuild.config import RingSpec

    site = Rollout(tmp_path, remotes, [RingSpec("dev")], reason="CVE-2026-1234")
    assert site.deploy() is True
    message = git(site.remote.url, "log", "-1", "--format=%B", "main")
    assert message.split("\n\n")[1] == f"sweep {site.run_id}: CVE-2026-1234"
