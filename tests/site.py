"""Support for tests that run graphbuild as users run it: real tools, git remotes, a fleet.

Test files import from here (and from servers.py, oci.py, ...), never from one another.
conftest.py builds its fixtures from these.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .oci import OCI_MANIFEST

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def require(tool: str) -> str:
    """The tool's path; a missing tool fails the test under CI=true and skips it elsewhere."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (the README's test command installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def git(cwd: Path, *args: str) -> str:
    """git in `cwd` as a test author, not as whoever runs the tests; its stdout."""
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@dataclass
class Remote:
    """A bare repository on disk, and a work tree that commits and pushes to it."""

    url: Path
    work: Path

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


def make_remote(root: Path, name: str, files: dict[str, str]) -> Remote:
    """A bare repository `root/remotes/NAME.git` with one commit of `files`, pushed from the
    work tree `root/work/NAME` (the `remotes` fixture's, and the benchmarks')."""
    url, work = root / "remotes" / f"{name}.git", root / "work" / name
    url.mkdir(parents=True)
    work.mkdir(parents=True)
    git(url, "init", "-q", "--bare", "-b", "main")
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(url))
    made = Remote(url, work)
    made.commit(dict(files), "initial")
    return made


def graphbuild(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m graphbuild ARGS` in `cwd`, as a user runs it: no config from the environment
    unless `env` is given."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    full_env.pop("GRAPHBUILD_CONFIG", None) if env is None else None
    return subprocess.run(
        [sys.executable, "-m", "graphbuild", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def alive(pid: int) -> bool:
    """Running or stopped; not gone, not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Runner:
    """graphbuild run as users run it, in a folder holding its repos.yaml."""

    def __init__(self, root: Path, registry) -> None:
        self.root, self.registry, self.host = root, registry, registry.host

    def write_config(self) -> None:
        (self.root / "repos.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        env.pop("GRAPHBUILD_CONFIG", None)
        return subprocess.Popen(
            [sys.executable, "-m", "graphbuild", *args],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # a SIGKILL of the group takes buildah down with it
        )  # fmt: skip

    def gb(self, *args: str) -> subprocess.CompletedProcess:
        process = self.start(*args)
        out, err = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def run(self, *args: str, code: int = 0) -> dict:
        """A sweep/rebuild/resume with --json: its run document."""
        done = self.gb(*args, "--json")
        assert done.returncode == code, done.stderr + done.stdout
        return json.loads(done.stdout)

    def manifest(self, ref: str) -> dict:
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        answer = self.registry.http.get(
            f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        answer.raise_for_status()
        return {"digest": answer.headers["Docker-Content-Digest"], **answer.json()}

    def digest(self, ref: str) -> str:
        return self.manifest(ref)["digest"]

    def files(self, ref: str) -> dict[str, bytes]:
        """Every regular file in the image's layers, by path."""
        repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
        found = {}
        for layer in self.manifest(ref)["layers"]:
            blob = self.registry.http.get(f"/v2/{repo}/blobs/{layer['digest']}")
            blob.raise_for_status()
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.content))) as tar:
                for member in tar:
                    if member.isfile():
                        data = tar.extractfile(member)
                        assert data is not None
                        found[member.name] = data.read()
        return found


def local_build(host: str, root: Path) -> dict:
    """repos.yaml's `registries:` and `builder:` for a test fleet: the loopback registry
    over http, and buildah storing its images under `root`/buildah."""
    storage = root / "buildah"
    return {"registries": {host: {"insecure": True}},
            "builder": {"kind": "buildah", "root": str(storage / "root"),
                        "runroot": str(storage / "run")}}  # fmt: skip


def base_and_apps(host: str, platform: Path | str, apps: Path | str) -> list[dict]:
    """repos.yaml's `repos:` for a fleet of `platform/base` and an image per folder of
    the apps repository, each tagged 1."""
    return [
        {"name": "platform", "url": str(platform), "images": [
            {"image": f"{host}/platform/base", "dockerfile": "base/Dockerfile",
             "context": "base", "tags": ["1"]}]},
        {"name": "apps", "url": str(apps), "images": [
            {"image": f"{host}/apps/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]}]},
    ]  # fmt: skip


# a Deployment that runs one image: what a GitOps deploy repository holds
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  template:
    spec:
      containers:
        - name: {name}
          image: {image}
"""


class Site(Runner):
    """The fleet under test: remotes, a repos.yaml, and graphbuild run as users run it."""

    def __init__(self, root: Path, registry, remotes) -> None:
        super().__init__(root, registry)
        h = self.host
        self.upstream = f"{h}/upstream/base:1"
        self.push_upstream("upstream v1")
        self.platform = remotes("platform", {
            "base/Dockerfile": f"FROM {h}/upstream/base:1\nCOPY f /platform-base\n",
            "base/f": "base",
            "mid/Dockerfile": f"ARG REG={h}\nFROM ${{REG}}/platform/base:1\nCOPY f /mid\n",
            "mid/f": "mid",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "app/Dockerfile": f"FROM {h}/platform/mid:1 AS run\n"
                              f"COPY --from={h}/upstream/base:1 /content.txt /from-upstream\n"
                              "COPY f /app\n",
            "app/f": "app",
            "solo/Dockerfile": "FROM scratch\nCOPY f /solo\n",
            "solo/f": "solo",
        })  # fmt: skip
        self.base, self.mid = f"{h}/platform/base:1", f"{h}/platform/mid:1"
        self.app, self.solo = f"{h}/apps/app:1", f"{h}/apps/solo:1"
        self.config = {
            **local_build(h, root),
            "repos": [
                {"name": "platform", "url": str(self.platform.url), "images": [
                    {"image": f"{h}/platform/base", "dockerfile": "base/Dockerfile",
                     "context": "base", "tags": ["1", "latest"]},
                    {"image": f"{h}/platform/mid", "dockerfile": "mid/Dockerfile",
                     "context": "mid", "tags": ["1"]},
                ]},
                {"name": "apps", "url": str(self.apps.url), "images": [
                    {"image": f"{h}/apps/{{dir}}", "dockerfile": "*/Dockerfile", "tags": ["1"]},
                ]},
            ],
        }  # fmt: skip
        self.write_config()

    def image_spec(self, repo: str, image: str) -> dict:
        """The repos.yaml entry of one image, to change it."""
        (entry,) = [r for r in self.config["repos"] if r["name"] == repo]
        return next(i for i in entry["images"] if i["image"].endswith(image))

    def push_upstream(self, content: str) -> str:
        self.upstream_digest = self.registry.image("upstream/base", "1", content=content)
        return self.upstream_digest


def outcomes(run: dict) -> dict[str, str]:
    return {node["node"]: node["status"] for node in run["nodes"]}


def by_node(run: dict) -> dict[str, dict]:
    return {node["node"]: node for node in run["nodes"]}
