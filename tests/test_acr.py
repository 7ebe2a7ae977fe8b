"""ACR: the `acr` builder (ACR Tasks quick builds), base mirroring, webhooks.

Azure cannot be reached from the test machine: the real azure-mgmt-containerregistry
and azure-identity clients talk to FakeArm (tests/azure.py), a loopback HTTPS server
answering the Azure Resource Manager calls as Azure's REST reference documents them.
Its runs "build" by pushing a small image to the real loopback registry, so what the
sweep checks afterwards is real.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from graphbuild import acr_admin, retry
from graphbuild.builders import BuildRequest
from graphbuild.builders.acr import PINNED, Acr
from graphbuild.config import AcrSpec, AzureSpec, RegistryLogin
from graphbuild.errors import CommandFailed, ConfigError
from graphbuild.state import State

from .site import Site, require

pytestmark = pytest.mark.timeout(600)


def builder(arm, credentials=None, **options) -> Acr:
    azure = AzureSpec(arm.resource_group, arm.name, subscription=arm.subscription,
                      login_server=arm.registry.host, endpoint=arm.base_url,
                      ca_bundle=str(arm.ca_bundle), credentials=credentials or {})  # fmt: skip
    return Acr(AcrSpec(**{"poll": 0.05, **options}), azure)


def build_request(arm, tmp_path, repo: str = "team/app", **kw) -> BuildRequest:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "app.txt").write_text("app\n")
    (context / ".git").mkdir(exist_ok=True)
    (context / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    dockerfile = tmp_path / "Dockerfile.pinned"
    dockerfile.write_text(
        f"FROM {arm.registry.host}/lib/base:1@sha256:{'a' * 64}\nCOPY app.txt /\n"
    )
    kw.setdefault("tags", (f"{arm.registry.host}/{repo}:1", f"{arm.registry.host}/{repo}:latest"))
    return BuildRequest(image=kw["tags"][0], context=context, dockerfile=dockerfile,
                        log=tmp_path / "build.log", **kw)  # fmt: skip


# -- the builder, one run at a time


def test_a_build_uploads_the_pinned_context_and_returns_the_pushed_digest(arm, tmp_path):
    request = build_request(arm, tmp_path, build_args={"V": "1"}, target="run",
                            platforms=("linux/arm64/v8",), no_cache=True)  # fmt: skip
    digest = builder(arm, agent_pool="pool1", timeout=600).build(request, threading.Event())

    (run,) = arm.runs.values()
    assert (
        digest
        == arm.registry.http.head(
            "/v2/team/app/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).headers["Docker-Content-Digest"]
    )
    assert run.dockerfile == request.dockerfile.read_text()  # built from the pinned copy
    assert sorted(run.files) == sorted([PINNED, "app.txt"])  # the context, without .git
    body = run.request
    assert body["imageNames"] == ["team/app:1", "team/app:latest"]
    assert (body["dockerFilePath"], body["target"], body["noCache"], body["isPushEnabled"]) == (
        PINNED, "run", True, True)  # fmt: skip
    assert body["arguments"] == [{"name": "V", "value": "1", "isSecret": False}]
    assert body["platform"] == {"os": "Linux", "architecture": "arm64", "variant": "v8"}
    assert (body["timeout"], body["agentPoolName"]) == (600, "pool1")
    log = request.log.read_text()
    assert f"ACR run {run.run_id} on myacr: team/app:1, team/app:latest" in log
    assert "Successfully pushed" in log  # the run's own log, streamed in
    calls = [r.path.rsplit("/", 1)[-1] for r in arm.requests if "/registries/" in r.path]
    assert calls[:2] == ["listBuildSourceUploadUrl", "scheduleRun"]


def test_a_secret_build_arg_is_sent_marked_secret_and_never_logged(arm, tmp_path):
    """Argument.isSecret: ACR keeps the value out of its run log and its answers."""
    request = build_request(arm, tmp_path, build_args={"V": "1"},
                            secret_args={"TOKEN": "s3cret-value"})  # fmt: skip
    builder(arm).build(request, threading.Event())
    assert arm.runs["cb1"].request["arguments"] == [
        {"name": "V", "value": "1", "isSecret": False},
        {"name": "TOKEN", "value": "s3cret-value", "isSecret": True},
    ]
    assert "s3cret" not in request.log.read_text()


def test_a_failed_run_is_a_build_failure_with_its_error(arm, tmp_path):
    arm.fail["team/app"] = 1
    with pytest.raises(CommandFailed, match=r"ACR run cb1 Failed: ") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    assert "error" in (tmp_path / "build.log").read_text()


def test_a_run_the_service_broke_is_worth_retrying(arm, tmp_path):
    arm.fail["team/app"], arm.statuses["team/app"] = 1, "Error"
    with pytest.raises(CommandFailed, match=r"ACR run cb1 Error") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is True


def test_a_cancelled_build_cancels_its_acr_run(arm, tmp_path):
    arm.hold = True
    arm.lro_retry_after = 1
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(CommandFailed, match=r"cancelled \(ACR run cb1\)"):
        builder(arm).build(build_request(arm, tmp_path), cancel)
    assert arm.runs["cb1"].status == "Canceled"
    assert arm.calls("/runs/cb1/cancel", "POST")


def test_throttling_is_waited_out(arm, tmp_path):
    arm.throttle["/scheduleRun"] = 1
    builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert [r.status for r in arm.calls("/scheduleRun", "POST")] == [429, 200]


def test_a_subscription_that_may_not_run_tasks_is_a_clear_permanent_failure(arm, tmp_path):
    """Free-trial and free-credit subscriptions answer 400 TasksOperationsNotAllowed: said
    with what to do, and not retried (it will not change by itself)."""
    arm.tasks_not_allowed = True
    with pytest.raises(CommandFailed) as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    message = str(info.value)
    assert message.startswith(f"acr {arm.registry.host}/team/app:1: (TasksOperationsNotAllowed) "
                              "ACR Tasks requests for the registry myacr and sub-1 are not "
                              "permitted")  # fmt: skip
    assert message.endswith(acr_admin.TASKS_NOT_ALLOWED)
    assert [r.status for r in arm.calls("/scheduleRun", "POST")] == [400]  # asked once
    assert not arm.runs


def test_an_identity_without_the_role_for_a_run_is_a_permanent_failure_naming_the_role(
    arm, tmp_path
):
    """403 AuthorizationFailed (no role assignment): not retried, with the role to give."""
    arm.forbidden["/scheduleRun"] = "Microsoft.ContainerRegistry/registries/scheduleRun/action"
    with pytest.raises(CommandFailed) as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    assert "(AuthorizationFailed)" in str(info.value) and "scheduleRun/action" in str(info.value)
    assert str(info.value).endswith(acr_admin.NO_ROLE)
    assert [r.status for r in arm.calls("/scheduleRun", "POST")] == [403]  # asked once


@pytest.mark.parametrize("reply", ["location", "async", "both"])
def test_a_scheduled_run_is_followed_through_every_long_running_reply(arm, tmp_path, reply):
    """Registries_ScheduleRun may answer 202 (x-ms-long-running-operation): the run id is
    read from where that reply puts the Run, and the run is scheduled once."""
    arm.schedule_reply, arm.lro_retry_after = reply, 1
    request = build_request(arm, tmp_path)
    digest = builder(arm).build(request, threading.Event())
    assert [r.status for r in arm.calls("/scheduleRun", "POST")] == [202]
    assert list(arm.runs) == ["cb1"] and arm.runs["cb1"].status == "Succeeded"
    assert digest == arm.runs["cb1"].outputs[0]["digest"]
    assert "ACR run cb1 on myacr" in request.log.read_text()


def test_a_run_accepted_without_a_run_id_is_not_scheduled_again(arm, tmp_path):
    """A 202 whose operation status names no Run: the run exists but cannot be followed;
    retrying would schedule a second one, so the failure is permanent and says so."""
    arm.schedule_reply, arm.lro_retry_after = "async-bare", 1
    with pytest.raises(CommandFailed, match="named no run id") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    assert len(arm.calls("/scheduleRun", "POST")) == 1 and list(arm.runs) == ["cb1"]
    assert not arm.calls("/runs/None")


def test_a_run_accepted_then_not_followed_to_its_id_is_not_scheduled_again(arm, tmp_path):
    """A 202, then an operation that cannot be polled (past the SDK's own retries): the run
    may have been made, so the failure is permanent, never a retry that schedules another."""
    arm.schedule_reply, arm.lro_retry_after, arm.lro_unreachable = "location", 1, 100
    with pytest.raises(CommandFailed, match="accepted") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    assert len(arm.calls("/scheduleRun", "POST")) == 1


@pytest.mark.parametrize("then", [500, 502, 503, 504, "drop"])
def test_a_run_made_whose_answer_was_lost_is_never_scheduled_again(arm, tmp_path, then):
    """scheduleRun made the run, then its answer was a server error or never came: the
    run may be building, so neither the SDK nor the scheduler sends the POST again."""
    arm.schedule_then_fail = [then]
    with pytest.raises(CommandFailed, match="list-runs -r myacr") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is False
    assert len(arm.calls("/scheduleRun", "POST")) == 1 and list(arm.runs) == ["cb1"]


def test_a_scheduled_run_whose_operation_polls_fail_for_a_while_is_still_followed(arm, tmp_path):
    """Only the scheduleRun POST goes without the SDK's retries; its operation's polls
    (GETs) keep them."""
    arm.schedule_reply, arm.lro_retry_after, arm.lro_unreachable = "location", 1, 1
    builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert len(arm.calls("/scheduleRun", "POST")) == 1 and list(arm.runs) == ["cb1"]


def test_a_lost_run_that_was_cancelled_is_worth_retrying(arm, tmp_path):
    arm.hold, arm.lro_retry_after = True, 1
    arm.forbidden["/runs/cb1"] = "Microsoft.ContainerRegistry/registries/runs/read"
    with pytest.raises(CommandFailed, match="lost track of the run") as info:
        builder(arm).build(build_request(arm, tmp_path), threading.Event())
    assert info.value.transient is True
    assert arm.runs["cb1"].status == "Canceled"


def test_a_lost_run_that_could_not_be_cancelled_is_not_retried(arm, tmp_path):
    """Neither followed nor cancelled, the run may still be building and pushing: a retry
    would build the image a second time, so the failure is permanent and says where to look."""
    arm.hold = True
    arm.forbidden["/runs/cb1"] = "Microsoft.ContainerRegistry/registries/runs/read"
    arm.forbidden["/runs/cb1/cancel"] = "Microsoft.ContainerRegistry/registries/runs/cancel/action"
    request = build_request(arm, tmp_path)
    with pytest.raises(CommandFailed, match="lost track of the run") as info:
        builder(arm).build(request, threading.Event())
    assert info.value.transient is False
    assert "could not be cancelled" in str(info.value) and "list-runs -r myacr" in str(info.value)
    assert arm.calls("/runs/cb1/cancel", "POST") and arm.runs["cb1"].status == "Queued"
    assert len(arm.runs) == 1
    assert "ACR run cb1 could not be cancelled" in request.log.read_text()


def test_a_context_above_the_single_put_limit_is_uploaded_in_blocks(arm, tmp_path, monkeypatch):
    """Above graphbuild's single-Put size the context goes as Put Block + Put Block List, each
    request with the x-ms-version of the SAS; the limits are small here, not gigabytes."""
    from graphbuild.builders import acr

    arm.blob_put_limit = 4096  # a single Put Blob of more is refused (413)
    monkeypatch.setattr(acr, "SINGLE_PUT_MAX", 4096, raising=False)
    monkeypatch.setattr(acr, "BLOCK_SIZE", 1500, raising=False)
    request = build_request(arm, tmp_path)
    (request.context / "data.bin").write_bytes(os.urandom(9000))  # does not compress
    builder(arm).build(request, threading.Event())
    puts = [r for r in arm.requests if r.path.startswith("/blobs/source/") and r.method == "PUT"]
    assert [r.query["comp"] for r in puts] == ["block"] * (len(puts) - 1) + ["blocklist"]
    assert len(puts) >= 8 and all(r.status == 201 for r in puts)
    assert {r.headers.get("x-ms-version") for r in puts} == {puts[0].query["sv"]}
    assert "data.bin" in arm.runs["cb1"].files  # the blocks made the whole archive


def test_a_context_too_large_for_one_request_is_a_permanent_failure_naming_its_size(arm, tmp_path):
    arm.blob_put_limit = 1000
    request = build_request(arm, tmp_path)
    (request.context / "data.bin").write_bytes(os.urandom(5000))
    with pytest.raises(CommandFailed, match=r"RequestBodyTooLarge") as info:
        builder(arm).build(request, threading.Event())
    assert info.value.transient is False
    (put,) = arm.calls(".tar.gz", "PUT")
    assert put.status == 413
    assert f"{len(put.body)} bytes" in str(info.value)
    assert not arm.calls("/scheduleRun")


def test_an_image_outside_the_building_registry_is_refused_before_any_call(arm, tmp_path):
    request = build_request(arm, tmp_path, tags=("elsewhere.example/team/app:1",))
    with pytest.raises(CommandFailed, match="ACR Tasks push only to their own registry"):
        builder(arm).build(request, threading.Event())
    assert not arm.calls("/scheduleRun")


def test_several_platforms_are_refused(arm, tmp_path):
    request = build_request(arm, tmp_path, platforms=("linux/amd64", "linux/arm64"))
    with pytest.raises(CommandFailed, match="one platform"):
        builder(arm).build(request, threading.Event())


def test_named_contexts_are_refused_before_any_call(arm, tmp_path):
    """A DockerBuildRequest has no build contexts: built without them, the image would not
    be on what the graph says; one line names the image and the key instead."""
    contexts = {"base": f"docker-image://{arm.registry.host}/lib/base:1@sha256:{'a' * 64}"}
    request = build_request(arm, tmp_path, contexts=contexts)
    with pytest.raises(CommandFailed) as err:
        builder(arm).build(request, threading.Event())
    assert str(err.value) == (
        f"acr {request.image}: an ACR quick build takes no named build contexts (contexts: "
        "base); build this image with buildah or docker buildx"
    )
    assert not err.value.transient
    assert arm.calls() == []  # nothing asked of Azure, nothing uploaded


# -- logging in to other registries: azure.credentials

VAULT = "https://kv-builds.vault.azure.net/secrets"
CLIENT = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def test_a_build_logs_in_to_other_registries_with_vault_secrets_and_identities(arm, tmp_path):
    """Each run request names the Key Vault secrets and identities ACR logs in with, as
    the Tasks API's Credentials; a login only for imports (password_env) is not sent."""
    credentials = {
        "docker.io": RegistryLogin("docker.io", username="hubuser",
                                   password_vault=f"{VAULT}/hub-token", identity="system",
                                   password_env="HUB_TOKEN"),
        "other.azurecr.io": RegistryLogin("other.azurecr.io", identity=CLIENT),
        "quay.io": RegistryLogin("quay.io", username_vault=f"{VAULT}/quay-user",
                                 password_vault=f"{VAULT}/quay-pass", identity=CLIENT),
        "ghcr.io": RegistryLogin("ghcr.io", username="bot", password_env="GHCR_TOKEN"),
    }  # fmt: skip
    builder(arm, credentials=credentials).build(build_request(arm, tmp_path), threading.Event())

    (run,) = arm.runs.values()
    assert run.request["credentials"] == {
        "sourceRegistry": {"loginMode": "Default"},  # the run still pushes to its registry
        "customRegistries": {
            "docker.io": {"userName": {"type": "Opaque", "value": "hubuser"},
                          "password": {"type": "Vaultsecret", "value": f"{VAULT}/hub-token"},
                          "identity": "system"},
            "other.azurecr.io": {"identity": CLIENT},
            "quay.io": {"userName": {"type": "Vaultsecret", "value": f"{VAULT}/quay-user"},
                        "password": {"type": "Vaultsecret", "value": f"{VAULT}/quay-pass"},
                        "identity": CLIENT},
        },
    }  # fmt: skip
    assert run.status == "Succeeded"


def test_without_credentials_the_run_request_has_none(arm, tmp_path):
    builder(arm).build(build_request(arm, tmp_path), threading.Event())
    (run,) = arm.runs.values()
    assert "credentials" not in run.request


@pytest.mark.parametrize(
    ("credentials", "says"),
    [
        ({"customRegistries": {"docker.io": {"userName": {"type": "Opaque", "value": "u"},
                                             "password": "hunter2"}}},
         "credentials.customRegistries['docker.io'].password"),
        ({"customRegistries": {"docker.io": {"password": {"type": "Plain", "value": "x"}}}},
         "credentials.customRegistries['docker.io'].password.type"),
        ({"customRegistries": {"docker.io": {"identity": 7}}},
         "credentials.customRegistries['docker.io'].identity"),
        ({"customRegistries": ["docker.io"]}, "credentials.customRegistries"),
        ({"sourceRegistry": {"loginMode": "Token"}}, "credentials.sourceRegistry.loginMode"),
        ({"sourceRegistries": {}}, "credentials.sourceRegistries"),
    ],
)  # fmt: skip
def test_the_stand_in_refuses_credentials_the_tasks_api_does_not_define(arm, credentials, says):
    """A literal secret where the spec wants a SecretObject, a type it does not list, or a
    key it does not have: refused with 400 naming the path, and no run."""
    arm.uploads["src.tar.gz"] = b""
    status, body, _ = arm._schedule({
        "type": "DockerBuildRequest", "dockerFilePath": "Dockerfile",
        "platform": {"os": "Linux"}, "sourceLocation": "src.tar.gz",
        "credentials": credentials,
    })  # fmt: skip
    assert status == 400 and not arm.runs
    error = json.loads(body)["error"]
    assert error["code"] == "InvalidRequestContent" and says in error["message"]


# -- a sweep on ACR Tasks, end to end


class AcrSite(Site):
    """test_sweep's fleet (base -> mid -> app, and solo) plus two more children of base,
    built by the acr builder through FakeArm."""

    def __init__(self, root, registry, remotes, arm) -> None:
        super().__init__(root, registry, remotes)
        h = self.host
        self.platform.commit({
            "second/Dockerfile": f"FROM {h}/platform/base:1\nCOPY f /second\n", "second/f": "2",
            "third/Dockerfile": f"FROM {h}/platform/base:1\nCOPY f /third\n", "third/f": "3",
        })  # fmt: skip
        images = self.config["repos"][0]["images"]
        for name in ("second", "third"):
            images.append({"image": f"{h}/platform/{name}", "dockerfile": f"{name}/Dockerfile",
                           "context": name, "tags": ["1"]})  # fmt: skip
        self.config["azure"] = {
            "subscription": arm.subscription, "resource_group": "rg", "registry": arm.name,
            "login_server": h, "endpoint": arm.base_url, "ca_bundle": str(arm.ca_bundle),
        }  # fmt: skip
        self.config["builder"] = {"kind": "acr", "poll": 0.1}
        self.config["registries"][h]["max_builds"] = 2
        self.write_config()


@pytest.fixture
def acr_site(tmp_path, registry, remotes, arm):
    require("git")
    return AcrSite(tmp_path, registry, remotes, arm)


def overlapping(arm) -> int:
    """The most ACR runs that were in progress at one moment."""
    events = sorted([(r.created, 1) for r in arm.runs.values()]
                    + [(r.finished, -1) for r in arm.runs.values() if r.finished])  # fmt: skip
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_a_sweep_builds_the_tree_on_acr_in_order_and_resumes_after_a_failed_run(acr_site, arm):
    site = acr_site
    arm.fail["platform/mid"] = 1
    run = site.run("sweep", code=1)
    status = {n["node"]: n["status"] for n in run["nodes"]}
    second, third = f"{site.host}/platform/second:1", f"{site.host}/platform/third:1"
    assert status == {site.base: "succeeded", site.mid: "failed", site.app: "blocked",
                      site.solo: "succeeded", second: "succeeded", third: "succeeded"}  # fmt: skip
    by_image = {r.request["imageNames"][0]: r for r in arm.runs.values()}
    base = by_image["platform/base:1"]
    for child in ("platform/second:1", "platform/third:1", "platform/mid:1"):
        assert by_image[child].created >= base.finished  # a child starts after its parent
        assert f"{site.host}/platform/base:1@{site.digest(site.base)}" in by_image[child].dockerfile
    assert overlapping(arm) == 2  # parallel in a wave, and never past max_builds: 2
    logs = {n["node"]: n["log"] for n in run["nodes"]}
    assert "Successfully pushed" in Path(logs[second]).read_text()

    before = len(arm.runs)
    resumed = site.run("resume", run["id"])
    assert resumed["status"] == "succeeded"
    rebuilt = sorted(r.request["imageNames"][0] for r in list(arm.runs.values())[before:])
    assert rebuilt == ["apps/app:1", "platform/mid:1"]  # only what had not succeeded
    app = [r for r in arm.runs.values() if r.request["imageNames"][0] == "apps/app:1"][-1]
    assert f"{site.host}/platform/mid:1@{site.digest(site.mid)}" in app.dockerfile


def test_an_interrupted_sweep_cancels_its_acr_runs(acr_site, arm):
    site = acr_site
    arm.hold, arm.lro_retry_after = True, 1
    process = site.start("sweep", "--json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(r.status == "Running" for r in arm.runs.values()):
        time.sleep(0.1)
    assert any(r.status == "Running" for r in arm.runs.values())
    os.killpg(process.pid, signal.SIGTERM)  # stop starting builds
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)  # and cancel the running ones
    out, err = process.communicate(timeout=120)
    held = [r for r in arm.runs.values() if r.status != "Succeeded"]
    assert held and all(r.status == "Canceled" for r in held), err
    assert json.loads(out)["status"] == "interrupted"
    with State(site.root / ".graphbuild") as state:
        assert [run.status for run in state.runs()] == ["interrupted"]


# -- mirroring


def test_imports_due_are_the_mirrored_bases_whose_mirror_tag_lags():
    mirrors = {"docker.io": "myacr.azurecr.io/mirror"}
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    bases = ["docker.io/library/python:3.12", "docker.io/library/node:22", "ghcr.io/x/y:1",
             f"docker.io/library/alpine@{a}", "docker.io/library/gone:1"]  # fmt: skip
    digests = {
        "docker.io/library/python:3.12": a, "myacr.azurecr.io/mirror/library/python:3.12": a,
        "docker.io/library/node:22": b, "myacr.azurecr.io/mirror/library/node:22": a,
        "docker.io/library/gone:1": None,
    }  # fmt: skip
    due, unanswered = acr_admin.imports_due(bases, mirrors, digests)
    assert due == [acr_admin.Import("docker.io/library/node:22", b,
                              "myacr.azurecr.io/mirror/library/node:22")]  # fmt: skip
    assert unanswered == ["docker.io/library/gone:1"]


def test_mirror_imports_each_base_once_by_digest_and_the_graph_sees_one_base(acr_site, arm):
    site = acr_site
    h = site.host
    site.config["mirrors"] = {f"{h}/upstream": f"{h}/mirror/upstream"}
    site.write_config()
    site.platform.commit({"base/Dockerfile": f"FROM {h}/mirror/upstream/base:1\nCOPY f /b\n"})
    site.gb("sync")

    first = json.loads(site.gb("mirror", "--json").stdout)
    assert first["imports"] == [{"source": site.upstream, "digest": site.upstream_digest,
                                 "target": f"{h}/mirror/upstream/base:1"}]  # fmt: skip
    assert site.digest(f"{h}/mirror/upstream/base:1") == site.upstream_digest  # by digest
    (imported,) = arm.imports
    assert imported["parameters"]["source"]["sourceImage"] == (
        f"upstream/base@{site.upstream_digest}"
    )
    again = site.gb("mirror")
    assert again.returncode == 0 and "The mirror is up to date." in again.stdout
    assert len(arm.imports) == 1  # a rerun imports nothing

    uses = json.loads(site.gb("uses", site.upstream, "--json").stdout)
    assert site.base in [u["image"] for u in uses]  # the mirror's name is the upstream base
    by_mirror = json.loads(site.gb("uses", f"{h}/mirror/upstream/base:1", "--json").stdout)
    assert by_mirror == uses
    new = site.push_upstream("upstream v2")
    assert json.loads(site.gb("mirror", "--json").stdout)["imports"][0]["digest"] == new
    assert len(arm.imports) == 2


def test_a_pushs_mirror_imports_only_what_is_below_the_pushed_base(acr_site, arm):
    """Issue 17, point 4: before a push's sweep, `listen` mirrors the bases the images
    below the pushed one are built on, and asks about no other base (a periodic `mirror`
    still covers them all)."""
    from contextlib import closing

    from graphbuild import config, detect, graph, indexdb, pipeline

    site = acr_site
    h = site.host
    site.config["mirrors"] = {f"{h}/upstream": f"{h}/mirror/upstream"}
    site.write_config()
    other = site.registry.image("upstream/other", "1", content="other v1")
    site.platform.commit({"base/Dockerfile": f"FROM {h}/mirror/upstream/base:1\nCOPY f /b\n"})
    site.apps.commit({"solo/Dockerfile": f"FROM {h}/mirror/upstream/other:1\nCOPY f /solo\n"})
    assert site.gb("sync").returncode == 0
    cfg = config.load(site.root / "repos.yaml")
    with closing(indexdb.connect(cfg.workspace)) as db:
        g = graph.load(db)
    asked = site.registry.requests(r"/v2/(mirror/)?upstream/other/")
    done = pipeline.mirror(cfg, g, dry_run=False, only=detect.needed(g, [site.upstream]))
    assert [i.source for i in done.done] == [site.upstream]
    assert site.registry.requests(r"/v2/(mirror/)?upstream/other/") == asked  # not asked
    assert [i["parameters"]["source"]["sourceImage"] for i in arm.imports] == [
        f"upstream/base@{site.upstream_digest}"
    ]
    everything = pipeline.mirror(cfg, g, dry_run=False)  # the periodic mirror: all of them
    assert [(i.source, i.digest) for i in everything.done] == [(f"{h}/upstream/other:1", other)]


def test_listen_mirrors_only_the_bases_below_the_pushed_one_before_its_sweep(
    acr_site, arm, monkeypatch
):
    """Issue 17, point 4, through `listen`: a push's batch imports into the mirror what
    the images below the pushed base use, and leaves every other base to `mirror`."""
    import httpx

    from .test_events import SECRET, _free_port, _runs_settled, _wait_for, acr_event

    site = acr_site
    h = site.host
    site.config["mirrors"] = {f"{h}/upstream": f"{h}/mirror/upstream"}
    site.write_config()
    site.registry.image("upstream/other", "1", content="other v1")  # due, but not below
    site.platform.commit({"base/Dockerfile": f"FROM {h}/mirror/upstream/base:1\nCOPY f /b\n"})
    site.apps.commit({"solo/Dockerfile": f"FROM {h}/mirror/upstream/other:1\nCOPY f /solo\n"})
    assert site.gb("sync").returncode == 0
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", SECRET)
    port = _free_port()
    process = site.start("listen", "--port", str(port), "--host", "127.0.0.1")
    try:
        _wait_for(port)
        body = acr_event(tag="1", repository="upstream/base", digest=site.upstream_digest)
        answer = httpx.post(f"http://127.0.0.1:{port}/hooks/acr",
                            json=body | {"request": {"host": h}},
                            headers={"X-Graphbuild-Secret": SECRET}, timeout=10)  # fmt: skip
        assert answer.status_code == 202
        runs = _runs_settled(site.root / ".graphbuild")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert len(runs) == 1 and runs[0].status == "succeeded", (runs, err)
    with State(site.root / ".graphbuild") as state:
        run = state.run(runs[0].id)
    assert run is not None
    assert {n.node for n in run.nodes} == {site.base, site.mid, site.app, *(
        f"{h}/platform/{name}:1" for name in ("second", "third"))}  # fmt: skip
    sources = [i["parameters"]["source"]["sourceImage"] for i in arm.imports]
    assert sources == [f"upstream/base@{site.upstream_digest}"], err


# -- importing with credentials, and through throttling


def importing(arm, registry, credentials=None):
    """An import of upstream/base:1 into the mirror, and the spec and client that make it."""
    digest = registry.image("upstream/base", "1", content="upstream")
    host = registry.host
    item = acr_admin.Import(f"{host}/upstream/base:1", digest, f"{host}/mirror/upstream/base:1")
    spec = AzureSpec(arm.resource_group, arm.name, subscription=arm.subscription,
                     login_server=host, endpoint=arm.base_url, ca_bundle=str(arm.ca_bundle),
                     credentials=credentials or {})  # fmt: skip
    return item, spec, acr_admin.client(spec)


FAST = retry.Backoff(5.0)  # waits 5, 10, 20...: recorded, never slept


def test_an_import_logs_in_with_the_password_from_the_environment(arm, registry, monkeypatch):
    monkeypatch.setenv("HUB_TOKEN", "dckr_pat_s3cret")
    login = RegistryLogin(registry.host, username="hubuser", password_env="HUB_TOKEN")
    item, spec, manager = importing(arm, registry, {registry.host: login})
    with manager:
        acr_admin.import_image(manager, spec, item)
    (done,) = arm.imports
    assert done["parameters"]["source"]["credentials"] == {
        "username": "hubuser", "password": "dckr_pat_s3cret"}  # fmt: skip
    assert done["digest"] == item.digest


def test_a_login_for_builds_only_imports_as_before(arm, registry):
    """A login with no password_env (Key Vault, identities) is not for imports, which take
    no Key Vault reference: the import is anonymous."""
    login = RegistryLogin(registry.host, identity="system")
    item, spec, manager = importing(arm, registry, {registry.host: login})
    with manager:
        acr_admin.import_image(manager, spec, item)
    (done,) = arm.imports
    assert "credentials" not in done["parameters"]["source"]


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_password_variable_is_a_config_error_before_the_import(
    arm, registry, monkeypatch, value
):
    if value is not None:
        monkeypatch.setenv("NO_SUCH_TOKEN_VAR", value)
    login = RegistryLogin(registry.host, username="hubuser", password_env="NO_SUCH_TOKEN_VAR")
    item, spec, manager = importing(arm, registry, {registry.host: login})
    with manager, pytest.raises(ConfigError) as caught:
        acr_admin.import_image(manager, spec, item)
    assert caught.value.key == f"azure.credentials.{registry.host}.password_env"
    assert caught.value.message == "$NO_SUCH_TOKEN_VAR is not set or empty"
    assert not arm.calls("/importImage")


def test_a_rate_limited_import_is_tried_again_after_a_backoff(arm, registry):
    """Docker Hub's TOOMANYREQUESTS in the import operation's error: tried again."""
    arm.import_rate_limited = 2
    item, spec, manager = importing(arm, registry)
    waits: list[float] = []
    with manager:
        acr_admin.import_image(manager, spec, item, backoff=FAST, sleep=waits.append)
    assert [i["error"] and i["error"]["code"] for i in arm.imports] == [
        "TOOMANYREQUESTS", "TOOMANYREQUESTS", None]  # fmt: skip
    assert waits == [5.0, 10.0]
    mirrored = registry.http.head(
        "/v2/mirror/upstream/base/manifests/1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert mirrored.headers["Docker-Content-Digest"] == item.digest  # fmt: skip


def test_a_throttled_import_waits_as_long_as_retry_after_says(arm, registry):
    """ARM's 429: the SDK tries 4 times itself, then graphbuild waits the Retry-After."""
    arm.throttle["/importImage"], arm.throttle_retry_after = 4, 1
    item, spec, manager = importing(arm, registry)
    waits: list[float] = []
    with manager:
        acr_admin.import_image(manager, spec, item, backoff=FAST, sleep=waits.append)
    assert [r.status for r in arm.calls("/importImage", "POST")] == [429] * 4 + [202]
    assert waits == [1.0]  # Retry-After, not the backoff's 5


def test_a_retry_after_given_as_an_http_date_is_honoured(arm, registry):
    """Retry-After may be an HTTP date (RFC 9110); one already past means now, not the
    backoff's 5 s."""
    arm.throttle["/importImage"] = 4
    arm.throttle_retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"
    item, spec, manager = importing(arm, registry)
    waits: list[float] = []
    with manager:
        acr_admin.import_image(manager, spec, item, backoff=FAST, sleep=waits.append)
    assert [r.status for r in arm.calls("/importImage", "POST")] == [429] * 4 + [202]
    assert waits == [0.0]


def test_an_import_that_stays_rate_limited_fails_as_transient(arm, registry):
    arm.import_rate_limited = 10
    item, spec, manager = importing(arm, registry)
    waits: list[float] = []
    with manager, pytest.raises(CommandFailed, match="TOOMANYREQUESTS") as caught:
        acr_admin.import_image(manager, spec, item, backoff=FAST, tries=3, sleep=waits.append)
    assert caught.value.transient and len(arm.imports) == 3 and waits == [5.0, 10.0]


def test_other_import_failures_are_not_tried_again(arm, registry):
    item, spec, manager = importing(arm, registry)
    missing = acr_admin.Import(item.source.replace("base:1", "gone:1"), item.digest, item.target)
    waits: list[float] = []
    with manager, pytest.raises(CommandFailed, match="not found") as caught:
        acr_admin.import_image(manager, spec, missing, backoff=FAST, sleep=waits.append)
    assert not caught.value.transient and len(arm.imports) == 1 and waits == []


def test_an_import_the_identity_may_not_make_is_not_tried_again_and_names_the_role(arm, registry):
    item, spec, manager = importing(arm, registry)
    arm.forbidden["/importImage"] = "Microsoft.ContainerRegistry/registries/importImage/action"
    waits: list[float] = []
    with manager, pytest.raises(CommandFailed, match="AuthorizationFailed") as caught:
        acr_admin.import_image(manager, spec, item, backoff=FAST, sleep=waits.append)
    assert not caught.value.transient and waits == [] and not arm.imports
    assert str(caught.value).endswith(acr_admin.NO_ROLE)
    assert [r.status for r in arm.calls("/importImage", "POST")] == [403]


@pytest.mark.parametrize(
    ("credentials", "says"),
    [
        ({"username": "u"}, "source.credentials.password is required"),
        ({"username": "u", "password": {"type": "Vaultsecret", "value": "https://kv"}},
         "source.credentials.password is not a string"),
        ({"password": "p", "identity": "system"}, "source.credentials.identity is not a"),
    ],
)  # fmt: skip
def test_the_stand_in_refuses_import_credentials_the_registry_api_does_not_define(
    arm, credentials, says
):
    """ImportSourceCredentials (2025-04-01): a plain password, required; no Key Vault
    reference, no identity."""
    source = {"registryUri": "docker.io", "sourceImage": "library/x:1", "credentials": credentials}
    status, body, _ = arm._import({"source": source, "targetTags": ["x:1"]}, "2025-04-01")
    assert status == 400 and not arm.imports
    assert says in json.loads(body)["error"]["message"]


def test_mirror_imports_with_credentials_and_prints_no_password(acr_site, arm, monkeypatch):
    site = acr_site
    h = site.host
    site.config["mirrors"] = {f"{h}/upstream": f"{h}/mirror/upstream"}
    site.config["azure"]["credentials"] = {h: {"username": "hubuser", "password_env": "HUB_PW"}}
    site.write_config()
    site.platform.commit({"base/Dockerfile": f"FROM {h}/mirror/upstream/base:1\nCOPY f /b\n"})
    site.gb("sync")
    monkeypatch.setenv("HUB_PW", "dckr_pat_never-printed")
    arm.import_rate_limited = 1  # waited out (10 s or so) by the real backoff
    done = site.gb("mirror")
    assert done.returncode == 0, done.stderr
    assert [i["parameters"]["source"]["credentials"]["password"] for i in arm.imports] == [
        "dckr_pat_never-printed"] * 2  # fmt: skip
    assert "dckr_pat_never-printed" not in done.stdout + done.stderr
    assert "rate limited" in done.stderr  # the retry is said, with its wait


# -- webhooks


def test_webhook_create_registers_a_push_webhook_with_the_secret_header(acr_site, arm, monkeypatch):
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr",
                       "--scope", "upstream:*")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "hook-secret-123" not in done.stdout + done.stderr
    (hook,) = arm.webhooks.values()
    properties = hook["properties"]
    assert properties["serviceUri"] == "https://graphbuild.example/hooks/acr"
    assert properties["customHeaders"] == {"X-Graphbuild-Secret": "hook-secret-123"}
    assert properties["actions"] == ["push"] and properties["scope"] == "upstream:*"
    assert hook["location"] == arm.location


@pytest.mark.parametrize("scope", ["mirror/*", "*", "mirror/*:1", "Mirror:1", "mirror:a:b"])
def test_webhook_create_refuses_a_scope_acr_does_not_document_before_any_call(
    acr_site, arm, monkeypatch, scope
):
    """Such a webhook would be created and never fire: `listen` would wait for nothing."""
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr",
                       "--scope", scope)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--scope {scope!r}" in done.stderr
    assert "'REPO:*'" in done.stderr and "'REPO:TAG'" in done.stderr and "empty" in done.stderr
    assert "Traceback" not in done.stderr
    assert arm.calls() == []


