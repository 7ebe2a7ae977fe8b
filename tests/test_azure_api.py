"""FakeArm against the real azure-mgmt-containerregistry SDK and azure-identity: if the SDK
accepts these answers, code built on the SDK can be tested against FakeArm without Azure."""

from __future__ import annotations

import base64
import io
import ssl
import tarfile

import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.v2019_06_01_preview.models import (
    AgentProperties,
    Argument,
    DockerBuildRequest,
    PlatformProperties,
)
from azure.mgmt.containerregistry.v2025_04_01.models import (
    ImportImageParameters,
    ImportSource,
    WebhookCreateParameters,
)

from .azure import TERMINAL, FakeArm
from .oci import OCI_INDEX, OCI_MANIFEST

RG, NAME = "rg", "myacr"
TASKS = "2019-06-01-preview"
DOCKERFILE = "FROM {host}/lib/base@sha256:{pin}\nRUN echo hi && \\\n    echo there\n"


def client(arm: FakeArm, api_version: str | None = TASKS) -> ContainerRegistryManagementClient:
    """The SDK as a builder would make it; polling_interval=0 because FakeArm sends no
    Retry-After on operations in progress (the SDK would wait 30 s)."""
    return ContainerRegistryManagementClient(
        DefaultAzureCredential(),
        arm.subscription,
        api_version=api_version,
        base_url=arm.base_url,
        connection_verify=str(arm.ca_bundle),
        polling_interval=0,
    )


def blob_client(arm: FakeArm) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(arm.ca_bundle)), timeout=10)


