from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from graphbuild import config, config_cache, indexdb, schema
from graphbuild.errors import ConfigError


def load_text(tmp_path, text: str) -> config.Config:
    path = tmp_path / "repos.yaml"
    path.write_text(text)
    return config.load(path)


FULL_REPOS = """
  - name: python
    url: https://github.com/docker-library/python.git
    ref: master
    images:
      - image: docker.io/library/python
        dockerfile: 3.12/bookworm/Dockerfile
        tags: [3.12-bookworm, "3.12"]
        context: 3.12/bookworm
        build_args: {PYTHON_VERSION: "3.12.7", JOBS: 4}
        target: null
        platforms: [linux/amd64, linux/arm64/v8]
        contexts: {base: "docker-image://alpine:3"}
      - dockerfile: "images/*/Dockerfile"
        image: quay.io/jupyter/{dir}
  - name: local-base
    path: ./examples/base
"""


def test_full_example_loads(tmp_path):
    cfg = load_text(
        tmp_path,
        "workspace: ws\nrepos:" + FULL_REPOS,
    )
    assert cfg.workspace == tmp_path / "ws"
    python, local = cfg.repos
    assert python.url == "https://github.com/docker-library/python.git"
    assert python.ref == "master"
    explicit, globbed = python.images
    assert explicit.tags == ("3.12-bookworm", "3.12")
    assert explicit.build_args == {"PYTHON_VERSION": "3.12.7", "JOBS": "4"}
    assert explicit.platforms == ("linux/amd64", "linux/arm64")  # normalised: no v8
    assert not explicit.is_glob and globbed.is_glob
    assert globbed.tags == ("latest",) and globbed.key == "repos[0].images[1]"
    assert local.path == (tmp_path / "examples/base").resolve() and local.url is None


def test_default_workspace_is_beside_the_config(tmp_path):
    cfg = load_text(tmp_path, "repos: []\n")
    assert cfg.workspace == tmp_path / ".graphbuild"


REPO = "repos:\n  - name: a\n    path: .\n"
IMAGE = REPO + "    images:\n      - image: x\n"  # the image entry starts on line 5


def case(text, key, says, line):
    return pytest.param(text, key, says, line, id=f"{key}: {says}")


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case(IMAGE + "        tags: latest\n", "repos[0].images[0].tags", "expected a list", 6),
        case(
            IMAGE + "        tag: [a]\n",
            "repos[0].images[0].tag",
            "unknown key (did you mean 'tags'?)",
            6,
        ),
        case(
            IMAGE + "        tags: [3.10]\n",
            "repos[0].images[0].tags[0]",
            'quote it, e.g. "3.10"',
            6,
        ),
        case(
            REPO + "    images:\n      - image: x:1\n",
            "repos[0].images[0].image",
            "tags go in `tags:`",
            5,
        ),
        case(
            REPO + "    images:\n      - image: Bad/Name\n",
            "repos[0].images[0].image",
            "must be lowercase",
            5,
        ),
        case(
            REPO + "    images:\n      - dockerfile: D\n", "repos[0].images[0].image", "missing", 5
        ),
        case(
            IMAGE + "        dockerfile: ../../etc/passwd\n",
            "repos[0].images[0].dockerfile",
            "relative path inside the repository",
            6,
        ),
        case(
            IMAGE + "        build_args: {V: 3.10}\n",
            "repos[0].images[0].build_args.V",
            "quote it",
            6,
        ),
        case(
            IMAGE + "        platforms: [amd64]\n", "repos[0].images[0].platforms[0]", "os/arch", 6
        ),
        case(
            IMAGE + "        platforms: [linux/foo]\n",
            "repos[0].images[0].platforms[0]",
            "unknown architecture 'foo'",
            6,
        ),
        case(
            IMAGE + "        platforms: [lunix/amd64]\n",
            "repos[0].images[0].platforms[0]",
            "unknown operating system 'lunix'",
            6,
        ),
        case(
            IMAGE + "        platforms: [linux/arm/v7/x]\n",
            "repos[0].images[0].platforms[0]",
            "cannot parse platform",
            6,
        ),
        case(
            IMAGE + "        platforms: [linux/arm64, linux/aarch64]\n",
            "repos[0].images[0].platforms[1]",
            "linux/arm64 twice",
            6,
        ),
        case("repos:\n  - name: a\n    url: x\n    path: y\n", "repos[0]", "exactly one of", 2),
        case(
            "repos:\n  - name: a\n    url: 'ext::sh -c id'\n", "repos[0].url", "can run commands", 3
        ),
        case("repos:\n  - name: a\n    url: --upload-pack=id\n", "repos[0].url", "git option", 3),
        case(
            REPO + REPO.removeprefix("repos:\n"),
            "repos[1].name",
            "duplicate name 'a' (also repos[0])",
            4,
        ),
        case("repos:\n  - path: .\n", "repos[0].name", "missing", 2),
        case("repos:\n  - name: a b\n    path: .\n", "repos[0].name", "letters, digits", 2),
        case(REPO + "    ref: main\n", "repos[0].ref", "no ref", 4),
        case(
            "repos:\n  - name: a\n    url: x\n    ref: main:refs/heads/pwn\n",
            "repos[0].ref",
            "not a branch, tag or commit name",
            4,
        ),
        case(
            "repos:\n  - name: a\n    url: x\n    ref: --upload-pack=id\n",
            "repos[0].ref",
            "not a branch, tag or commit name",
            4,
        ),
        case("repos: {a: 1}\n", "repos", "expected a list, got a mapping", 1),
        case("repo: []\n", "repo", "did you mean 'repos'", 1),
        case("workspace: x\n", "repos", "missing", 1),
        case(
            "repos: []\nregistries:\n  ghcr.io: {password: x}\n",
            "registries.ghcr.io.password",
            "never put a password in this file",
            3,
        ),
        case(
            "repos: []\nregistries:\n  ghcr.io: {insecure: true}\n",
            "registries.ghcr.io.insecure",
            "only allowed for loopback registries",
            3,
        ),
        case(
            "repos: []\nregistries:\n  r.example: {auth: basic}\n",
            "registries.r.example",
            "auth: basic needs username and password_env",
            3,
        ),
        case(
            "repos: []\nregistries:\n  r.example: {auth: kerberos}\n",
            "registries.r.example.auth",
            "expected auto, anonymous, basic or acr",
            3,
        ),
        case(
            "repos: []\nregistries:\n  r.example: {max_requests: 0}\n",
            "registries.r.example.max_requests",
            "at least 1",
            3,
        ),
        case(
            "repos: []\nregistries:\n  r.example: {max_builds: -1}\n",
            "registries.r.example.max_builds",
            "at least 1",
            3,
        ),
        case(
            "repos: []\nregistries:\n  'not a host': {}\n",
            "registries.not a host",
            "not a registry host",
            3,
        ),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    err = caught.value
    assert err.key == key
    assert says in err.message
    assert err.line == line
    assert str(err) == f"{tmp_path / 'repos.yaml'}:{line}: {key}: {err.message}"


def test_invalid_yaml_gives_the_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "repos:\n  - name: a\n    path: [unclosed\n")
    assert "invalid YAML" in str(caught.value)
    assert caught.value.line == 4


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, REPO + "    images: []\n    images: [{image: x}]\n")
    assert caught.value.line == 5
    assert "duplicate key 'images' (first on line 4)" in str(caught.value)


def test_yaml_tags_are_data_never_code(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_text(tmp_path, "repos: !!python/object/apply:os.system ['echo pwned']\n")


def test_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="the file is empty"):
        load_text(tmp_path, "")


def test_find_order(tmp_path, monkeypatch):
    (tmp_path / "repos.yaml").write_text("repos: []\n")
    (tmp_path / "other.yaml").write_text("repos: []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    assert config.find() == config.Path("repos.yaml")
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "other.yaml"))
    assert config.find() == tmp_path / "other.yaml"
    assert config.find(tmp_path / "repos.yaml") == tmp_path / "repos.yaml"
    with pytest.raises(ConfigError, match=r"no such config file \(given by --config\)"):
        config.find(tmp_path / "missing.yaml")
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"given by \$GRAPHBUILD_CONFIG"):
        config.find()


def test_registries(tmp_path):
    cfg = load_text(
        tmp_path,
        "repos: []\nregistries:\n"
        "  index.docker.io: {}\n"
        "  localhost:5000: {insecure: true}\n"
        "  127.0.0.1:5001: {insecure: true, max_requests: 2, max_builds: 3}\n"
        "  '[::1]:5002': {insecure: true}\n"
        "  r.example:\n    auth: basic\n    username: ci\n    password_env: R_PW\n"
        "    ca_bundle: certs/ca.pem\n"
        "  team.azurecr.io: {auth: acr}\n",
    )
    assert set(cfg.registries) == {"docker.io", "localhost:5000", "127.0.0.1:5001", "[::1]:5002",
                                   "r.example", "team.azurecr.io"}  # fmt: skip
    assert cfg.registries["127.0.0.1:5001"].max_requests == 2
    assert cfg.registries["127.0.0.1:5001"].max_builds == 3
    assert cfg.registries["r.example"].max_builds is None
    r = cfg.registries["r.example"]
    assert (r.auth, r.username, r.password_env) == ("basic", "ci", "R_PW")
    assert r.ca_bundle == tmp_path / "certs/ca.pem"
    assert cfg.registries["team.azurecr.io"].auth == "acr"
    assert r.redirect_hosts == () and cfg.check_timeout == 600


