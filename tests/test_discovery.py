"""Which workloads run which image: rings from path globs, discovery in a real synced deploy
repository (containers, kustomize, Helm values, and Helm values from a ConfigMap a
HelmRelease elsewhere names; files that cannot be read are Problems), matching a workload to
an image, and the copy kept in index.db (re-read only when the commit, the ring globs or
what discovery reads change; dropped when the repository leaves the config).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from graphbuild import config, deploy_yaml, discovery, indexdb, sources, trees, workloads
from graphbuild.config import DeployRepoSpec
from graphbuild.errors import ERROR, WARNING, Problem
from graphbuild.workloads import GITOPS, KUBECTL, Workload

from .site import git

D = "sha256:" + "d" * 64
E = "sha256:" + "e" * 64

WEB = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ns
spec:
  template:
    spec:
      containers:
        - name: web
          image: nginx:1.25
        - name: sidecar
          image: registry.example/tools/agent@{D}
"""
KUSTOMIZATION = """\
resources: [web.yaml]
images:
  - name: registry.example/apps/api
    newTag: "2"
"""
VALUES = """\
frontend:
  image:
    repository: registry.example/apps/front
    tag: "3"
"""
PROD = """\
apiVersion: v1
kind: Pod
metadata:
  name: job
spec:
  containers:
    - name: job
      image: registry.example/apps/job
"""
BROKEN = "kind: Deployment\nspec:\n  containers: [\n    - image: x\n"
ELSEWHERE = "kind: Pod\nspec:\n  containers:\n    - name: x\n      image: registry.example/other\n"
FILES = {
    "envs/dev/web.yaml": WEB,
    "envs/dev/kustomization.yaml": KUSTOMIZATION,
    "envs/dev/broken.yaml": BROKEN,
    "envs/prod/eu/values.yaml": VALUES,
    "envs/prod/eu/job.yml": PROD,
    "elsewhere/pod.yaml": ELSEWHERE,
    "README.md": "image: registry.example/not/a/manifest\n",
}
RINGS = {"dev": ["envs/dev/**"], "prod": ["envs/prod/**"]}
LISTED = {
    "name": "api-kubectl",
    "image": "registry.example/apps/api:2",
    "ring": "prod",
    "kubectl": {"resource": "deployment/api", "container": "api"},
}


def deploy_config(write_config, url: Path | str, rings=None, listed=()) -> config.Config:
    deployments = {
        "rings": ["dev", "prod"],
        "repos": [{"name": "deploy", "url": str(url), "rings": rings or RINGS}],
        "workloads": list(listed),
    }
    return config.load(write_config([], deployments=deployments))


def commit_bytes(remote, path: str, data: bytes) -> str:
    """A file whose bytes the fixture's text writer cannot hold (not UTF-8)."""
    (remote.work / path).parent.mkdir(parents=True, exist_ok=True)
    (remote.work / path).write_bytes(data)
    git(remote.work, "add", "-A")
    git(remote.work, "commit", "-q", "-m", f"add {path}")
    git(remote.work, "push", "-q", "origin", "HEAD:main")
    return git(remote.work, "rev-parse", "HEAD")


def synced(cfg: config.Config) -> sources.SyncResult:
    (result,) = sources.sync(cfg)
    assert result.error is None, result.error
    return result


def discovered(cfg: config.Config, result: sources.SyncResult):
    (spec,) = cfg.deployments.repos
    tree = trees.open_tree(spec.source, result, cfg.workspace, {}, {})
    try:
        return discovery.discover(spec, tree)
    finally:
        tree.close()


def found_at(path: str, text: str, i: int) -> deploy_yaml.Found:
    return deploy_yaml.find(path, text)[i]