def context(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def upload(arm: FakeArm, sdk: ContainerRegistryManagementClient, files: dict[str, str]) -> str:
    """az acr build's first two steps: ask for an upload URL, PUT the tar.gz there."""
    source = sdk.registries.get_build_source_upload_url(RG, NAME)
    with blob_client(arm) as http:
        http.put(
            source.upload_url,
            content=context(files),
            headers={"x-ms-blob-type": "BlockBlob"},
        ).raise_for_status()
    return source.relative_path


def request(source: str, *images: str, dockerfile: str = "Dockerfile") -> DockerBuildRequest:
    return DockerBuildRequest(
        image_names=list(images),
        is_push_enabled=True,
        no_cache=True,
        docker_file_path=dockerfile,
        target="final",
        arguments=[Argument(name="VERSION", value="1", is_secret=False)],
        timeout=600,
        platform=PlatformProperties(os="Linux", architecture="arm64", variant="v8"),
        agent_configuration=AgentProperties(cpu=2),
        source_location=source,
    )


def watch(sdk: ContainerRegistryManagementClient, run_id: str, limit: int = 6) -> list:
    """runs.get until the run ends; every Run seen, in order."""
    seen = [sdk.runs.get(RG, NAME, run_id)]
    while seen[-1].status not in TERMINAL and len(seen) < limit:
        seen.append(sdk.runs.get(RG, NAME, run_id))
    return seen


def manifest_digest(registry, repo: str, tag: str) -> str | None:
    head = registry.http.head(
        f"/v2/{repo}/manifests/{tag}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    )
    return head.headers["docker-content-digest"] if head.status_code == 200 else None


# ---------------------------------------------------------------- quick builds


def test_a_quick_build_uploads_its_context_runs_and_pushes_a_real_image(arm, registry, identity):
    dockerfile = DOCKERFILE.format(host=registry.host, pin="ab" * 32)
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": dockerfile, "./app/main.py": "print(1)\n"})
    queued = sdk.registries.begin_schedule_run(
        RG, NAME, request(source, "team/app:1", "team/app:{{.Run.ID}}")
    ).result()
    seen = watch(sdk, queued.run_id)

    assert (queued.run_id, queued.status, queued.run_type) == ("cb1", "Queued", "QuickBuild")
    assert [run.status for run in seen] == ["Queued", "Running", "Succeeded"]
    done = seen[-1]
    assert done.start_time and done.finish_time and done.create_time
    assert [(i.registry, i.repository, i.tag) for i in done.output_images] == [
        (registry.host, "team/app", "1"),
        (registry.host, "team/app", "cb1"),
    ]
    assert done.output_images[0].digest == manifest_digest(registry, "team/app", "1")
    record = arm.runs["cb1"]
    assert record.dockerfile == dockerfile  # what the builder sent is what was "built"
    assert record.files == ["Dockerfile", "app/main.py"]
    sent = arm.calls("/scheduleRun")[0]
    assert sent.query == {"api-version": TASKS}
    assert sent.headers["authorization"] == "Bearer entra-xyz"
    assert sent.body["type"] == "DockerBuildRequest"
    assert sent.body["sourceLocation"] == source and source.startswith("source/")
    assert sent.body["arguments"] == [{"name": "VERSION", "value": "1", "isSecret": False}]
    assert sent.body["platform"] == {"os": "Linux", "architecture": "arm64", "variant": "v8"}
    assert (sent.body["dockerFilePath"], sent.body["target"], sent.body["timeout"]) == (
        "Dockerfile",
        "final",
        600,
    )
    put = arm.calls(".tar.gz", "PUT")[0]
    assert put.status == 201 and "authorization" not in put.headers  # SAS, not the ARM token
    assert identity.requests[0] == "https://management.azure.com"
    config = registry.http.get(
        f"/v2/team/app/manifests/{done.output_images[0].digest}",
        headers={"Accept": OCI_MANIFEST},
    ).json()["config"]["digest"]
    platform = registry.http.get(f"/v2/team/app/blobs/{config}").json()
    assert (platform["os"], platform["architecture"], platform["variant"]) == (
        "linux",
        "arm64",
        "v8",
    )


def test_upload_urls_want_a_block_blob_type_and_their_own_signature(arm):
    sdk = client(arm)
    first = sdk.registries.get_build_source_upload_url(RG, NAME)
    second = sdk.registries.get_build_source_upload_url(RG, NAME)
    url = httpx.URL(first.upload_url)
    forged = url.copy_merge_params({"sig": httpx.URL(second.upload_url).params["sig"]})
    with blob_client(arm) as http:
        untyped = http.put(url, content=b"x")
        wrong = http.put(forged, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
        bearer = http.put(
            url,
            content=b"x",
            headers={"x-ms-blob-type": "BlockBlob", "Authorization": "Bearer entra-xyz"},
        )
        before = http.get(url)
        stored = http.put(url, content=b"tar", headers={"x-ms-blob-type": "BlockBlob"})
        after = http.get(url)
    assert url.path == f"/blobs/{first.relative_path}"
    assert (untyped.status_code, untyped.headers["x-ms-error-code"]) == (
        400,
        "MissingRequiredHeader",
    )
    assert (wrong.status_code, wrong.headers["x-ms-error-code"]) == (403, "AuthenticationFailed")
    assert bearer.status_code == 403
    assert (before.status_code, before.headers["x-ms-error-code"]) == (404, "BlobNotFound")
    assert stored.status_code == 201 and after.content == b"tar"
    assert arm.uploads == {first.relative_path: b"tar"}


def test_blocks_are_committed_by_their_list_and_sizes_are_limited(arm):
    """Put Block / Put Block List as Azure Storage documents them: ids of one length, a list
    naming only blocks put, and 413 RequestBodyTooLarge above the (here small) limits."""
    arm.blob_put_limit, arm.blob_block_limit = 10, 4
    url = httpx.URL(client(arm).registries.get_build_source_upload_url(RG, NAME).upload_url)

    def block(i: str) -> httpx.URL:
        return url.copy_merge_params({"comp": "block", "blockid": i})

    blocklist = url.copy_merge_params({"comp": "blocklist"})
    ids = [base64.b64encode(b"%02d" % n).decode() for n in range(3)]
    with blob_client(arm) as http:
        big = http.put(url, content=b"x" * 11, headers={"x-ms-blob-type": "BlockBlob"})
        big_block = http.put(block(ids[0]), content=b"x" * 5)
        puts = [
            http.put(block(i), content=part)
            for i, part in zip(ids, [b"ab", b"cd", b"e"], strict=True)
        ]
        odd = http.put(block(base64.b64encode(b"longer").decode()), content=b"z")
        unknown = http.put(blocklist, content=b"<BlockList><Latest>bm9wZQ==</Latest></BlockList>")
        listed = "".join(f"<Latest>{i}</Latest>" for i in (ids[1], ids[0], ids[2]))
        done = http.put(blocklist, content=f"<BlockList>{listed}</BlockList>".encode())
        after = http.get(url)
    assert (big.status_code, big.headers["x-ms-error-code"]) == (413, "RequestBodyTooLarge")
    assert big_block.status_code == 413
    assert [r.status_code for r in puts] == [201, 201, 201]
    assert (odd.status_code, odd.headers["x-ms-error-code"]) == (400, "InvalidQueryParameterValue")
    assert (unknown.status_code, unknown.headers["x-ms-error-code"]) == (400, "InvalidBlockList")
    assert done.status_code == 201 and after.content == b"cdabe"


def test_failing_runs_count_down_push_nothing_and_say_why(arm, registry):
    arm.fail = {"team/app": 1, "team/slow": 1}
    arm.statuses = {"team/slow": "Timeout"}
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    failed = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/app:1")).result()
    slow = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/slow:1")).result()
    again = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/app:1")).result()
    failed, slow, again = (watch(sdk, run.run_id)[-1] for run in (failed, slow, again))

    assert failed.status == "Failed" and "exit status 1" in failed.run_error_message
    assert not failed.output_images
    assert slow.status == "Timeout" and slow.run_error_message
    assert again.status == "Succeeded" and again.run_error_message is None
    assert arm.fail == {"team/app": 0, "team/slow": 0}
    assert "error: failed during run" in arm.runs[failed.run_id].log.decode()
    assert manifest_digest(registry, "team/slow", "1") is None
    assert manifest_digest(registry, "team/app", "1") == again.output_images[0].digest


def test_a_run_without_its_source_or_dockerfile_fails(arm):
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    nowhere = sdk.registries.begin_schedule_run(
        RG, NAME, request("source/202601010000/nothing.tar.gz", "team/app:1")
    ).result()
    misnamed = sdk.registries.begin_schedule_run(
        RG, NAME, request(source, "team/app:1", dockerfile="build/Dockerfile")
    ).result()
    nowhere, misnamed = watch(sdk, nowhere.run_id)[-1], watch(sdk, misnamed.run_id)[-1]

    assert nowhere.status == "Failed" and "nothing.tar.gz" in nowhere.run_error_message
    assert misnamed.status == "Failed" and "build/Dockerfile" in misnamed.run_error_message
    assert arm.runs[misnamed.run_id].dockerfile is None


def test_the_log_is_an_append_blob_read_by_range_until_it_is_complete(arm):
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\nCOPY . /\n"})
    run = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/app:1")).result()
    link = sdk.runs.get_log_sas_url(RG, NAME, run.run_id).log_link
    with blob_client(arm) as http:
        missing = http.get(link)  # queued: no blob yet; reading it is watching, so it starts
        first = http.get(link, headers={"Range": "bytes=0-"})
        size = len(first.content)
        rest = http.get(link, headers={"Range": f"bytes={size}-"})
        total = size + len(rest.content)
        past = http.get(link, headers={"Range": f"bytes={total}-"})
        props = http.head(link)

    assert (missing.status_code, missing.headers["x-ms-error-code"]) == (404, "BlobNotFound")
    assert first.status_code == 206 and first.headers["x-ms-blob-type"] == "AppendBlob"
    assert first.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert "x-ms-meta-complete" not in first.headers
    assert b"Step 1/2 : FROM scratch\r\nStep 2/2 : COPY . /\r\n" in first.content
    assert rest.status_code == 206 and rest.headers["x-ms-meta-complete"] == "Succeeded"
    assert b"Successfully pushed image: " in rest.content
    assert (past.status_code, past.headers["x-ms-error-code"]) == (416, "InvalidRange")
    assert past.headers["content-range"] == f"bytes */{total}"
    assert props.status_code == 200 and props.headers["content-length"] == str(total)
    assert sdk.runs.get(RG, NAME, run.run_id).status == "Succeeded"
    assert all("authorization" not in r.headers for r in arm.calls("rawtext.log"))


def test_a_held_run_is_canceled_through_the_long_running_operation(arm, registry):
    arm.hold = True
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    run = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/app:1")).result()
    held = [r.status for r in watch(sdk, run.run_id, limit=4)]
    assert sdk.runs.begin_cancel(RG, NAME, run.run_id).result() is None
    canceled = sdk.runs.get(RG, NAME, run.run_id)
    link = sdk.runs.get_log_sas_url(RG, NAME, run.run_id).log_link
    with blob_client(arm) as http:
        log = http.get(link)

    assert held == ["Queued", "Running", "Running", "Running"]
    assert canceled.status == "Canceled" and canceled.finish_time
    assert arm.cancels == [run.run_id]
    assert [r.status for r in arm.calls("/cancel")] == [202]
    polls = [(r.path.split("/")[-2], r.status) for r in arm.calls() if "/locations/" in r.path]
    assert polls[:2] == [("operationStatuses", 200), ("operationStatuses", 200)]
    assert log.headers["x-ms-meta-complete"] == "Canceled"
    assert manifest_digest(registry, "team/app", "1") is None


def test_the_2025_03_01_preview_api_schedules_and_cancels_synchronously(arm):
    """The SDK's other Tasks API: schedule_run and runs.cancel are plain calls, no pollers."""
    from azure.mgmt.containerregistry.v2025_03_01_preview import models

    arm.hold = True
    sdk = client(arm, api_version="2025-03-01-preview")
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    build = models.DockerBuildRequest(
        image_names=["team/app:1"],
        docker_file_path="Dockerfile",
        source_location=source,
        platform=models.PlatformProperties(os="Linux", architecture="amd64"),
    )
    run = sdk.registries.schedule_run(RG, NAME, build)
    held = [r.status for r in watch(sdk, run.run_id, limit=3)]
    sdk.runs.cancel(RG, NAME, run.run_id)
    assert held == ["Queued", "Running", "Running"]
    assert sdk.runs.get(RG, NAME, run.run_id).status == "Canceled"
    assert [r.status for r in arm.calls("/cancel")] == [200]
    assert {r.query["api-version"] for r in arm.calls(method="POST")} == {"2025-03-01-preview"}


# ---------------------------------------------------------------- import and webhooks


def test_import_copies_images_keeping_their_digest_and_no_force_refuses_to_move_a_tag(
    arm, registry
):
    base = registry.image("lib/base", "1", content="one")
    amd = registry.image("lib/multi", "amd", content="amd")
    arm64 = registry.image("lib/multi", "arm", content="arm", platform="linux/arm64/v8")
    index = registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64/v8": arm64})
    other = registry.image("lib/base", "2", content="two")
    sdk = client(arm, api_version=None)

    def copy(image: str, tags: list[str], mode: str = "NoForce") -> None:
        source = ImportSource(registry_uri=registry.host, source_image=image)
        parameters = ImportImageParameters(source=source, target_tags=tags, mode=mode)
        sdk.registries.begin_import_image(RG, NAME, parameters).result()

    copy("lib/base:1", ["mirror/base:1"])
    copy(f"lib/base@{base}", ["mirror/base:pinned", "other/base:1"])
    copy("lib/multi:1", ["mirror/multi:1"])
    copy("lib/base:1", ["mirror/base:1"])  # the same digest again: nothing to refuse
    with pytest.raises(HttpResponseError) as refused:
        copy("lib/base:2", ["mirror/base:1"])
    kept = manifest_digest(registry, "mirror/base", "1")
    copy("lib/base:2", ["mirror/base:1"], mode="Force")

    assert manifest_digest(registry, "mirror/base", "pinned") == base
    assert manifest_digest(registry, "other/base", "1") == base
    assert manifest_digest(registry, "mirror/multi", "1") == index
    assert kept == base
    assert refused.value.error.code == "Conflict"
    assert "already exists" in refused.value.message
    assert manifest_digest(registry, "mirror/base", "1") == other
    assert [i["digest"] for i in arm.imports] == [base, base, index, base, None, other]
    assert arm.calls("/importImage")[0].query == {"api-version": "2025-04-01"}
    assert arm.calls("/importImage")[0].body["source"] == {
        "registryUri": registry.host,
        "sourceImage": "lib/base:1",
    }


def test_import_of_a_missing_image_fails_the_operation(arm, registry):
    sdk = client(arm, api_version=None)
    source = ImportSource(registry_uri=registry.host, source_image="lib/none:1")
    with pytest.raises(HttpResponseError) as missing:
        sdk.registries.begin_import_image(
            RG, NAME, ImportImageParameters(source=source, target_tags=["x/y:1"])
        ).result()
    assert missing.value.error.code == "NotFound"


def test_a_webhook_is_created_and_read_back_without_its_secrets(arm, registry):
    sdk = client(arm, api_version=None)
    parameters = WebhookCreateParameters(
        location="westeurope",
        tags={"owner": "graphbuild"},
        service_uri="https://hooks.example/acr",
        custom_headers={"X-Secret": "s3cret"},
        status="enabled",
        scope="lib/base:*",
        actions=["push", "delete"],
    )
    created = sdk.webhooks.begin_create(RG, NAME, "graphbuild", parameters).result()
    got = sdk.webhooks.get(RG, NAME, "graphbuild")
    raw = sdk.webhooks.get(RG, NAME, "graphbuild", cls=lambda response, *_: response)
    secret = sdk.webhooks.get_callback_config(RG, NAME, "graphbuild")
    with pytest.raises(ResourceNotFoundError):
        sdk.webhooks.get(RG, NAME, "nosuchhook")
    registry_resource = sdk.registries.get(RG, NAME)

    assert created.provisioning_state == "Succeeded"
    assert (got.scope, got.actions, got.status, got.tags) == (
        "lib/base:*",
        ["push", "delete"],
        "enabled",
        {"owner": "graphbuild"},
    )
    text = raw.http_response.text()
    assert "serviceUri" not in text and "s3cret" not in text
    assert (secret.service_uri, secret.custom_headers) == (
        "https://hooks.example/acr",
        {"X-Secret": "s3cret"},
    )
    put = arm.calls("/webhooks/graphbuild", "PUT")[0]
    assert put.status == 201 and put.query == {"api-version": "2025-04-01"}
    assert put.body["properties"]["customHeaders"] == {"X-Secret": "s3cret"}
    assert arm.webhooks["graphbuild"]["properties"]["serviceUri"] == "https://hooks.example/acr"
    assert (registry_resource.location, registry_resource.login_server) == (
        "westeurope",
        registry.host,
    )


# ---------------------------------------------------------------- throttling and auth


def test_a_throttled_schedule_run_is_retried_after_retry_after(arm):
    arm.throttle = {"/scheduleRun": 1}
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    run = sdk.registries.begin_schedule_run(RG, NAME, request(source, "team/app:1")).result()
    assert run.status == "Queued"
    assert [r.status for r in arm.calls("/scheduleRun")] == [429, 200]
    assert list(arm.runs) == [run.run_id]  # the throttled request scheduled nothing


def test_a_429_without_retry_after_on_a_post_is_not_retried(arm):
    """azure-core retries a POST only on 500/503/504 or when Retry-After is present."""
    arm.throttle, arm.throttle_retry_after = {"/listBuildSourceUploadUrl": 1}, None
    with pytest.raises(HttpResponseError) as throttled:
        client(arm).registries.get_build_source_upload_url(RG, NAME)
    assert throttled.value.status_code == 429
    assert throttled.value.error.code == "TooManyRequests"
    assert [r.status for r in arm.calls("/listBuildSourceUploadUrl")] == [429]


def test_a_token_arm_does_not_accept_is_refused(arm, identity):
    identity.token = "a-token-for-something-else"
    with pytest.raises(ClientAuthenticationError) as refused:
        client(arm).registries.get_build_source_upload_url(RG, NAME)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(arm.ca_bundle))) as http:
        bare = http.get(f"{arm.base_url}{arm.resource_id}?api-version=2025-04-01")
    assert refused.value.error.code == "InvalidAuthenticationToken"
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "AuthenticationFailed"
    assert bare.headers["www-authenticate"].startswith("Bearer ")
    assert arm.issued == set()


def test_unknown_paths_versions_and_registries_get_arm_errors(arm):
    auth = {"Authorization": "Bearer entra-xyz"}
    with httpx.Client(
        base_url=arm.base_url,
        headers=auth,
        verify=ssl.create_default_context(cafile=str(arm.ca_bundle)),
    ) as http:
        unknown = http.get(f"{arm.resource_id}/nothing", params={"api-version": "2025-04-01"})
        version = http.get(f"{arm.resource_id}/runs/cb1", params={"api-version": "2025-04-01"})
        missing = http.get(f"{arm.resource_id}/runs/cb9", params={"api-version": TASKS})
        other = http.get(
            arm.resource_id.replace("/myacr", "/other"), params={"api-version": "2025-04-01"}
        )
        bare = http.get(arm.resource_id)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "NotFound")
    assert (version.status_code, version.json()["error"]["code"]) == (
        400,
        "NoRegisteredProviderFound",
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "ResourceNotFound")
    assert (other.status_code, other.json()["error"]["code"]) == (404, "ResourceNotFound")
    assert (bare.status_code, bare.json()["error"]["code"]) == (400, "MissingApiVersionParameter")


