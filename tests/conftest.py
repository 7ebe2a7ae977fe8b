"""Real parts for tests: git repositories on disk as remotes, configs written to tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from .site import Remote, make_remote, require


@pytest.fixture
def remotes(tmp_path: Path):
    """`remotes(name, files)` makes a bare git repository with one commit of `files`."""
    require("git")

    def make(name: str, files: dict[str, str]) -> Remote:
        return make_remote(tmp_path, name, files)

    return make


@pytest.fixture
def write_config(tmp_path: Path):
    """`write_config(repos)` writes repos.yaml into the test's folder and returns its path."""

    def write(repos: list[dict], **top) -> Path:
        path = tmp_path / "repos.yaml"
        path.write_text(yaml.safe_dump({"repos": repos, **top}, sort_keys=False))
        return path

    return write


@pytest.fixture
def registry(tmp_path):
    """A real docker-registry on 127.0.0.1 (plain http), stopped after the test."""
    from .oci import LocalRegistry

    require("docker-registry")
    running = LocalRegistry(tmp_path / "registry").start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def identity_server():
    """One managed-identity endpoint for the session: stopping one waits out its 0.5 s poll
    interval."""
    from .servers import ManagedIdentity

    server = ManagedIdentity("entra-xyz").start()
    yield server
    server.stop()


@pytest.fixture
def identity(identity_server, monkeypatch):
    """The managed-identity endpoint DefaultAzureCredential finds through the environment."""
    identity_server.token, identity_server.requests[:] = "entra-xyz", []
    for name in [k for k in os.environ if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))]:
        monkeypatch.delenv(name)
    for name, value in identity_server.environment().items():
        monkeypatch.setenv(name, value)
    return identity_server


@pytest.fixture
def arm(tmp_path, registry, identity):
    """Azure Resource Manager for one registry, answered on loopback (tests/azure.py)."""
    from .azure import FakeArm

    server = FakeArm(tmp_path / "arm", registry).start()
    yield server
    server.stop()
    assert server.errors == []  # the fake itself never broke


@pytest.fixture
def project(tmp_path):
    """Two local-folder repositories: r.test/base, and r.test/app built on it."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base/Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text("FROM r.test/base:1 AS b\nFROM b\n")
    (tmp_path / "repos.yaml").write_text(
        "repos:\n"
        "  - name: base\n    path: base\n    images: [{image: r.test/base, tags: ['1']}]\n"
        "  - name: app\n    path: app\n    images: [{image: r.test/app}]\n"
    )
    return tmp_path


@pytest.fixture(scope="session")
def example_workspace(tmp_path_factory):
    """The bundled example's workspace after a real sweep (tests/example.py), built once
    for the web view's tests, which read it: (its folder, its registry's host)."""
    from . import example

    with example.prepared(tmp_path_factory.mktemp("example")) as prepared:
        yield prepared
