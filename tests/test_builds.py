"""The build of one image on a real local fleet: what it reads, keys, pins, asks the builder."""

from __future__ import annotations

import threading
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from graphbuild import config, indexdb
from graphbuild.builds import Builds, RunSettings
from graphbuild.graph import load
from graphbuild.pipeline import sync
from graphbuild.registry.manifests import BASE_DIGEST, BASE_NAME
from graphbuild.scheduler import Failed
from graphbuild.state import NodeStatus, State

SUCCEEDED = NodeStatus.SUCCEEDED


def test_a_dockerfile_grown_past_the_size_limit_since_the_sync_fails_its_build_by_name(
    tmp_path, write_config
):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/Dockerfile").write_text("FROM alpine:3.20\n")
    images = [{"image": "r.test/x", "tags": ["1"]}]
    cfg = config.load(write_config([{"name": "r", "path": "r", "images": images}]))
    sync(cfg)
    with closing(indexdb.connect(cfg.workspace)) as db:
        graph = load(db)
    big = b"FROM alpine:3.20\n" + b"#" * 64 * 1024 * 1024
    (tmp_path / "r/Dockerfile").write_bytes(big)  # a local folder edited after the sync
    builds = Builds(cfg, graph, {}, None, "run", {}, RunSettings(), tmp_path / "logs")
    tracemalloc.start()
    try:
        with pytest.raises(Failed) as info:
            builds.work("r.test/x:1", threading.Event())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"r:Dockerfile: Dockerfile is {len(big)} bytes, more than the 2 MiB graphbuild reads"
    )
    assert peak < 16 * 2**20, f"refusing it took {peak} bytes: it was read"


# ---------------------------------------------------------------- named build contexts

UPSTREAM, PINNED = "r.test/upstream:1", "sha256:" + "1" * 64


class Recording:
    """A builder that keeps what it was asked to build, the pinned Dockerfile included."""

    name, program = "recording", None

    def __init__(self) -> None:
        self.requests: list = []
        self.pinned: list[str] = []
        self.folders: list[dict[str, list[str]]] = []

    def build(self, request, cancel) -> str:
        self.requests.append(request)
        self.pinned.append(request.dockerfile.read_text())
        self.folders.append({name: sorted(p.name for p in Path(value).iterdir())
                             for name, value in request.contexts.items()
                             if not value.startswith("docker-image://")})  # fmt: skip
        return "sha256:" + "b" * 64


def contexts_fleet(tmp_path, write_config, src="shared"):
    (tmp_path / "r/app").mkdir(parents=True)
    (tmp_path / "r/app/Dockerfile").write_text("FROM base\nCOPY --from=src /s /s\n")
    (tmp_path / "r/shared").mkdir()
    (tmp_path / "r/shared/s").write_text("s\n")
    images = [{"image": "r.test/app", "dockerfile": "app/Dockerfile", "tags": ["1"],
               "contexts": {"base": f"docker-image://{UPSTREAM}", "src": src}}]  # fmt: skip
    cfg = config.load(write_config([{"name": "r", "path": "r", "images": images}]))
    sync(cfg)
    with State(cfg.workspace):  # where builds are looked up by key
        pass
    with closing(indexdb.connect(cfg.workspace)) as db:
        return cfg, load(db)


def test_a_build_reads_the_dockerfile_with_the_named_contexts_the_graph_used(
    tmp_path, write_config
):
    """Defect: the build re-parsed with `contexts=None`: `FROM base` was no parent, nothing
    was pinned, and the builder got no context. Now the parent through a context is pinned,
    recorded and annotated, and each context goes to the builder."""
    cfg, graph = contexts_fleet(tmp_path, write_config)
    assert list(graph.predecessors("r.test/app:1")) == [UPSTREAM]
    builder = Recording()
    builds = Builds(cfg, graph, {UPSTREAM: PINNED}, builder, "run", {}, RunSettings(),
                    tmp_path / "logs")  # fmt: skip
    outcome = builds.work("r.test/app:1", threading.Event())
    assert outcome.status == SUCCEEDED
    (request,) = builder.requests
    assert dict(request.contexts) == {
        "base": f"docker-image://{UPSTREAM}@{PINNED}",
        "src": str(request.context.parent.parent / "named-0" / "shared"),
    }
    assert builder.folders == [{"src": ["s"]}]  # written like the context, beside it
    assert builder.pinned == [f"FROM {UPSTREAM}@{PINNED}\nCOPY --from=src /s /s\n"]
    assert builds.parents["r.test/app:1"] == {UPSTREAM: PINNED}
    assert request.annotations[BASE_DIGEST] == PINNED
    assert request.annotations[BASE_NAME] == UPSTREAM