def test_registry_hosts_are_lowercased_as_the_images_in_them_are(tmp_path):
    """Host names are not case-sensitive: settings under `MyACR.azurecr.io` are those of
    myacr.azurecr.io, where its images are, not silently ignored."""
    cfg = load_text(tmp_path, "repos: []\nregistries:\n"
                    "  MyACR.azurecr.io: {auth: acr, max_builds: 3}\n"
                    "  R.Example: {redirect_hosts: [CDN.Example]}\n")  # fmt: skip
    assert set(cfg.registries) == {"myacr.azurecr.io", "r.example"}
    assert cfg.registries["myacr.azurecr.io"].host == "myacr.azurecr.io"
    assert cfg.registries["myacr.azurecr.io"].max_builds == 3
    assert cfg.registries["r.example"].redirect_hosts == ("cdn.example",)


def test_manifest_redirects_and_the_check_deadline(tmp_path):
    cfg = load_text(
        tmp_path,
        "repos: []\ncheck: {timeout: 90}\nregistries:\n"
        "  r.example: {redirect_hosts: [cdn.r.example, 'mirror.example:8443']}\n",
    )
    assert cfg.registries["r.example"].redirect_hosts == ("cdn.r.example", "mirror.example:8443")
    assert cfg.check_timeout == 90.0


def test_the_buildah_store_is_found_beside_the_config_wherever_graphbuild_runs(tmp_path):
    cfg = load_text(tmp_path, "repos: []\nbuilder: {kind: buildah, root: store, runroot: /run/b}\n")
    assert cfg.builder == config.BuildahSpec(root=str(tmp_path / "store"), runroot="/run/b")
    assert (cfg.builder.isolation, cfg.builder.storage_driver) == ("chroot", "vfs")
    assert cfg.workspace.is_absolute()  # logs and reports name paths that work from anywhere


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case("registries:\n  myreg: {}\n", "registries.myreg",
             "`myreg` alone would mean Docker Hub", 2),
        case("registries:\n  docker.io: {}\n  index.docker.io: {}\n",
             "registries.index.docker.io", "docker.io is configured twice", 3),
        case("registries:\n  myacr.azurecr.io: {}\n  MyACR.azurecr.io: {max_builds: 3}\n",
             "registries.MyACR.azurecr.io", "myacr.azurecr.io is configured twice", 3),
        case("registries:\n  R.Example: {redirect_hosts: [r.example]}\n",
             "registries.R.Example.redirect_hosts[0]", "other than the registry itself", 2),
        case("registries:\n  r.example: {username: ci}\n", "registries.r.example.username",
             "only used with auth: basic", 2),
        case("registries:\n  '127.evil.example:5000': {insecure: true}\n",
             "registries.127.evil.example:5000.insecure", "only allowed for loopback", 2),
        case("registries:\n  r.example: {redirect_hosts: [storage]}\n",
             "registries.r.example.redirect_hosts[0]", "a host, with its port unless 443", 2),
        case("registries:\n  r.example: {redirect_hosts: [r.example]}\n",
             "registries.r.example.redirect_hosts[0]", "other than the registry itself", 2),
        case("registries:\n  r.example: {redirect_hosts: cdn.example}\n",
             "registries.r.example.redirect_hosts", "expected a list", 2),
        case("check: {timeout: 0}\n", "check.timeout", "a number of seconds above 0", 1),
        case("check: {timeout: .inf}\n", "check.timeout", "at most 604800", 1),
        case("check: {timeout: .nan}\n", "check.timeout", "a number of seconds above 0", 1),
        case("check: {timeout: 1e300}\n", "check.timeout", "at most 604800", 1),
        case("check: false\n", "check", "expected a mapping", 1),
        case("mirrors: 0\n", "mirrors", "expected a mapping", 1),
        case("check: {timeot: 60}\n", "check.timeot", "did you mean 'timeout'", 1),
        case("check: 60\n", "check", "expected a mapping", 1),
    ],
)  # fmt: skip
def test_bad_registry_settings(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "repos: []\n" + text)
    assert (caught.value.key, caught.value.line) == (key, line + 1)
    assert says in caught.value.message