def expected_found() -> list[Workload]:
    """What discovery reads from FILES, in path order."""
    dev_k, dev_w = "envs/dev/kustomization.yaml", "envs/dev/web.yaml"
    job, values = "envs/prod/eu/job.yml", "envs/prod/eu/values.yaml"
    return [
        Workload(GITOPS, "dev", "registry.example/apps/api", "2", None, "kustomization",
                 f"deploy:{dev_k}:3", "deploy", dev_k, found_at(dev_k, KUSTOMIZATION, 0)),
        Workload(GITOPS, "dev", "docker.io/library/nginx", "1.25", None,
                 "Deployment/ns/web (web)", f"deploy:{dev_w}:11", "deploy", dev_w,
                 found_at(dev_w, WEB, 0)),
        Workload(GITOPS, "dev", "registry.example/tools/agent", None, D,
                 "Deployment/ns/web (sidecar)", f"deploy:{dev_w}:13", "deploy", dev_w,
                 found_at(dev_w, WEB, 1)),
        Workload(GITOPS, "prod", "registry.example/apps/job", None, None, "Pod//job (job)",
                 f"deploy:{job}:8", "deploy", job, found_at(job, PROD, 0)),
        Workload(GITOPS, "prod", "registry.example/apps/front", "3", None, "frontend.image",
                 f"deploy:{values}:3", "deploy", values, found_at(values, VALUES, 0)),
    ]  # fmt: skip


BROKEN_PROBLEM = Problem(
    WARNING,
    "deploy",
    "not read: not valid YAML: did not find expected node content",  # as kubectl says it
    "envs/dev/broken.yaml",
    4,
)
LATIN1_PROBLEM = Problem(
    WARNING,
    "deploy",
    "not read: 'utf-8' codec can't decode byte 0xe9 in position 15: invalid continuation byte",
    "envs/dev/latin1.yaml",
)


# ---------------------------------------------------------------- rings


def spec_with(rings: dict[str, tuple[str, ...]]) -> DeployRepoSpec:
    return DeployRepoSpec("deploy", "https://example.invalid/deploy.git", rings=rings)


def test_the_first_ring_whose_globs_match_wins():
    spec = spec_with({"canary": ("envs/prod/canary-*.yaml",), "prod": ("envs/prod/**",),
                      "dev": ("envs/dev/*.yaml", "shared/dev.yaml")})  # fmt: skip
    assert discovery.ring_of(spec, "envs/prod/canary-web.yaml") == "canary"
    assert discovery.ring_of(spec, "envs/prod/web.yaml") == "prod"
    assert discovery.ring_of(spec, "shared/dev.yaml") == "dev"
    assert discovery.ring_of(spec, "envs/dev/web.yaml") == "dev"
    reordered = spec_with({"prod": ("envs/prod/**",), "canary": ("envs/prod/canary-*.yaml",)})
    assert discovery.ring_of(reordered, "envs/prod/canary-web.yaml") == "prod"


def test_a_path_outside_every_ring_has_none():
    spec = spec_with({"dev": ("envs/dev/*.yaml",)})
    assert discovery.ring_of(spec, "envs/dev/a/web.yaml") is None  # `*` stays in its folder
    assert discovery.ring_of(spec, "envs/devel/web.yaml") is None
    assert discovery.ring_of(spec, "envs/dev/web.yml") is None
    assert discovery.ring_of(spec, "README.md") is None


def test_double_star_spans_folders():
    spec = spec_with({"dev": ("envs/dev/**",), "prod": ("**/prod/*.yaml",)})
    assert discovery.ring_of(spec, "envs/dev/web.yaml") == "dev"
    assert discovery.ring_of(spec, "envs/dev/eu/west/web.yaml") == "dev"
    assert discovery.ring_of(spec, "prod/web.yaml") == "prod"
    assert discovery.ring_of(spec, "clusters/eu/prod/web.yaml") == "prod"
    assert discovery.ring_of(spec, "clusters/eu/prod/x/web.yaml") is None


# ---------------------------------------------------------------- discovery


def test_discover_reads_every_reference_in_a_ring(remotes, write_config):
    remote = remotes("deploy", FILES)
    commit_bytes(remote, "envs/dev/latin1.yaml", b"kind: Pod\n# caf\xe9\n")
    cfg = deploy_config(write_config, remote.url)
    found, problems = discovered(cfg, synced(cfg))
    assert found == expected_found()
    assert problems == [BROKEN_PROBLEM, LATIN1_PROBLEM]
    assert str(BROKEN_PROBLEM) == (
        "deploy:envs/dev/broken.yaml:4: not read: not valid YAML: "
        "did not find expected node content"
    )