def test_a_named_context_folder_that_leads_out_fails_its_build_naming_repo_and_key(
    tmp_path, write_config
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    cfg, graph = contexts_fleet(tmp_path, write_config, src="lib")
    (tmp_path / "r/lib").symlink_to(outside)
    builder = Recording()
    builds = Builds(cfg, graph, {UPSTREAM: PINNED}, builder, "run", {}, RunSettings(),
                    tmp_path / "logs")  # fmt: skip
    with pytest.raises(Failed) as info:
        builds.work("r.test/app:1", threading.Event())
    assert str(info.value) == (
        f"r:lib: the build context is a symlink (to {outside}), not a folder; graphbuild "
        "sends a builder only a folder of the repository (named context contexts.src)"
    )
    assert builder.requests == []


def test_a_fleet_image_through_a_named_context_is_built_first_and_built_on_by_digest(
    tmp_path, write_config
):
    """The context names an image the fleet builds: it is a parent like any FROM, and the
    child gets the digest its parent was just built as."""
    for name, text in [("lib", "FROM scratch\n"), ("app", "FROM base\n")]:
        (tmp_path / f"r/{name}").mkdir(parents=True)
        (tmp_path / f"r/{name}/Dockerfile").write_text(text)
    images = [{"image": "r.test/lib", "dockerfile": "lib/Dockerfile", "tags": ["1"]},
              {"image": "r.test/app", "dockerfile": "app/Dockerfile", "tags": ["1"],
               "contexts": {"base": "docker-image://r.test/lib:1"}}]  # fmt: skip
    cfg = config.load(write_config([{"name": "r", "path": "r", "images": images}]))
    sync(cfg)
    with State(cfg.workspace):
        pass
    with closing(indexdb.connect(cfg.workspace)) as db:
        graph = load(db)
    assert list(graph.predecessors("r.test/app:1")) == ["r.test/lib:1"]
    builder = Recording()
    builds = Builds(cfg, graph, {"r.test/lib:1": "sha256:" + "0" * 64}, builder, "run", {},
                    RunSettings(), tmp_path / "logs")  # fmt: skip
    built = builds.work("r.test/lib:1", threading.Event()).digest  # not what was served
    builds.work("r.test/app:1", threading.Event())
    _, request = builder.requests
    assert dict(request.contexts) == {"base": f"docker-image://r.test/lib:1@{built}"}
    assert builds.parents["r.test/app:1"] == {"r.test/lib:1": built}


# ---------------------------------------------------------------- secret build args


def secrets_fleet(tmp_path, write_config):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/Dockerfile").write_text("FROM r.test/upstream:1\nARG TOKEN\n")
    images = [{"image": "r.test/app", "tags": ["1"], "build_args": {"V": "1"},
               "secret_build_args": {"TOKEN": "GB_TEST_NPM_TOKEN"}}]  # fmt: skip
    cfg = config.load(write_config([{"name": "r", "path": "r", "images": images}]))
    sync(cfg)
    with State(cfg.workspace):
        pass
    with closing(indexdb.connect(cfg.workspace)) as db:
        return cfg, load(db)


def test_a_secret_build_arg_is_read_from_the_environment_at_build_and_stored_by_name(
    tmp_path, write_config, monkeypatch
):
    """The index and the graph hold the variable's name; the builder gets the value, read
    when the image is built; no file in the workspace holds it."""
    cfg, graph = secrets_fleet(tmp_path, write_config)
    assert graph.nodes["r.test/app:1"]["secret_build_args"] == {"TOKEN": "GB_TEST_NPM_TOKEN"}
    monkeypatch.setenv("GB_TEST_NPM_TOKEN", "s3cret-value")
    builder = Recording()
    builds = Builds(cfg, graph, {UPSTREAM: PINNED}, builder, "run", {}, RunSettings(),
                    tmp_path / "logs")  # fmt: skip
    assert builds.work("r.test/app:1", threading.Event()).status == SUCCEEDED
    (request,) = builder.requests
    assert (dict(request.build_args), dict(request.secret_args)) == (
        {"V": "1"}, {"TOKEN": "s3cret-value"})  # fmt: skip
    for path in [*cfg.workspace.rglob("*"), *(tmp_path / "logs").rglob("*")]:
        assert not path.is_file() or b"s3cret" not in path.read_bytes(), path


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_a_secret_build_arg_whose_variable_is_unset_or_empty_fails_its_build_naming_it(
    tmp_path, write_config, monkeypatch, value
):
    """An empty variable is as good as none: the build would go with an empty secret."""
    cfg, graph = secrets_fleet(tmp_path, write_config)
    if value is None:
        monkeypatch.delenv("GB_TEST_NPM_TOKEN", raising=False)
    else:
        monkeypatch.setenv("GB_TEST_NPM_TOKEN", value)
    builder = Recording()
    builds = Builds(cfg, graph, {UPSTREAM: PINNED}, builder, "run", {}, RunSettings(),
                    tmp_path / "logs")  # fmt: skip
    with pytest.raises(Failed) as info:
        builds.work("r.test/app:1", threading.Event())
    assert str(info.value) == (
        "r:Dockerfile: secret build arg TOKEN: $GB_TEST_NPM_TOKEN is not set or empty"
    )
    assert info.value.transient is False and builder.requests == []