def hook(scope: str = "", location: str = "westeurope") -> WebhookCreateParameters:
    return WebhookCreateParameters(location=location, service_uri="https://hooks.example/acr",
                                   actions=["push"], scope=scope)  # fmt: skip


@pytest.mark.parametrize("scope", ["mirror/*", "*", "mirror/*:1", "Mirror/base:1", "a:b:c",
                                   "mirror/base:", ":1", "mirror//base"])  # fmt: skip
def test_a_webhook_scope_acr_does_not_document_is_refused(arm, scope):
    """ACR documents `repo:*`, `repo:tag`, `repo` (repo:latest) and empty (all): anything
    else makes a webhook that never fires, so the stand-in refuses it."""
    sdk = client(arm, api_version=None)
    with pytest.raises(HttpResponseError) as refused:
        sdk.webhooks.begin_create(RG, NAME, "graphbuild", hook(scope)).result()
    assert refused.value.status_code == 400
    assert "scope" in refused.value.message
    assert arm.webhooks == {}


@pytest.mark.parametrize("scope", ["", "lib/base", "lib/base:1", "lib/base:*", "a.b/c-d__e:v1.2_x"])
def test_each_documented_webhook_scope_is_accepted(arm, scope):
    sdk = client(arm, api_version=None)
    created = sdk.webhooks.begin_create(RG, NAME, "graphbuild", hook(scope)).result()
    assert created.scope == scope