@pytest.mark.parametrize("name", ["gb", "graph-build", "x" * 51])
def test_webhook_create_refuses_a_name_acr_refuses_before_any_call(
    acr_site, arm, monkeypatch, name
):
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr",
                       "--name", name)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--name" in done.stderr and "5 to" in done.stderr
    assert arm.calls() == []


def test_webhook_create_on_a_geo_replicated_registry_makes_one_webhook_per_replica(
    acr_site, arm, monkeypatch
):
    """A webhook hears pushes that land on its own region's replica only: one per region,
    the home region's under --name, each listed."""
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    arm.replications = ["eastus", arm.location, "japaneast"]
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr")
    assert done.returncode == 0, done.stderr
    located = {name: hook["location"] for name, hook in arm.webhooks.items()}
    assert located == {"graphbuild": "westeurope", "graphbuildeastus": "eastus",
                       "graphbuildjapaneast": "japaneast"}  # fmt: skip
    for name, region in located.items():
        assert f"Webhook {name} ({region})" in done.stdout
        properties = arm.webhooks[name]["properties"]
        assert properties["scope"] == "" and properties["actions"] == ["push"]
        assert properties["customHeaders"] == {"X-Graphbuild-Secret": "hook-secret-123"}
    assert "3 replicas" in done.stdout


