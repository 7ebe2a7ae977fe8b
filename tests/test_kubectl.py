"""The kubectl deployer: the real kubectl against a stand-in API server (tests/kube.py)."""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from graphbuild.deployers import Change, Context
from graphbuild.deployers.kubectl import Kubectl
from graphbuild.errors import CommandFailed
from graphbuild.state import DeployStatus
from graphbuild.workloads import Workload
from tests.site import require

if TYPE_CHECKING:  # imported first as a plugin, which pytest then rewrites
    from tests.kube import KubeAPI

pytest_plugins = ["tests.kube"]  # the kube_api fixture

DIGEST = "sha256:" + "ab" * 32
DEPLOYED, UNCHANGED, FAILED = DeployStatus.DEPLOYED, DeployStatus.UNCHANGED, DeployStatus.FAILED
OLD = "localhost:5000/shop/web:0.9"
DEPLOYMENT_KEY = ("apps/v1", "shop", "deployments", "web")


def deployment() -> dict:
    """A Deployment of two containers: the app, and a sidecar that is not ours to touch."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": OLD, "ports": [{"containerPort": 8080}]},
                        {"name": "proxy", "image": "docker.io/envoyproxy/envoy:v1.30"},
                    ]
                },
            },
        },
    }


@functools.cache
def cronjobs() -> str:
    """Where CronJobs are served: kubectl before 1.21 (Debian's 1.20) knows them only as
    batch/v1beta1, as the clusters of its day served them, and cannot patch a batch/v1 one."""
    done = subprocess.run(["kubectl", "version", "--client", "-o", "json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    minor = json.loads(done.stdout)["clientVersion"]["minor"]
    return "batch/v1" if int(minor.rstrip("+")) >= 21 else "batch/v1beta1"


def cronjob() -> dict:
    return {
        "apiVersion": cronjobs(),
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "containers": [{"name": "report", "image": OLD}],
                        }
                    }
                }
            },
        },
    }


def change(kubectl: dict[str, str], tag: str = "1.0") -> Change:
    workload = Workload(deployer="kubectl", ring="dev", image="localhost:5000/shop/web",
                        tag="1.0", digest=None, name="web", where="repos.yaml",
                        kubectl=kubectl)  # fmt: skip
    return Change(workload, node="localhost:5000/shop/web:1.0", tag=tag, digest=DIGEST)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context("run-1", "dev", "base updated", tmp_path / "deploy.log", threading.Event(),
                   tmp_path / "workspace")  # fmt: skip


@pytest.fixture
def cluster(kube_api, tmp_path: Path):
    """`cluster(stuck=...)`: a server holding the Deployment and the CronJob, and the kubectl
    options that reach it through a kubeconfig (its context's namespace is `shop`)."""
    require("kubectl")

    def start(stuck: tuple[str, ...] = ()) -> tuple[KubeAPI, dict[str, str]]:
        api = kube_api(stuck=stuck, cronjobs=cronjobs())
        api.add(deployment())
        api.add(cronjob())
        kubeconfig = api.kubeconfig(tmp_path / "kube", context="test", namespace="shop")
        return api, {"kubeconfig": str(kubeconfig), "context": "test"}

    return start


def containers(api: KubeAPI) -> dict[str, str]:
    spec = api.get(DEPLOYMENT_KEY)["spec"]["template"]["spec"]
    return {c["name"]: c["image"] for c in spec["containers"]}


def test_set_image_patches_only_the_named_container_and_waits_for_the_rollout(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "deployment/web", "container": "web"})
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == DEPLOYED, applied.detail
    assert applied.detail == f"kubectl set image deployment/web web={wanted.reference}; rolled out"
    [patch] = api.patches
    assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert patch.content_type == "application/strategic-merge-patch+json"
    [sent] = patch.body["spec"]["template"]["spec"]["containers"]
    assert sent == {"name": "web", "image": "localhost:5000/shop/web:1.0@" + DIGEST}
    assert containers(api) == {"web": wanted.reference,
                               "proxy": "docker.io/envoyproxy/envoy:v1.30"}  # fmt: skip
    web = api.get(DEPLOYMENT_KEY)
    assert web["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080}]
    assert web["status"]["observedGeneration"] == web["metadata"]["generation"] == 2
    # rollout status saw it through the watch, not by polling
    watches = [r for r in api.requests if r.query.get("watch") == ["true"]]
    assert watches
    assert watches[0].query["fieldSelector"] == ["metadata.name=web"]
    log = context.log.read_text()
    assert "get deployment/web -o json" in log
    assert 'deployment "web" successfully rolled out' in log


def test_a_second_apply_with_the_same_reference_changes_nothing(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "deployment/web", "container": "web"})
    assert Kubectl().apply([wanted], context)[0].status == DEPLOYED
    seen = len(api.requests)
    [again] = Kubectl().apply([wanted], context)
    assert again.status == UNCHANGED, again.detail
    assert len(api.patches) == 1
    assert [r for r in api.requests[seen:] if r.query.get("watch")]  # the rollout is checked


def test_a_rerun_after_a_stuck_rollout_is_not_unchanged(cluster, context):
    """The image is in place but never got ready: a second run must not call that done."""
    api, options = cluster(stuck=("web",))
    wanted = change({**options, "resource": "deployment/web", "container": "web",
                     "timeout": "1"})  # fmt: skip
    assert Kubectl().apply([wanted], context)[0].status == FAILED
    [again] = Kubectl().apply([wanted], context)
    assert again.status == FAILED
    assert "timed out" in again.detail
    assert len(api.patches) == 1


def test_a_rollout_that_never_gets_ready_fails_on_its_timeout(cluster, context):
    api, options = cluster(stuck=("web",))
    wanted = change({**options, "resource": "deployment/web", "container": "web",
                     "timeout": "1"})  # fmt: skip
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == FAILED
    assert "kubectl rollout status deployment/web exited 1" in applied.detail
    assert "timed out" in applied.detail
    assert len(api.patches) == 1  # it was patched: the image is there, not running
    assert "--timeout=1s" in context.log.read_text()


def test_a_missing_container_fails_without_a_patch(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "deployment/web", "container": "nginx"})
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == FAILED
    assert applied.detail == "no container nginx in deployment/web"
    assert api.patches == []


