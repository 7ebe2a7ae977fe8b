"""run(): one external command, logged, cancellable, time-limited, in its own process group.

Real small commands stand in for builders, scanners and deployers.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from graphbuild.errors import CommandFailed
from graphbuild.process import (
    Group,
    Watch,
    _die_with,
    boot_id,
    end_group,
    group_of,
    on_stop_signals,
    run,
    watched,
)

from .site import alive


def never():
    return threading.Event()


def test_run_appends_the_command_and_its_output_to_the_log(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("earlier\n")
    run(["sh", "-c", "echo out; echo err >&2"], log, never(), "t")
    run(["/bin/true"], log, never(), "t")
    assert log.read_text() == "earlier\n$ sh -c echo out; echo err >&2\nout\nerr\n$ /bin/true\n"


def test_run_works_in_a_process_holding_more_than_1024_files(tmp_path):
    """A long sweep holds many files and sockets; the descriptor that says a command
    exited then numbers past 1024, which select() cannot watch."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this machine allows {hard} open files, under 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        run(["/bin/true"], tmp_path / "build.log", never(), "t")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_run_failure_names_the_exit_code_and_last_line(tmp_path):
    log = tmp_path / "build.log"
    argv = ["sh", "-c", "echo step 1; echo 'error: COPY failed: no such file'; echo; exit 3"]
    with pytest.raises(CommandFailed) as info:
        run(argv, log, never(), "buildah bud app")
    assert str(info.value) == "buildah bud app exited 3: error: COPY failed: no such file"
    assert info.value.transient is False
    assert "step 1\n" in log.read_text()


def test_the_secrets_a_command_is_given_are_masked_in_its_log_and_its_failure(tmp_path):
    """BuildKit's progress shows `RUN` lines with build args expanded: a secret passed in the
    environment must not stay in the workspace's log, nor in the failure's message."""
    log = tmp_path / "build.log"
    log.write_text("earlier s3cret-token\n")  # not this command's output: left as it was
    env = {"TOKEN": "s3cret-token", "INNER": "cret", "EMPTY": ""}
    script = 'echo "#5 RUN npm ci --token=$TOKEN"; echo "last: $TOKEN"; exit 1'
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", script], log, never(), "docker buildx app", env=env)
    text = log.read_text()
    assert "s3cret" not in text.split("\n", 1)[1] and "cret" not in text.split("\n", 1)[1]
    assert "#5 RUN npm ci --token=***\nlast: ***\n" in text
    assert text.startswith("earlier s3cret-token\n")
    assert str(info.value) == "docker buildx app exited 1: last: ***"


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


# ---------------------------------------------------------------- nothing outlives graphbuild


def gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


KILLED = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from graphbuild.process import run

argv = ["sh", "-c", 'echo $$ > "$0"; exec sleep 60', sys.argv[2]]
with ThreadPoolExecutor(2) as pool:  # as the scheduler runs builds: in a worker thread
    pool.submit(run, argv, Path(sys.argv[1]), threading.Event(), "t").result()
"""


def test_a_command_dies_when_graphbuild_is_killed(tmp_path):
    """kill -9 of graphbuild runs no cleanup: the kernel must end the command (a builder left
    running would push over the tag after a resume)."""
    pidfile = tmp_path / "pid"
    graphbuild = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "l"), pidfile])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline and graphbuild.poll() is None
            time.sleep(0.05)
        command = int(pidfile.read_text())
        graphbuild.kill()
        graphbuild.wait()
        assert gone(command), "the command outlived graphbuild"
    finally:
        graphbuild.kill()
        if pidfile.exists() and pidfile.read_text().strip() and alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_the_parent_death_signal_follows_the_thread_that_started_the_command():
    """The kernel's rule, and why run() waits in the thread that started the command: when
    that thread ends, the command is killed, though graphbuild lives on."""
    started: list[subprocess.Popen] = []

    def start() -> None:  # starts the command and ends without waiting for it
        started.append(subprocess.Popen(["sleep", "60"], preexec_fn=_die_with(os.getpid())))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    try:
        assert started[0].wait(timeout=10) == -signal.SIGKILL
    finally:
        started[0].kill()
        started[0].wait()


def test_a_command_lives_on_while_other_threads_end(tmp_path):
    """The parent-death signal fires when the *thread* that started the command ends: other
    builds' threads, starting commands and ending meanwhile, must not kill it."""
    log = tmp_path / "long"
    outcome: list[object] = []

    def long_build():
        try:
            run(["sh", "-c", "sleep 1; echo finished"], log, never(), "long")
            outcome.append("ok")
        except CommandFailed as err:
            outcome.append(err)

    builder = threading.Thread(target=long_build)
    builder.start()
    for i in range(10):
        other = threading.Thread(target=run, args=(["true"], tmp_path / f"o{i}", never(), "o"))
        other.start()
        other.join()
    builder.join()
    assert outcome == ["ok"]
    assert log.read_text().endswith("finished\n")


