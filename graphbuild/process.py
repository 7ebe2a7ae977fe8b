"""Run one external command (a builder, a gate, a deployer): argv only, logged, cancellable.

Each command runs in its own process group: a Ctrl-C in the terminal reaches
graphbuild, which decides what stops, never the command itself; and stopping
it stops its helpers too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from graphbuild.errors import CommandFailed

# Log lines that mean "try again later", not "this input is broken".
_TRANSIENT_RE = re.compile(
    r"connection refused|connection reset|i/o timeout|tls handshake timeout|timed out|"
    r"temporary failure in name resolution|too many requests|\b429\b|\b50[234]\b|"
    r"unexpected eof|no route to host|service unavailable|bad gateway",
    re.IGNORECASE,
)


def run(
    argv: Sequence[str],
    log: Path,
    cancel: threading.Event,
    what: str,
    timeout: float | None = None,
) -> None:
    """Run one command with its output appended to `log`; stop it if `cancel` is set or
    it outlives `timeout` seconds (a hung scanner or rollout must not hold a sweep)."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()  # what this command writes: earlier attempts are not its output
        try:
            # its own process group: a Ctrl-C in the terminal reaches graphbuild, which
            # lets running work finish, and never the commands themselves
            process = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0,
            )  # fmt: skip
        except OSError as err:
            raise CommandFailed(f"{what}: cannot run {argv[0]} ({err.strerror})") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                late = deadline is not None and time.monotonic() > deadline
                if cancel.is_set() or late:
                    _stop(process)
                    why = f"timed out after {timeout:g} s" if late else "cancelled"
                    raise CommandFailed(f"{what}: {why}", transient=late) from None
    if code != 0:
        with log.open("rb") as written:
            written.seek(max(start, log.stat().st_size - 4000))
            tail = written.read().decode("utf-8", "replace")
        transient = bool(_TRANSIENT_RE.search(tail))
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise CommandFailed(f"{what} exited {code}: {last[:300]}", transient)


def _stop(process: subprocess.Popen) -> None:
    _signal(process, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL)
        process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    """The whole group: a builder's helpers (buildah's chroot children) stop with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