def test_a_missing_workload_fails_with_kubectls_error(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "deployment/api", "container": "api"})
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == FAILED
    assert 'deployments.apps "api" not found' in applied.detail
    assert api.patches == []


def test_a_cronjob_is_patched_and_has_no_rollout_to_wait_for(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "cronjob/report", "container": "report"})
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == DEPLOYED, applied.detail
    assert "no rollout" in applied.detail
    [patch] = api.patches
    assert patch.path == f"/apis/{cronjobs()}/namespaces/shop/cronjobs/report"
    job = api.get((cronjobs(), "shop", "cronjobs", "report"))
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"] == [{"name": "report", "image": wanted.reference}]
    assert "rollout" not in context.log.read_text()
    assert not [r for r in api.requests if r.query.get("watch")]


def test_preview_shows_the_exact_commands_and_sends_nothing(cluster, context):
    api, options = cluster()
    web = change({**options, "resource": "deployment/web", "container": "web",
                  "namespace": "shop", "timeout": "90"})  # fmt: skip
    report = change({"resource": "cronjob/report", "container": "report"})
    kubeconfig = options["kubeconfig"]
    assert Kubectl().preview([web, report], context) == [
        f"kubectl --kubeconfig {kubeconfig} --context test --namespace shop "
        f"set image deployment/web web={web.reference}",
        f"kubectl --kubeconfig {kubeconfig} --context test --namespace shop "
        "rollout status deployment/web --timeout=90s",
        f"kubectl set image cronjob/report report={report.reference}",
    ]
    assert api.requests == []
    assert not context.log.exists()


def test_a_hostile_reference_stays_one_argument(cluster, context, tmp_path: Path):
    api, options = cluster()
    marker = tmp_path / "pwned"
    tag = f"1.0 $(touch {marker}); touch {marker} proxy=evil"
    wanted = change({**options, "resource": "deployment/web", "container": "web"}, tag=tag)
    [command, _] = Kubectl().preview([wanted], context)
    assert shlex.split(command)[-1] == f"web={wanted.reference}"
    Kubectl().apply([wanted], context)
    [patch] = api.patches
    [sent] = patch.body["spec"]["template"]["spec"]["containers"]
    assert sent == {"name": "web", "image": wanted.reference}
    assert containers(api)["proxy"] == "docker.io/envoyproxy/envoy:v1.30"
    assert not marker.exists()


def test_a_resource_that_looks_like_a_flag_is_refused(cluster, context):
    api, options = cluster()
    wanted = change({**options, "resource": "--server=http://example.invalid/x",
                     "container": "web"})  # fmt: skip
    [applied] = Kubectl().apply([wanted], context)
    assert applied.status == FAILED
    assert "expected kind/name" in applied.detail
    assert api.requests == []


def test_a_cancel_is_raised_not_reported(cluster, context):
    api, options = cluster()
    context.cancel.set()
    wanted = change({**options, "resource": "deployment/web", "container": "web"})
    with pytest.raises(CommandFailed, match="cancelled"):
        Kubectl().apply([wanted], context)
    assert api.requests == []


def test_workloads_without_kubectl_installed_are_bad_input_before_a_run(tmp_path, monkeypatch):
    from graphbuild import deployers
    from graphbuild.config import Config, Deployments, RingSpec, WorkloadSpec
    from graphbuild.errors import GraphbuildError

    listed = WorkloadSpec("web", "r.test/web", "1", "dev", {"resource": "deployment/web",
                                                           "container": "web"})  # fmt: skip
    config = Config(tmp_path / "repos.yaml", tmp_path, (), deployments=Deployments(
        rings=(RingSpec("dev"),), workloads=(listed,)))  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphbuildError, match=r"deployments\.workloads: kubectl is not installed"):
        deployers.check(config)
    deployers.check(Config(tmp_path / "repos.yaml", tmp_path, ()))  # no workloads: no need
