"""The workspace gone wrong: a damaged index.db rebuilt, a damaged state.db kept and named,
a read-only or full disk one line (workspace.py, and the guard in commands/__init__.py)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from graphbuild import indexdb, workspace
from graphbuild.config import Config
from graphbuild.errors import GraphbuildError
from graphbuild.guard import guarded
from graphbuild.state import State

from .site import graphbuild


def damage(db) -> bytes:
    """Garbage over every page but the first (the header and schema stay readable, so
    SQLite opens the file and fails only when a query reads a damaged page)."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):
        data[offset : offset + page] = bytes((i * 37 + 11) % 256 for i in range(page))
    db.write_bytes(bytes(data))
    return bytes(data)


def at(folder):
    """A config whose workspace is `folder`: all the guard reads of it."""
    return Config(folder / "repos.yaml", folder, ())


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
        db = indexdb.connect(tmp_path)  # a new, empty index once the damaged one is gone
        try:
            return db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()
        finally:
            db.close()

    def first_reads_the_damage():
        if not calls:
            calls.append(0)
            read_all(index)
        return command()

    assert guarded(at(tmp_path), first_reads_the_damage, notes.append) == (0,)
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
        guarded(at(tmp_path), runs, print)
    assert (tmp_path / "state.db").read_bytes() == kept


def test_guard_lets_other_errors_through(tmp_path):
    def broken():
        sqlite3.connect(":memory:").execute("SELECT * FROM nothing")

    with pytest.raises(sqlite3.OperationalError):
        guarded(at(tmp_path), broken, print)


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


FILLS_THE_DISK = """\
# the first build of base fills the workspace's disk and fails; every other build
# writes a digest, as a builder that pushed would
case "$2" in
  */base:*) if [ ! -e "$3/../filled" ]; then
      touch "$3/../filled"; dd if=/dev/zero of="$3/filler" bs=64k 2>/dev/null; exit 1
  fi;;
esac
printf 'sha256:%s' "$(printf %s "$2" | sha256sum | cut -c1-64)" > "$1"
"""


def test_a_disk_that_fills_mid_run_stops_the_run_and_resume_finishes_it(
    tmp_path, registry, small_disk
):
    """A full disk is not the image's fault: the run stops (not failed, nothing blocked),
    one line says which run and how to finish it, and `resume` does once there is room."""
    h = registry.host
    registry.image("upstream/base", "1", content="v1")
    for name, text in (("base", f"FROM {h}/upstream/base:1\n"), ("app", f"FROM {h}/r/base:1\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(text)
    (tmp_path / "build.sh").write_text(FILLS_THE_DISK)
    workspace = small_disk(tmp_path / "ws", "16m")
    (tmp_path / "repos.yaml").write_text(
        f"workspace: ws\nregistries: {{'{h}': {{insecure: true}}}}\n"
        f"builder: {{kind: command, argv: [sh, {tmp_path / 'build.sh'}, '{{digestfile}}', "
        f"'{{image}}', {workspace}]}}\n"
        f"repos:\n  - {{name: base, path: base, images: [{{image: {h}/r/base, tags: ['1']}}]}}\n"
        f"  - {{name: app, path: app, images: [{{image: {h}/r/app, tags: ['1']}}]}}\n"
    )
    full = graphbuild("sweep", cwd=tmp_path)
    assert "Traceback" not in full.stderr, full.stderr
    stopped = re.search(r"`graphbuild resume (\S+)` finishes", full.stderr)
    assert stopped, full.stderr
    assert f"the workspace {workspace} has " in full.stderr
    assert full.returncode in (1, 2)  # 1 when the run's records could still be written
    (workspace / "filler").unlink()
    resumed = graphbuild("resume", stopped.group(1), "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    run = json.loads(resumed.stdout)
    assert run["status"] == "succeeded"
    assert {n["node"]: n["status"] for n in run["nodes"]} == {
        f"{h}/r/base:1": "succeeded",
        f"{h}/r/app:1": "succeeded",
    }


def test_guard_does_not_repeat_a_command_that_had_started_a_run(tmp_path):
    """A rebuild that got as far as a run is resumed, not built twice over."""
    damage(filled(tmp_path / "index.db"))
    calls = []

    def rebuild():
        calls.append(1)
        with State(tmp_path) as state:
            run = state.create_run("rebuild", "CVE-2026-1", {}, [])
        read_all(tmp_path / "index.db")
        return run

    with pytest.raises(GraphbuildError, match=r"^run (\S+) had started .* `graphbuild resume \1`"):
        guarded(at(tmp_path), rebuild, print)
    assert calls == [1]
    assert not (tmp_path / "index.db").exists()  # still rebuilt by the next command
