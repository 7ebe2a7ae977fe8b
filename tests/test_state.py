from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import asdict, replace
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


# -- runs: the lifecycle `runs`, `resume` and the next sweep read


def _nodes() -> list[state.RunNode]:
    return [
        state.RunNode("r/b:1", 1, "parent-rebuilt", "built on r/a:1", ["r/a:1", "r/b:1"]),
        state.RunNode("r/a:1", 0, "base-changed", "x:1 moved", ["x:1", "r/a:1"]),
        state.RunNode("r/c:1", 0, "missing", "", ["r/c:1"]),
    ]


def test_a_new_run_is_running_with_its_nodes_pending_in_wave_order(tmp_path):
    with state.State(tmp_path) as s:
        run = s.create_run("rebuild", "CVE-1", {"force": True, "limit": ["r/a:1"]}, _nodes())
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run)  # sorts by time, readable
        found = s.run(run)
        assert (found.id, found.kind, found.reason, found.status, found.finished) == (
            run, "rebuild", "CVE-1", "running", None
        )  # fmt: skip
        assert found.options == {"force": True, "limit": ["r/a:1"]}
        assert found.started.startswith(f"{run[:4]}-{run[4:6]}-{run[6:8]}T")
        assert [n.node for n in found.nodes] == ["r/a:1", "r/c:1", "r/b:1"]  # wave, then name
        assert found.nodes[2] == state.RunNode(
            "r/b:1", 1, "parent-rebuilt", "built on r/a:1", ["r/a:1", "r/b:1"]
        )  # pending, no attempt yet
        assert (found.gates, found.deploys, found.rings, found.held) == ([], [], [], [])
        assert s.run("20990101-000000-0000") is None


def test_a_node_is_recorded_at_every_change_and_a_finished_run_says_when(tmp_path):
    with state.State(tmp_path) as s:
        run = s.create_run("sweep", None, {}, _nodes())
        done = state.RunNode(
            "r/a:1", 0, "base-changed", "x:1 moved to sha256:2", ["x:1", "r/a:1"], "succeeded",
            2, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:03+00:00", "sha256:a",
            "/ws/logs/a.log", "sha256:key", None,
        )  # fmt: skip
        s.update_node(run, done)
        failed = state.RunNode("r/c:1", 0, "missing", "", ["r/c:1"], "failed", 1, error="boom")
        s.update_node(run, failed)
        assert s.run(run).nodes[:2] == [done, failed]
        s.finish_run(run, "failed")
        finished = s.run(run)
        assert finished.status == "failed" and finished.finished > finished.started
        s.reopen_run(run)  # resume
        assert (s.run(run).status, s.run(run).finished) == ("running", None)


def test_runs_lists_the_newest_first_without_nodes(tmp_path):
    with state.State(tmp_path) as s:
        ids = [s.create_run("sweep", None, {}, _nodes()) for _ in range(3)]
        listed = s.runs()
        assert [r.id for r in listed] == ids[::-1]
        assert all(r.nodes == [] for r in listed)
        assert [r.id for r in s.runs(limit=2)] == ids[:0:-1]


def test_abandoning_marks_only_running_runs_interrupted_and_their_running_nodes_pending(
    tmp_path,
):
    """A run whose process died: its finished images keep their outcome, the one that was
    building is pending again for `resume`; a finished run is left as it is."""
    with state.State(tmp_path) as s:
        dead = s.create_run("sweep", None, {}, _nodes())
        s.update_node(dead, state.RunNode("r/a:1", 0, "base-changed", "", [], "succeeded", 1))
        s.update_node(dead, state.RunNode("r/c:1", 0, "missing", "", [], "running", 1))
        over = s.create_run("sweep", None, {}, _nodes())
        s.finish_run(over, "succeeded")
        assert s.abandon_runs() == [dead]
        after = s.run(dead)
        assert after.status == "interrupted" and after.finished is None
        assert {n.node: n.status for n in after.nodes} == {
            "r/a:1": "succeeded", "r/c:1": "pending", "r/b:1": "pending"
        }  # fmt: skip
        assert s.run(over).status == "succeeded"
        assert s.abandon_runs() == []  # nothing running any more


def test_rebuilt_since_names_later_runs_that_built_any_of_the_images(tmp_path):
    with state.State(tmp_path) as s:
        old = s.create_run("sweep", None, {}, _nodes())
        newer = s.create_run("sweep", None, {}, _nodes())
        s.update_node(newer, state.RunNode("r/b:1", 1, "x", "", [], "succeeded"))
        failed = s.create_run("sweep", None, {}, _nodes())
        s.update_node(failed, state.RunNode("r/a:1", 0, "x", "", [], "failed"))
        started = s.run(old).started
        assert s.rebuilt_since(started, ["r/b:1", "r/a:1"]) == [newer]
        assert s.rebuilt_since(started, ["r/a:1"]) == []  # failed builds pushed nothing
        assert s.rebuilt_since(s.run(newer).started, ["r/b:1"]) == []


