"""run(): one external command, logged, cancellable, time-limited, in its own process group.

Real small commands stand in for builders, scanners and deployers.
"""

import os
import threading
import time
from pathlib import Path

import pytest

from graphbuild.errors import CommandFailed
from graphbuild.process import run


def never():
    return threading.Event()


def test_run_appends_the_command_and_its_output_to_the_log(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("earlier\n")
    run(["sh", "-c", "echo out; echo err >&2"], log, never(), "t")
    run(["/bin/true"], log, never(), "t")
    assert log.read_text() == "earlier\n$ sh -c echo out; echo err >&2\nout\nerr\n$ /bin/true\n"


def test_run_failure_names_the_exit_code_and_last_line(tmp_path):
    log = tmp_path / "build.log"
    argv = ["sh", "-c", "echo step 1; echo 'error: COPY failed: no such file'; echo; exit 3"]
    with pytest.raises(CommandFailed) as info:
        run(argv, log, never(), "buildah bud app")
    assert str(info.value) == "buildah bud app exited 3: error: COPY failed: no such file"
    assert info.value.transient is False
    assert "step 1\n" in log.read_text()


@pytest.mark.parametrize(
    ("line", "transient"),
    [
        ("dial tcp 10.0.0.1:443: connect: connection refused", True),
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        ("toomanyrequests: 429 Too Many Requests", True),
        ("net/http: TLS handshake timeout", True),
        ("error: Dockerfile:3: unknown instruction: FORM", False),
        ("listening on port 5030", False),
    ],
)
def test_run_classifies_transient_failures(tmp_path, line, transient):
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", 'echo "$1"; exit 1', "sh", line], tmp_path / "l", never(), "t")
    assert info.value.transient is transient
    assert str(info.value) == f"t exited 1: {line}"


@pytest.mark.parametrize(
    ("earlier", "argv"),
    [
        pytest.param(
            "",
            ["sh", "-c", "echo 'manifest unknown'; exit 1", "sh", "app:build-503"],
            id="argv-names-503",
        ),
        pytest.param(
            "pull: connection refused\n",
            ["sh", "-c", "echo 'syntax error'; exit 1"],
            id="earlier-attempt",
        ),
    ],
)
def test_run_classifies_only_this_commands_output(tmp_path, earlier, argv):
    log = tmp_path / "l"
    log.write_text(earlier)
    with pytest.raises(CommandFailed) as info:
        run(argv, log, never(), "t")
    assert info.value.transient is False


def test_run_missing_executable_cannot_run(tmp_path):
    with pytest.raises(CommandFailed, match=r"^kaniko: cannot run /nonexistent/kaniko \(") as info:
        run(["/nonexistent/kaniko", "--x"], tmp_path / "l", never(), "kaniko")
    assert info.value.transient is False


def test_run_cancel_stops_the_command_promptly(tmp_path):
    pidfile = tmp_path / "pid"
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailed, match=r"^t: cancelled$"):
            run(["sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 30'], tmp_path / "l", cancel, "t")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running
        os.kill(int(pidfile.read_text()), 0)


def test_run_cancelled_before_it_starts(tmp_path):
    cancel = threading.Event()
    cancel.set()
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="cancelled"):
        run(["sleep", "30"], tmp_path / "l", cancel, "t")
    assert time.monotonic() - started < 5


def test_a_build_runs_in_its_own_process_group(tmp_path):
    """A terminal's Ctrl-C goes to graphbuild's group only: running builds are left to finish."""
    log = tmp_path / "l"
    run(["sh", "-c", "cut -d' ' -f5 /proc/$$/stat"], log, never(), "t")
    group = int(log.read_text().splitlines()[-1])
    assert group != os.getpgrp()


def test_cancel_stops_the_builders_children_too(tmp_path):
    """buildah runs helpers; a cancelled build must not leave them pushing."""
    pidfile = tmp_path / "child"
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    script = f'sleep 30 & echo $! > "{pidfile}"; wait'
    with pytest.raises(CommandFailed, match="cancelled"):
        run(["sh", "-c", script], tmp_path / "l", cancel, "t")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel reaps it once its parent is gone
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_run_stops_a_command_that_outlives_its_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"^scan: timed out after 0.5 s$") as info:
        run(["sleep", "30"], tmp_path / "l", never(), "scan", timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.transient is True