HOSTILE = {
    "envs/dev/deep.yaml": "a: " + "[" * 600 + "]" * 600 + "\n",
    "envs/dev/block.yaml": "".join(f"{'  ' * i}k{i}:\n" for i in range(600)) + "  " * 600 + "v\n",
    "envs/dev/big.yaml": "kind: Pod\n" + "#" * deploy_yaml.MAX_BYTES + "\n",
}
HOSTILE_PROBLEMS = [
    Problem(WARNING, "deploy", f"not read: {deploy_yaml.MAX_BYTES + 11} bytes, over the "
            f"{deploy_yaml.MAX_BYTES} bytes (2 MiB) a manifest may have", "envs/dev/big.yaml"),
    Problem(WARNING, "deploy", "not read: nested deeper than 100 levels", "envs/dev/block.yaml",
            101),
    BROKEN_PROBLEM,
    Problem(WARNING, "deploy", "not read: nested deeper than 100 levels", "envs/dev/deep.yaml", 1),
]  # fmt: skip


def test_a_hostile_manifest_costs_that_file_only(remotes, write_config):
    """Nesting 600 deep raised RecursionError out of discover: no deploy repository, and no
    sync, plan or sweep, got past it."""
    remote = remotes("deploy", {**FILES, **HOSTILE})
    cfg = deploy_config(write_config, remote.url)
    found, problems = discovered(cfg, synced(cfg))
    assert found == expected_found()
    assert problems == HOSTILE_PROBLEMS
    assert str(problems[-1]) == (
        "deploy:envs/dev/deep.yaml:1: not read: nested deeper than 100 levels"
    )


def test_sync_reports_a_hostile_manifest_and_indexes_the_rest(remotes, write_config, tmp_path):
    remote = remotes("deploy", {**FILES, **HOSTILE})
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM alpine:3.20\n")
    deployments = {
        "rings": ["dev", "prod"],
        "repos": [{"name": "deploy", "url": str(remote.url), "rings": RINGS}],
    }
    path = write_config([{"name": "app", "path": str(app), "images": [{"image": "r.test/app"}]}],
                        deployments=deployments)  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "graphbuild", "--config", str(path), "sync"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )  # fmt: skip
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert "indexed 1 image:" in done.stdout
    for problem in HOSTILE_PROBLEMS:
        assert f"warning    {problem}" in done.stdout


def test_discover_ignores_files_outside_every_ring(remotes, write_config):
    remote = remotes("deploy", FILES)
    cfg = deploy_config(write_config, remote.url, rings={"dev": ["envs/dev/web.yaml"]})
    found, problems = discovered(cfg, synced(cfg))
    assert [w.name for w in found] == ["Deployment/ns/web (web)", "Deployment/ns/web (sidecar)"]
    assert problems == []  # broken.yaml is in no ring: not read, so no warning


RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: podinfo
spec:
  chart:
    spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: podinfo}}
  valuesFrom:
    - kind: ConfigMap
      name: podinfo-values
  values:
    image: {repository: ghcr.io/stefanprodan/podinfo, tag: 6.6.2}
"""
VALUES_CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: podinfo-values
data:
  values.yaml: |
    redis:
      repository: registry.example/mirror/redis
      tag: 7.2.4
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
data:
  values.yaml: |
    image: {repository: registry.example/not/values, tag: "1"}
"""


def test_values_from_a_config_map_named_by_a_helm_release_elsewhere(remotes, write_config):
    """Flux's layout: the HelmRelease in a base outside the rings, the ConfigMap of values in
    the ring's overlay (its namespace left to kustomize). The ConfigMap's images are found;
    a ConfigMap no HelmRelease names is not Helm values."""
    files = {
        "apps/podinfo/release.yaml": RELEASE,
        "envs/dev/podinfo-values.yaml": VALUES_CONFIG_MAP,
    }
    remote = remotes("deploy", files)
    cfg = deploy_config(write_config, remote.url)
    found, problems = discovered(cfg, synced(cfg))
    assert problems == []
    path = "envs/dev/podinfo-values.yaml"
    (redis,) = deploy_yaml.find(
        path, VALUES_CONFIG_MAP, [("podinfo", "podinfo-values", "values.yaml")]
    )
    assert found == [
        Workload(GITOPS, "dev", "registry.example/mirror/redis", "7.2.4", None,
                 "ConfigMap//podinfo-values:values.yaml:redis", f"deploy:{path}:8", "deploy", path,
                 redis),
    ]  # fmt: skip
    assert found[0].id == f"deploy:{path}#0:data.values.yaml.redis"

    # in a ring, the HelmRelease's own values are found too
    cfg = deploy_config(write_config, remote.url, rings={"dev": ["**"]})
    found, problems = discovered(cfg, synced(cfg))
    assert [w.name for w in found] == [
        "HelmRelease/podinfo/podinfo:image",
        "ConfigMap//podinfo-values:values.yaml:redis",
    ]