def test_durations_are_each_images_last_successful_build(tmp_path):
    with state.State(tmp_path) as s:
        for took in ("00:00:10", "00:01:30"):
            run = s.create_run("sweep", None, {}, _nodes())
            s.update_node(run, state.RunNode(
                "r/a:1", 0, "x", "", [], "succeeded", 1, "2026-01-01T00:00:00+00:00",
                f"2026-01-01T{took}+00:00",
            ))  # fmt: skip
        s.update_node(run, state.RunNode("r/c:1", 0, "x", "", [], "failed", 1,
                                         "2026-01-01T00:00:00+00:00",
                                         "2026-01-01T09:00:00+00:00"))  # fmt: skip
        assert s.durations() == {"r/a:1": 90.0}


# -- builds


def test_find_build_answers_the_latest_build_of_a_key_from_its_own_connection(tmp_path):
    with state.State(tmp_path) as s:
        s.record_build("r/a:1", "sha256:1", {"x:1": "sha256:x"}, "run-1", "t1", key="k1",
                       source="s1")  # fmt: skip
        s.record_build("r/a:1", "sha256:2", {"x:1": "sha256:x"}, "run-2", "t2", key="k1",
                       source="s1")  # fmt: skip
        s.record_build("r/b:1", "sha256:3", {}, "run-2", "t3", key="k2")
    assert state.find_build(tmp_path, "k1") == state.Build(
        "r/a:1", "sha256:2", "t2", {"x:1": "sha256:x"}, "run-2", "k1", "s1"
    )
    assert state.find_build(tmp_path, "k2").digest == "sha256:3"
    assert state.find_build(tmp_path, "k3") is None


def test_builds_lists_an_images_history_oldest_first(tmp_path):
    with state.State(tmp_path) as s:
        s.record_build("r/a:1", "sha256:2", {"x:1": "sha256:x2"}, "run-2", "t9", key="k2")
        s.record_build("r/b:1", "sha256:b", {}, "run-2", "t1")
        s.record_build("r/a:1", "sha256:1", {"x:1": "sha256:x1"}, "run-3", "t1", source="s")
        history = s.builds("r/a:1")
    assert [(b.digest, b.parents, b.run_id, b.key, b.source) for b in history] == [
        ("sha256:2", {"x:1": "sha256:x2"}, "run-2", "k2", None),
        ("sha256:1", {"x:1": "sha256:x1"}, "run-3", None, "s"),
    ]  # in the order recorded, whatever the clock said
    with state.State(tmp_path) as s:
        assert s.builds("r/none:1") == []


def test_build_of_and_built_digests(tmp_path):
    with state.State(tmp_path) as s:
        s.record_build("r/a:1", "sha256:1", {}, "run-1", "t1", key="k1", source="s1")
        s.record_build("r/a:1", "sha256:1", {"x:1": "sha256:x"}, "run-2", "t2", key="k2",
                       source="s2")  # fmt: skip
        s.record_build("r/a:1", "sha256:9", {}, "run-3", "t3")
        s.record_build("r/b:1", "sha256:b", {}, "run-3", "t3")
        assert s.build_of("r/a:1", "sha256:1") == state.Build(
            "r/a:1", "sha256:1", "t2", {"x:1": "sha256:x"}, "run-2", "k2", "s2"
        )  # the same digest built twice: the latest record
        assert s.built_digests("r/a:1") == {"sha256:1", "sha256:9"}
        assert s.built_digests("r/nothing:1") == set()


def test_a_check_sets_a_baseline_once_and_only_evidence_moves_it(tmp_path):
    with state.State(tmp_path) as s:
        s.set_baselines([("r/app:1", "x:1", "sha256:first")], "t1")
        s.set_baselines([("r/app:1", "x:1", "sha256:first")], "t2")  # same: since stays
        assert s.db.execute("SELECT digest, since FROM baselines").fetchall() == [
            ("sha256:first", "t1")
        ]
        s.set_baselines([("r/app:1", "x:1", "sha256:second")], "t3")
        assert s.baselines() == {("r/app:1", "x:1"): "sha256:second"}


