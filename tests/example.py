"""The bundled example as scripts/demo.sh leaves it, for the tests that use it.

The bundled repos.yaml and examples/ are copied to a folder, the upstream stand-ins built
from busybox and pushed, the GitOps deploy repository created, and one sweep builds,
validates and deploys everything. Only the registry differs: the example's
`localhost:5000` becomes a loopback registry on a free port (in the copied files), so
tests never take the demo's port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .oci import LocalRegistry
from .site import git, require

ROOT = Path(__file__).resolve().parent.parent
DEMO_HOST = "localhost:5000"  # the example's registry, named in its files and the README


@contextmanager
def prepared(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The example's workspace as scripts/demo.sh leaves it, on a registry of its own:
    (the example's folder, the registry's host)."""
    for tool in ("git", "buildah", "busybox"):
        require(tool)
    registry = LocalRegistry(tmp_path / "registry").start()
    try:
        root = tmp_path / "example"
        root.mkdir()
        shutil.copy(ROOT / "repos.yaml", root)
        shutil.copytree(ROOT / "examples", root / "examples")
        for path in [root / "repos.yaml", *(root / "examples").rglob("*")]:
            if path.is_file() and DEMO_HOST in (text := path.read_text()):
                path.write_text(text.replace(DEMO_HOST, registry.host))
        demo_dir = root / ".graphbuild/demo"
        for name in ("os", "toolbox"):  # scripts/demo.sh push_upstream
            context = demo_dir / f"upstream-{name}"
            shutil.copytree(root / "examples/upstream" / name, context)
            shutil.copy(Path(shutil.which("busybox") or ""), context / "busybox")
            (context / "release").write_text(f"{name} 1\n")
            ref = f"{registry.host}/upstream/{name}:1"
            buildah(root, "bud", "--isolation", "chroot", "--quiet", "-t", ref, str(context))
            buildah(root, "push", "--tls-verify=false", "--quiet", ref)
        deploy = demo_dir / "deploy.git"  # repos.yaml's deploy repository
        deploy.mkdir(parents=True)
        git(deploy, "init", "-q", "--bare", "-b", "main")
        work = demo_dir / "deploy-work"
        shutil.copytree(root / "examples/deploy", work)
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "The example's manifests")
        git(work, "push", "-q", str(deploy), "main")
        swept = graphbuild(root, "sweep")
        assert swept.returncode == 0, swept.stdout + swept.stderr
        yield root, registry.host
    finally:
        registry.stop()


def buildah(root: Path, *args: str) -> None:
    """buildah on the example's image store (repos.yaml's builder), as scripts/demo.sh runs it."""
    store = root / ".graphbuild/containers"
    subprocess.run(
        ["buildah", "--storage-driver", "vfs", "--root", str(store / "storage"),
         "--runroot", str(store / "run"), *args],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(extra or {})}
    env.pop("GRAPHBUILD_CONFIG", None)
    return env


def graphbuild(root: Path, *args: str, env: dict[str, str] | None = None):
    """`graphbuild ARGS` in the example's folder, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "graphbuild", *args],
        cwd=root, env=environment(env), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