def test_webhook_create_on_a_registry_listing_only_its_home_replica_makes_one(
    acr_site, arm, monkeypatch
):
    """Replications as ARM may name them ('West Europe'): the home region is not doubled."""
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    arm.replications = ["West Europe"]
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr")
    assert done.returncode == 0, done.stderr
    assert {n: h["location"] for n, h in arm.webhooks.items()} == {"graphbuild": "westeurope"}
    assert len(arm.calls("/replications")) == 1
    assert "replicas" not in done.stdout


def test_webhook_create_says_which_regions_it_did_not_cover(acr_site, arm, monkeypatch):
    """A refusal for one replica leaves the others created, and names what is not covered."""
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    arm.replications = [arm.location, "eastus", "japaneast"]
    other = {"location": arm.location, "properties": {"serviceUri": "https://elsewhere.example"}}
    arm.webhooks.update({f"other{i:03}": other for i in range(498)})  # Premium allows 500
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr")
    assert done.returncode == 1, done.stdout + done.stderr
    assert [n for n in arm.webhooks if n.startswith("graph")] == ["graphbuild", "graphbuildeastus"]
    assert "Webhook graphbuild (westeurope)" in done.stdout
    assert "Webhook graphbuildeastus (eastus)" in done.stdout
    assert "pushes landing in japaneast notify nothing" in done.stderr
    assert "graphbuildjapaneast" in done.stderr and "Premium SKU allows 500" in done.stderr
    assert "Traceback" not in done.stderr


