from __future__ import annotations

import sqlite3

import pytest

from graphbuild import state
from graphbuild.errors import GraphbuildError
from graphbuild.filelock import Locked


def test_a_new_state_is_migrated_to_the_latest_schema(tmp_path):
    with state.State(tmp_path) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(state.MIGRATIONS)
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with state.State(tmp_path) as s:  # reopening migrates nothing
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(state.MIGRATIONS)


def test_a_state_from_a_newer_graphbuild_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(f"PRAGMA user_version = {len(state.MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(GraphbuildError, match="written by a newer graphbuild"):
        state.State(tmp_path)


def test_observations_keep_first_and_last_seen(tmp_path):
    with state.State(tmp_path) as s:
        assert s.latest("r/a:1") is None
        s.observe([("r/a:1", "", "sha256:1"), ("r/a:1", "linux/amd64", "sha256:1a")], "t1")
        s.observe([("r/a:1", "", "sha256:1")], "t2")
        assert s.latest("r/a:1") == state.Seen("sha256:1", "t1", "t2")
        s.observe([("r/a:1", "", "sha256:2")], "t3")
        assert s.latest("r/a:1") == state.Seen("sha256:2", "t3", "t3")
        s.observe([("r/a:1", "", "sha256:1")], "t4")  # the tag moved back: a new span
        assert s.latest("r/a:1") == state.Seen("sha256:1", "t4", "t4")
        assert s.latest("r/a:1", "linux/amd64").digest == "sha256:1a"


def test_index_children_and_build_records(tmp_path):
    with state.State(tmp_path) as s:
        s.remember_children("sha256:i", {"linux/amd64": "sha256:a", "linux/arm64": "sha256:b"})
        assert s.children(["sha256:i", "sha256:other"]) == {
            "sha256:i": {"linux/amd64": "sha256:a", "linux/arm64": "sha256:b"}
        }
        s.record_build("r/app:1", "sha256:app", {"r/base:1": "sha256:base"}, run_id="run-1")
        build = s.build_of("r/app:1", "sha256:app")
        assert (build.parents, build.run_id) == ({"r/base:1": "sha256:base"}, "run-1")
        assert s.build_of("r/app:1", "sha256:other") is None


def test_only_one_sweep_at_a_time(tmp_path):
    with (
        state.sweep_lock(tmp_path),
        pytest.raises(Locked, match=r"sweep\.lock is held by pid"),
        state.sweep_lock(tmp_path),
    ):
        pass


def test_two_first_runs_at_once_migrate_once(tmp_path):
    """Concurrent first runs (two cron jobs) each open a new state.db; neither fails."""
    import threading

    errors = []

    def open_state():
        try:
            with state.State(tmp_path) as s:
                s.observe([("r/a:1", "", "sha256:1")])
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=open_state) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with state.State(tmp_path) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(state.MIGRATIONS)


def test_a_build_moves_the_baselines_of_its_parents(tmp_path):
    with state.State(tmp_path) as s:
        s.set_baselines([("r/app:1", "r/base:1", "sha256:old")])
        s.record_build("r/app:1", "sha256:app", {"r/base:1": "sha256:new"})
        assert s.baselines() == {("r/app:1", "r/base:1"): "sha256:new"}