def test_what_a_command_leaves_running_is_killed_when_it_exits(tmp_path):
    """A helper still in the command's group after it exits (a push in the background)
    must not outlive it."""
    pidfile = tmp_path / "helper"
    run(["sh", "-c", f'sleep 60 & echo $! > "{pidfile}"'], tmp_path / "l", never(), "t")
    assert gone(int(pidfile.read_text()))


def test_a_watch_hears_of_each_command_group(tmp_path):
    """How a run records what to kill should graphbuild die: the group and its leader's start."""
    heard: list[tuple[str, Group]] = []
    watch = Watch(lambda g: heard.append(("started", g)), lambda g: heard.append(("ended", g)))
    log = tmp_path / "l"
    with watched(watch):
        run(["sh", "-c", "cut -d' ' -f5,22 /proc/$$/stat"], log, never(), "t")
    run(["true"], log, never(), "t")  # outside the block: not heard
    pgid, started = map(int, log.read_text().splitlines()[1].split())
    group = Group(pgid, started, boot_id())
    assert heard == [("started", group), ("ended", group)]


def spawn_group(tmp_path):
    """A process group as a killed graphbuild leaves it: its leader gone, a helper running."""
    pidfile = tmp_path / "helper"
    leader = subprocess.Popen(
        ["sh", "-c", f'sleep 60 & echo $! > "{pidfile}"; wait'], process_group=0
    )
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.02)
    group = group_of(leader.pid)
    leader.kill()
    leader.wait()
    return group, int(pidfile.read_text())


def test_end_group_kills_what_a_dead_graphbuild_left_running(tmp_path):
    group, helper = spawn_group(tmp_path)
    try:
        assert alive(helper)
        assert end_group(group) == []
        assert not alive(helper)
    finally:
        if alive(helper):
            os.kill(helper, signal.SIGKILL)


@pytest.mark.parametrize("change", ["started", "boot"])
def test_end_group_leaves_a_group_it_cannot_prove_is_that_one(tmp_path, change):
    """A group number heading a process started later, or a group from before a reboot, is
    someone else's."""
    group, helper = spawn_group(tmp_path)
    other = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        mine = group_of(other.pid)
        assert mine is not None and group is not None
        stranger = replace(mine, started=mine.started - 1) if change == "started" else mine
        stranger = replace(stranger, boot="another-boot") if change == "boot" else stranger
        assert end_group(stranger) == []
        assert alive(other.pid)
        assert end_group(replace(group, boot="another-boot")) == [] and alive(helper)
    finally:
        other.kill()
        other.wait()
        os.kill(helper, signal.SIGKILL)


def test_stop_signals_reach_the_handler_counted_and_the_old_handlers_come_back():
    seen: list[int] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with on_stop_signals(seen.append):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # the second, whichever signal it is
        signal.raise_signal(signal.SIGINT)
    assert seen == [1, 2, 3]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_stop_signals_only_the_ones_asked_for():
    seen: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    with on_stop_signals(seen.append, (signal.SIGTERM,)):
        assert signal.getsignal(signal.SIGINT) is before
        signal.raise_signal(signal.SIGTERM)
    assert seen == [1]


def test_stop_signals_restored_when_the_handler_raises():
    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), on_stop_signals(interrupt, (signal.SIGTERM,)):
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_signals_change_nothing_outside_the_main_thread():
    """Python calls signal handlers in the main thread only; elsewhere it refuses to set one."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    inside: list[dict] = []

    def worker() -> None:
        with on_stop_signals(lambda count: None):
            inside.append({sig: signal.getsignal(sig) for sig in before})

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert inside == [before]
