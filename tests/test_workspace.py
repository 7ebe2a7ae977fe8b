"""A damaged workspace database: index.db rebuilt, state.db kept and named."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from graphbuild import graphdb, workspace
from graphbuild.state import State

from .test_cli import graphbuild


def damage(db) -> bytes:
    """Garbage over every page but the first (the header and schema stay readable, so
    SQLite opens the file and fails only when a query reads a damaged page)."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):
        data[offset : offset + page] = bytes((i * 37 + 11) % 256 for i in range(page))
    db.write_bytes(bytes(data))
    return bytes(data)


def filled(path):
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 100)
    db.close()
    return path


def read_all(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*), max(x) FROM t").fetchone()
    finally:
        db.close()


def test_damage_is_told_from_other_sqlite_errors(tmp_path):
    damage(filled(tmp_path / "x.db"))
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        read_all(tmp_path / "x.db")
    assert workspace.damaged(damaged.value)
    assert not workspace.sound(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError) as other:
        sqlite3.connect(":memory:").execute("SELECT * FROM nothing")
    assert not workspace.damaged(other.value)
    assert workspace.sound(filled(tmp_path / "y.db"))


def test_guard_rebuilds_a_damaged_index_and_runs_the_command_again(tmp_path):
    index = filled(tmp_path / "index.db")
    damage(index)
    notes, calls = [], []

    def command():
        calls.append(1)
        db = graphdb.connect(tmp_path)  # a new, empty index once the damaged one is gone
        try:
            return db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()
        finally:
            db.close()

    def first_reads_the_damage():
        if not calls:
            calls.append(0)
            read_all(index)
        return command()

    assert workspace.guard(tmp_path, first_reads_the_damage, notes.append) == (0,)
    assert len(calls) == 2
    assert notes == [f"{index} is damaged (database disk image is malformed); it only holds "
                     "derived data: rebuilding it."]  # fmt: skip


def test_guard_keeps_a_damaged_state_db_and_says_what_to_do(tmp_path):
    with State(tmp_path) as state:
        for i in range(200):
            state.record_build(f"r/app:{i}", f"sha256:{i:064x}", {}, run_id="r")
    kept = damage(tmp_path / "state.db")

    def runs():
        with State(tmp_path) as state:
            return state.runs()

    with pytest.raises(workspace.StateDamaged, match=r"state\.db is damaged .* never empties it"):
        workspace.guard(tmp_path, runs, print)
    assert (tmp_path / "state.db").read_bytes() == kept


def test_guard_lets_other_errors_through(tmp_path):
    def broken():
        sqlite3.connect(":memory:").execute("SELECT * FROM nothing")

    with pytest.raises(sqlite3.OperationalError):
        workspace.guard(tmp_path, broken, print)


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(folder, size)`: a tmpfs of `size` mounted on `folder`, unmounted after."""
    if os.geteuid() != 0:
        message = "mounting a small tmpfs needs root (CI runs as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       check=True)  # fmt: skip
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_workspace_is_one_line_for_every_command(project, small_disk):
    workspace = small_disk(project / ".graphbuild")
    assert graphbuild("sync", cwd=project).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(workspace)], check=True)
    for command in (("sync",), ("images",), ("uses", "r.test/base"), ("runs",), ("sweep",)):
        done = graphbuild(*command, cwd=project)
        assert done.returncode == 2, (command, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"graphbuild: {workspace}"), done.stderr


def test_a_damaged_index_is_rebuilt_by_any_command(project):
    """index.db holds derived data only: garbage in it costs a rebuild, never a traceback."""
    assert graphbuild("sync", cwd=project).returncode == 0
    index = project / ".graphbuild" / "index.db"
    for command in (("uses", "r.test/base"), ("images",), ("parents", "r.test/app"), ("sync",)):
        damage(index)
        done = graphbuild(*command, cwd=project)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert f"{index} is damaged" in done.stderr and "rebuilding it" in done.stderr
        assert "r.test/app" in done.stdout or command == ("sync",)
    assert graphbuild("uses", "r.test/base", cwd=project).stderr == ""  # whole again


def test_a_damaged_state_db_is_a_clear_error_and_is_kept(project):
    """state.db holds history: graphbuild never empties it, it says what to do."""
    from graphbuild.state import State

    workspace = project / ".graphbuild"
    with State(workspace) as state:
        for i in range(200):  # some pages of build records
            state.record_build(f"r.test/app:{i}", f"sha256:{i:064x}", {}, run_id="r")
    damaged = damage(workspace / "state.db")
    done = graphbuild("runs", cwd=project)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert f"{workspace / 'state.db'} is damaged" in done.stderr
    assert "restore it from a backup" in done.stderr
    assert (workspace / "state.db").read_bytes() == damaged
