from __future__ import annotations

import pytest

from graphbuild import config
from graphbuild.errors import ConfigError


def load_text(tmp_path, text: str) -> config.Config:
    path = tmp_path / "repos.yaml"
    path.write_text(text)
    return config.load(path)


def test_full_example_loads(tmp_path):
    cfg = load_text(
        tmp_path,
        """
workspace: ws
repos:
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
""",
    )
    assert cfg.workspace == tmp_path / "ws"
    python, local = cfg.repos
    assert python.url == "https://github.com/docker-library/python.git"
    assert python.ref == "master"
    explicit, globbed = python.images
    assert explicit.tags == ("3.12-bookworm", "3.12")
    assert explicit.build_args == {"PYTHON_VERSION": "3.12.7", "JOBS": "4"}
    assert explicit.platforms == ("linux/amd64", "linux/arm64/v8")
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


def test_the_buildah_store_is_found_beside_the_config_wherever_graphbuild_runs(tmp_path):
    cfg = load_text(tmp_path, "repos: []\nbuilder: {kind: buildah, root: store, runroot: /run/b}\n")
    assert cfg.builder == {"kind": "buildah", "root": str(tmp_path / "store"), "runroot": "/run/b"}
    assert cfg.workspace.is_absolute()  # logs and reports name paths that work from anywhere


@pytest.mark.parametrize(
    ("text", "key", "says", "line"),
    [
        case("registries:\n  myreg: {}\n", "registries.myreg",
             "`myreg` alone would mean Docker Hub", 2),
        case("registries:\n  docker.io: {}\n  index.docker.io: {}\n",
             "registries.index.docker.io", "docker.io is configured twice", 3),
        case("registries:\n  r.example: {username: ci}\n", "registries.r.example.username",
             "only used with auth: basic", 2),
        case("registries:\n  '127.evil.example:5000': {insecure: true}\n",
             "registries.127.evil.example:5000.insecure", "only allowed for loopback", 2),
    ],
)  # fmt: skip
def test_bad_registry_settings(tmp_path, text, key, says, line):
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "repos: []\n" + text)
    assert (caught.value.key, caught.value.line) == (key, line + 1)
    assert says in caught.value.message