def test_named_contexts_are_an_image_or_a_folder_of_the_repository(tmp_path):
    """What a build can be sent exactly as its key covers it; a URL's content moves."""
    image = "repos:\n  - name: r\n    path: r\n    images:\n      - image: r.test/app\n"
    cfg = load_text(tmp_path, image + "        contexts: {base: 'docker-image://alpine:3', "
                                      "src: ./shared/lib/, all: .}\n")  # fmt: skip
    assert cfg.repos[0].images[0].contexts == {
        "base": "docker-image://alpine:3", "src": "shared/lib", "all": "."}  # fmt: skip
    for value, says in [
        ("../other", "must be a relative path inside the repository"),
        ("/etc", "must be a relative path inside the repository"),
        ("shared/../../x", "must be a relative path inside the repository"),
        ("https://example.com/src.tar", "graphbuild cannot pin what a URL serves"),
        ("git@github.com:o/r.git", "graphbuild cannot pin what a URL serves"),
        ("github.com/o/r", "graphbuild cannot pin what a URL serves"),
        ("oci-layout:///var/oci", "graphbuild cannot pin what a URL serves"),
        ("target:build", "graphbuild cannot pin what a URL serves"),
        ("docker-image://Alpine", "repository name must be lowercase"),
        ("''", "must not be empty"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, image + f"        contexts: {{src: {value}}}\n")
        assert (caught.value.key, caught.value.line) == ("repos[0].images[0].contexts.src", 6)
        assert says in caught.value.message, (value, caught.value.message)


# ---------------------------------------------------------------- gates and deployments

FULL_DEPLOY = """\
repos:
  - name: apps
    url: https://example.com/apps.git
gates:
  - name: trivy
    scan: [trivy, image, --format, json, --output, "{report}", "{image}"]
    images: ["registry.example/apps/*"]
    fail_on: HIGH
    allow:
      - id: CVE-2024-0001
        until: 2027-01-31
        reason: no fix upstream
      - {id: CVE-2024-0002, until: "2026-12-01"}
    timeout: 900
  - name: smoke
    test: [sh, -c, "run {image}"]
deployments:
  rings:
    - dev
    - name: prod
      health: [curl, -f, https://prod.example/health]
      manual: true
      timeout: 120
  repos:
    - name: deploy
      url: https://example.com/deploy.git
      branch: release
      push_branch: "graphbuild/{run}-{ring}"
      rings:
        dev: ["envs/dev/**", "./shared/dev-*.yaml"]
        prod: [envs/prod/**]
  workloads:
    - name: api
      image: registry.example/apps/api:2
      ring: prod
      kubectl:
        resource: deployment/api
        container: api
        namespace: shop
        kubeconfig: kube/config
        timeout: 90
  hold_descendants: false
  gate_concurrency: 2
  build_during_gates: true
"""


def test_gates_and_deployments_load_into_their_dataclasses(tmp_path):
    cfg = load_text(tmp_path, FULL_DEPLOY)
    assert cfg.gates == (
        config.GateSpec(
            name="trivy",
            kind="scan",
            argv=("trivy", "image", "--format", "json", "--output", "{report}", "{image}"),
            images=("registry.example/apps/*",),
            fail_on="high",
            allow=(
                config.Allowed("CVE-2024-0001", dt.date(2027, 1, 31), "no fix upstream"),
                config.Allowed("CVE-2024-0002", dt.date(2026, 12, 1), ""),
            ),
            timeout=900.0,
        ),
        config.GateSpec(name="smoke", kind="test", argv=("sh", "-c", "run {image}")),
    )
    assert cfg.gates[1].fail_on == "critical" and cfg.gates[1].timeout == 1800.0
    assert cfg.gates[0].applies("registry.example/apps/web")
    assert not cfg.gates[0].applies("registry.example/base")
    assert cfg.gates[1].applies("anything.example/at/all")
    assert cfg.deployments == config.Deployments(
        rings=(
            config.RingSpec("dev"),
            config.RingSpec("prod", ("curl", "-f", "https://prod.example/health"), 120.0, True),
        ),
        repos=(
            config.DeployRepoSpec(
                name="deploy",
                url="https://example.com/deploy.git",
                branch="release",
                push_branch="graphbuild/{run}-{ring}",
                rings={
                    "dev": ("envs/dev/**", "shared/dev-*.yaml"),
                    "prod": ("envs/prod/**",),
                },
                key="deployments.repos[0]",
            ),
        ),
        workloads=(
            config.WorkloadSpec(
                name="api",
                image="registry.example/apps/api",
                tag="2",
                ring="prod",
                kubectl={
                    "resource": "deployment/api",
                    "container": "api",
                    "namespace": "shop",
                    "kubeconfig": str(tmp_path / "kube/config"),
                    "timeout": "90",
                },
                key="deployments.workloads[0]",
            ),
        ),
        hold_descendants=False,
        gate_concurrency=2,
        build_during_gates=True,
    )
    assert cfg.deployments.rings[0] == config.RingSpec("dev", (), 600.0, False, False)


def test_deploy_repositories_are_synced_with_the_image_repositories(tmp_path):
    cfg = load_text(tmp_path, FULL_DEPLOY)
    apps = config.RepoSpec("apps", url="https://example.com/apps.git", key="repos[0]")
    deploy = config.RepoSpec("deploy", url="https://example.com/deploy.git", ref="release",
                             key="deployments.repos[0]")  # fmt: skip
    assert cfg.repos == (apps,)
    assert cfg.sources == (apps, deploy)
    assert cfg.deployments.repos[0].source == deploy


def test_a_deploy_repository_reads_main_by_default_and_a_workload_tag_defaults_to_latest(
    tmp_path,
):
    cfg = load_text(
        tmp_path,
        "repos: []\ndeployments:\n  rings: [dev]\n"
        "  repos:\n    - {name: d, url: ./deploy, rings: {dev: ['**']}}\n"
        "  workloads:\n    - {name: w, image: nginx, ring: dev,"
        " kubectl: {resource: deployment/w, container: w}}\n",
    )
    (repo,) = cfg.deployments.repos
    assert (repo.url, repo.branch, repo.push_branch) == (str(tmp_path / "deploy"), "main", None)
    (workload,) = cfg.deployments.workloads
    assert (workload.image, workload.tag) == ("docker.io/library/nginx", "latest")
    assert workload.kubectl == {"resource": "deployment/w", "container": "w"}
    assert cfg.deployments.hold_descendants is True
    assert cfg.deployments.gate_concurrency == 4 and cfg.deployments.build_during_gates is False


SCAN = "repos: []\ngates:\n  - name: s\n    scan: [trivy, '{report}']\n"  # the gate is on line 3
DEPLOY = """\
repos:
  - name: apps
    path: .
deployments:
  rings: [dev, prod]
  repos:
    - name: deploy
      url: https://example.com/deploy.git
      rings: {dev: [envs/dev/**]}
"""  # deployments.repos[0] starts on line 7
WORKLOAD = """\
repos: []
deployments:
  rings: [dev]
  workloads:
    - name: web
      image: registry.example/web:1
      ring: dev
      kubectl:
        resource: deployment/web
        container: web
"""  # deployments.workloads[0] starts on line 5


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case("repos: []\ngates:\n  - name: g\n    scan: [a, '{report}']\n    test: [b]\n",
             "gates[0]", "give exactly one of `scan` (a scanner) or `test` (a command)", 3),
        case("repos: []\ngates:\n  - name: g\n    images: ['*']\n",
             "gates[0]", "give exactly one of `scan`", 3),
        case("repos: []\ngates:\n  - name: g\n    scan: [trivy, --output, out.json]\n",
             "gates[0].scan", "must hold {report}: where the scanner writes its JSON report", 4),
        case("repos: []\ngates:\n  - name: g\n    test: []\n",
             "gates[0].test", "must name the command to run", 4),
        case(SCAN + "    fail_on: severe\n", "gates[0].fail_on",
             "expected one of unknown, low, medium, high, critical", 5),
        case(SCAN + "    allow:\n      - id: CVE-1\n", "gates[0].allow[0].until",
             "missing: an accepted finding needs id and until", 6),
        case(SCAN + "    allow:\n      - {id: CVE-1, until: soon}\n", "gates[0].allow[0].until",
             "expected a date, YYYY-MM-DD", 6),
        case(SCAN + "    allow:\n      - {id: CVE-1, until: 2027-01-31 10:00:00}\n",
             "gates[0].allow[0].until", "expected a date, YYYY-MM-DD", 6),
        case("repos: []\ngates:\n  - name: t\n    test: [make, check]\n    fail_on: high\n",
             "gates[0].fail_on", "only used with `scan`", 5),
        case("repos: []\ngates:\n  - name: t\n    test: [make, check]\n    allow: []\n",
             "gates[0].allow", "only used with `scan`", 5),
        case(SCAN + "  - name: s\n    test: [make, check]\n", "gates[1].name",
             "duplicate name 's'", 5),
        case(SCAN + "    timeout: 0\n", "gates[0].timeout", "a number of seconds above 0", 5),
        case(DEPLOY.replace("{dev: [envs/dev/**]}", "{dev: [a], staging: [b]}"),
             "deployments.repos[0].rings.staging",
             "unknown ring 'staging'; deployments.rings has ['dev', 'prod']", 9),
        case(DEPLOY.replace("      rings: {dev: [envs/dev/**]}\n", ""),
             "deployments.repos[0].rings",
             "missing: map each ring to the paths of its manifests, e.g. {dev: ['envs/dev/**']}",
             7),
        case(DEPLOY.replace("{dev: [envs/dev/**]}", "{}"), "deployments.repos[0].rings",
             "missing: map each ring", 9),
        case(DEPLOY.replace("  rings: [dev, prod]\n", ""), "deployments.rings",
             "missing: list the rings to deploy in, in order", 4),
        case(WORKLOAD.replace("  rings: [dev]\n", ""), "deployments.rings",
             "missing: list the rings to deploy in, in order", 2),
        case(DEPLOY.replace("https://example.com/deploy.git", "'ext::sh -c x'"),
             "deployments.repos[0].url",
             "the ext:: transport can run commands; use https, ssh, git or file", 8),
        case(DEPLOY.replace("https://example.com/deploy.git", "--upload-pack=x"),
             "deployments.repos[0].url", "looks like a git option", 8),
        case(DEPLOY.replace("    - name: deploy", "    - name: apps"),
             "deployments.repos[0].name", "'apps' is also the name of a repos entry", 7),
        case(DEPLOY + "    - name: deploy\n      url: x\n      rings: {dev: [a]}\n",
             "deployments.repos[1].name", "duplicate name 'deploy'", 10),
        case(DEPLOY + "      branch: 'release-{run}'\n", "deployments.repos[0].branch",
             "only {run} and {ring} are filled in, and only in push_branch", 10),
        case(DEPLOY + "      push_branch: 'graphbuild/{run}..{ring}'\n",
             "deployments.repos[0].push_branch",
             "'graphbuild/{run}..{ring}' is not a branch name", 10),
        case(DEPLOY + "      branch: 'main:refs/heads/x'\n", "deployments.repos[0].branch",
             "'main:refs/heads/x' is not a branch name", 10),
        case(DEPLOY.replace("envs/dev/**", "../other/**"), "deployments.repos[0].rings.dev[0]",
             "must be a relative path inside the repository", 9),
        case(WORKLOAD.replace("ring: dev", "ring: prod"), "deployments.workloads[0].ring",
             "unknown ring 'prod'; deployments.rings has ['dev']", 7),
        case(WORKLOAD.replace("registry.example/web:1", "registry.example/web@sha256:" + "a" * 64),
             "deployments.workloads[0].image",
             "name the image by tag; deploys pin the digest", 6),
        case(WORKLOAD.replace("registry.example/web:1",
                              "registry.example/web:1@sha256:" + "a" * 64),
             "deployments.workloads[0].image", "name the image by tag", 6),
        case(WORKLOAD.replace("        container: web\n", ""),
             "deployments.workloads[0].kubectl.container",
             "missing: the container that runs the image", 8),
        case(WORKLOAD.replace("        resource: deployment/web\n", ""),
             "deployments.workloads[0].kubectl.resource",
             "missing: the workload to patch, e.g. deployment/web", 8),
        case(WORKLOAD.replace("deployment/web", "web"),
             "deployments.workloads[0].kubectl.resource",
             "expected kind/name, e.g. deployment/web", 9),
        case(WORKLOAD.replace("      ring: dev\n", ""), "deployments.workloads[0].ring",
             "missing: a workload needs image, ring and kubectl", 5),
        case(WORKLOAD + "        context: [a]\n",
             "deployments.workloads[0].kubectl.context", "expected a string, got a list", 11),
        case(WORKLOAD.replace("  rings: [dev]\n", "  rings: [dev, {name: dev}]\n"),
             "deployments.rings[1].name", "duplicate name 'dev'", 3),
        case(WORKLOAD.replace("  rings: [dev]\n", "  rings: [{name: dev, manual: yes please}]\n"),
             "deployments.rings[0].manual", "expected true or false, got a string", 3),
        case(WORKLOAD.replace("  rings: [dev]\n", "  rings: [{name: dev, manual: true, "
                                                   "as_ready: true}]\n"),
             "deployments.rings[0].as_ready", "give as_ready or manual, not both", 3),
        case(WORKLOAD.replace("  rings: [dev]\n", "  rings: [{name: dev, as_ready: 1}]\n"),
             "deployments.rings[0].as_ready", "expected true or false, got", 3),
        case(WORKLOAD + "  gate_concurrency: 0\n", "deployments.gate_concurrency",
             "expected a whole number of at least 1", 11),
        case(WORKLOAD + "  build_during_gates: when ready\n", "deployments.build_during_gates",
             "expected true or false, got a string", 11),
    ],
)  # fmt: skip
def test_bad_gates_and_deployments_name_file_line_and_key(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    err = caught.value
    assert (err.key, err.line) == (key, line)
    assert says in err.message
    assert str(err) == f"{tmp_path / 'repos.yaml'}:{line}: {key}: {err.message}"


def test_push_branch_placeholders_are_accepted(tmp_path):
    text = DEPLOY + "      branch: release/v2\n      push_branch: 'gb/{ring}/{run}'\n"
    (repo,) = load_text(tmp_path, text).deployments.repos
    assert (repo.branch, repo.push_branch) == ("release/v2", "gb/{ring}/{run}")


def test_an_impossible_allow_date_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, SCAN + "    allow:\n      - {id: CVE-1, until: 2027-02-30}\n")
    assert caught.value.line == 6
    assert "2027-02-30" in str(caught.value)


