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
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import example
from .example import DEMO_HOST, ROOT, environment, graphbuild
from .oci import free_port

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
    with example.prepared(tmp_path) as prepared:
        yield prepared


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