def test_replications_are_listed_and_a_webhook_lives_in_one_of_their_regions(arm):
    """A geo-replicated registry lists its home region among its replications; a webhook
    is created in one replica's region (its `location`) and refused elsewhere."""
    sdk = client(arm, api_version=None)
    assert list(sdk.replications.list(RG, NAME)) == []  # not geo-replicated
    arm.replications = ["westeurope", "eastus"]
    listed = list(sdk.replications.list(RG, NAME))
    sdk.webhooks.begin_create(RG, NAME, "graphbuildeastus", hook(location="eastus")).result()
    with pytest.raises(HttpResponseError) as elsewhere:
        sdk.webhooks.begin_create(RG, NAME, "graphbuildjapan", hook(location="japaneast")).result()

    assert [(r.name, r.location, r.provisioning_state) for r in listed] == [
        ("westeurope", "westeurope", "Succeeded"),
        ("eastus", "eastus", "Succeeded"),
    ]
    assert listed[1].id == f"{arm.resource_id}/replications/eastus"
    assert arm.calls("/replications")[0].query == {"api-version": "2025-04-01"}
    assert arm.webhooks["graphbuildeastus"]["location"] == "eastus"
    assert elsewhere.value.status_code == 400 and "japaneast" in elsewhere.value.message
    assert "graphbuildjapan" not in arm.webhooks