# ---------------------------------------------------------------- matching


def workload(image: str, tag: str | None, digest: str | None) -> Workload:
    return Workload(GITOPS, "dev", image, tag, digest, "w", "deploy:w.yaml:1")


def test_a_tagged_reference_runs_the_image_with_that_tag():
    web = workload("registry.example/apps/web", "1", None)
    assert web.runs("registry.example/apps/web", ["1", "latest"])
    assert not web.runs("registry.example/apps/web", ["2", "latest"])
    pinned = workload("registry.example/apps/web", "1", D)  # the tag says which image it is
    assert pinned.runs("registry.example/apps/web", ["1"], built=[])


def test_a_digest_only_reference_runs_only_what_graphbuild_built():
    web = workload("registry.example/apps/web", None, D)
    assert web.runs("registry.example/apps/web", ["1"], built=[E, D])
    assert not web.runs("registry.example/apps/web", ["1"], built=[E])
    assert not web.runs("registry.example/apps/web", ["1", "latest"])


def test_no_tag_and_no_digest_means_latest():
    web = workload("registry.example/apps/web", None, None)
    assert web.runs("registry.example/apps/web", ["1", "latest"])
    assert not web.runs("registry.example/apps/web", ["1"])


def test_another_repository_never_matches():
    web = workload("registry.example/apps/web", "1", D)
    assert not web.runs("registry.example/apps/api", ["1"], built=[D])
    assert not web.runs("registry.example/apps/web2", ["1"], built=[D])
    assert not workload("docker.io/library/nginx", "1", None).runs("nginx", ["1"])


# ---------------------------------------------------------------- kept in index.db


def api_listed() -> Workload:
    return Workload(KUBECTL, "prod", "registry.example/apps/api", "2", None, "api-kubectl",
                    "deployments.workloads[0]",
                    kubectl={"resource": "deployment/api", "container": "api"})  # fmt: skip


def test_refresh_reads_a_commit_once_and_load_returns_found_and_listed(remotes, write_config):
    remote = remotes("deploy", FILES)
    cfg = deploy_config(write_config, remote.url, listed=[LISTED])
    result = synced(cfg)
    db = indexdb.connect(cfg.workspace)
    assert discovery.refresh(db, cfg, [result]) == [BROKEN_PROBLEM]
    everything = workloads.load(db, cfg)
    assert everything == [*expected_found(), api_listed()]
    assert everything[-1].id == "kubectl:api-kubectl"
    assert everything[1].id == "deploy:envs/dev/web.yaml#0:spec.template.spec.containers.0.image"

    # the same commit is not read again: without its clone, refresh still answers
    clone = sources.clone_dir(cfg.workspace, "deploy")
    clone.rename(clone.with_suffix(".away"))
    assert discovery.refresh(db, cfg, [result]) == [BROKEN_PROBLEM]
    assert workloads.load(db, cfg) == everything
    clone.with_suffix(".away").rename(clone)

    # other ring globs for the same commit: read again, with the new rings
    moved = deploy_config(write_config, remote.url, rings={"prod": ["envs/**/*.yaml"]},
                          listed=[LISTED])  # fmt: skip
    assert discovery.refresh(db, moved, [result]) == [BROKEN_PROBLEM]
    again = workloads.load(db, moved)
    assert [(w.ring, w.name) for w in again] == [
        ("prod", "kustomization"),
        ("prod", "Deployment/ns/web (web)"),
        ("prod", "Deployment/ns/web (sidecar)"),
        ("prod", "frontend.image"),  # job.yml is not *.yaml
        ("prod", "api-kubectl"),
    ]
    db.close()