def test_a_push_branch_with_an_unknown_placeholder_is_a_config_error(tmp_path):
    """`gb@{run}` is fine (`gb@20261128-…`); `gb@{runid}` would reach git as `@{`."""
    load_text(tmp_path, DEPLOY + "      push_branch: 'gb@{run}'\n")
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, DEPLOY + "      push_branch: 'gb@{runid}'\n")
    assert caught.value.key == "deployments.repos[0].push_branch"


def test_a_gate_or_health_program_named_by_a_relative_path_is_found_beside_the_config(tmp_path):
    """cron and CronJobs start graphbuild anywhere; `scripts/smoke.sh` means the config's."""
    cfg = load_text(tmp_path, "repos: []\ngates:\n  - name: t\n    test: [scripts/smoke.sh, x/y]\n"
                              "  - name: u\n    test: [trivy, x/y]\n"
                              "deployments:\n  rings:\n    - name: dev\n"
                              "      health: [./check.sh, '{ring}']\n")  # fmt: skip
    assert cfg.gates[0].argv == (str(tmp_path / "scripts/smoke.sh"), "x/y")
    assert cfg.gates[1].argv == ("trivy", "x/y")  # a name alone is looked up on PATH
    assert cfg.deployments.rings[0].health == (str(tmp_path / "check.sh"), "{ring}")


# ---------------------------------------------------------------- azure, the acr builder, mirrors

AZURE = """\
repos: []
azure:
  resource_group: rg-builds
  registry: myacr
  subscription: 00000000-0000-0000-0000-000000000001
  login_server: builds.example.com
  endpoint: https://management.usgovcloudapi.net
  ca_bundle: certs/proxy.pem
builder:
  kind: acr
  agent_pool: pool1
  timeout: 1800
  poll: 0.5
mirrors:
  docker.io: builds.example.com/mirror
  ghcr.io: builds.example.com/mirror/ghcr
  quay.io/org: builds.example.com/quay
"""
ACR = "repos: []\nazure:\n  resource_group: rg\n  registry: myacr\nbuilder: {kind: acr}\n"


def test_azure_the_acr_builder_and_mirrors_load_into_exact_values(tmp_path):
    cfg = load_text(tmp_path, AZURE)
    ca = str(tmp_path / "certs/proxy.pem")
    assert cfg.azure == config.AzureSpec(
        resource_group="rg-builds",
        registry="myacr",
        subscription="00000000-0000-0000-0000-000000000001",
        login_server="builds.example.com",
        endpoint="https://management.usgovcloudapi.net",
        ca_bundle=ca,
    )
    assert cfg.azure.server == "builds.example.com"
    assert cfg.builder == config.AcrSpec(agent_pool="pool1", timeout=1800.0, poll=0.5)
    assert cfg.builder.kind == "acr" and type(cfg.builder.timeout) is float
    assert cfg.mirrors == {
        "docker.io": "builds.example.com/mirror",  # in the login server, the azure: registry
        "ghcr.io": "builds.example.com/mirror/ghcr",
        "quay.io/org": "builds.example.com/quay",
    }


def test_azure_defaults_and_an_acr_builder_with_no_options(tmp_path):
    cfg = load_text(tmp_path, ACR)
    assert cfg.azure == config.AzureSpec("rg", "myacr")
    assert (cfg.azure.subscription, cfg.azure.login_server, cfg.azure.ca_bundle) == (None,) * 3
    assert cfg.azure.endpoint == "https://management.azure.com"
    assert cfg.azure.server == "myacr.azurecr.io"  # the login server ACR gives the name
    assert cfg.builder == config.AcrSpec(agent_pool=None, timeout=3600.0, poll=3.0)
    assert cfg.mirrors == {}


ACR_IMAGES = ACR.replace(
    "repos: []",
    "repos:\n  - name: r\n    path: r\n    images:\n      - image: r.test/a\n"
    "      - image: r.test/b\n        platforms: [PLATFORMS]",
)


def test_a_secret_build_arg_names_its_environment_variable_and_is_cached_by_name(
    tmp_path, monkeypatch
):
    """The value is read when the image is built, never at load: the checked form (and its
    cache, config-cache.json) holds the variable's name only."""
    monkeypatch.setenv("NPM_TOKEN", "s3cret-value")
    path = tmp_path / "repos.yaml"
    path.write_text(IMAGE + "        build_args: {V: '1'}\n"
                    "        secret_build_args: {TOKEN: NPM_TOKEN}\n")  # fmt: skip
    cfg = config.load(path)
    assert cfg.repos[0].images[0].secret_build_args == {"TOKEN": "NPM_TOKEN"}
    assert cfg.repos[0].images[0].build_args == {"V": "1"}
    synced(cfg)
    assert config.load(path) == cfg
    cached = (cfg.workspace / config_cache.CACHE).read_text()
    assert "NPM_TOKEN" in cached and "s3cret" not in cached


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("{TOKEN: [a]}", "secret_build_args.TOKEN", "expected a string"),
        ("{TOKEN: 'npm token'}", "secret_build_args.TOKEN", "an environment variable name"),
        ("{TOKEN: npm_token}", "secret_build_args.TOKEN", "in capitals"),
        ("{TOKEN: " + "A" * 65 + "}", "secret_build_args.TOKEN", "at most 64 characters"),
        ("{1X: NPM_TOKEN}", "secret_build_args.1X", "invalid name"),
        ("{V: NPM_TOKEN}", "secret_build_args.V", "also in build_args"),
        ("{PATH: NPM_TOKEN}", "secret_build_args.PATH", "the builder's own environment"),
        ("{DOCKER_HOST: X}", "secret_build_args.DOCKER_HOST", "the builder's own environment"),
    ],
)
def test_bad_secret_build_args_name_the_key(tmp_path, text, key, says):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, IMAGE + f"        build_args: {{V: '1'}}\n"
                                    f"        secret_build_args: {text}\n")  # fmt: skip
    assert caught.value.key == f"repos[0].images[0].{key}"
    assert says in caught.value.message


@pytest.mark.parametrize(
    "pasted", ["npm_AbC123dEf456GhI789jKl012MnO345pQr678", "ghp_" + "x1" * 18, "A" * 65]
)
def test_a_token_pasted_for_the_variable_name_is_refused_and_not_echoed(tmp_path, pasted):
    """A token in the variable's place would be stored in the index, the config cache and
    `graph --json`; the message says what is expected and never repeats the value."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, IMAGE + f"        secret_build_args: {{NPM_TOKEN: {pasted}}}\n")
    assert caught.value.key == "repos[0].images[0].secret_build_args.NPM_TOKEN"
    assert pasted not in str(caught.value)
    assert "environment variable name" in caught.value.message


def test_a_variable_name_of_64_capitals_is_taken(tmp_path):
    cfg = load_text(tmp_path, IMAGE + "        secret_build_args: {T: " + "A_1" * 21 + "B}\n")
    assert cfg.repos[0].images[0].secret_build_args == {"T": "A_1" * 21 + "B"}


def test_the_command_builder_refuses_secret_build_args(tmp_path):
    """Its argv template would put the value on a command line (and in the build log)."""
    text = IMAGE + "        secret_build_args: {TOKEN: NPM_TOKEN}\n"
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text + "builder: {kind: command, argv: [b, '{tag}']}\n")
    assert caught.value.key == "repos[0].images[0].secret_build_args"
    assert "builder.kind command" in caught.value.message


@pytest.mark.parametrize(
    "platform", ["riscv64", "amd64/v3", "s390x", "arm64/v9", "arm/v5", "arm64/v7"]
)
def test_a_platform_acr_does_not_build_is_refused_at_load(tmp_path, platform):
    """PlatformProperties in the Tasks swagger: os Linux or Windows, architecture amd64, x86/386,
    arm or arm64, variant v6, v7 or v8 (arm v6/v7, arm64 v8); nothing else reaches ACR."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, ACR_IMAGES.replace("PLATFORMS", f"linux/amd64, linux/{platform}"))
    assert caught.value.key == "repos[0].images[1].platforms[1]"
    assert caught.value.line == 7
    assert "builder.kind acr" in caught.value.message
    assert f"linux/{platform}" in caught.value.message