def test_manifest_notes_are_remembered_once(tmp_path):
    with state.State(tmp_path) as s:
        s.remember_annotations({"sha256:m": {"b": "2", "a": "1"}})
        s.remember_annotations({"sha256:m": {"other": "ignored"}})  # a manifest never changes them
        assert s.annotations(["sha256:m", "sha256:unknown"]) == {"sha256:m": {"a": "1", "b": "2"}}


# -- gates, deploys and rings of a run


def _gate(node: str, gate: str, status: str, digest: str = "sha256:a") -> state.GateRecord:
    return state.GateRecord(node, gate, digest, status, f"{gate} {status}", [{"id": "CVE-1"}])


def test_gate_results_are_one_per_image_and_gate_of_a_run(tmp_path):
    with state.State(tmp_path) as s:
        run = s.create_run("sweep", None, {}, _nodes())
        s.record_gate(run, _gate("r/b:1", "trivy", "failed"))
        s.record_gate(run, _gate("r/a:1", "smoke", "passed"))
        s.record_gate(run, _gate("r/a:1", "trivy", "failed"))
        s.record_gate(run, _gate("r/a:1", "trivy", "passed"))  # judged again: replaces
        assert s.run(run).gates == [
            _gate("r/a:1", "smoke", "passed"), _gate("r/a:1", "trivy", "passed"),
            _gate("r/b:1", "trivy", "failed"),
        ]  # fmt: skip


def test_failed_gates_are_the_latest_result_of_each_gate_on_that_digest_in_any_run(tmp_path):
    with state.State(tmp_path) as s:
        first = s.create_run("sweep", None, {}, _nodes())
        s.record_gate(first, _gate("r/a:1", "trivy", "failed"))
        s.record_gate(first, _gate("r/a:1", "smoke", "failed"))
        assert s.failed_gates("r/a:1", "sha256:a") == ["trivy", "smoke"]
        older = s.create_run("sweep", None, {}, _nodes())  # the image at another digest
        s.record_gate(older, _gate("r/a:1", "trivy", "failed", digest="sha256:other"))
        second = s.create_run("deploy", None, {}, [])
        s.record_gate(second, _gate("r/a:1", "trivy", "passed"))  # a later pass clears it
        assert s.failed_gates("r/a:1", "sha256:a") == ["smoke"]
        assert s.failed_gates("r/a:1", "sha256:other") == ["trivy"]
        assert s.failed_gates("r/b:1", "sha256:a") == []  # never gated: nothing failed
        # many at once, in one pass: each image at the digest asked about
        asked = {"r/a:1": "sha256:a", "r/b:1": "sha256:a"}
        assert s.failed_gates_of(asked) == {"r/a:1": {"smoke": first}}  # and who judged it
        assert s.failed_gates_of({"r/a:1": "sha256:other"}) == {"r/a:1": {"trivy": older}}


def test_deploys_and_rings_are_kept_in_the_order_they_happened(tmp_path):
    with state.State(tmp_path) as s:
        run = s.create_run("sweep", None, {}, _nodes())
        web = state.DeployRecord("dev", "gitops:web", "web", "r/a:1", "r/a:1@sha256:a",
                                 "gitops", "failed", "push rejected")  # fmt: skip
        api = state.DeployRecord("dev", "gitops:api", "api", "r/c:1", "r/c:1@sha256:c",
                                 "gitops", "deployed", "commit 1234")  # fmt: skip
        s.record_deploy(run, web)
        s.record_deploy(run, api)
        s.record_ring(run, state.RingRecord("dev", "failed", "1 of 2 failed"))
        s.record_ring(run, state.RingRecord("prod", "manual", "waiting"))
        retried = replace(web, status="deployed", detail="commit 5678")
        s.record_deploy(run, retried)  # a resume deploys it again: one row, the latest
        s.record_ring(run, state.RingRecord("dev", "healthy", "2 deployed"))
        found = s.run(run)
        assert found.deploys == [api, retried]
        assert found.rings == [state.RingRecord("prod", "manual", "waiting"),
                               state.RingRecord("dev", "healthy", "2 deployed")]  # fmt: skip
        assert s.run(s.create_run("sweep", None, {}, [])).deploys == []