def test_a_new_commit_is_read_again(remotes, write_config):
    remote = remotes("deploy", FILES)
    cfg = deploy_config(write_config, remote.url)
    db = indexdb.connect(cfg.workspace)
    discovery.refresh(db, cfg, [synced(cfg)])
    remote.commit({"envs/dev/broken.yaml": None, "envs/dev/web.yaml": None})
    assert discovery.refresh(db, cfg, [synced(cfg)]) == []
    assert [w.name for w in workloads.load(db, cfg)] == [
        "kustomization", "Pod//job (job)", "frontend.image"
    ]  # fmt: skip
    db.close()


def test_a_commit_read_by_an_older_graphbuild_is_read_again(remotes, write_config):
    """An upgrade that reads more (a Flux HelmRelease's values) must not wait for the deploy
    repository's next commit to find it: the row an older discovery kept is read again."""
    remote = remotes("deploy", {"envs/dev/release.yaml": RELEASE})
    cfg = deploy_config(write_config, remote.url)
    result = synced(cfg)
    db = indexdb.connect(cfg.workspace)
    (spec,) = cfg.deployments.repos
    older = json.dumps([result.commit, spec.rings], sort_keys=True)  # as graphbuild kept it
    indexdb.keep_deploy_repo(db, "deploy", older, "[]", "[]")
    assert discovery.refresh(db, cfg, [result]) == []
    assert [w.name for w in workloads.load(db, cfg)] == ["HelmRelease/podinfo/podinfo:image"]
    db.close()


def test_a_deploy_repository_removed_from_the_config_drops_its_workloads(remotes, write_config):
    remote = remotes("deploy", FILES)
    cfg = deploy_config(write_config, remote.url, listed=[LISTED])
    db = indexdb.connect(cfg.workspace)
    discovery.refresh(db, cfg, [synced(cfg)])
    assert len(workloads.load(db, cfg)) == 6
    gone = config.load(write_config([], deployments={"rings": ["dev", "prod"],
                                                     "workloads": [LISTED]}))  # fmt: skip
    assert discovery.refresh(db, gone, sources.sync(gone)) == []
    assert workloads.load(db, gone) == [api_listed()]
    assert indexdb.deploy_repos(db) == []
    db.close()


def test_a_deploy_repository_that_never_synced_is_an_error(write_config, tmp_path):
    cfg = deploy_config(write_config, tmp_path / "missing.git")
    (result,) = sources.sync(cfg)
    db = indexdb.connect(cfg.workspace)
    (problem,) = discovery.refresh(db, cfg, [result])
    assert (problem.level, problem.repo, problem.path, problem.line) == (
        ERROR,
        "deploy",
        None,
        None,
    )
    assert problem.message == f"deploy repository not read: {result.error}"
    missing = tmp_path / "missing.git"
    assert problem.message == (
        f"deploy repository not read: cannot fetch ref 'main' of {missing}: "
        f"fatal: '{missing}' does not appear to be a git repository"
    )
    assert discovery.refresh(db, cfg, []) == [
        Problem(ERROR, "deploy", "deploy repository not read: not synced")
    ]
    assert workloads.load(db, cfg) == []
    db.close()


def test_a_deploy_repository_that_failed_its_last_sync_keeps_what_it_had(remotes, write_config):
    remote = remotes("deploy", FILES)
    cfg = deploy_config(write_config, remote.url)
    db = indexdb.connect(cfg.workspace)
    first = synced(cfg)
    discovery.refresh(db, cfg, [first])
    remote.url.rename(remote.url.with_suffix(".gone"))
    (failed,) = sources.sync(cfg)
    assert failed.commit == first.commit and failed.error is not None
    problems = discovery.refresh(db, cfg, [failed])
    assert problems == [Problem(ERROR, "deploy", failed.error), BROKEN_PROBLEM]
    assert workloads.load(db, cfg) == expected_found()
    db.close()