def test_the_platforms_acr_builds_load_and_other_builders_take_any(tmp_path):
    listed = "linux/amd64, linux/386, linux/arm/v6, linux/arm, linux/arm64/v8, windows/amd64"
    cfg = load_text(tmp_path, ACR_IMAGES.replace("PLATFORMS", listed))
    assert cfg.repos[0].images[1].platforms == (
        "linux/amd64", "linux/386", "linux/arm/v6", "linux/arm/v7", "linux/arm64",
        "windows/amd64",
    )  # fmt: skip
    other = ACR_IMAGES.replace("builder: {kind: acr}", "builder: {kind: buildah}")
    cfg = load_text(tmp_path, other.replace("PLATFORMS", "linux/riscv64, linux/amd64/v3"))
    assert cfg.repos[0].images[1].platforms == ("linux/riscv64", "linux/amd64/v3")


@pytest.mark.parametrize(("lines", "server", "endpoint"), [
    ("  cloud: china\n", "myacr.azurecr.cn", "https://management.chinacloudapi.cn"),
    ("  cloud: usgovernment\n", "myacr.azurecr.us", "https://management.usgovcloudapi.net"),
    ("  cloud: public\n", "myacr.azurecr.io", "https://management.azure.com"),
    ("  login_server: myacr.azurecr.cn\n", "myacr.azurecr.cn",
     "https://management.chinacloudapi.cn"),
    ("  login_server: myacr.azurecr.us\n", "myacr.azurecr.us",
     "https://management.usgovcloudapi.net"),
    ("  cloud: china\n  endpoint: https://arm.example\n", "myacr.azurecr.cn",
     "https://arm.example"),
    ("  cloud: usgovernment\n  login_server: acr.example.com\n", "acr.example.com",
     "https://management.usgovcloudapi.net"),
    ("  cloud: china\n  login_server: MyACR.azurecr.cn\n", "myacr.azurecr.cn",
     "https://management.chinacloudapi.cn"),
    ("  cloud: public\n  login_server: myacr-h4sh.azurecr.io\n", "myacr-h4sh.azurecr.io",
     "https://management.azure.com"),
])  # fmt: skip
def test_the_azure_cloud_gives_the_login_server_and_resource_manager(
    tmp_path, lines, server, endpoint
):
    """`azure.cloud`, else the cloud the login server's suffix names: the default login
    server, Resource Manager endpoint, and (cloud_settings) Entra ID authority and audience."""
    cfg = load_text(tmp_path, ACR.replace("builder:", lines + "builder:"))
    assert (cfg.azure.server, cfg.azure.arm) == (server, endpoint)
    china = cfg.azure.cloud_settings.name == "china"
    assert (cfg.azure.cloud_settings.authority == "login.chinacloudapi.cn") == china


def test_azure_alone_leaves_the_builder_as_it_is(tmp_path):
    """`azure:` also serves mirroring and webhooks; only builder.kind acr builds there."""
    cfg = load_text(tmp_path, ACR.replace("builder: {kind: acr}", "builder: {kind: docker}"))
    assert cfg.builder == config.DockerSpec(builder=None)
    assert cfg.azure == config.AzureSpec("rg", "myacr")


def test_an_absolute_azure_ca_bundle_is_kept(tmp_path):
    text = ACR.replace("  registry: myacr\n", "  registry: myacr\n  ca_bundle: /etc/ssl/p.pem\n")
    assert load_text(tmp_path, text).azure.ca_bundle == "/etc/ssl/p.pem"


def write_ca(path):
    """A self-signed CA certificate in PEM, what a TLS-inspecting proxy's bundle holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graphbuild test proxy CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case("repos: []\nbuilder: {kind: acr, agent_pool: p}\n", "azure",
             "missing: builder.kind acr builds in this registry", 1),
        case("repos: []\nazure:\n  registry: myacr\n", "azure.resource_group",
             "missing: the registry's resource group and name", 2),
        case("repos: []\nazure:\n  resource_group: rg\n", "azure.registry",
             "missing: the registry's resource group and name", 2),
        case(ACR.replace("registry: myacr", "registry: my-acr"), "azure.registry",
             "an ACR name: 5-50 letters and digits", 4),
        case(ACR.replace("registry: myacr", "registry: acr1"), "azure.registry",
             "an ACR name: 5-50 letters and digits", 4),
        case(ACR.replace("registry: myacr", "registry: " + "a" * 51), "azure.registry",
             "an ACR name: 5-50 letters and digits", 4),
        case(ACR.replace("registry: myacr", "registry: 12345"), "azure.registry",
             'expected a string, got a number (quote it, e.g. "3.10")', 4),
        case(ACR.replace("builder:", "  endpoint: http://management.azure.com\nbuilder:"),
             "azure.endpoint", "Azure Resource Manager is reached over https", 5),
        case(ACR.replace("builder:", "  endpoint: management.azure.com\nbuilder:"),
             "azure.endpoint", "Azure Resource Manager is reached over https", 5),
        case(ACR.replace("builder:", "  cloud: germany\nbuilder:"), "azure.cloud",
             "expected public, china or usgovernment", 5),
        case(ACR.replace("builder:", "  cloud: usgovernment\n  login_server: myacr.azurecr.io\n"
                                     "builder:"), "azure.cloud",
             "usgovernment, but login_server myacr.azurecr.io is in the public cloud", 5),
        case(ACR.replace("builder:", "  login_server: myacr.azurecr.us\n  cloud: china\n"
                                     "builder:"), "azure.cloud",
             "china, but login_server myacr.azurecr.us is in the usgovernment cloud", 6),
        case(ACR.replace("builder:", "  resourcegroup: rg\nbuilder:"), "azure.resourcegroup",
             "unknown key (did you mean 'resource_group'?)", 5),
        case(ACR.replace("builder:", "  timeout: 60\nbuilder:"), "azure.timeout",
             "unknown key", 5),
        case("repos: []\nazure: myacr\n", "azure", "expected a mapping, got a string", 2),
        case(ACR.replace("{kind: acr}", "{kind: acr, timeout: 0}"), "builder.timeout",
             "expected a number of seconds above 0", 5),
        case(ACR.replace("{kind: acr}", "{kind: acr, poll: fast}"), "builder.poll",
             "expected a number of seconds above 0", 5),
        case(ACR.replace("{kind: acr}", "{kind: acr, registry: other}"), "builder.registry",
             "unknown key", 5),
        case(ACR.replace("{kind: acr}", "{kind: acr, agent_pool: [a]}"), "builder.agent_pool",
             "expected a string, got a list", 5),
        case("repos: []\nbuilder: {kind: docker, agent_pool: p}\n", "builder.agent_pool",
             "unknown key", 2),
        case("repos: []\nbuilder: {kind: acrtasks}\n", "builder.kind",
             "expected one of buildah, docker, command, acr", 2),
        case("repos: []\nbuilder: {kind: [acr]}\n", "builder.kind",
             "expected one of buildah, docker, command, acr", 2),
        case("repos: []\nmirrors:\n  python: myacr.azurecr.io/m\n", "mirrors.python",
             "'python': start with the registry host, e.g. myacr.azurecr.io/mirror", 3),
        case("repos: []\nmirrors:\n  library/python: myacr.azurecr.io/m\n",
             "mirrors.library/python", "'library/python': start with the registry host", 3),
        case("repos: []\nmirrors:\n  docker.io: mirror\n", "mirrors.docker.io",
             "'mirror': start with the registry host", 3),
        case("repos: []\nmirrors:\n  docker.io: myacr.azurecr.io/Mirror\n", "mirrors.docker.io",
             "'myacr.azurecr.io/Mirror': repository name must be lowercase", 3),
        case("repos: []\nmirrors:\n  docker.io: myacr.azurecr.io/m:1\n", "mirrors.docker.io",
             "'myacr.azurecr.io/m:1': invalid reference format", 3),
        case("repos: []\nmirrors:\n  docker.io: [myacr.azurecr.io/m]\n", "mirrors.docker.io",
             "expected a string, got a list", 3),
        case("repos: []\nmirrors: [docker.io]\n", "mirrors", "expected a mapping, got a list", 2),
    ],
)  # fmt: skip
def test_bad_azure_builder_and_mirrors_name_file_line_and_key(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    err = caught.value
    assert (err.key, err.line) == (key, line)
    assert says in err.message
    assert str(err) == f"{tmp_path / 'repos.yaml'}:{line}: {key}: {err.message}"


def test_acr_names_and_login_servers_are_lowercased_at_load(tmp_path):
    """ACR names are case-insensitive and its login server is lowercase: `MyACR` must not
    make `MyACR.azurecr.io`, which no build tag (a repository is lowercase) would match."""
    cfg = load_text(tmp_path, ACR.replace("registry: myacr", "registry: MyACR"))
    assert (cfg.azure.registry, cfg.azure.server) == ("myacr", "myacr.azurecr.io")
    text = ACR.replace("registry: myacr", "registry: MyACR\n  login_server: MyACR.azurecr.io")
    assert load_text(tmp_path, text).azure.server == "myacr.azurecr.io"
    # a login server with ACR's domain name label hash, and one that is not ACR's (a proxy)
    text = ACR.replace("registry: myacr", "registry: myacr\n  login_server: myacr-h4sh.azurecr.io")
    assert load_text(tmp_path, text).azure.server == "myacr-h4sh.azurecr.io"
    text = ACR.replace("registry: myacr", "registry: myacr\n  login_server: 127.0.0.1:5000")
    assert load_text(tmp_path, text).azure.server == "127.0.0.1:5000"
    text = ACR.replace("registry: myacr", "registry: myacr\n  login_server: myacr.azurecr.cn")
    assert load_text(tmp_path, text).azure.server == "myacr.azurecr.cn"  # a sovereign cloud's


def test_the_acr_builder_of_a_mixed_case_registry_name_takes_its_lowercase_tags(
    tmp_path, monkeypatch
):
    """The issue: `registry: MyACR` refused every build tag, all in myacr.azurecr.io."""
    from graphbuild import builders

    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-from-the-environment")
    cfg = load_text(tmp_path, ACR.replace("registry: myacr", "registry: MyACR"))
    builder = builders.make(cfg.builder, cfg.azure)
    assert builder._name("myacr.azurecr.io/team/app:1") == "team/app:1"


def test_a_mirror_in_the_azure_registry_is_lowercased_like_its_login_server(tmp_path):
    text = ACR + "mirrors:\n  docker.io: MyACR.azurecr.io/mirror\n"
    assert load_text(tmp_path, text).mirrors == {"docker.io": "myacr.azurecr.io/mirror"}
    # without azure: nothing imports, so any registry may serve as the mirror
    text = "repos: []\nmirrors:\n  docker.io: other.example/mirror\n"
    assert load_text(tmp_path, text).mirrors == {"docker.io": "other.example/mirror"}


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case(ACR.replace("registry: myacr", "registry: myacr\n  login_server: other.azurecr.io"),
             "azure.login_server", "'other.azurecr.io' is not the login server of myacr "
             "(myacr.azurecr.io)", 5),
        case(ACR.replace("registry: myacr",
                         "registry: myacr\n  login_server: https://myacr.azurecr.io"),
             "azure.login_server", "'https://myacr.azurecr.io': a host, with its port unless "
             "443, e.g. myacr.azurecr.io", 5),
        case(ACR.replace("registry: myacr", "registry: myacr\n  login_server: myacr.azurecr.io/x"),
             "azure.login_server", "a host, with its port unless 443", 5),
        case(ACR + "mirrors:\n  docker.io: other.azurecr.io/mirror\n", "mirrors.docker.io",
             "'other.azurecr.io/mirror' is not in myacr.azurecr.io, the azure: registry "
             "`graphbuild mirror` imports into", 7),
        case(ACR + "mirrors:\n  docker.io: myacr.azurecr.io/m\n  ghcr.io: ghcr.example/m\n",
             "mirrors.ghcr.io", "'ghcr.example/m' is not in myacr.azurecr.io", 8),
    ],
)  # fmt: skip
def test_acr_login_servers_and_mirrors_elsewhere_are_refused(tmp_path, text, key, says, line):
    """A mirror in another registry would be imported into the azure: one, and re-imported
    on every run since the mirror's tag never gets it: refused at load, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    err = caught.value
    assert (err.key, err.line) == (key, line)
    assert says in err.message
    assert str(err) == f"{tmp_path / 'repos.yaml'}:{line}: {key}: {err.message}"