def test_webhooks_beyond_the_sku_quota_are_refused(arm):
    """Premium allows 500 webhooks (Standard 10, Basic 2); an update of one that exists
    does not count again."""
    sdk = client(arm, api_version=None)
    arm.sku = "Basic"
    for name in ("hookone", "hooktwo", "hookone"):
        sdk.webhooks.begin_create(RG, NAME, name, hook()).result()
    with pytest.raises(HttpResponseError) as refused:
        sdk.webhooks.begin_create(RG, NAME, "hookthree", hook()).result()
    assert refused.value.status_code == 400 and "2" in refused.value.message
    assert sorted(arm.webhooks) == ["hookone", "hooktwo"]


def test_a_run_timeout_outside_what_the_tasks_api_allows_is_refused(arm):
    """DockerBuildRequest.timeout: 300 to 28800 seconds (the SDK checks it too; a raw request
    does not)."""
    sdk = client(arm)
    source = upload(arm, sdk, {"Dockerfile": "FROM scratch\n"})
    url = f"{arm.base_url}{arm.resource_id}/scheduleRun?api-version={TASKS}"
    auth = {"Authorization": f"Bearer {arm.token}"}
    answers = []
    with httpx.Client(verify=ssl.create_default_context(cafile=str(arm.ca_bundle))) as http:
        for timeout in (299, 28801, "600", 600):
            body = {"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile",
                    "platform": {"os": "Linux"}, "sourceLocation": source,
                    "timeout": timeout}  # fmt: skip
            answers.append(http.post(url, json=body, headers=auth))
    assert [a.status_code for a in answers[:3]] == [400, 400, 400]
    assert all(a.json()["error"]["code"] == "InvalidParameter" for a in answers[:3])
    assert answers[3].status_code in (200, 202)
    assert len(arm.runs) == 1


def test_a_webhook_action_acr_does_not_define_is_refused(arm):
    """WebhookAction: push, delete, quarantine, chart_push, chart_delete."""
    sdk = client(arm, api_version=None)
    parameters = hook()
    parameters.actions = ["push", "pull"]
    with pytest.raises(HttpResponseError) as refused:
        sdk.webhooks.begin_create(RG, NAME, "graphbuild", parameters).result()
    assert refused.value.status_code == 400 and "'pull'" in refused.value.message
    assert arm.webhooks == {}


def test_an_action_the_principal_has_no_role_for_is_refused_as_arm_refuses_it(arm):
    """A missing role assignment: 403 AuthorizationFailed, naming the action and the scope."""
    arm.forbidden["/listBuildSourceUploadUrl"] = (
        "Microsoft.ContainerRegistry/registries/listBuildSourceUploadUrl/action"
    )
    with pytest.raises(HttpResponseError) as refused:
        client(arm).registries.get_build_source_upload_url(RG, NAME)
    assert refused.value.status_code == 403
    assert refused.value.error.code == "AuthorizationFailed"
    assert "listBuildSourceUploadUrl/action" in refused.value.message
    assert arm.resource_id in refused.value.message
