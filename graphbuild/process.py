"""Run one external command (a builder, a gate, a deployer): argv only, logged, cancellable.

Each command runs in its own process group: a Ctrl-C in the terminal reaches
graphbuild, which decides what stops, never the command itself; and stopping
it stops its helpers too. Nothing a command starts outlives it: when it exits,
what it left running in its group is killed. And it dies with graphbuild: a
`kill -9` of graphbuild takes the command down at once (PR_SET_PDEATHSIG), and
its group, recorded while it runs, is killed by the next graphbuild that finds
the run abandoned (`end_group`), so no orphan pushes over a tag afterwards.

The other side of that Ctrl-C is here too: `on_stop_signals` is how graphbuild
itself takes SIGINT and SIGTERM while it runs builds, gates or deploys.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from graphbuild.errors import CommandFailed

# Log lines that mean "try again later", not "this input is broken".
_TRANSIENT_RE = re.compile(
    r"connection refused|connection reset|i/o timeout|tls handshake timeout|timed out|"
    r"temporary failure in name resolution|too many requests|\b429\b|\b50[234]\b|"
    r"unexpected eof|no route to host|service unavailable|bad gateway",
    re.IGNORECASE,
)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SIG_DFL, _SIG_IGN = 0, 1  # signal.h
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_prctl = _libc.prctl if _libc is not None else None
_set_handler = _libc.signal if _libc is not None else None
if _set_handler is not None:
    _set_handler.argtypes = (ctypes.c_int, ctypes.c_void_p)
    _set_handler.restype = ctypes.c_void_p
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a terminal's Ctrl-C; a pod's or systemd's stop
STOP_GRACE = 20.0  # seconds a stopped command gets between SIGTERM and SIGKILL
END_WAIT = 10.0  # seconds to wait for a killed group of a dead graphbuild to exit


@dataclass(frozen=True)
class Group:
    """A command's process group, told apart from a later one that reuses its number."""

    pgid: int  # the leader's pid
    started: int  # the leader's start time, in clock ticks since boot
    boot: str  # the kernel's boot id: after a reboot nothing of it is left


@dataclass(frozen=True)
class Watch:
    """Told of every command's group as it starts and ends: how a run records its builders."""

    started: Callable[[Group], None]
    ended: Callable[[Group], None]


_WATCH: ContextVar[Watch | None] = ContextVar("graphbuild_process_watch", default=None)


@contextlib.contextmanager
def watched(watch: Watch) -> Iterator[None]:
    """Commands run from this thread inside the block are reported to `watch`; builders need
    not know about it."""
    token = _WATCH.set(watch)
    try:
        yield
    finally:
        _WATCH.reset(token)


