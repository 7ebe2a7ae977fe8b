"""Image references in deploy YAML: found exactly, and rewritten without touching another byte."""

from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphbuild import deploy_yaml
from graphbuild.deploy_yaml import (
    CONTAINER,
    HELM,
    INLINE,
    KUSTOMIZE,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    OVERRIDE,
    Found,
    ManifestError,
    find,
    rewrite,
)

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


def test_several_documents_rewrites_only_the_second():
    text = (
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata:\n"
        "  name: first\n"
        "spec:\n"
        "  containers:\n"
        "    - name: a\n"
        "      image: nginx:1.25\n"
        "---\n"
        "# the api\n"
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata: {name: api, namespace: prod}\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        "      - name: api\n"
        "        image: ghcr.io/acme/api:2.0   # pinned by graphbuild\n"
    )
    found = find("deploy/app.yaml", text)
    assert found == [
        Found(CONTAINER, 8, "nginx", "1.25", None, "Pod//first", "a", 0,
              ("spec", "containers", 0, "image")),
        Found(
            CONTAINER, 19, "ghcr.io/acme/api", "2.0", None, "Deployment/prod/api", "api", 1,
            ("spec", "template", "spec", "containers", 0, "image"),
        ),
    ]  # fmt: skip
    assert rewrite(text, found[1], None, D) == text.replace(
        "image: ghcr.io/acme/api:2.0   #", f"image: ghcr.io/acme/api:2.0@{D}   #"
    )


def test_multi_container_pod_rewrites_the_second_container_only():
    text = (
        "kind: Pod\n"
        "metadata:\n"
        "  name: web\n"
        "  namespace: shop\n"
        "spec:\n"
        "  initContainers:\n"
        "  - name: migrate\n"
        "    image: registry.example.com/shop/migrate:7\n"
        "  containers:\n"
        "  - name: web\n"
        "    image: registry.example.com/shop/web:7\n"
        "  - name: proxy\n"
        "    image: envoyproxy/envoy:v1.30.1\n"
    )
    found = find("web.yml", text)
    assert found == [
        Found(
            CONTAINER, 11, "registry.example.com/shop/web", "7", None, "Pod/shop/web", "web", 0,
            ("spec", "containers", 0, "image"),
        ),
        Found(
            CONTAINER, 13, "envoyproxy/envoy", "v1.30.1", None, "Pod/shop/web", "proxy", 0,
            ("spec", "containers", 1, "image"),
        ),
        Found(
            CONTAINER, 8, "registry.example.com/shop/migrate", "7", None, "Pod/shop/web",
            "migrate", 0, ("spec", "initContainers", 0, "image"),
        ),
    ]  # fmt: skip
    expected = text.replace(
        "image: envoyproxy/envoy:v1.30.1\n", f"image: envoyproxy/envoy:v1.31.0@{D}\n"
    )
    assert rewrite(text, found[1], "v1.31.0", D) == expected