def test_webhook_create_on_a_standard_registry_does_not_ask_for_replications(
    acr_site, arm, monkeypatch
):
    """Only Premium registries are geo-replicated."""
    monkeypatch.setenv("GRAPHBUILD_WEBHOOK_SECRET", "hook-secret-123")
    arm.sku = "Standard"
    done = acr_site.gb("acr", "webhook", "create", "https://graphbuild.example/hooks/acr")
    assert done.returncode == 0, done.stderr
    assert list(arm.webhooks) == ["graphbuild"]
    assert arm.calls("/replications") == []


def test_a_log_blob_that_ignores_the_range_is_not_copied_twice(tmp_path):
    """Some proxies answer a Range request with the whole blob (200): only the new part is
    appended; the Complete metadata ends the reading."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace

    from graphbuild.builders.acr import _Log

    blob = {"data": b"step 1\r\n", "complete": False}

    class Whole(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            if blob["complete"]:
                self.send_header("x-ms-meta-Complete", "Succeeded")
            self.send_header("Content-Length", str(len(blob["data"])))
            self.end_headers()
            self.wfile.write(blob["data"])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Whole)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        log = tmp_path / "build.log"
        reader = _Log(SimpleNamespace(verify=True), None, "cb1", log)
        reader.link = f"http://127.0.0.1:{server.server_address[1]}/logs/cb1.log?sig=x"
        reader.copy()
        blob["data"] += b"step 2\r\n"
        blob["complete"] = True
        reader.copy()
        reader.finish(threading.Event(), 0.01)
    finally:
        server.shutdown()
        server.server_close()
    assert log.read_bytes() == b"step 1\r\nstep 2\r\n"
    assert reader.complete
