"""The blast radius of a repository is itself (design rule 11), end to end.

A fleet of four repositories and a GitOps deploy repository is built and
deployed once. Then one repository, `hostile`, gets every hostile file at
once (an ARG that doubles 40 times, a pathological `${V//pattern/}`, a build
context that is a symlink out of the repository, a context holding a
symlink to /etc/passwd), the deploy repository gets a YAML file nested 600
levels deep, the upstream base moves, and one real `graphbuild sweep` runs.
Between its sync and its deploy (from a test gate, as a push would land) a
manifest is replaced by a symlink to a file outside the deploy clone.

Every other image must be rebuilt, validated and deployed; each hostile
file is named with its repository, path and line; nothing is written
through the symlink; the sweep exits 1, in bounded time, with no traceback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .site import DEPLOYMENT, Runner, git, local_build, require

pytestmark = pytest.mark.timeout(600)

ARG_DOUBLING = "ARG A0=xx\n" + "".join(
    f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}\n" for i in range(1, 41)
)
PATTERN = "ARG V=" + "a" * 30000 + "\n" + "FROM alpine${V//*a*a*a*a*a*a*b/}\n"
SWAP = """\
# once: replace the canary's manifest by a symlink to a file outside the clone, and push
exec 9>"$1.lock"; flock 9
cd "$1"
[ -L envs/dev/canary.yaml ] && exit 0
git pull -q --rebase origin main
rm envs/dev/canary.yaml
ln -s "$2" envs/dev/canary.yaml
git add -A
git -c user.name=intruder -c user.email=i@example.invalid commit -qm "canary points out"
git push -q origin HEAD:main
"""


class Fleet(Runner):
    def __init__(self, root: Path, registry, remotes) -> None:
        super().__init__(root, registry)
        h = self.host
        self.upstream = self.registry.image("upstream/base", "1", content="upstream v1")
        base = f"{h}/platform/base:1"
        self.platform = remotes("platform", {
            "base/Dockerfile": f"FROM {h}/upstream/base:1\nCOPY f /base\n", "base/f": "base",
        })  # fmt: skip
        self.apps = remotes("apps", {
            "web/Dockerfile": f"FROM {base}\nCOPY f /web\n", "web/f": "web",
            "api/Dockerfile": f"FROM {base}\nCOPY f /api\n", "api/f": "api",
        })  # fmt: skip
        self.hostile = remotes("hostile", {
            "good/Dockerfile": f"FROM {base}\nCOPY f /good\n", "good/f": "good",
        })  # fmt: skip
        names = (("platform", "base"), ("apps", "web"), ("apps", "api"), ("hostile", "good"))
        self.images = {name: f"{h}/{repo}/{name}:1" for repo, name in names}
        self.deploy = remotes(
            "deploy",
            {
                f"envs/dev/{name}.yaml": DEPLOYMENT.format(name=name, image=self.images[name])
                for name in ("web", "api", "good")
            }
            | {"envs/dev/canary.yaml": DEPLOYMENT.format(name="canary", image=self.images["api"])},
        )
        self.outside = root / "outside.yaml"
        self.config = {
            **local_build(h, root),
            "repos": [
                {"name": "platform", "url": str(self.platform.url), "images": [
                    {"image": f"{h}/platform/base", "dockerfile": "base/Dockerfile",
                     "tags": ["1"]}]},
                *({"name": name, "url": str(remote.url), "images": [
                    {"image": f"{h}/{name}/{{dir}}", "dockerfile": "*/Dockerfile",
                     "tags": ["1"]}]}
                  for name, remote in (("apps", self.apps), ("hostile", self.hostile))),
            ],
            "deployments": {
                "rings": [{"name": "dev"}],
                "repos": [{"name": "deploy", "url": str(self.deploy.url), "branch": "main",
                           "rings": {"dev": ["envs/dev/**"]}}],
            },
        }  # fmt: skip
        self.write_config()

    def shown(self, path: str) -> str:
        """A file of the deploy repository's main branch, byte for byte."""
        return subprocess.run(["git", "--git-dir", str(self.deploy.url), "show", f"main:{path}"],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip

    def arm(self) -> None:
        """The hostile files, the upstream bump, and the gate that swaps the manifest."""
        h = self.host
        self.hostile.commit({
            "argbomb/Dockerfile": ARG_DOUBLING + f"FROM {h}/platform/base:${{A40}}\n",
            "pattern/Dockerfile": PATTERN,
            "linkctx/Dockerfile": f"FROM {h}/platform/base:1\nCOPY . /ctx\n",
            "linkout/Dockerfile": f"FROM {h}/platform/base:1\nCOPY passwd /passwd\n",
        }, "hostile files")  # fmt: skip
        (self.hostile.work / "linkctx" / "ctx").symlink_to("/etc")
        (self.hostile.work / "linkout" / "passwd").symlink_to("/etc/passwd")
        self.hostile.commit({}, "hostile symlinks")
        self.config["repos"][2]["images"].append(  # the context itself is the symlink
            {"image": f"{h}/hostile/ctxlink", "dockerfile": "linkctx/Dockerfile",
             "context": "linkctx/ctx", "tags": ["1"]})  # fmt: skip
        git(self.deploy.work, "pull", "-q", "--ff-only", "origin", "main")  # graphbuild's
        self.deploy.commit({"envs/dev/deep.yaml": "a: " + "[" * 600 + "]" * 600 + "\n"}, "deep")
        self.outside.write_text(self.shown("envs/dev/canary.yaml"))
        self.config["gates"] = [{"name": "intruder", "test": [
            "sh", "-c", SWAP, "sh", str(self.deploy.work), str(self.outside)]}]  # fmt: skip
        self.write_config()
        self.registry.image("upstream/base", "1", content="upstream v2: the security fix")


@pytest.fixture
def fleet(tmp_path, registry, remotes):
    require("buildah")
    require("git")
    require("flock")
    return Fleet(tmp_path, registry, remotes)


def test_hostile_files_in_one_repository_cost_only_their_own_images(fleet):
    first = fleet.run("sweep")
    assert {n["node"] for n in first["nodes"]} == set(fleet.images.values())
    before = {name: fleet.digest(ref) for name, ref in fleet.images.items()}
    fleet.arm()
    outside = fleet.outside.read_text()

    done = fleet.gb("sweep", "--json")  # bounded: gb waits 300 s at most, then fails
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    run = json.loads(done.stdout)

    # every other image: rebuilt on the new upstream and deployed
    nodes = {n["node"]: n for n in run["nodes"]}
    for name, ref in fleet.images.items():
        assert nodes[ref]["status"] == "succeeded", nodes[ref]
        assert fleet.digest(ref) != before[name]
    for name in ("web", "api", "good"):
        pinned = f"{fleet.images[name]}@{fleet.digest(fleet.images[name])}"
        assert fleet.shown(f"envs/dev/{name}.yaml") == DEPLOYMENT.format(name=name, image=pinned)

    # each hostile file named with its repository, path and line
    assert "  hostile:argbomb/Dockerfile:17: ARG A16 expands to more than 64 KiB\n" in done.stderr
    assert "  hostile:pattern/Dockerfile:2: 'alpineaaaa" in done.stderr
    h = fleet.host
    failed = {ref[len(f"{h}/hostile/") : -2]: node["error"] for ref, node in nodes.items()
              if node["status"] == "failed"}  # fmt: skip
    not_sent = "graphbuild does not send it to a builder"
    assert failed == {
        "ctxlink": "hostile:linkctx/ctx: the build context is a symlink (to /etc), not a folder; "
                   "graphbuild sends a builder only a folder of the repository",
        "linkctx": f"hostile:linkctx/ctx: symlink points outside the repository (/etc); {not_sent}",
        "linkout": "hostile:linkout/passwd: symlink points outside the repository (/etc/passwd); "
                   f"{not_sent}",
    }  # fmt: skip
    synced = fleet.gb("sync")
    assert "deploy:envs/dev/deep.yaml:1: not read: nested deeper than 100 levels" in synced.stdout

    # the manifest swapped for a symlink after the sync: refused, nothing written through it
    canary = [d for d in run["deploys"] if "canary" in d["name"]]
    assert [d["status"] for d in canary] == ["failed"]
    assert "envs/dev/canary.yaml: refused: it is a symlink" in canary[0]["detail"]
    assert fleet.outside.read_text() == outside
    assert subprocess.run(["git", "--git-dir", str(fleet.deploy.url), "cat-file", "-p",
                           "main:envs/dev/canary.yaml"], capture_output=True,
                          text=True).stdout == str(fleet.outside)  # fmt: skip