def test_every_status_read_back_is_its_enum_and_is_stored_and_dumped_as_its_word(tmp_path):
    """`failed` of a run, an image, a gate, a deploy and a ring are five different things,
    each written and shown as the same word as before."""
    with state.State(tmp_path) as s:
        run = s.create_run("sweep", None, {}, _nodes())
        s.update_node(run, replace(_nodes()[1], status=state.NodeStatus.FAILED))
        s.record_gate(run, _gate("r/a:1", "trivy", state.GateStatus.FAILED))
        s.record_deploy(
            run,
            state.DeployRecord(
                "dev",
                "gitops:web",
                "web",
                "r/a:1",
                "r/a:1@x",
                "gitops",
                state.DeployStatus.FAILED,
                "",
            ),
        )
        s.record_ring(run, state.RingRecord("dev", state.RingStatus.NOTHING_TO_DEPLOY, ""))
        s.finish_run(run, state.RunStatus.FAILED)
        found = s.run(run)
        stored = s.db.execute("SELECT status FROM runs UNION ALL SELECT status FROM rings")
        assert [row[0] for row in stored] == ["failed", "nothing-to-deploy"]
    assert found.status is state.RunStatus.FAILED
    assert [n.status for n in found.nodes] == [
        state.NodeStatus.FAILED, state.NodeStatus.PENDING, state.NodeStatus.PENDING
    ]  # fmt: skip
    assert all(type(n.status) is state.NodeStatus for n in found.nodes)
    assert found.gates[0].status is state.GateStatus.FAILED
    assert found.deploys[0].status is state.DeployStatus.FAILED
    assert found.rings[0].status is state.RingStatus.NOTHING_TO_DEPLOY
    dumped = json.loads(json.dumps(asdict(found)))
    assert (dumped["status"], dumped["rings"][0]["status"]) == ("failed", "nothing-to-deploy")
    assert f"{found.status}, {found.rings[0].status}" == "failed, nothing-to-deploy"


# -- migrations and the sweep lock


def test_a_state_db_of_the_first_schema_keeps_its_history(tmp_path):
    """A workspace from the first release: every migration runs, nothing observed or built
    is lost, and builds recorded then have no key or source (so they are never reused)."""
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(state.MIGRATIONS[0])
    db.execute("INSERT INTO digests VALUES ('x:1', '', 'sha256:x', 't0', 't1')")
    db.execute("INSERT INTO builds (image, digest, built_at, run_id, parents) "
               "VALUES ('r/a:1', 'sha256:a', 't1', NULL, '{\"x:1\": \"sha256:x\"}')")  # fmt: skip
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with state.State(tmp_path) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(state.MIGRATIONS)
        assert s.latest("x:1") == state.Seen("sha256:x", "t0", "t1")
        assert s.build_of("r/a:1", "sha256:a") == state.Build(
            "r/a:1", "sha256:a", "t1", {"x:1": "sha256:x"}
        )
        assert s.runs() == []
    assert state.find_build(tmp_path, "anything") is None


def test_taking_the_sweep_lock_removes_what_a_killed_run_left_in_scratch(tmp_path):
    with state.State(tmp_path):
        pass
    left = state.scratch(tmp_path, "20260101-000000-abcd") / "ctx"
    left.mkdir(parents=True)
    assert left.parent.parent == tmp_path / state.SCRATCH
    with state.sweep_lock(tmp_path):
        assert not (tmp_path / state.SCRATCH).exists()


def test_the_sweep_lock_on_a_new_workspace_creates_no_state(tmp_path):
    with state.sweep_lock(tmp_path):
        pass
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize("folder", ["ws#1", "a?b", "with space", "per%41cent"])
def test_read_only_lookups_open_this_workspace_whatever_its_name(tmp_path, folder):
    """The read-only lookups (`find_build`, `built_here`) open state.db through a URI: a
    `#` or `?` in the workspace's path must not make them open another file."""
    workspace = tmp_path / folder
    with state.State(workspace) as s:
        s.record_build("r.test/a:1", "sha256:" + "a" * 64, {}, key="k1")
    assert state.built_here(workspace, "sha256:" + "a" * 64)
    assert not state.built_here(workspace, "sha256:" + "b" * 64)
    found = state.find_build(workspace, "k1")
    assert found is not None and found.digest == "sha256:" + "a" * 64


def test_counts_are_added_on_the_side_never_waiting_long_nor_raising(tmp_path, capsys):
    """A webhook's count must not hold its reply, nor a failing registry client's error be
    replaced by the count's: with state.db locked by a writer, add_counts gives up within
    its two seconds, says so, and raises nothing; unlocked, it adds."""
    import time
    from contextlib import closing

    with state.State(tmp_path) as s:
        s.count("registry_requests", {"r.test": 1})
    with closing(sqlite3.connect(tmp_path / "state.db")) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        state.add_counts(tmp_path, {"registry_requests": {"r.test": 5}})
        assert time.monotonic() - started < 10  # generous: it does not wait 30 s
        writer.rollback()
    assert "could not add to the counters" in capsys.readouterr().err
    state.add_counts(tmp_path, {"registry_requests": {"r.test": 2}, "webhook_events": {}})
    with state.State(tmp_path) as s:
        assert s.counters("registry_requests") == {"r.test": 3}
