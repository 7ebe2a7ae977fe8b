"""The README's "Using it" lines, run as a newcomer pastes them after scripts/demo.sh.

The example's workspace is prepared as the demo leaves it: the bundled
repos.yaml and examples/ copied to a folder, the upstream stand-ins built from
busybox and pushed, the GitOps deploy repository created, and one sweep that
builds, validates and deploys everything. Only the registry differs: the
example's `localhost:5000` becomes a loopback registry on a free port (in the
copied files and in the README's lines), so tests never take the demo's port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .oci import LocalRegistry, free_port
from .site import git, require

ROOT = Path(__file__).resolve().parent.parent
DEMO_HOST = "localhost:5000"  # the example's registry, named in its files and the README
RUN = "RUN"  # the README's placeholder for a run id, taken from `graphbuild runs`


def using_it_lines(readme: str) -> list[str]:
    """Every command line of the fenced blocks in the README's "Using it" section."""
    section = readme.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def command(line: str) -> tuple[dict[str, str], list[str]]:
    """A line's leading VAR=value assignments and its argv, as a shell would read them;
    pipes, redirections and a second command on the line are refused."""
    words = shlex.split(line, comments=True)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    shell = {"|", "||", "&&", ";", "&", ">", ">>", "<"}
    assert words[:1] == ["graphbuild"], f"{line!r}: not a graphbuild command"
    assert "graphbuild" not in words[1:], f"{line!r}: two commands on one line"
    assert not shell & set(words), f"{line!r}: a shell operator"
    return env, words[1:]


def test_the_using_it_lines_are_one_graphbuild_command_each():
    """Lines a newcomer can paste: no two commands on a line, no pipe to a tool not named."""
    lines = using_it_lines((ROOT / "README.md").read_text())
    assert len(lines) >= 10
    for line in lines:
        command(line)


@pytest.fixture
def demo(tmp_path: Path):
    """The example's workspace as scripts/demo.sh leaves it, on a registry of its own."""
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


def until_ctrl_c(root: Path, args: list[str], env: dict[str, str], port: int):
    """A command that serves until Ctrl-C: started, reached on its port, then interrupted."""
    process = subprocess.Popen(
        [sys.executable, "-m", "graphbuild", *args],
        cwd=root, env=environment(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60  # generous: proves it starts, not how fast
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            process.kill()  # exited, or never listened: its output says why
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.timeout(1200)
def test_every_using_it_line_exits_0_on_the_example_after_the_demo(demo):
    """The README says each line exits 0 on the example; RUN is the newest run's id, from
    `graphbuild runs` as the README says."""
    root, host = demo
    readme = (ROOT / "README.md").read_text()
    assert "Each exits 0 on the example." in readme
    port = free_port()
    for line in using_it_lines(readme):
        env, args = command(line.replace(DEMO_HOST, host).replace("8080", str(port)))
        if RUN in args:
            runs = json.loads(graphbuild(root, "runs", "--json").stdout)
            args = [runs[0]["id"] if word == RUN else word for word in args]
        if "until Ctrl-C" in line:
            done = until_ctrl_c(root, args, env, port)
        else:
            done = graphbuild(root, *args, env=env)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, line
        assert done.stdout.strip() or done.stderr.strip(), f"{line}: printed nothing"
