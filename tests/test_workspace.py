"""A damaged workspace database: index.db rebuilt, state.db kept and named."""

from __future__ import annotations

import sqlite3

import pytest

from graphbuild import graphdb, workspace
from graphbuild.state import State


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