def test_mirror_prefixes_lose_a_trailing_slash(tmp_path):
    cfg = load_text(tmp_path, "repos: []\nmirrors:\n  docker.io/: myacr.azurecr.io/mirror/\n")
    assert cfg.mirrors == {"docker.io": "myacr.azurecr.io/mirror"}


def test_make_returns_the_acr_builder_without_looking_on_path(tmp_path, monkeypatch):
    """An ACR build runs in Azure: nothing to install, so nothing is looked for on PATH."""
    from graphbuild import builders
    from graphbuild.builders.acr import Acr

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-from-the-environment")
    cfg = load_text(tmp_path, AZURE)
    write_ca(tmp_path / "certs/proxy.pem")
    builder = builders.make(cfg.builder, cfg.azure)
    assert isinstance(builder, Acr)
    assert (builder.name, builder.program) == ("acr", None)
    assert builder.azure == cfg.azure
    assert (builder.group, builder.registry, builder.login_server) == (
        "rg-builds",
        "myacr",
        "builds.example.com",
    )
    assert (builder.agent_pool, builder.timeout, builder.poll) == ("pool1", 1800.0, 0.5)
    assert isinstance(builder.verify, ssl.SSLContext)  # the proxy's CAs for the blob URLs

    acr = load_text(tmp_path, ACR)
    plain = builders.make(acr.builder, acr.azure)
    assert (plain.login_server, plain.agent_pool, plain.timeout, plain.poll) == (
        "myacr.azurecr.io",
        None,
        3600,
        3.0,
    )
    assert plain.verify is True


def test_a_missing_azure_ca_bundle_is_a_config_error_not_a_traceback(tmp_path):
    from graphbuild import builders

    text = ACR.replace("  registry: myacr\n", "  registry: myacr\n  ca_bundle: missing.pem\n")
    cfg = load_text(tmp_path, text)
    with pytest.raises(ConfigError, match="ca_bundle"):
        builders.make(cfg.builder, cfg.azure)


# ---------------------------------------------------------------- any file at all

# database=None: hypothesis keeps no example database in the project.
FUZZ = settings(max_examples=300, deadline=None, database=None)
RECORDS = (config.Config, config.RepoSpec, config.ImageSpec, config.RegistrySpec,
           config.AzureSpec, config.Allowed, config.GateSpec, config.RingSpec,
           config.DeployRepoSpec, config.WorkloadSpec, config.Deployments, config.CheckSpec,
           config.BuildahSpec, config.DockerSpec, config.CommandSpec, config.AcrSpec)  # fmt: skip
KEYS = sorted(
    {"kind", "x", "localhost:5000", "myacr.azurecr.io"} | set(config._KUBECTL)
    | {key for record in RECORDS for key in schema.keys(record)}
)  # fmt: skip
TOP = [
    "repos",
    "workspace",
    "registries",
    "builder",
    "gates",
    "deployments",
    "azure",
    "mirrors",
    "check",
]
WORDS = [
    "", ".", "..", "/etc", "x", "a/b", "https://h.example/x.git", "ext::sh -c id", "-oProxy=x",
    "file:///etc", "linux/amd64", "linux/arm64/v8", "*/Dockerfile", "**/Dockerfile", "{dir}",
    "high", "2026-01-01", "buildah", "command", "acr", "docker", "gitops", "kubectl", "$HOME",
    "alpine:3", "localhost:5000/x", "r.test/app", "basic", "anonymous", "main", "../..",
    "deployment/app", "{image}", "true",
]  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats()
    | st.sampled_from(WORDS) | st.text(max_size=12) | st.dates()
)  # fmt: skip


def collections(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)


VALUES = st.recursive(SCALARS, collections, max_leaves=25)


def loads_or_refuses(tmp_path, raw: bytes) -> None:
    """Any repos.yaml is a Config or one ConfigError naming where; nothing else escapes."""
    path = tmp_path / "repos.yaml"
    path.write_bytes(raw)
    try:
        config.load(path)
    except ConfigError as err:
        assert str(err).startswith(str(path))
        assert "\n" not in str(err)


@FUZZ
@given(st.dictionaries(st.sampled_from(TOP), VALUES, max_size=5))
def test_any_yaml_document_loads_or_is_refused_where_it_is_wrong(tmp_path_factory, doc):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    loads_or_refuses(tmp_path, yaml.safe_dump(doc).encode())


def paths(doc, at=()):
    """Every place in a parsed document: where a mutation can land."""
    yield at
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield from paths(value, (*at, key))


def mutated(doc, path, value):
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = mutated(doc[path[0]], path[1:], value)
    return copy


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), VALUES), min_size=1, max_size=3))
def test_a_sound_file_with_any_value_changed_loads_or_is_refused(tmp_path_factory, changes):
    """Mutations of a full, valid file reach every key's own checks."""
    doc = yaml.safe_load(FULL_DEPLOY)
    doc["repos"] = yaml.safe_load(FULL_REPOS)
    for index, value in changes:
        places = list(paths(doc))
        doc = mutated(doc, places[index % len(places)], value)
    loads_or_refuses(tmp_path_factory.mktemp("fuzz"), yaml.safe_dump(doc).encode())


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_load_or_are_refused(tmp_path_factory, raw):
    loads_or_refuses(tmp_path_factory.mktemp("fuzz"), raw)


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64"),
        ("wasi/wasm", "wasi/wasm"),  # Docker's Wasm builds; accepted before normalising
        ("wasip1/wasm", "wasip1/wasm"),  # a GOOS since Go 1.21, not in containerd's list
    ],
)
def test_platforms_are_normalised_as_containerd_does(tmp_path, written, normalised):
    """Builders and the graph get the form BuildKit uses (containerd Parse, then Normalize)."""
    cfg = load_text(tmp_path, f"{IMAGE}        platforms: ['{written}']\n")
    assert cfg.repos[0].images[0].platforms == (normalised,)


