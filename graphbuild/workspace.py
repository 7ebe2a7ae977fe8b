"""The workspace when something is wrong with it: a damaged database, a read-only or full disk.

index.db is derived from the repositories, so a damaged one is removed and rebuilt
by the next read; state.db is history nobody can re-derive, so a damaged one is
kept as it is and the user is told what to do. SQLite finds damage only when a
query reads a damaged page, which may be deep inside any command: so the check
runs around a whole command (`guard.guarded`), costs nothing until SQLite
complains, and then asks SQLite which file is unsound. A workspace that cannot
be written (a read-only mount, a full disk) is one line naming the file, never
a traceback; a run that meets one stops for a resume instead of failing image
after image.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from graphbuild.errors import GraphbuildError

INDEX, STATE = "index.db", "state.db"
MIN_FREE = 4 * 2**20  # bytes: below this a run stops rather than fail image after image
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # and their extended codes
_UNWRITABLE = ("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")
_UNWRITABLE_OS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class StateDamaged(GraphbuildError):
    """state.db cannot be read; it is left exactly as it is."""

    def __init__(self, path: Path, err: BaseException) -> None:
        super().__init__(
            f"{path} is damaged ({err}). It holds the history of digests and builds, so "
            "graphbuild never empties it: restore it from a backup (docs/operating.md), or "
            "move it aside to start a new history."
        )


class Unusable(GraphbuildError):
    """The workspace (or a file graphbuild writes) cannot be written: read-only, full, denied."""


def unusable(err: BaseException, workspace: Path) -> Unusable | None:
    """The one-line error for an OS or SQLite failure to read or write files, else None."""
    if isinstance(err, sqlite3.OperationalError):
        name = getattr(err, "sqlite_errorname", "") or ""
        if name.startswith(_UNWRITABLE):
            return Unusable(
                f"{workspace}: cannot use the workspace's databases ({err}); "
                "graphbuild needs its workspace writable, with free space"
            )
    elif isinstance(err, OSError) and err.errno in _UNWRITABLE_OS:
        return Unusable(f"{err.filename or workspace}: {err.strerror}")  # a flush names none
    return None


def stuck(workspace: Path) -> str | None:
    """Why nothing more can be written to the workspace (read-only, or under MIN_FREE
    free), or None: asked after a failure, to tell a full disk from a broken build."""
    try:
        fs = os.statvfs(workspace)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if fs.f_flag & os.ST_RDONLY:
        return "is on a read-only file system"
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE:
        return f"has {free // 1024} KiB free, under the {MIN_FREE // 2**20} MiB graphbuild needs"
    return None


def damaged(err: BaseException) -> bool:
    """Is this SQLite saying a file is not (or no longer) a sound database?"""
    name = getattr(err, "sqlite_errorname", "") or ""
    return isinstance(err, sqlite3.DatabaseError) and name.startswith(_DAMAGE)


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to one of the workspace's databases. The path goes into a URI,
    so it is quoted: a workspace under `ws#1/` or `a?b/` is still that folder."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)


def sound(path: Path) -> bool:
    """SQLite's own quick check of every page; a file it cannot even open is not sound."""
    try:
        db = read_only(path)
        try:
            row: tuple[str] | None = db.execute("PRAGMA quick_check(1)").fetchone()
            return row == ("ok",)
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        return not damaged(err)


def discard_index(path: Path, err: BaseException, note: Callable[[str], None]) -> None:
    """Remove a damaged index.db (and its WAL) so that the next open builds a new one."""
    note(f"{path} is damaged ({err}); it only holds derived data: rebuilding it.")
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