def test_a_broken_manifest_problem_carries_its_line(remotes, write_config):
    remote = remotes("deploy", {"envs/dev/broken.yaml": BROKEN})
    cfg = deploy_config(write_config, remote.url)
    _, problems = discovered(cfg, synced(cfg))
    assert [(p.path, p.line) for p in problems] == [("envs/dev/broken.yaml", 4)]


def test_a_tag_that_comes_from_elsewhere_is_not_taken_for_latest(remotes, write_config):
    """kustomize's newName alone keeps the base manifest's tag, and a chart's empty tag is its
    appVersion: neither says which image runs, so neither is matched (nor pinned to latest)."""
    remote = remotes("deploy", {
        "envs/dev/kustomization.yaml": "images:\n  - name: registry.example/apps/web\n"
                                       "    newName: registry.example/apps/web2\n",
        "envs/dev/values.yaml": "web:\n  image:\n    repository: registry.example/apps/web\n"
                                "    tag: \"\"\n",
    })  # fmt: skip
    cfg = deploy_config(write_config, remote.url)
    found, problems = discovered(cfg, synced(cfg))
    assert found == []
    assert [(p.level, p.path, p.line, p.message) for p in problems] == [
        (WARNING, "envs/dev/kustomization.yaml", 2,
         "registry.example/apps/web2: no tag or digest here, so not deployed by graphbuild"),
        (WARNING, "envs/dev/values.yaml", 3,
         "registry.example/apps/web: no tag or digest here, so not deployed by graphbuild"),
    ]  # fmt: skip


def test_a_huge_manifest_blob_is_refused_by_its_size_unread(remotes, write_config):
    """Its size comes from git before any byte is read: a 64 MiB blob costs no memory."""
    import tracemalloc

    remote = remotes("deploy", {**FILES, "envs/dev/huge.yaml": "#" * 64 * 2**20})
    cfg = deploy_config(write_config, remote.url)
    result = synced(cfg)
    tracemalloc.start()
    try:
        found, problems = discovered(cfg, result)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == expected_found()
    assert Problem(WARNING, "deploy", f"not read: {64 * 2**20} bytes, over the "
                   f"{deploy_yaml.MAX_BYTES} bytes (2 MiB) a manifest may have",
                   "envs/dev/huge.yaml") in problems  # fmt: skip
    assert peak < 16 * 2**20, f"refusing it took {peak} bytes: it was read"


OVERRIDES = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop, namespace: argocd}
spec:
  source:
    path: overlays/dev
    kustomize:
      images:
        - web=registry.example/apps/web:1
        - nginx=registry.example/mirror/nginx
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  images:
    - {name: api, newName: registry.example/apps/api, newTag: "2"}
"""


def test_images_argo_cd_and_flux_set_are_workloads_read_again_after_an_upgrade(
    remotes, write_config
):
    """Argo CD's `kustomize.images` and a Flux Kustomization's `images` name the image that
    runs; an override without a tag keeps the base's, which is not written here. A row kept
    by the discovery before these were read (version 2) is read again."""
    remote = remotes("deploy", {"envs/dev/apps.yaml": OVERRIDES})
    cfg = deploy_config(write_config, remote.url)
    found, problems = discovered(cfg, synced(cfg))
    assert [(w.name, w.image, w.tag, w.id) for w in found] == [
        ("Application/argocd/shop:kustomize.images[0]", "registry.example/apps/web", "1",
         "deploy:envs/dev/apps.yaml#0:spec.source.kustomize.images.0"),
        ("Kustomization/flux-system/apps:images[0]", "registry.example/apps/api", "2",
         "deploy:envs/dev/apps.yaml#1:spec.images.0"),
    ]  # fmt: skip
    assert [(p.line, p.message) for p in problems] == [
        (10, "registry.example/mirror/nginx: no tag or digest here, so not deployed by graphbuild")
    ]
    result = synced(cfg)
    db = indexdb.connect(cfg.workspace)
    (spec,) = cfg.deployments.repos
    older = json.dumps([result.commit, spec.rings, 2], sort_keys=True)  # as version 2 kept it
    indexdb.keep_deploy_repo(db, "deploy", older, "[]", "[]")
    discovery.refresh(db, cfg, [result])
    assert [w.name for w in workloads.load(db, cfg)] == [w.name for w in found]
    db.close()