# ---------------------------------------------------------------- the checked form, cached

EVERY_KEY = (
    "workspace: ws\ncheck: {timeout: 90}\n"
    + FULL_DEPLOY.replace("repos:\n", "repos:" + FULL_REPOS, 1)
    + "registries:\n  localhost:5000: {insecure: true, max_requests: 2}\n"
    + "  r.example: {auth: basic, username: ci, password_env: R_PW, ca_bundle: ca.pem}\n"
    + AZURE.removeprefix("repos: []\n")
)


@pytest.fixture
def checks(monkeypatch) -> list[Path]:
    """Every file the checker is run on: a cached load runs it on none."""
    seen: list[Path] = []
    check = config._check

    def counted(path: Path, text: str) -> config.Config:
        seen.append(path)
        return check(path, text)

    monkeypatch.setattr(config, "_check", counted)
    return seen


def synced(cfg: config.Config) -> None:
    """The workspace graphbuild made (its index.db): the only place it keeps a cache."""
    indexdb.connect(cfg.workspace).close()


def test_a_config_is_checked_once_and_then_read_back_exactly(tmp_path, checks):
    path = tmp_path / "repos.yaml"
    path.write_text(EVERY_KEY)
    first = config.load(path)
    synced(first)
    assert config.load(path) == first and len(checks) == 2  # checked, then stored
    again = config.load(path)
    assert again == first and len(checks) == 2
    assert again.gates[0].allow[0].until == dt.date(2027, 1, 31)
    assert type(again.repos[0].images[0].tags) is tuple
    assert type(again.builder) is config.AcrSpec and type(again.builder.timeout) is float
    assert again.registries["r.example"].ca_bundle == tmp_path / "ca.pem"
    assert again.deployments.repos[0].rings["dev"] == ("envs/dev/**", "shared/dev-*.yaml")


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        ("", config.BuildahSpec()),
        ("builder: {kind: buildah, isolation: oci, storage_driver: overlay, root: /r}\n",
         config.BuildahSpec("oci", "overlay", root="/r")),
        ("builder: {kind: docker, builder: remote}\n", config.DockerSpec("remote")),
        ("builder: {kind: command, argv: [kaniko, '{context}']}\n",
         config.CommandSpec(("kaniko", "{context}"))),
        (ACR.removeprefix("repos: []\n").replace("{kind: acr}", "{kind: acr, poll: 1}"),
         config.AcrSpec(poll=1.0)),
    ],
)  # fmt: skip
def test_each_kind_of_builder_is_read_back_from_the_cache_as_its_own_record(
    tmp_path, checks, builder, expected
):
    path = tmp_path / "repos.yaml"
    path.write_text("repos: []\n" + builder)
    synced(config.load(path))
    first = config.load(path)
    again = config.load(path)
    assert len(checks) == 2  # checked, stored, then read back
    assert first.builder == again.builder == expected
    assert type(again.builder) is type(expected) and again.builder.kind == expected.kind


def test_a_cached_builder_of_no_known_kind_is_no_cache(tmp_path, checks):
    cache = _cache_of(tmp_path)
    head, _, body = cache.read_bytes().partition(b"\n")
    assert body.count(b'["acr","pool1",') == 1
    body = body.replace(b'["acr","pool1",', b'["kaniko","pool1",')
    header = json.loads(head)
    header["sum"] = hashlib.sha256(body).hexdigest()
    cache.write_bytes(json.dumps(header).encode() + b"\n" + body)
    assert config.load(tmp_path / "repos.yaml").builder == config.AcrSpec("pool1", 1800.0, 0.5)
    assert len(checks) == 3


def test_another_pyyaml_is_another_check(tmp_path, monkeypatch):
    """How YAML is read is part of the check: the key covers PyYAML's files (found, not
    imported, so that a query does not pay for it)."""
    import importlib.machinery

    package = tmp_path / "site-packages/yaml"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '6.0.1'\n")
    spec = importlib.machinery.ModuleSpec("yaml", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(config_cache.importlib.util, "find_spec", lambda name: spec)
    path = tmp_path / "repos.yaml"

    def key() -> str:
        config_cache._code.cache_clear()
        return config_cache.key(path, "repos: []\n")

    before = key()
    assert key() == before
    (package / "__init__.py").write_text("__version__ = '6.0.22'\n")
    assert key() != before
    config_cache._code.cache_clear()


def test_a_changed_config_is_checked_again_even_with_its_size_and_time(tmp_path, checks):
    path = tmp_path / "repos.yaml"
    path.write_text(IMAGE + "        tags: [a]\n")
    synced(config.load(path))
    config.load(path)
    stat = path.stat()
    path.write_text(IMAGE + "        tags: 'a'\n")  # as long, and as old
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert (caught.value.key, caught.value.line) == ("repos[0].images[0].tags", 6)
    assert len(checks) == 3


def test_the_same_file_named_another_way_is_checked_for_that_name(tmp_path, checks, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/repos.yaml").write_text(REPO)
    monkeypatch.chdir(tmp_path)
    synced(config.load(Path("sub/repos.yaml")))
    config.load(Path("sub/repos.yaml"))
    monkeypatch.chdir(tmp_path / "sub")
    cfg = config.load(Path("repos.yaml"))
    assert cfg.file == Path("repos.yaml") and cfg.repos[0].path == tmp_path / "sub"
    assert len(checks) == 3


def _cache_of(tmp_path: Path) -> Path:
    path = tmp_path / "repos.yaml"
    path.write_text(EVERY_KEY)
    synced(config.load(path))
    config.load(path)
    (cache,) = (tmp_path / "ws").glob("*.json")
    return cache


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[: len(b) // 2], id="cut short"),
        pytest.param(lambda b: b.replace(b"python", b"pythoN", 1), id="a changed letter"),
        pytest.param(lambda b: b"\xff\xfe" + b, id="not UTF-8"),
        pytest.param(lambda b: b"[1, 2, 3]", id="other JSON"),
        pytest.param(lambda b: b'{"format": 1, "key": 1}\n[]', id="a foreign header"),
        pytest.param(lambda b: b"[" * 100_000, id="deep"),
    ],
)
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path, checks, damage):
    cache = _cache_of(tmp_path)
    sound = cache.read_bytes()
    expected = config.load(tmp_path / "repos.yaml")
    cache.write_bytes(damage(sound))
    assert config.load(tmp_path / "repos.yaml") == expected
    assert len(checks) == 3  # checked again
    assert cache.read_bytes() == sound


def test_a_cache_in_the_wrong_shape_for_its_key_is_ignored(tmp_path, checks):
    """A file with the right key and checksum whose content is not a Config."""
    cache = _cache_of(tmp_path)
    head, _, _ = cache.read_bytes().partition(b"\n")
    body = b'["not", "a", "config"]'
    header = json.loads(head)
    header["sum"] = hashlib.sha256(body).hexdigest()
    cache.write_bytes(json.dumps(header).encode() + b"\n" + body)
    assert config.load(tmp_path / "repos.yaml").repos[0].name == "python"
    assert len(checks) == 3


def test_a_token_in_a_url_is_never_cached(tmp_path, checks):
    """The checked form would hold the URL, token and all: such a file is checked each time."""
    path = tmp_path / "repos.yaml"
    path.write_text("repos:\n  - name: a\n    url: https://bot:s3cr3t@git.example/a.git\n")
    synced(config.load(path))
    config.load(path)
    assert len(checks) == 2
    for found in (tmp_path / ".graphbuild").rglob("*"):
        assert b"s3cr3t" not in found.read_bytes(), found


def test_an_ssh_user_name_is_no_secret_and_the_file_is_cached(tmp_path, checks):
    """`ssh://git@host/...` names a user, as `git@host:...` does: such a fleet (most ssh
    fleets) gets the cache too."""
    path = tmp_path / "repos.yaml"
    path.write_text("repos:\n  - name: a\n    url: ssh://git@git.example/a.git\n"
                    "  - name: b\n    url: git@git.example:b.git\n")  # fmt: skip
    synced(config.load(path))
    config.load(path)
    config.load(path)
    assert len(checks) == 2  # checked, stored, then read back


def test_a_cache_bigger_than_any_config_is_not_read(tmp_path, checks, monkeypatch):
    cache = _cache_of(tmp_path)
    monkeypatch.setattr(config_cache, "MAX_CACHE", cache.stat().st_size - 1)
    assert config.load(tmp_path / "repos.yaml").repos[0].name == "python"
    assert len(checks) == 3  # the cache was there and whole, but past the bound


def test_no_cache_is_written_where_graphbuild_keeps_no_workspace(tmp_path, checks):
    path = tmp_path / "repos.yaml"
    path.write_text("workspace: .\nrepos: []\n")
    config.load(path)
    config.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repos.yaml"] and len(checks) == 2