def run(
    argv: Sequence[str],
    log: Path,
    cancel: threading.Event,
    what: str,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run one command with its output appended to `log`; stop it if `cancel` is set or
    it outlives `timeout` seconds (a hung scanner or rollout must not hold a sweep).
    `env` is added to graphbuild's environment for it (secrets go there, not in argv), and
    its values are masked in what the command wrote to the log: a tool that prints a secret
    it was given (BuildKit's progress shows a RUN line with its build args expanded) does
    not leave it in graphbuild's workspace.

    The thread that calls this is the command's parent until it returns: the
    kernel's parent-death signal fires when that *thread* ends, and it does not
    end before the command does.
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()  # what this command writes: earlier attempts are not its output
        try:
            # its own process group: a Ctrl-C in the terminal reaches graphbuild, which
            # lets running work finish, and never the commands themselves
            process = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0, preexec_fn=_die_with(os.getpid()),
                env={**os.environ, **env} if env else None,
            )  # fmt: skip
        except OSError as err:
            raise CommandFailed(f"{what}: cannot run {argv[0]} ({err.strerror})") from None
        watch, group = _WATCH.get(), group_of(process.pid)
        try:
            if watch is not None and group is not None:
                watch.started(group)
            _wait(process, cancel, what, timeout)
        finally:
            code = _end(process)
            if watch is not None and group is not None:
                watch.ended(group)
    if env:
        _mask(log, start, env.values())
    if code != 0:
        with log.open("rb") as written:
            written.seek(max(start, log.stat().st_size - 4000))
            tail = written.read().decode("utf-8", "replace")
        transient = bool(_TRANSIENT_RE.search(tail))
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise CommandFailed(f"{what} exited {code}: {last[:300]}", transient)


MASK = b"***"  # what a secret is replaced by in a log


def _mask(log: Path, start: int, secrets: Iterable[str]) -> None:
    """Replace each secret in what the log holds after `start` by MASK, in place."""
    values = sorted({v.encode() for v in secrets if v}, key=len, reverse=True)
    if not values:
        return
    with log.open("r+b") as file:
        file.seek(start)
        written = file.read()
        masked = written
        for value in values:  # the longest first: one secret may contain another
            masked = masked.replace(value, MASK)
        if masked != written:
            file.seek(start)
            file.write(masked)
            file.truncate()


def _die_with(parent: int) -> Callable[[], None] | None:
    """What the child runs before exec: SIGKILL when its parent dies, and exit at once if
    the parent died before that was set. Also, a Ctrl-C that reached the child while it was
    still in graphbuild's process group (between fork and setpgid, which runs before this)
    is dropped: ignoring a pending signal discards it, and the builder would otherwise die
    of it once it unblocks SIGINT. Only libc calls: nothing that could wait on a lock
    another thread held when it forked."""
    prctl, set_handler = _prctl, _set_handler
    if prctl is None or set_handler is None:
        return None

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        set_handler(int(signal.SIGINT), _SIG_IGN)
        set_handler(int(signal.SIGINT), _SIG_DFL)
        if os.getppid() != parent:
            os._exit(255)

    return child


def _wait(
    process: subprocess.Popen, cancel: threading.Event, what: str, timeout: float | None
) -> None:
    """Until the command exits; it is left unreaped, so its group number stays its own."""
    deadline = None if timeout is None else time.monotonic() + timeout
    exits = _pidfd(process.pid)  # readable once it exits: seen at once, not at the next poll
    watch = None
    if exits is not None:  # poll, not select: a busy process's descriptors pass 1024
        watch = select.poll()
        watch.register(exits, select.POLLIN)
    try:
        while not _exited(process.pid):
            late = deadline is not None and time.monotonic() > deadline
            if cancel.is_set() or late:
                _stop(process)
                why = f"timed out after {timeout:g} s" if late else "cancelled"
                raise CommandFailed(f"{what}: {why}", transient=late) from None
            if watch is None:
                cancel.wait(0.1)
            else:
                watch.poll(100)  # ms: a cancel is still seen soon
    finally:
        if exits is not None:
            os.close(exits)


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when `pid` exits (Linux 5.3 and later), or
    None where there is none: then the wait polls."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Has the leader exited? Asked without reaping it: while it is a zombie, its group
    number cannot go to another process, so killing that group is safe."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the group, then SIGKILL to what is left of it after a grace period."""
    _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while not _exited(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _end(process: subprocess.Popen) -> int:
    """Kill whatever the command left in its group, then reap it: its exit code."""
    _signal(process, signal.SIGKILL)
    return process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    """The whole group: a builder's helpers (buildah's chroot children) stop with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


# ---------------------------------------------------------------- groups of a dead graphbuild


def group_of(pid: int) -> Group | None:
    """The group a just-started leader heads, as it can be recognised later."""
    stat = _stat(pid)
    return None if stat is None else Group(pid, stat[3], boot_id())


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def end_group(group: Group) -> list[int]:
    """Kill what is left of a group a dead graphbuild started, and wait for it to exit.

    Only that group: after a reboot, or when its number now heads another
    group, nothing is done. Each member is signalled through a pidfd opened
    and checked first, so a number reused meanwhile is never hit. Returns the
    members still there after END_WAIT seconds (a SIGKILL pending, stuck in
    the kernel).
    """
    if not group.boot or group.boot != boot_id():
        return []
    leader = _stat(group.pgid)
    if leader is not None and leader[3] != group.started:
        return []  # the number is another process's: the old group has no member left
    for pid in _members(group.pgid):
        _kill(pid, group.pgid)
    deadline = time.monotonic() + END_WAIT
    while (left := _members(group.pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _kill(pid: int, pgid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        stat = _stat(pid)  # read after the pidfd is held: it is this process's
        if stat is not None and stat[2] == pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def _members(pgid: int) -> list[int]:
    """Live (not zombie) processes in group `pgid`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ESRCH):
            return None
        raise
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold anything
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


# set by every stop signal a handler of `on_stop_signals` takes: signals are the process's,
# so one taken by an inner step (a sweep's) still tells an outer loop (`listen`) to stop
STOP_REQUESTED = threading.Event()


@contextlib.contextmanager
def on_stop_signals(
    handle: Callable[[int], object], signals: Sequence[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Inside, each of `signals` calls `handle(count)`: 1 for the first received inside, 2 for
    the second (a second Ctrl-C may mean more than the first). The previous handlers come
    back on the way out. Python runs handlers in the main thread only, and refuses to set
    one elsewhere: there this changes nothing, and whoever runs the main thread decides."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        STOP_REQUESTED.set()
        handle(count)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
