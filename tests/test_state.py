from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from graphbuild import process, state
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


def test_abandoning_a_dead_run_kills_what_its_builder_left_and_removes_its_scratch(tmp_path):
    """A killed graphbuild's builder group, recorded as it started, is killed by the next run
    before anything resumes; and the scratch it wrote its contexts in is removed."""
    pidfile = tmp_path / "helper"
    leader = subprocess.Popen(
        ["sh", "-c", f'sleep 60 & echo $! > "{pidfile}"; wait'], process_group=0
    )
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.02)
    helper = int(pidfile.read_text())
    try:
        with state.State(tmp_path) as s:
            run = s.create_run("sweep", None, {}, [state.RunNode("r/a:1", 0, "missing", "", [])])
            group = process.group_of(leader.pid)
            state.note_group(tmp_path, run, "r/a:1", group)
            leader.kill()  # as graphbuild's death takes it (PR_SET_PDEATHSIG): the helper stays
            leader.wait()
            context = state.scratch(tmp_path, run) / "a" / "context"
            context.mkdir(parents=True)
            (context / "f").write_text("f")
            assert Path(f"/proc/{helper}").exists()
            assert s.abandon_runs() == [run]
            assert s.run(run).status == "interrupted"
            assert s.db.execute("SELECT COUNT(*) FROM run_processes").fetchone() == (0,)
        stat = Path(f"/proc/{helper}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        assert not (tmp_path / state.SCRATCH).exists()
    finally:
        leader.kill()
        if Path(f"/proc/{helper}").exists():
            os.kill(helper, signal.SIGKILL)


def test_a_group_that_ended_with_its_command_is_not_kept(tmp_path):
    with state.State(tmp_path) as s:
        group = process.Group(12345, 678, "boot")
        state.note_group(tmp_path, "run-1", "r/a:1", group)
        assert s.db.execute("SELECT run, node, pgid FROM run_processes").fetchall() == [
            ("run-1", "r/a:1", 12345)
        ]
        state.drop_group(tmp_path, "run-1", group)
        assert s.db.execute("SELECT COUNT(*) FROM run_processes").fetchone() == (0,)


APP_HELD = state.HeldRecord(
    "r.test/app:1", "sha256:" + "a" * 64, "built on r.test/mid:1, which failed a gate",
    "r.test/mid:1",
)  # fmt: skip
APP_WORKLOAD_HELD = state.HeldRecord(
    APP_HELD.node, APP_HELD.digest, APP_HELD.reason, APP_HELD.cause,
    "deploy:envs/dev/app.yaml#0:spec.containers.0.image", "Pod//app (app)", "dev",
)  # fmt: skip


def test_what_a_run_held_back_is_kept_once_and_as_judged_last(tmp_path):
    """Each held image and held workload is one row of its run; a rerun (resume, deploy)
    judges again and replaces them, so nothing is listed twice and a pass clears it."""
    with state.State(tmp_path) as s:
        run = s.create_run("sweep", None, {}, [state.RunNode(APP_HELD.node, 0, "stale", "", [])])
        other = s.create_run("sweep", None, {}, [])
        assert s.run(run).held == []
        s.record_held(run, [APP_HELD, APP_WORKLOAD_HELD])
        s.record_held(run, [APP_HELD, APP_WORKLOAD_HELD])
        s.record_held(other, [APP_HELD])
        assert s.run(run).held == [APP_HELD, APP_WORKLOAD_HELD]
        s.record_held(run, [])
        assert s.run(run).held == []
        assert s.run(other).held == [APP_HELD]


def test_a_state_db_of_the_previous_schema_gains_the_held_records(tmp_path):
    """A workspace written before held images were recorded is migrated forward, its runs
    kept (with nothing held on record)."""
    db = sqlite3.connect(tmp_path / "state.db")
    for migration in state.MIGRATIONS[:-1]:
        db.executescript(migration)
    db.execute("INSERT INTO runs VALUES ('old', 'sweep', NULL, 't', 't', 'failed', '{}')")
    db.execute(f"PRAGMA user_version = {len(state.MIGRATIONS) - 1}")
    db.commit()
    db.close()
    with state.State(tmp_path) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(state.MIGRATIONS)
        old = s.run("old")
        assert old is not None and old.status == "failed" and old.held == []
        s.record_held("old", [APP_HELD])
        assert s.run("old").held == [APP_HELD]