@pytest.mark.timeout(30)
def test_a_fifo_in_place_of_the_cache_is_not_waited_on(tmp_path, checks):
    cache = _cache_of(tmp_path)
    cache.unlink()
    os.mkfifo(cache)
    assert config.load(tmp_path / "repos.yaml").repos[0].name == "python"
    assert len(checks) == 3


@pytest.mark.parametrize(
    ("text", "cached"),
    [
        ('workspace: "ws"  # quoted, with a comment\nrepos: []\n', True),
        ("repos: []\nworkspace: 'ws'", True),
        ("{workspace: ws, repos: []}\n", False),  # found only by parsing: checked every time
        ("repos: []\nworkspace: >-\n  ws\n", False),
    ],
)
def test_the_cache_is_found_from_a_plainly_written_workspace(tmp_path, checks, text, cached):
    path = tmp_path / "repos.yaml"
    path.write_text(text)
    synced(config.load(path))
    for _ in range(2):
        assert config.load(path).workspace == tmp_path / "ws"
    assert len(checks) == (2 if cached else 3)


def test_a_cached_config_is_read_without_the_yaml_parser(tmp_path):
    """A query reads the checked form back: PyYAML is imported only to parse, or to find
    an error's line (`python -X importtime` lists every import)."""
    path = tmp_path / "repos.yaml"
    path.write_text(EVERY_KEY)
    synced(config.load(path))
    config.load(path)  # checked and stored
    code = f"from graphbuild import config; config.load(config.Path({str(path)!r}))"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}  # fmt: skip
    assert "graphbuild.config" in imported
    assert sorted(m for m in imported if m.split(".")[0] in ("yaml", "_yaml")) == []


def table(heading: str) -> list[list[str]]:
    """The rows of the first table under `heading` in docs/config.md, as cells."""
    doc = (Path(__file__).parents[1] / "docs/config.md").read_text()
    section = doc.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def names(cell: str) -> list[str]:
    """The `keys` a cell names, leaving out what parentheses and a `;` add."""
    cell = re.sub(r"\([^)]*\)", "", cell.split(";", 1)[0])
    return re.findall(r"`([a-z_]+)`", cell)


@pytest.mark.parametrize(
    ("heading", "record"),
    [("## Top level", config.Config), ("## `repos[]`", config.RepoSpec),
     ("## `repos[].images[]`", config.ImageSpec)],
)  # fmt: skip
def test_docs_list_exactly_the_keys_each_section_reads(heading, record):
    """docs/config.md and the fields that declare the keys name the same keys."""
    assert sorted(names(row[0])[0] for row in table(heading)) == sorted(schema.keys(record))


def test_docs_list_exactly_the_keys_of_each_kind_of_builder():
    documented = {names(kind)[0]: sorted(names(keys)) for kind, keys, _ in table("## `builder`")}
    kinds = (config.BuildahSpec, config.DockerSpec, config.CommandSpec, config.AcrSpec)
    assert documented == {schema.tag(kind): sorted(schema.keys(kind)) for kind in kinds}


def test_a_record_has_one_rule_and_a_second_is_refused_not_swapped_in():
    """Two `@rule`s for one record (two changes merged) would run only the last: refused."""
    with pytest.raises(TypeError, match="RepoSpec has a rule already: "):
        schema.rule(config.RepoSpec)(lambda reader, values, where: None)


# ---------------------------------------------------------------- azure.credentials

VAULT = "https://kv-builds.vault.azure.net/secrets"
CREDENTIALS = ACR.replace(
    "builder:",
    f"""\
  credentials:
    Index.Docker.IO:
      username: hubuser
      password_vault: {VAULT}/hub-token
      password_env: DOCKERHUB_TOKEN
      identity: system
    other.azurecr.io:
      identity: 3f2504e0-4f89-11d3-9a0c-0305e82c3301
    quay.io:
      username_vault: {VAULT}/quay-user/0123456789abcdef0123456789abcdef
      password_vault: {VAULT}/quay-pass
      identity: 3f2504e0-4f89-11d3-9a0c-0305e82c3301
builder:""",
)


def test_azure_credentials_name_secrets_and_identities_by_registry(tmp_path):
    cfg = load_text(tmp_path, CREDENTIALS)
    assert cfg.azure is not None
    client = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert cfg.azure.credentials == {
        "docker.io": config.RegistryLogin(
            "docker.io", username="hubuser", password_vault=f"{VAULT}/hub-token",
            password_env="DOCKERHUB_TOKEN", identity="system"),
        "other.azurecr.io": config.RegistryLogin("other.azurecr.io", identity=client),
        "quay.io": config.RegistryLogin(
            "quay.io", username_vault=f"{VAULT}/quay-user/0123456789abcdef0123456789abcdef",
            password_vault=f"{VAULT}/quay-pass", identity=client),
    }  # fmt: skip
    assert load_text(tmp_path, ACR).azure.credentials == {}  # none: builds and imports as before


def test_azure_credentials_are_read_back_from_the_cache_and_it_holds_no_secret(
    tmp_path, checks, monkeypatch
):
    """The cache keeps what the file says: a vault URI and a variable's name, never the
    variable's value (the check reads no environment variable)."""
    monkeypatch.setenv("DOCKERHUB_TOKEN", "dckr_pat_not-for-the-cache")
    path = tmp_path / "repos.yaml"
    path.write_text("workspace: ws\n" + CREDENTIALS)
    synced(config.load(path))
    first = config.load(path)
    again = config.load(path)
    assert len(checks) == 2 and again == first
    assert type(again.azure.credentials["docker.io"]) is config.RegistryLogin
    (cache,) = (tmp_path / "ws").glob("*.json")
    text = cache.read_text()
    assert "DOCKERHUB_TOKEN" in text and f"{VAULT}/hub-token" in text
    assert "dckr_pat_not-for-the-cache" not in text


def creds(entry: str) -> str:
    return ACR.replace("builder:", f"  credentials:\n    docker.io: {entry}\nbuilder:")


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case(creds("{username: u, password: hunter2}"), "azure.credentials.docker.io.password",
             "never put a password in this file; name a Key Vault secret in password_vault", 6),
        case(creds("{username: u, password_vault: hunter2}"),
             "azure.credentials.docker.io.password_vault",
             "a Key Vault secret URI, https://<vault>.vault.azure.net/secrets/<name>", 6),
        case(creds("{username: u, password_vault: 'https://kv1.vault.azure.net/keys/k'}"),
             "azure.credentials.docker.io.password_vault", "a Key Vault secret URI", 6),
        case(creds("{username: u, password_vault: 'https://kv1.vault.azure.net/secrets/s?sig=x'}"),
             "azure.credentials.docker.io.password_vault", "a Key Vault secret URI", 6),
        case(creds("{username: u, password_vault: 'http://kv1.vault.azure.net/secrets/s'}"),
             "azure.credentials.docker.io.password_vault", "a Key Vault secret URI", 6),
        case(creds("{username: u, password_env: 'MY-TOKEN'}"),
             "azure.credentials.docker.io.password_env", "the name of an environment variable", 6),
        case(creds("{identity: '[system]'}"), "azure.credentials.docker.io.identity",
             "`system` (the run's system-assigned identity) or a user-assigned identity's "
             "client id", 6),
        case(creds("{identity: graphbuild}"), "azure.credentials.docker.io.identity",
             "`system`", 6),
        case(creds("{username: u}"), "azure.credentials.docker.io",
             "a user name needs password_vault (builds) or password_env (mirror imports)", 6),
        case(creds(f"{{password_vault: {VAULT}/p}}"), "azure.credentials.docker.io",
             "password_vault needs username or username_vault", 6),
        case(creds(f"{{username: u, username_vault: {VAULT}/u, password_vault: {VAULT}/p}}"),
             "azure.credentials.docker.io", "give username or username_vault, not both", 6),
        case(creds(f"{{username_vault: {VAULT}/u, password_env: T}}"),
             "azure.credentials.docker.io", "username_vault needs password_vault", 6),
        case(creds("{}"), "azure.credentials.docker.io",
             "give password_vault, identity or password_env", 6),
        case(creds("{usrname: u}"), "azure.credentials.docker.io.usrname",
             "unknown key (did you mean 'username'?)", 6),
        case(ACR.replace("builder:", "  credentials:\n    myreg: {identity: system}\nbuilder:"),
             "azure.credentials.myreg", "not a registry host", 6),
        case(ACR.replace("builder:", "  credentials:\n    docker.io: {identity: system}\n"
                                     "    index.docker.io: {identity: system}\nbuilder:"),
             "azure.credentials.index.docker.io", "docker.io is configured twice", 7),
        case(ACR.replace("builder:", "  credentials: [docker.io]\nbuilder:"),
             "azure.credentials", "expected a mapping, got a list", 5),
    ],
)  # fmt: skip
def test_bad_azure_credentials_name_file_line_and_key(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    err = caught.value
    assert (err.key, err.line) == (key, line)
    assert says in err.message
    assert "hunter2" not in str(err)