def test_reference_in_a_comment_is_neither_found_nor_touched():
    text = (
        "kind: Pod\n"
        "metadata:\n"
        "  name: p\n"
        "spec:\n"
        "  containers:\n"
        "  - name: app\n"
        "    # image: app:0.9\n"
        "    image: app:1.0\n"
        "    # image: app:1.0\n"
    )
    found = find("pod.yaml", text)
    assert found == [
        Found(CONTAINER, 8, "app", "1.0", None, "Pod//p", "app", 0,
              ("spec", "containers", 0, "image"))
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == (
        "kind: Pod\n"
        "metadata:\n"
        "  name: p\n"
        "spec:\n"
        "  containers:\n"
        "  - name: app\n"
        "    # image: app:0.9\n"
        f"    image: app:1.0@{D}\n"
        "    # image: app:1.0\n"
    )


def test_anchor_and_aliases_are_found_once_and_the_anchor_is_rewritten():
    text = (
        "kind: Deployment\n"
        "metadata:\n"
        "  name: w\n"
        "x-common: &common\n"
        "  imagePullPolicy: Always\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        "      - name: a\n"
        "        <<: *common\n"
        "        image: &img repo.example.com/w:1.0\n"
        "      - name: b\n"
        "        image: *img\n"
    )
    found = find("w.yaml", text)
    assert found == [
        Found(
            CONTAINER, 12, "repo.example.com/w", "1.0", None, "Deployment//w", "a", 0,
            ("spec", "template", "spec", "containers", 0, "image"),
        )
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == text.replace(
        "&img repo.example.com/w:1.0\n", f"&img repo.example.com/w:1.0@{D}\n"
    )


def test_crlf_file_keeps_crlf():
    text = "kind: Job\r\nmetadata:\r\n  name: j\r\nspec:\r\n  template:\r\n    spec:\r\n" + (
        "      containers:\r\n      - name: run\r\n        image: 'busybox:1.36'\r\n"
    )
    found = find("job.yaml", text)
    assert found == [
        Found(
            CONTAINER, 9, "busybox", "1.36", None, "Job//j", "run", 0,
            ("spec", "template", "spec", "containers", 0, "image"),
        )
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == (
        "kind: Job\r\nmetadata:\r\n  name: j\r\nspec:\r\n  template:\r\n    spec:\r\n"
        f"      containers:\r\n      - name: run\r\n        image: 'busybox:1.36@{D}'\r\n"
    )


def test_tabs_that_go_yaml_reads_are_read():
    """kubectl, kustomize, Argo CD and Flux read YAML with go-yaml, which takes a tab wherever a
    space separates tokens (as libyaml does); PyYAML's own scanner refused the file, and every
    workload in it was lost."""
    text = (
        "apiVersion: apps/v1\t\n"
        "kind:\tDeployment\n"
        "metadata: {name: web}\t# the web\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        "      - name: web\t\n"
        "        image: app:1\t# pinned\n"
    )
    found = find("web.yaml", text)
    assert found == [
        Found(CONTAINER, 9, "app", "1", None, "Deployment//web", "web", 0,
              ("spec", "template", "spec", "containers", 0, "image"))
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == text.replace("app:1\t", f"app:1@{D}\t")


@pytest.mark.parametrize(
    "line",
    [
        "    image: 'app:1'\t",  # after a quoted value (yaml/pyyaml#594)
        "    image: app:1\t\t# c",  # before a comment (yaml/pyyaml#450)
        "    image:\tapp:1",  # after the colon
        "    image\t: app:1",  # before the colon
        "    image: &i\tapp:1",  # after an anchor
        "    image: >-\t# folded\n      app:1",  # after a block scalar's header
    ],
)
def test_each_tab_go_yaml_takes_between_tokens(line):
    """Each place PyYAML's scanner refused a tab that libyaml and go-yaml take."""
    text = f"kind: Pod\nspec:\n  containers:\n  - name: a\n{line}\n"
    (found,) = find("pod.yaml", text)
    assert (found.line, found.name, found.tag) == (5 + line.count("\n"), "app", "1")
    assert rewrite(text, found, None, D) == text.replace("app:1", f"app:1@{D}")


def test_json_indented_with_tabs_is_read():
    """A manifest written as JSON (kubectl get -o json) and saved as .yaml, tabs and all."""
    text = (
        '{\n\t"kind": "Pod",\n\t"spec": {"containers": [\n'
        '\t\t{"name": "a", "image": "app:1"}\n\t]}\n}\n'
    )
    found = find("pod.yaml", text)
    assert [(f.line, f.name, f.tag) for f in found] == [(4, "app", "1")]
    assert rewrite(text, found[0], None, D) == text.replace('"app:1"', f'"app:1@{D}"')


def test_a_tab_in_indentation_is_refused_as_go_yaml_refuses_it():
    with pytest.raises(ManifestError, match=r"^line 3: not valid YAML"):
        find("pod.yaml", "kind: Pod\nspec:\n\tcontainers: []\n")


def test_offsets_count_characters_after_non_ascii_text():
    """libyaml's marks count characters, not UTF-8 bytes: text before the reference in
    two-, three- and four-byte characters must not move the edit."""
    text = (
        "# Ünïcode — 日本語 😀\n"
        "kind: Pod\n"
        "metadata: {name: café, annotations: {note: 'ça va 😀'}}\n"
        "spec:\n"
        "  containers:\n"
        "  - {name: é, image: 'reg.example/app:1'}  # 😀 ok\n"
    )
    (found,) = find("pod.yaml", text)
    assert (found.line, found.workload, found.container) == (6, "Pod//café", "é")
    assert rewrite(text, found, None, D) == text.replace("app:1'", f"app:1@{D}'")


def test_an_unacceptable_character_names_its_line_after_non_ascii_text():
    with pytest.raises(ManifestError, match=r"^line 3: not valid YAML"):
        find("pod.yaml", "a: éé\nb: 😀\nc: \x01\n")


def test_without_libyaml_the_refusal_says_what_is_missing(monkeypatch):
    """PyYAML built without libyaml reads less than kubectl: the file is refused, saying why."""
    monkeypatch.setattr(deploy_yaml, "_LOADER", deploy_yaml._PyLoader)
    assert len(find("pod.yaml", "kind: Pod\nspec:\n  containers:\n  - image: app:1\n")) == 1
    with pytest.raises(ManifestError, match="PyYAML without libyaml"):
        find("pod.yaml", "kind: Pod\t\nspec:\n  containers:\n  - image: app:1\n")


def test_libyaml_is_used_where_pyyaml_has_it():
    assert yaml.__with_libyaml__ and deploy_yaml._LOADER is not deploy_yaml._PyLoader


def test_helm_repository_and_tag_pin_the_tag():
    text = (
        "frontend:\n"
        "  replicas: 2\n"
        "  image:\n"
        "    repository: ghcr.io/acme/frontend  # the app\n"
        '    tag: "3.1.0"\n'
        "    pullPolicy: IfNotPresent\n"
    )
    found = find("charts/shop/values.yaml", text)
    assert found == [
        Found(HELM, 4, "ghcr.io/acme/frontend", "3.1.0", None, "frontend.image", None, 0,
              ("frontend", "image"))
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == (
        "frontend:\n"
        "  replicas: 2\n"
        "  image:\n"
        "    repository: ghcr.io/acme/frontend  # the app\n"
        f'    tag: "3.1.0@{D}"\n'
        "    pullPolicy: IfNotPresent\n"
    )


def test_helm_digest_key_is_replaced_and_the_tag_kept():
    text = f"image:\n  repository: acme/api\n  tag: 2.4.1\n  digest: {E}\n"
    found = find("values-prod.yaml", text)
    assert found == [Found(HELM, 2, "acme/api", "2.4.1", E, "image", None, 0, ("image",))]
    assert rewrite(text, found[0], "2.5.0", D) == (
        f"image:\n  repository: acme/api\n  tag: 2.4.1\n  digest: {D}\n"
    )


def test_helm_registry_is_joined_to_the_repository():
    text = (
        "postgresql:\n"
        "  image:\n"
        "    registry: docker.io\n"
        "    repository: bitnami/postgresql\n"
        "    tag: 16.2.0-debian-12-r8\n"
        '    digest: ""\n'
    )
    found = find("values.yml", text)
    assert found == [
        Found(HELM, 4, "docker.io/bitnami/postgresql", "16.2.0-debian-12-r8", None,
              "postgresql.image", None, 0, ("postgresql", "image"))
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == text.replace('digest: ""', f'digest: "{D}"')


def test_helm_numeric_tag_keeps_its_source_text():
    text = "worker:\n  repository: acme/worker\n  tag: 1.20\n"
    found = find("values.yaml", text)
    assert found == [Found(HELM, 2, "acme/worker", "1.20", None, "worker", None, 0, ("worker",))]
    assert rewrite(text, found[0], None, D) == (
        f"worker:\n  repository: acme/worker\n  tag: 1.20@{D}\n"
    )


def test_helm_plain_image_string_is_rewritten_like_a_container():
    text = 'sidecarImage: "quay.io/acme/sidecar:0.3"\nimage: {repository: acme/app}\n'
    found = find("values.yaml", text)
    assert found == [
        Found(HELM, 1, "quay.io/acme/sidecar", "0.3", None, "sidecarImage", None, 0,
              ("sidecarImage",)),
        Found(HELM, 2, "acme/app", None, None, "image", None, 0, ("image",)),
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == text.replace(":0.3", f":0.3@{D}")
    with pytest.raises(ManifestError, match="line 2: acme/app has no tag or digest"):
        rewrite(text, found[1], None, D)


def test_kustomize_new_name_and_new_tag_get_a_digest_line():
    text = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources: [deployment.yaml]\n"
        "images:\n"
        "  - name: app\n"
        "    newName: registry.example.com/team/app  # mirrored\n"
        "    newTag: v2\n"
        "  - name: redis\n"
        "    newTag: '7.2'\n"
    )
    found = find("overlays/prod/kustomization.yaml", text)
    assert found == [
        Found(KUSTOMIZE, 5, "registry.example.com/team/app", "v2", None, "kustomization", None, 0,
              ("images", 0)),
        Found(KUSTOMIZE, 8, "redis", "7.2", None, "kustomization", None, 0, ("images", 1)),
    ]  # fmt: skip
    assert rewrite(text, found[0], "v3", D) == (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources: [deployment.yaml]\n"
        "images:\n"
        "  - name: app\n"
        "    newName: registry.example.com/team/app  # mirrored\n"
        "    newTag: v2\n"
        f"    digest: {D}\n"
        "  - name: redis\n"
        "    newTag: '7.2'\n"
    )


def test_kustomize_existing_digest_is_replaced():
    text = f"images:\r\n- name: app\r\n  digest: {E}\r\n  newTag: v1\r\n"
    found = find("Kustomization", text)
    assert found == [Found(KUSTOMIZE, 2, "app", "v1", E, "kustomization", None, 0, ("images", 0))]
    assert (
        rewrite(text, found[0], None, D)
        == f"images:\r\n- name: app\r\n  digest: {D}\r\n  newTag: v1\r\n"
    )


def test_kustomize_digest_line_uses_crlf():
    text = "images:\r\n- name: app\r\n  newTag: v1\r\n"
    (found,) = find("kustomization.yml", text)
    assert (
        rewrite(text, found, None, D)
        == f"images:\r\n- name: app\r\n  newTag: v1\r\n  digest: {D}\r\n"
    )


def test_kustomize_flow_entry():
    text = "images:\n- {name: app, newTag: v1}  # flow\n"
    found = find("kustomization.yaml", text)
    assert found == [
        Found(KUSTOMIZE, 2, "app", "v1", None, "kustomization", None, 0, ("images", 0))
    ]
    assert (
        rewrite(text, found[0], None, D)
        == f"images:\n- {{name: app, newTag: v1, digest: {D}}}  # flow\n"
    )


def test_cronjob_template():
    text = (
        "apiVersion: batch/v1\n"
        "kind: CronJob\n"
        "metadata:\n"
        "  name: nightly\n"
        "  namespace: ops\n"
        "spec:\n"
        "  schedule: '0 3 * * *'\n"
        "  jobTemplate:\n"
        "    spec:\n"
        "      template:\n"
        "        spec:\n"
        "          containers:\n"
        "          - name: backup\n"
        "            image: acme/backup\n"
    )
    found = find("cron.yaml", text)
    assert found == [
        Found(
            CONTAINER, 14, "acme/backup", None, None, "CronJob/ops/nightly", "backup", 0,
            ("spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "image"),
        )
    ]  # fmt: skip
    assert rewrite(text, found[0], None, D) == text.replace("acme/backup\n", f"acme/backup@{D}\n")


def test_quoting_styles_are_kept():
    text = (
        "kind: Pod\n"
        "spec:\n"
        "  containers:\n"
        "  - {name: plain, image: alpine:3.19}\n"
        "  - name: single\n"
        "    image: 'alpine:3.19'\n"
        "  - name: double\n"
        '    image: "alpine:3.19"\n'
    )
    found = find("pod.yaml", text)
    assert [(f.container, f.line, f.name, f.tag) for f in found] == [
        ("plain", 4, "alpine", "3.19"),
        ("single", 6, "alpine", "3.19"),
        ("double", 8, "alpine", "3.19"),
    ]
    out = text
    for f in found:
        out = rewrite(out, f, "3.20", D)
    assert out == (
        "kind: Pod\n"
        "spec:\n"
        "  containers:\n"
        f"  - {{name: plain, image: alpine:3.20@{D}}}\n"
        "  - name: single\n"
        f"    image: 'alpine:3.20@{D}'\n"
        "  - name: double\n"
        f'    image: "alpine:3.20@{D}"\n'
    )


BLOCKS = ["|-", ">-", "|", ">", "|+", ">+", "|2-", ">2", "|-2", "|2", ">-  # folded", "&i |-"]


@pytest.mark.parametrize("header", BLOCKS)
def test_a_block_scalar_reference_is_found_and_rewritten_inside_its_block(header):
    """`image: |-` with the reference on the next line: literal or folded, any chomping, with or
    without an indentation indicator. The block stays a block; only the reference changes."""
    text = (
        "kind: Pod\n"
        "metadata: {name: p}\n"
        "spec:\n"
        "  containers:\n"
        "  - name: a\n"
        f"    image: {header}\n"
        "      reg.example/app:1\n"
        "  - name: b\n"
        "    image: other:2\n"
    )
    found = find("pod.yaml", text)
    assert found[0] == Found(
        CONTAINER, 7, "reg.example/app", "1", None, "Pod//p", "a", 0,
        ("spec", "containers", 0, "image"),
    )  # fmt: skip
    edited = rewrite(text, found[0], "2", D)
    assert edited == text.replace("      reg.example/app:1\n", f"      reg.example/app:2@{D}\n")
    assert [(f.tag, f.digest) for f in find("pod.yaml", edited)] == [("2", D), ("2", None)]


def test_block_scalars_in_helm_values_and_kustomize_and_crlf():
    values = (
        "web:\r\n  image:\r\n    repository: >-\r\n      acme/web\r\n    tag: |\r\n      1.0\r\n"
    )
    (found,) = find("values.yaml", values)
    assert (found.line, found.name, found.tag, found.workload) == (
        3,
        "acme/web",
        "1.0",
        "web.image",
    )
    assert rewrite(values, found, None, D) == values.replace("1.0\r\n", f"1.0@{D}\r\n")
    kustomization = "images:\n- name: app\n  newTag: >\n    v1\n  digest: |-\n    " + E + "\n"
    (found,) = find("kustomization.yaml", kustomization)
    assert (found.name, found.tag, found.digest) == ("app", "v1", E)
    assert rewrite(kustomization, found, None, D) == kustomization.replace(E, D)
    sidecar = "sidecarImage: |-\n  quay.io/acme/sidecar:0.3 \n"  # a trailing space: not a reference
    assert find("values.yaml", sidecar) == []


def test_chart_templates_and_other_files_are_skipped():
    template = "spec:\n  containers:\n  - image: {{ .Values.image }}\n"
    assert find("charts/shop/templates/deployment.yaml", template) == []
    assert find("README.md", "containers:\n- image: app:1\n") == []


def test_invalid_yaml_names_the_line():
    text = "kind: Pod\nspec:\n  containers:\n  - name: a\n    image: [app:1\n"
    with pytest.raises(ManifestError, match=r"^line 6: not valid YAML"):
        find("pod.yaml", text)
    with pytest.raises(ManifestError, match=r"^line 2: not valid YAML"):
        find("pod.yaml", "kind: Pod\nspec: \x01\n")


def test_templated_and_unparsable_values_are_skipped():
    text = (
        "kind: Pod\n"
        "spec:\n"
        "  containers:\n"
        '  - image: "{{ .Values.registry }}/app:1"\n'
        "  - image: ${REGISTRY}/app:1\n"
        "  - image: Not/A_Valid::ref\n"
        "  - image: 1.5\n"
        "  - image: |\n"  # two lines: not one reference
        "      app:1\n"
        "      app:2\n"
        "  - image: |\n"  # a blank line first
        "\n"
        "      app:1\n"
        "  - image: >\n"  # folded: "app: 1"
        "      app:\n"
        "      1\n"
        "  - image: |1\n"  # an indentation indicator that keeps a space in the value
        "      app:1\n"
    )
    assert find("pod.yaml", text[: text.index("  - image: |")]) == []


def test_second_rewrite_with_the_same_digest_is_identical():
    pod = "kind: Pod\nspec:\n  containers:\n  - image: app:1  # x\n"
    helm = "image:\n  repository: app\n  tag: '1'\n"
    kustomize = "images:\n- name: app\n  newTag: '1'\n"
    for file, text in (("pod.yaml", pod), ("values.yaml", helm), ("kustomization.yaml", kustomize)):
        once = rewrite(text, find(file, text)[0], None, D)
        (again,) = find(file, once)
        assert (again.tag, again.digest) == ("1", D)
        assert rewrite(once, again, None, D) == once


def test_stale_found_is_refused():
    text = "kind: Pod\nspec:\n  containers:\n  - image: app:1\n"
    (found,) = find("pod.yaml", text)
    with pytest.raises(ManifestError, match="line 4: app is no longer"):
        rewrite(text.replace("app:1", "other:1"), found, None, D)
    with pytest.raises(ManifestError, match="line 4: cannot pin to app:bad tag"):
        rewrite(text, found, "bad tag", D)


def flow(depth: int) -> str:
    """`a: [[[…]]]`: `depth` levels below the document's mapping."""
    return "a: " + "[" * depth + "]" * depth + "\n"


def block(depth: int) -> str:
    """Mappings in mappings, one more indent each: `depth` levels below the top one."""
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"


@pytest.mark.parametrize("nested", [flow, block])
def test_nesting_deeper_than_the_limit_is_a_manifest_error(nested):
    """600 levels used to raise RecursionError, which stopped every sync and sweep."""
    assert find("pod.yaml", nested(MAX_DEPTH - 1)) == []
    with pytest.raises(ManifestError, match=rf"^line \d+: nested deeper than {MAX_DEPTH} levels$"):
        find("pod.yaml", nested(MAX_DEPTH))
    with pytest.raises(ManifestError, match="nested deeper"):
        find("values.yaml", nested(600))


def test_a_file_over_the_size_limit_is_not_read():
    pod = "kind: Pod\nspec:\n  containers:\n  - image: app:1\n"
    padded = pod + "#" * (MAX_BYTES - len(pod) - 1) + "\n"
    assert len(find("pod.yaml", padded)) == 1
    over = padded + "x: é\n"  # counted in bytes, as the file is stored
    size = len(over.encode())
    with pytest.raises(ManifestError) as caught:
        find("pod.yaml", over)
    assert (
        str(caught.value) == f"{size} bytes, over the {MAX_BYTES} bytes (2 MiB) a manifest may have"
    )


def test_a_file_of_too_many_values_is_not_read():
    """Two MiB of `0,` is a million nodes: most of a GiB of memory once composed."""
    with pytest.raises(ManifestError, match=rf"^line 1: more than {MAX_NODES} YAML nodes$"):
        find("pod.yaml", "a: [" + "0," * 1_000_000 + "0]\n")


def test_every_node_counts_aliases_too(monkeypatch):
    monkeypatch.setattr(deploy_yaml, "MAX_NODES", 9)  # the mapping, 2 keys, 2 lists, 2 + 2 items
    assert find("pod.yaml", "a: &x [0, 0]\nb: [*x, *x]\n") == []
    with pytest.raises(ManifestError, match=r"^line 2: more than 9 YAML nodes$"):
        find("pod.yaml", "a: &x [0, 0]\nb: [*x, *x, *x]\n")


@pytest.mark.timeout(60)
def test_aliases_do_not_multiply_the_walk():
    """One anchored list of containers used by thousands of pods is walked once, not once per
    use: 2,000 of each took 68 s when every use was walked again."""
    count = 5000
    items = ", ".join(f"{{name: c{i}, image: 'reg/app:{i}'}}" for i in range(count))
    uses = "".join("- containers: *c\n" for _ in range(count))
    text = f"kind: Pod\nspec:\n  containers: &c [{items}]\nmore:\n{uses}"
    found = find("pod.yaml", text)
    assert [f.tag for f in found] == [str(i) for i in range(count)]
    assert found[0].path == ("spec", "containers", 0, "image")
    rewritten = rewrite(text, found[-1], None, D)
    assert f"'reg/app:{count - 1}@{D}'" in rewritten


def test_billion_laughs_is_read_once():
    """Each alias is one node: nine levels of ten aliases name a billion leaves, and the walk
    still visits each written node once."""
    lines = ["lol0: &l0 {image: 'app:1'}"]
    for level in range(1, 10):
        lines.append(f"lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    text = "\n".join(lines) + "\n"
    (found,) = find("values.yaml", text)
    assert (found.name, found.tag, found.path) == ("app", "1", ("lol0", "image"))


# -- properties: find and rewrite return results or ManifestError, nothing else, in bounded time

FILES = ("pod.yaml", "values.yaml", "kustomization.yaml")
# a deadline per example proves "does not hang", not speed: each takes milliseconds;
# database=None: hypothesis keeps no example database in the project.
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def finds_or_refuses(file: str, text: str) -> None:
    """find() gives references or ManifestError; each reference rewrites, or is refused with
    ManifestError, and a rewrite reads back."""
    try:
        located = find(file, text)
    except ManifestError as err:
        assert err.line is None or err.line >= 1
        return
    for found in located:
        assert isinstance(found, Found) and found.line >= 1
        for tag in {found.tag, None, "v2"}:
            try:
                edited = rewrite(text, found, tag, D)
            except ManifestError:
                continue
            assert any(f.digest == D for f in find(file, edited))


KEYS = ["containers", "initContainers", "image", "name", "images", "newName", "newTag",
        "digest", "repository", "registry", "tag", "kind", "metadata", "spec", "frontendImage",
        "<<", "", "a b", "é"]  # fmt: skip
SCALARS = ["app:1", "registry.example/apps/web:1", f"app@{D}", f"app:1@{E}", "localhost:5000/x",
           "{{ .Values.x }}", "${X}", "Not/A_Valid::ref", "1.20", "", "~", "null", "yes", "0x1F",
           "a\nb", "'", '"', "#", "- x", "é", "\t"]  # fmt: skip
scalars = st.one_of(st.sampled_from(SCALARS), st.integers(), st.none(), st.booleans(), st.text())
refs = st.sampled_from(SCALARS)
container = st.fixed_dictionaries({"image": refs}, optional={"name": refs})
helm_values = st.fixed_dictionaries(
    {"image": st.fixed_dictionaries({"repository": refs}, optional={"tag": scalars})},
    optional={"sidecarImage": refs},
)  # fmt: skip
entries = st.fixed_dictionaries(
    {"name": refs}, optional={"newName": refs, "newTag": scalars, "digest": scalars}
)
overrides = st.one_of(
    refs, st.tuples(refs, refs).map("=".join), st.tuples(refs, st.text(max_size=8)).map("=".join)
)  # Argo CD's `kustomize.images`: `name=newName:tag`, `name:tag`, anything
PARAMETER_NAMES = ["image", "image.repository", "image.tag", "image.digest", "image.registry",
                   "a.image", "a.image.tag", "a.image.repository", "a[0].image", "a\\.image",
                   ".", "image..tag", ""]  # fmt: skip
parameters = st.fixed_dictionaries(
    {}, optional={"name": st.one_of(st.sampled_from(PARAMETER_NAMES), scalars), "value": scalars}
)
argo_source = st.fixed_dictionaries(
    {},
    optional={
        "kustomize": st.fixed_dictionaries({"images": st.lists(overrides, max_size=3)}),
        "helm": st.fixed_dictionaries(
            {"parameters": st.lists(parameters, max_size=4)},
            optional={"valuesObject": helm_values, "values": helm_values.map(yaml.safe_dump)},
        ),
    },
)
shapes = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.just("Pod"),
            "spec": st.fixed_dictionaries(
                {"containers": st.lists(container, min_size=1, max_size=3)},
                optional={"initContainers": st.lists(container, max_size=2)},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "images": st.lists(
                st.fixed_dictionaries(
                    {"name": refs}, optional={"newName": refs, "newTag": scalars, "digest": scalars}
                ),
                min_size=1,
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "image": st.fixed_dictionaries(
                {"repository": refs}, optional={"registry": refs, "tag": scalars, "digest": scalars}
            )
        }
    ),
    st.fixed_dictionaries({"webImage": refs}),
    st.fixed_dictionaries(
        {
            "apiVersion": st.just("argoproj.io/v1alpha1"),
            "kind": st.just("Application"),
            "spec": st.fixed_dictionaries(
                {
                    "source": st.fixed_dictionaries(
                        {
                            "helm": st.fixed_dictionaries(
                                {},
                                optional={
                                    "valuesObject": helm_values,
                                    "values": helm_values.map(yaml.safe_dump),
                                },
                            )
                        }
                    )
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "apiVersion": st.just("argoproj.io/v1alpha1"),
            "kind": st.just("Application"),
            "spec": st.fixed_dictionaries(
                {"source": argo_source}, optional={"sources": st.lists(argo_source, max_size=2)}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "apiVersion": st.just("argoproj.io/v1alpha1"),
            "kind": st.just("ApplicationSet"),
            "spec": st.fixed_dictionaries(
                {
                    "template": st.fixed_dictionaries(
                        {"spec": st.fixed_dictionaries({"source": argo_source})}
                    )
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(
                ["kustomize.toolkit.fluxcd.io/v1", "helm.toolkit.fluxcd.io/v2"]
            ),
            "kind": st.sampled_from(["Kustomization", "HelmRelease"]),
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "images": st.lists(entries, max_size=2),
                    "postRenderers": st.lists(
                        st.fixed_dictionaries(
                            {"kustomize": st.fixed_dictionaries({"images": st.lists(entries)})}
                        ),
                        max_size=2,
                    ),
                },
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "helmCharts": st.lists(
                st.fixed_dictionaries({"name": refs}, optional={"valuesInline": helm_values}),
                max_size=2,
            )
        }
    ),
)  # fmt: skip - a container, a kustomize `images:` entry, Helm values, inline Helm values,
# Argo CD's and Flux's image overrides
values = st.recursive(
    st.one_of(scalars, shapes),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=40,
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    """Structures as people write them, dumped in any style; some share a value, which the
    dumper writes as an anchor and aliases."""
    docs = draw(st.lists(values, min_size=1, max_size=3))
    shared = draw(values)
    for doc in docs:
        if isinstance(doc, dict) and draw(st.booleans()):
            doc["x"] = doc["y"] = shared
    flow = draw(st.sampled_from([None, True, False]))
    style = draw(st.sampled_from([None, "'", '"', "|"]))
    crlf = draw(st.booleans())
    text = yaml.safe_dump_all(docs, default_flow_style=flow, default_style=style,
                              allow_unicode=draw(st.booleans()))  # fmt: skip
    return text.replace("\n", "\r\n") if crlf else text


TOKENS = ["- ", ": ", "[", "]", "{", "}", ", ", "&a ", "*a", "&b ", "*b", "\n", "\r\n", "  ",
          "    ", "\t", "image", "containers", "images", "name", "newTag", "digest",
          "repository", "tag", "app:1", f"app@{D}", "'", '"', "---\n", "...\n", "# c", "? ",
          "!!str ", "!x ", "|\n", ">-\n", "<<: ", "%YAML 1.1\n", "\ufeff", "\x00", "é",
          "\\", "@", "`", "apiVersion: argoproj.io/v1alpha1\nkind: Application\n",
          "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\n", "spec", "source",
          "helm", "values", "valuesObject", "helmCharts", "valuesInline", "|-\n",
          "|2\n", "kustomize", "parameters", "value", "image.tag", "postRenderers", "=",
          "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"]  # fmt: skip
yaml_like = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@FUZZ
@given(st.sampled_from(FILES), yaml_documents())
def test_generated_yaml_is_found_or_refused(file, text):
    finds_or_refuses(file, text)


@FUZZ
@given(st.sampled_from(FILES), yaml_like)
def test_yaml_like_text_is_found_or_refused(file, text):
    finds_or_refuses(file, text)


@FUZZ
@given(st.sampled_from(FILES), st.binary(max_size=400))
def test_raw_bytes_are_found_or_refused(file, data):
    """Bytes as they come from a repository: UTF-8 where they are, any character elsewhere."""
    finds_or_refuses(file, data.decode("utf-8", "surrogateescape"))
    finds_or_refuses(file, data.decode("latin-1"))


# -- Helm values written inline in the object that deploys the chart

ARGO_VALUES_OBJECT = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
  namespace: argocd
  finalizers:
    - resources-finalizer.argocd.argoproj.io
spec:
  project: default
  source:
    repoURL: https://charts.example.com
    chart: shop
    targetRevision: 1.4.2
    helm:
      releaseName: shop
      valuesObject:
        frontend:
          image:
            repository: registry.example/shop/frontend   # built by graphbuild
            tag: "2.3.1"
        worker:
          image: registry.example/shop/worker:2.3.1
  destination:
    server: https://kubernetes.default.svc
    namespace: shop
  syncPolicy:
    automated: {prune: true, selfHeal: true}
"""

ARGO_VALUES_STRING = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: monitoring
  namespace: argocd
spec:
  project: platform
  sources:
    - repoURL: https://prometheus-community.github.io/helm-charts
      chart: kube-prometheus-stack
      targetRevision: 58.2.1
      helm:
        values: |
          # our registry mirror
          grafana:
            image:
              registry: registry.example
              repository: mirror/grafana
              tag: 10.4.1
          alertmanager:
            enabled: false
    - repoURL: https://github.com/acme/deploy.git
      targetRevision: main
      ref: values
  destination: {server: https://kubernetes.default.svc, namespace: monitoring}
"""

FLUX = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: podinfo
spec:
  interval: 10m
  chart:
    spec:
      chart: podinfo
      version: "6.6.x"
      sourceRef: {kind: HelmRepository, name: podinfo, namespace: flux-system}
  valuesFrom:
    - kind: ConfigMap
      name: podinfo-values
    - kind: Secret
      name: podinfo-secrets
      valuesKey: values.yaml
    - kind: ConfigMap
      name: podinfo-tags
      valuesKey: tag
      targetPath: image.tag
  values:
    replicaCount: 2
    image:
      repository: ghcr.io/stefanprodan/podinfo
      tag: 6.6.2
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: podinfo-values
  namespace: podinfo
data:
  values.yaml: |
    redis:
      enabled: true
      repository: docker.io/library/redis
      tag: 7.2.4
  other.yaml: |
    image: {repository: not/helm-values, tag: "1"}
"""

HELM_CHARTS = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: games
helmCharts:
  - name: minecraft
    repo: https://itzg.github.io/minecraft-server-charts
    version: 4.23.0
    releaseName: moria
    valuesInline:
      image:
        repository: registry.example/games/minecraft
        tag: java21
      rcon:
        image: registry.example/games/rcon:1.1  # sidecar
images:
  - name: busybox
    newTag: "1.36"
"""

APPLICATION_SET = """\
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata:
  name: guestbook
  namespace: argocd
spec:
  goTemplate: true
  generators:
    - list:
        elements:
          - {cluster: dev, url: https://dev.example}
          - {cluster: prod, url: https://prod.example}
  template:
    metadata:
      name: 'guestbook-{{.cluster}}'
    spec:
      project: default
      source:
        repoURL: https://charts.example.com
        chart: guestbook
        targetRevision: 0.3.0
        helm:
          valuesObject:
            image:
              repository: registry.example/apps/guestbook
              tag: "0.3"
            proxy:
              image: 'registry.example/{{.cluster}}/proxy:1'
      destination:
        server: '{{.url}}'
        namespace: guestbook
"""


def only_changed(before: str, after: str, old: str, new: str) -> None:
    """`after` is `before` with the one occurrence of `old` now `new`: the whole text compared."""
    assert before.count(old) == 1
    assert after == before.replace(old, new)


def test_argo_application_values_object():
    found = find("apps/shop.yaml", ARGO_VALUES_OBJECT)
    values = ("spec", "source", "helm", "valuesObject")
    assert found == [
        Found(INLINE, 19, "registry.example/shop/frontend", "2.3.1", None,
              "Application/argocd/shop:frontend.image", None, 0, (*values, "frontend", "image")),
        Found(INLINE, 22, "registry.example/shop/worker", "2.3.1", None,
              "Application/argocd/shop:worker.image", None, 0, (*values, "worker", "image")),
    ]  # fmt: skip
    only_changed(ARGO_VALUES_OBJECT, rewrite(ARGO_VALUES_OBJECT, found[0], "2.4.0", D),
                 'tag: "2.3.1"', f'tag: "2.4.0@{D}"')  # fmt: skip
    only_changed(ARGO_VALUES_OBJECT, rewrite(ARGO_VALUES_OBJECT, found[1], None, D),
                 "worker:2.3.1\n", f"worker:2.3.1@{D}\n")  # fmt: skip


def test_argo_application_values_string_is_read_and_edited_in_place():
    """`helm.values` is a YAML string: parsed as YAML, and the edit lands on its line in the
    file, inside the block, byte for byte."""
    found = find("apps/monitoring.yaml", ARGO_VALUES_STRING)
    assert found == [
        Found(INLINE, 18, "registry.example/mirror/grafana", "10.4.1", None,
              "Application/argocd/monitoring:sources[0]:grafana.image", None, 0,
              ("spec", "sources", 0, "helm", "values", "grafana", "image")),
    ]  # fmt: skip
    edited = rewrite(ARGO_VALUES_STRING, found[0], None, D)
    only_changed(ARGO_VALUES_STRING, edited, "tag: 10.4.1\n", f"tag: 10.4.1@{D}\n")
    (again,) = find("apps/monitoring.yaml", edited)
    assert (again.tag, again.digest, again.line) == ("10.4.1", D, 18)
    assert rewrite(edited, again, None, D) == edited


def test_argo_values_string_crlf_and_quoted_one_line():
    crlf = ARGO_VALUES_STRING.replace("\n", "\r\n")
    (found,) = find("apps/monitoring.yaml", crlf)
    assert found.line == 18
    only_changed(crlf, rewrite(crlf, found, None, D), "tag: 10.4.1\r\n", f"tag: 10.4.1@{D}\r\n")
    quoted = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    helm:\n"
        "      values: \"image: {repository: registry.example/x, tag: '1'}\"\n"
    )
    (found,) = find("a.yaml", quoted)
    assert (found.line, found.name, found.workload) == (
        7,
        "registry.example/x",
        "Application//a:image",
    )
    only_changed(quoted, rewrite(quoted, found, None, D), "tag: '1'", f"tag: '1@{D}'")


def test_a_values_string_whose_characters_move_is_found_but_not_rewritten():
    """Escapes or folding: the string's characters are not where its YAML reads them, so no
    edit can be placed safely; the deploy says so instead of guessing."""
    escaped = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    helm:\n"
        "      values: \"image:\\n  repository: registry.example/x\\n  tag: '1'\\n\"\n"
    )
    (found,) = find("a.yaml", escaped)
    assert (found.line, found.name, found.tag) == (7, "registry.example/x", "1")
    with pytest.raises(ManifestError, match=r"^line 7: cannot rewrite registry.example/x: .*`\|`"):
        rewrite(escaped, found, None, D)


def test_flux_helm_release_values_and_values_from_config_map():
    assert deploy_yaml.values_from("podinfo.yaml", FLUX) == [
        ("podinfo", "podinfo-values", "values.yaml")
    ]
    found = find("podinfo.yaml", FLUX, [("podinfo", "podinfo-values", "values.yaml")])
    assert found == [
        Found(INLINE, 26, "ghcr.io/stefanprodan/podinfo", "6.6.2", None,
              "HelmRelease/podinfo/podinfo:image", None, 0, ("spec", "values", "image")),
        Found(INLINE, 38, "docker.io/library/redis", "7.2.4", None,
              "ConfigMap/podinfo/podinfo-values:values.yaml:redis", None, 1,
              ("data", "values.yaml", "redis")),
    ]  # fmt: skip
    only_changed(FLUX, rewrite(FLUX, found[0], None, D), "tag: 6.6.2\n", f"tag: 6.6.2@{D}\n")
    only_changed(FLUX, rewrite(FLUX, found[1], "7.2.5", D), "tag: 7.2.4\n", f"tag: 7.2.5@{D}\n")
    # a ConfigMap no HelmRelease names is not Helm values; a namespace left to kustomize matches
    assert [f.workload for f in find("podinfo.yaml", FLUX)] == ["HelmRelease/podinfo/podinfo:image"]
    assert len(find("podinfo.yaml", FLUX, [(None, "podinfo-values", "values.yaml")])) == 2
    assert len(find("podinfo.yaml", FLUX, [("other", "podinfo-values", "values.yaml")])) == 1


@pytest.mark.parametrize("version", ["v2beta1", "v2beta2"])
def test_flux_helm_release_older_api_versions(version):
    text = FLUX.replace("helm.toolkit.fluxcd.io/v2", f"helm.toolkit.fluxcd.io/{version}")
    assert [f.workload for f in find("podinfo.yaml", text)] == ["HelmRelease/podinfo/podinfo:image"]


def test_kustomize_helm_charts_values_inline():
    found = find("games/kustomization.yaml", HELM_CHARTS)
    values = ("helmCharts", 0, "valuesInline")
    assert found == [
        Found(KUSTOMIZE, 16, "busybox", "1.36", None, "kustomization", None, 0, ("images", 0)),
        Found(INLINE, 11, "registry.example/games/minecraft", "java21", None,
              "helmCharts/moria:image", None, 0, (*values, "image")),
        Found(INLINE, 14, "registry.example/games/rcon", "1.1", None,
              "helmCharts/moria:rcon.image", None, 0, (*values, "rcon", "image")),
    ]  # fmt: skip
    only_changed(HELM_CHARTS, rewrite(HELM_CHARTS, found[1], None, D),
                 "tag: java21\n", f"tag: java21@{D}\n")  # fmt: skip
    only_changed(HELM_CHARTS, rewrite(HELM_CHARTS, found[2], None, D),
                 "rcon:1.1  #", f"rcon:1.1@{D}  #")  # fmt: skip
    # helmCharts belong to kustomization files; elsewhere the key means nothing
    assert find("games/other.yaml", HELM_CHARTS) == []


def test_argo_application_set_template_values():
    found = find("appsets/guestbook.yaml", APPLICATION_SET)
    assert found == [
        Found(INLINE, 25, "registry.example/apps/guestbook", "0.3", None,
              "ApplicationSet/argocd/guestbook:image", None, 0,
              ("spec", "template", "spec", "source", "helm", "valuesObject", "image")),
    ]  # fmt: skip
    only_changed(APPLICATION_SET, rewrite(APPLICATION_SET, found[0], None, D),
                 'tag: "0.3"', f'tag: "0.3@{D}"')  # fmt: skip


def test_values_of_other_kinds_and_groups_are_not_helm_values():
    """`spec.values` means Helm values only in a Flux HelmRelease; `helm.valuesObject` only in
    Argo CD's objects."""
    other = FLUX.replace("helm.toolkit.fluxcd.io/v2", "example.com/v1")
    assert find("podinfo.yaml", other) == []
    assert find("shop.yaml", ARGO_VALUES_OBJECT.replace("kind: Application", "kind: Other")) == []


@pytest.mark.timeout(60)
def test_aliased_inline_values_are_read_once():
    """An anchored source with a big values object, and one with a big values string, each
    used by thousands of sources: each is read once, not once per alias (that took
    minutes)."""
    count = 5000
    keys = "".join(f"          k{i}: {{repository: reg/app{i}, tag: '1'}}\n" for i in range(count))
    lines = "".join(
        f"            s{i}: {{repository: reg/str{i}, tag: '1'}}\n" for i in range(count)
    )
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n"
        "  sources:\n"
        "    - &src\n      helm:\n        valuesObject:\n" + keys
        + "    - &str\n      helm:\n        values: |\n" + lines
        + "".join("    - *src\n    - *str\n" for _ in range(count))
    )  # fmt: skip
    found = find("a.yaml", text)
    assert len(found) == 2 * count
    assert {f.path[:3] for f in found} == {("spec", "sources", 0), ("spec", "sources", 1)}
    assert rewrite(text, found[-1], None, D).count(D) == 1


# -- image overrides the deploying object applies itself: Argo CD's kustomize.images and
# helm.parameters, Flux Kustomization images and HelmRelease postRenderers

ARGO_KUSTOMIZE = f"""\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
  namespace: argocd
spec:
  project: default
  source:
    repoURL: https://github.com/acme/shop-deploy.git
    targetRevision: main
    path: overlays/prod
    kustomize:
      namePrefix: prod-
      images:
        - web=registry.example/shop/web:2.3.1   # the override runs
        - 'registry.example/shop/api:1.4'
        - "worker=registry.example/shop/worker@{E}"
        - nginx=registry.example/mirror/nginx
        - redis@{E}
        - cache=registry.example/shop/cache:$ARGOCD_APP_REVISION
  destination: {{server: https://kubernetes.default.svc, namespace: shop}}
"""


def test_argo_kustomize_images_are_found_as_the_image_that_runs():
    """`name=newName:newTag`, `name:newTag`, `name=newName@digest`, `name=newName` (no tag
    here: the base's), `name@digest`; Argo CD's `$VARS` are skipped."""
    found = find("apps/shop.yaml", ARGO_KUSTOMIZE)
    at = ("spec", "source", "kustomize", "images")
    label = "Application/argocd/shop:kustomize.images"
    assert found == [
        Found(OVERRIDE, 15, "registry.example/shop/web", "2.3.1", None, f"{label}[0]", None, 0,
              (*at, 0)),
        Found(OVERRIDE, 16, "registry.example/shop/api", "1.4", None, f"{label}[1]", None, 0,
              (*at, 1)),
        Found(OVERRIDE, 17, "registry.example/shop/worker", None, E, f"{label}[2]", None, 0,
              (*at, 2)),
        Found(OVERRIDE, 18, "registry.example/mirror/nginx", None, None, f"{label}[3]", None, 0,
              (*at, 3)),
        Found(OVERRIDE, 19, "redis", None, E, f"{label}[4]", None, 0, (*at, 4)),
    ]  # fmt: skip


def test_argo_kustomize_images_are_pinned_in_the_form_every_kustomize_reads():
    """`name=newName:tag@digest`: kustomize 5.4 and later read the tag and the digest; older
    ones take `newName:tag` as the new name and add the digest, the same image. `name:tag`
    gains `name=` (older kustomize would look for an image called `name:tag`)."""
    text = ARGO_KUSTOMIZE
    web, api, worker, _, redis = find("apps/shop.yaml", text)
    only_changed(text, rewrite(text, web, None, D),
                 "web:2.3.1   #", f"web:2.3.1@{D}   #")  # fmt: skip
    only_changed(text, rewrite(text, web, "2.4", D), "web:2.3.1   #", f"web:2.4@{D}   #")
    only_changed(text, rewrite(text, api, None, D), "'registry.example/shop/api:1.4'",
                 f"'registry.example/shop/api=registry.example/shop/api:1.4@{D}'")  # fmt: skip
    only_changed(text, rewrite(text, worker, None, D), f"worker@{E}", f"worker@{D}")
    only_changed(text, rewrite(text, redis, None, D), f"redis@{E}", f"redis@{D}")
    pinned = rewrite(text, api, None, D)
    again = find("apps/shop.yaml", pinned)[1]
    assert (again.name, again.tag, again.digest, again.path) == (api.name, "1.4", D, api.path)
    assert rewrite(pinned, again, None, D) == pinned


ARGO_KUSTOMIZE_SOURCES = """\
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: shop, namespace: argocd}
spec:
  generators: [{list: {elements: [{env: dev}, {env: prod}]}}]
  template:
    metadata: {name: 'shop-{{env}}'}
    spec:
      sources:
        - repoURL: https://github.com/acme/shop-deploy.git
          path: 'overlays/{{env}}'
          kustomize:
            images: [web=registry.example/shop/web:2.3.1, 'registry.example/{{env}}/x:1']
      destination: {server: https://kubernetes.default.svc, namespace: shop}
"""


def test_argo_kustomize_images_of_an_application_set_template_and_many_sources():
    (found,) = find("appsets/shop.yaml", ARGO_KUSTOMIZE_SOURCES)
    assert found == Found(
        OVERRIDE, 13, "registry.example/shop/web", "2.3.1", None,
        "ApplicationSet/argocd/shop:sources[0]:kustomize.images[0]", None, 0,
        ("spec", "template", "spec", "sources", 0, "kustomize", "images", 0),
    )  # fmt: skip
    only_changed(ARGO_KUSTOMIZE_SOURCES, rewrite(ARGO_KUSTOMIZE_SOURCES, found, None, D),
                 "web:2.3.1,", f"web:2.3.1@{D},")  # fmt: skip


ARGO_PARAMETERS = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
  namespace: argocd
spec:
  source:
    repoURL: https://charts.example.com
    chart: shop
    targetRevision: 1.4.2
    helm:
      parameters:
        - name: frontend.image.repository
          value: registry.example/shop/frontend
        - name: frontend.image.tag
          value: "2.3.1"
          forceString: true
        - name: worker.image
          value: registry.example/shop/worker:2.3.1
        - name: api.image.tag     # over the valuesObject's tag
          value: "1.5"
        - name: replicaCount
          value: "2"
      valuesObject:
        api:
          image:
            repository: registry.example/shop/api
            tag: "1.4"
        proxy:
          image: {registry: registry.example, repository: mirror/envoy, tag: v1.30.1}
  destination: {server: https://kubernetes.default.svc, namespace: shop}
"""


def test_argo_helm_parameters_name_images_over_the_values_object():
    """Parameters are Helm values set over the source's valuesObject: alone they may name
    a whole image, or override the tag of one the values object names; the tag is edited
    where it is set."""
    found = find("apps/shop.yaml", ARGO_PARAMETERS)
    at = ("spec", "source", "helm", "valuesObject")
    label = "Application/argocd/shop:"
    assert sorted(found, key=lambda f: f.path) == [
        Found(INLINE, 27, "registry.example/shop/api", "1.5", None, f"{label}api.image", None,
              0, (*at, "api", "image")),
        Found(INLINE, 14, "registry.example/shop/frontend", "2.3.1", None,
              f"{label}frontend.image", None, 0, (*at, "frontend", "image")),
        Found(INLINE, 30, "registry.example/mirror/envoy", "v1.30.1", None,
              f"{label}proxy.image", None, 0, (*at, "proxy", "image")),
        Found(INLINE, 19, "registry.example/shop/worker", "2.3.1", None,
              f"{label}worker.image", None, 0, (*at, "worker", "image")),
    ]  # fmt: skip
    by = {f.workload.rpartition(":")[2]: f for f in found}
    text = ARGO_PARAMETERS
    only_changed(text, rewrite(text, by["frontend.image"], None, D),
                 'value: "2.3.1"', f'value: "2.3.1@{D}"')  # fmt: skip
    only_changed(text, rewrite(text, by["worker.image"], None, D),
                 "worker:2.3.1\n", f"worker:2.3.1@{D}\n")  # fmt: skip
    only_changed(text, rewrite(text, by["api.image"], None, D),
                 'value: "1.5"', f'value: "1.5@{D}"')  # fmt: skip
    only_changed(text, rewrite(text, by["proxy.image"], None, D),
                 "tag: v1.30.1}", f"tag: v1.30.1@{D}}}")  # fmt: skip


def test_argo_helm_parameters_helm_cannot_read_as_a_path_are_skipped():
    """`a[0].b` and `a\\.b` are Helm's list and escaped-dot forms: not read (no image is
    guessed from them); a parameter without a string name or value is no value."""
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    helm:\n      parameters:\n"
        "        - {name: 'x[0].image', value: 'reg/x:1'}\n"
        "        - {name: 'y\\.image', value: 'reg/y:1'}\n"
        "        - {name: z.image}\n        - {value: 'reg/w:1'}\n        - name: [v]\n"
        "        - {name: 'q.image', value: 'reg/q:1'}\n"
    )
    assert [f.workload for f in find("a.yaml", text)] == ["Application//a:q.image"]
    # parameters none of which is read leave the values object as it is
    skipped = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    helm:\n      parameters: [{name: 'hosts[0]', value: a}]\n"
        "      valuesObject: {image: 'reg/v:1'}\n"
    )
    assert [f.workload for f in find("a.yaml", skipped)] == ["Application//a:image"]


FLUX_KUSTOMIZATION = f"""\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
  namespace: flux-system
spec:
  interval: 10m
  path: ./apps/prod
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
  images:
    - name: web
      newName: registry.example/shop/web
      newTag: 2.3.1
    - name: registry.example/shop/api
      newTag: "1.4"
      digest: {E}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: podinfo
spec:
  chart:
    spec: {{chart: podinfo, sourceRef: {{kind: HelmRepository, name: podinfo}}}}
  postRenderers:
    - kustomize:
        patches:
          - target: {{kind: Deployment}}
            patch: |
              - op: add
                path: /metadata/labels/team
                value: web
        images:
          - {{name: ghcr.io/stefanprodan/podinfo, newName: registry.example/podinfo, newTag: 6.6.2}}
"""


def test_flux_kustomization_images_and_helm_release_post_renderers():
    found = find("clusters/prod/apps.yaml", FLUX_KUSTOMIZATION)
    assert found == [
        Found(OVERRIDE, 14, "registry.example/shop/web", "2.3.1", None,
              "Kustomization/flux-system/apps:images[0]", None, 0, ("spec", "images", 0)),
        Found(OVERRIDE, 17, "registry.example/shop/api", "1.4", E,
              "Kustomization/flux-system/apps:images[1]", None, 0, ("spec", "images", 1)),
        Found(OVERRIDE, 38, "registry.example/podinfo", "6.6.2", None,
              "HelmRelease/podinfo/podinfo:postRenderers[0]:images[0]", None, 1,
              ("spec", "postRenderers", 0, "kustomize", "images", 0)),
    ]  # fmt: skip
    text = FLUX_KUSTOMIZATION
    only_changed(text, rewrite(text, found[0], None, D),
                 "      newTag: 2.3.1\n", f"      newTag: 2.3.1\n      digest: {D}\n")  # fmt: skip
    only_changed(text, rewrite(text, found[1], None, D), f"digest: {E}", f"digest: {D}")
    only_changed(text, rewrite(text, found[2], None, D),
                 "newTag: 6.6.2}", f"newTag: 6.6.2, digest: {D}}}")  # fmt: skip
    # `spec.images` is Flux's only in its own group; kustomize's Kustomization has none there
    other = text.replace("kustomize.toolkit.fluxcd.io/v1", "kustomize.config.k8s.io/v1beta1")
    assert [f.workload for f in find("clusters/prod/apps.yaml", other)] == [found[2].workload]


@pytest.mark.timeout(60)
def test_parameters_shared_by_aliases_count_each_use():
    """One anchored list of parameters set in thousands of sources is merged for each (each
    source's values differ), so each use counts against MAX_NODES as the nodes it stands
    for: 2,000 parameters in 2,000 sources is four million, refused, not minutes of work."""
    count = 2000
    params = "".join(f"          - {{name: a{i}.image.tag, value: '1'}}\n" for i in range(count))
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n"
        "  sources:\n    - helm:\n        parameters: &p\n" + params
        + "".join(f"    - {{helm: {{parameters: *p, releaseName: r{i}}}}}\n" for i in range(count))
    )  # fmt: skip
    with pytest.raises(ManifestError, match=rf"more than {MAX_NODES} YAML nodes$"):
        find("a.yaml", text)


@pytest.mark.timeout(60)
def test_a_values_object_shared_by_sources_with_parameters_counts_each_use():
    """An anchored valuesObject with parameters over it in thousands of sources is read again
    for each (the parameters differ), so each use counts its nodes: refused, not minutes of
    work; without parameters it is read once, as before."""
    count = 5000
    keys = "".join(f"          k{i}: {{repository: reg/app{i}, tag: '1'}}\n" for i in range(count))
    head = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n"
        "  sources:\n    - helm:\n        valuesObject: &v\n" + keys
    )
    params = "".join(
        f"    - {{helm: {{valuesObject: *v, parameters: [{{name: x, value: '{i}'}}]}}}}\n"
        for i in range(count)
    )
    with pytest.raises(ManifestError, match=rf"more than {MAX_NODES} YAML nodes$"):
        find("a.yaml", head + params)
    plain = "".join(
        f"    - {{helm: {{valuesObject: *v, releaseName: r{i}}}}}\n" for i in range(count)
    )
    assert len(find("a.yaml", head + plain)) == count


def test_parameters_of_two_sources_are_two_images():
    source = (
        "    - chart: {0}\n      helm:\n        parameters:\n"
        "          - {{name: image.repository, value: reg/{0}}}\n"
        "          - {{name: image.tag, value: '1'}}\n"
    )
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n"
        "  sources:\n" + source.format("web") + source.format("api")
    )
    found = find("a.yaml", text)
    assert [(f.workload, f.name) for f in found] == [
        ("Application//a:sources[0]:image", "reg/web"),
        ("Application//a:sources[1]:image", "reg/api"),
    ]
    edited = rewrite(text, found[1], None, D)
    assert edited == text.replace("'1'}\n", f"'1@{D}'}}\n").replace(f"'1@{D}'}}\n", "'1'}\n", 1)


def test_argo_kustomize_image_in_a_block_scalar_is_on_its_line():
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    kustomize:\n      images:\n        - >-\n"
        "          web=reg/web:1\n"
    )
    (found,) = find("a.yaml", text)
    assert (found.line, found.name, found.tag) == (9, "reg/web", "1")
    only_changed(text, rewrite(text, found, None, D), "reg/web:1\n", f"reg/web:1@{D}\n")


ARGO_STRING_PARAMETERS = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop, namespace: argocd}
spec:
  source:
    chart: shop
    repoURL: https://charts.example.com
    helm:
      parameters:
        - {name: api.image.tag, value: "1.5"}
        - {name: web.image.repository, value: reg/mirror/web}
        - {name: worker.image, value: "reg/worker:2"}
        - {name: job.image.digest, value: "DIGEST"}
      values: |
        api:
          image: {repository: reg/api, tag: "1.4"}
        web:
          image:
            repository: reg/web
            tag: '1'
        worker:
          image: reg/worker:1
        job:
          image: {repository: reg/job, tag: "3"}
        other:
          image: {repository: reg/other, tag: "7"}
""".replace("DIGEST", E)


def test_argo_helm_parameters_over_a_values_string():
    """Without a valuesObject Argo CD gives the chart the `values` string, and parameters are
    set over it: an image takes its tag, digest or repository from whichever sets it last,
    and is pinned where that tag or digest is written (a parameter's value, or the string)."""
    found = {f.workload.rpartition(":")[2]: f for f in find("a.yaml", ARGO_STRING_PARAMETERS)}
    assert {k: (f.name, f.tag, f.digest, f.line) for k, f in found.items()} == {
        "api.image": ("reg/api", "1.5", None, 16),
        "web.image": ("reg/mirror/web", "1", None, 11),
        "worker.image": ("reg/worker", "2", None, 12),
        "job.image": ("reg/job", "3", E, 24),
        "other.image": ("reg/other", "7", None, 26),
    }
    text = ARGO_STRING_PARAMETERS
    only_changed(text, rewrite(text, found["api.image"], None, D),
                 'value: "1.5"', f'value: "1.5@{D}"')  # fmt: skip
    only_changed(text, rewrite(text, found["web.image"], None, D),
                 "tag: '1'", f"tag: '1@{D}'")  # fmt: skip
    only_changed(text, rewrite(text, found["worker.image"], None, D),
                 '"reg/worker:2"', f'"reg/worker:2@{D}"')  # fmt: skip
    only_changed(text, rewrite(text, found["job.image"], None, D), f'"{E}"', f'"{D}"')
    only_changed(text, rewrite(text, found["other.image"], None, D),
                 'tag: "7"', f'tag: "7@{D}"')  # fmt: skip


def test_a_values_string_beside_a_values_object_is_not_read():
    """Argo CD gives the chart its valuesObject when there is one (even `{}`), else its
    values string: never both."""
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
        "spec:\n  source:\n    helm:\n      valuesObject: %s\n"
        "      values: |\n        image: reg/s:1\n"
    )
    assert [f.name for f in find("a.yaml", text % "{image: reg/o:1}")] == ["reg/o"]
    assert find("a.yaml", text % "{}") == []
    assert [f.name for f in find("a.yaml", text % "null")] == ["reg/s"]


@pytest.mark.timeout(20)  # 35 s before, 1.5 s now: the bound proves the pairs are gone
def test_many_values_from_entries_against_many_config_map_keys_cost_one_lookup_each():
    """Whoever can push to a deploy repository writes both sides: 20,000 `valuesFrom`
    entries and a ConfigMap of 20,000 keys were 20,000 x 20,000 comparisons (minutes per
    sync); each key is now one lookup."""
    count = 20_000
    entries = "".join(f"  - {{kind: ConfigMap, name: c, valuesKey: k{i}}}\n" for i in range(count))
    release = ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: r}\n"
               "spec:\n  valuesFrom:\n" + entries)  # fmt: skip
    held = deploy_yaml.values_from("release.yaml", release)
    assert len(held) == count
    data = "".join(f"  x{i}: v\n" for i in range(count)) + "  k7: 'image: reg/app:1.0'\n"
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n" + data
    assert [(f.name, f.tag) for f in deploy_yaml.find("cm.yaml", config_map, held)] == [
        ("reg/app", "1.0")
    ]
