"""The guard every command runs in: a damaged index.db is rebuilt and the command run again;
a damaged state.db or an unwritable workspace is one clear line, never a traceback.

SQLite finds damage only when a query reads a damaged page, anywhere in a command, so
the guard wraps the whole command and costs nothing until SQLite complains.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from graphbuild import errors, report, workspace
from graphbuild.config import Config
from graphbuild.state import State, now

T = TypeVar("T")


def guarded(
    config: Config, command: Callable[[], T], note: Callable[[str], None] = report.note
) -> T:
    """Run a command; if SQLite found a damaged index.db, rebuild it and run the command
    once more (unless it had started a run: that is resumed, not repeated), and if it found
    a damaged state.db, say so (StateDamaged) and touch nothing. A file that cannot be
    written is one line (Unusable)."""
    started = now()
    try:
        return command()
    except (sqlite3.DatabaseError, OSError) as err:
        _recover(config.workspace, err, note)
    if ran := _runs_since(config.workspace, started):
        raise errors.GraphbuildError(f"run {ran} had started when the index was found "
                                     f"damaged: `graphbuild resume {ran}` finishes it")  # fmt: skip
    try:
        return command()
    except (sqlite3.DatabaseError, OSError) as err:
        if (problem := workspace.unusable(err, config.workspace)) is not None:
            raise problem from None
        if workspace.damaged(err):
            raise errors.GraphbuildError(f"{config.workspace}: SQLite still finds damage after "
                                         f"index.db was rebuilt ({err})") from None  # fmt: skip
        raise


def _recover(
    folder: Path, err: sqlite3.DatabaseError | OSError, note: Callable[[str], None]
) -> None:
    """Return only when the damage was index.db's and it is gone; else raise what to say."""
    if (problem := workspace.unusable(err, folder)) is not None:
        raise problem from None
    if not workspace.damaged(err):
        raise err
    state, index = folder / workspace.STATE, folder / workspace.INDEX
    if state.exists() and not workspace.sound(state):
        raise workspace.StateDamaged(state, err) from None
    if not index.exists() or workspace.sound(index):
        raise errors.GraphbuildError(f"{folder}: SQLite reported damage ({err}), but neither "
                                     "index.db nor state.db fails its check: run the command "
                                     "again") from None  # fmt: skip
    try:
        workspace.discard_index(index, err, note)
    except OSError as gone:
        raise workspace.unusable(gone, folder) or gone from None


def _runs_since(folder: Path, started: str) -> str | None:
    """The newest run begun since `started`, if any: a command that got that far is not
    simply run again."""
    if not (folder / workspace.STATE).exists():
        return None
    with State(folder) as state:
        runs = [run for run in state.runs(limit=5) if run.started >= started]
    return runs[0].id if runs else None
