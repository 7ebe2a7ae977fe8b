"""Exclusive locks on workspace files: two syncs never write one clone, two sweeps never run."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from graphbuild.errors import BUSY, GraphbuildError


class Locked(GraphbuildError):
    """Another process holds the lock and the caller chose not to wait: busy, not broken,
    so a cron wrapper can tell "try later" from a failure."""

    exit_code = BUSY


@contextmanager
def exclusive(
    path: Path, on_wait: Callable[[str], None] | None = None, wait: bool = True
) -> Iterator[None]:
    """Hold `path` locked. If another process holds it: call `on_wait(holder)` and wait,
    or raise Locked naming the holder when `wait` is false.

    flock locks die with their process, so a crash never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not wait:
                raise Locked(f"{path} is held by {holder}") from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} since {now}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
