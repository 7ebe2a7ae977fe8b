"""The command line as users and scripts meet it: real processes, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .site import graphbuild

ROOT = Path(__file__).resolve().parent.parent


def test_the_bundled_example_answers_right_after_install(tmp_path):
    done = graphbuild(
        "--config",
        str(ROOT / "repos.yaml"),
        "uses",
        "localhost:5000/upstream/os:1",
        "--json",
        cwd=tmp_path,
        env={"GRAPHBUILD_CONFIG": ""},
    )
    assert done.returncode == 0, done.stderr
    images = {row["image"] for row in json.loads(done.stdout)}
    assert "localhost:5000/shop/api:1.0" in images
    assert "localhost:5000/tools/report:latest" in images
    assert "localhost:5000/tools/count:latest" not in images  # on the toolbox, not the os


def test_a_query_syncs_first_only_when_there_is_no_index(project):
    first = graphbuild("uses", "debian", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "No index yet" in first.stderr
    assert "r.test/app:latest" in first.stdout and "app:Dockerfile:1" in first.stdout
    second = graphbuild("uses", "debian", cwd=project)
    assert "No index yet" not in second.stderr
    assert second.stdout == first.stdout


def test_json_output_of_the_queries(project):
    assert graphbuild("sync", cwd=project).returncode == 0
    rows = json.loads(graphbuild("uses", "debian:bookworm-slim", "--json", cwd=project).stdout)
    assert rows == [
        {
            "image": "r.test/base:1",
            "depth": 1,
            "base": "docker.io/library/debian:bookworm-slim",
            "kind": "from",
            "repo": "base",
            "dockerfile": "Dockerfile",
            "line": 1,
            "workloads": [],
        },
        {
            "image": "r.test/app:latest",
            "depth": 2,
            "base": "r.test/base:1",
            "kind": "from",
            "repo": "app",
            "dockerfile": "Dockerfile",
            "line": 1,
            "workloads": [],
        },
    ]
    direct = json.loads(graphbuild("uses", "debian", "--direct", "--json", cwd=project).stdout)
    assert [r["image"] for r in direct] == ["r.test/base:1"]
    chain = json.loads(graphbuild("parents", "r.test/app", "--json", cwd=project).stdout)
    assert [(c["image"], c["base"], c["depth"]) for c in chain] == [
        ("r.test/app:latest", "r.test/base:1", 1),
        ("r.test/base:1", "docker.io/library/debian:bookworm-slim", 2),
    ]
    bases = json.loads(graphbuild("bases", "--json", cwd=project).stdout)
    assert bases == [
        {
            "id": "docker.io/library/debian:bookworm-slim",
            "pinned": False,
            "images": 1,
            "all_images": 2,
            "kinds": ["from"],
            "status": None,  # no check has run
            "since": None,
        }
    ]
    images = json.loads(graphbuild("images", "--json", cwd=project).stdout)
    assert [i["id"] for i in images] == ["r.test/app:latest", "r.test/base:1"]
    exported = json.loads(graphbuild("graph", "--format", "json", cwd=project).stdout)
    assert {e["source"] + ">" + e["target"] for e in exported["edges"]} == {
        "docker.io/library/debian:bookworm-slim>r.test/base:1",
        "r.test/base:1>r.test/app:latest",
    }
    dot = graphbuild("graph", "--format", "dot", "--focus", "r.test/app", cwd=project).stdout
    assert dot.startswith("digraph graphbuild {")


def test_human_output(project):
    graphbuild("sync", cwd=project)
    tree = graphbuild("parents", "r.test/app", cwd=project).stdout
    assert tree.splitlines() == [
        "r.test/app:latest",
        "└── from r.test/base:1  (app:Dockerfile:1)",
        "    └── from debian:bookworm-slim  (base:Dockerfile:1)",
    ]
    nothing = graphbuild("uses", "r.test/app", cwd=project)
    assert nothing.stdout == "No image is built on r.test/app.\n"
    unknown = graphbuild("uses", "nginx", cwd=project)
    assert unknown.returncode == 0 and "nginx is not in the graph" in unknown.stderr


def test_config_is_found_by_flag_env_or_cwd(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    config = str(project / "repos.yaml")
    assert graphbuild("--config", config, "images", cwd=elsewhere).returncode == 0
    by_env = graphbuild("images", cwd=elsewhere, env={"GRAPHBUILD_CONFIG": config})
    assert by_env.returncode == 0 and "r.test/base:1" in by_env.stdout
    none = graphbuild("images", cwd=elsewhere)
    assert none.returncode == 2
    assert "repos.yaml: no such config file" in none.stderr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("repos: [\n", "repos.yaml:2: invalid YAML"),
        (
            "repos:\n  - name: x\n    path: .\n    images: [{image: x, tags: latest}]\n",
            "repos.yaml:4: repos[0].images[0].tags: expected a list, got a string",
        ),
        (
            "repos:\n  - name: x\n    url: 'ext::sh -c touch% {tmp}/pwned'\n",
            "repos.yaml:3: repos[0].url: the ext:: transport can run commands",
        ),
    ],
)
def test_bad_config_exits_2_with_one_clear_line(tmp_path, yaml_text, message):
    (tmp_path / "repos.yaml").write_text(yaml_text.replace("{tmp}", str(tmp_path)))
    done = graphbuild("sync", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_broken_inputs_are_reported_and_the_rest_of_the_graph_survives(project, tmp_path):
    (project / "bad").mkdir()
    (project / "bad/Dockerfile").write_text("FROM alpine:3.20\nFROM --platform linux/amd64 x\n")
    with (project / "repos.yaml").open("a") as out:
        out.write(
            "  - name: bad\n    path: bad\n    images: [{image: r.test/bad}, "
            "{image: r.test/missing, dockerfile: nope/Dockerfile}]\n"
            f"  - name: gone\n    url: {tmp_path / 'no-such-remote.git'}\n"
            "    images: [{image: r.test/gone}]\n"
        )
    done = graphbuild("sync", cwd=project)
    assert done.returncode == 1
    assert "bad:Dockerfile:2: missing a value on flag: platform" in done.stdout
    assert "bad:nope/Dockerfile: no such Dockerfile (repos[2].images[1].dockerfile)" in done.stdout
    assert "gone: cannot fetch" in done.stdout
    images = json.loads(graphbuild("images", "--json", cwd=project).stdout)
    assert [i["id"] for i in images] == ["r.test/app:latest", "r.test/base:1"]


def test_a_cycle_exits_2_and_keeps_the_previous_graph(project):
    assert graphbuild("sync", cwd=project).returncode == 0
    (project / "base/Dockerfile").write_text("FROM r.test/app:latest\n")
    done = graphbuild("sync", cwd=project)
    assert done.returncode == 2
    assert "dependency cycle:" in done.stderr and "r.test/app:latest" in done.stderr
    still = json.loads(graphbuild("uses", "debian", "--json", cwd=project).stdout)
    assert [r["image"] for r in still] == ["r.test/base:1", "r.test/app:latest"]


def test_unknown_image_for_parents_and_bad_reference_exit_2(project):
    graphbuild("sync", cwd=project)
    missing = graphbuild("parents", "r.test/nope", cwd=project)
    assert (
        missing.returncode == 2 and "r.test/nope is not an image the fleet builds" in missing.stderr
    )
    invalid = graphbuild("uses", "UPPER", cwd=project)
    assert invalid.returncode == 2 and "must be lowercase" in invalid.stderr
    badformat = graphbuild("graph", "--format", "svg", cwd=project)
    assert badformat.returncode == 2


def test_graph_depth_keeps_the_focus_neighbourhood_and_needs_a_focus(project):
    assert graphbuild("sync", cwd=project).returncode == 0
    near = graphbuild("graph", "--focus", "r.test/app", "--depth", "1", cwd=project)
    assert near.returncode == 0, near.stderr
    document = json.loads(near.stdout)
    assert [n["id"] for n in document["nodes"]] == ["r.test/app:latest", "r.test/base:1"]
    assert [(e["source"], e["target"]) for e in document["edges"]] == [
        ("r.test/base:1", "r.test/app:latest")]  # fmt: skip
    both = graphbuild("graph", "--focus", "r.test/base", "--depth", "1", "-f", "dot", cwd=project)
    assert both.stdout.count(" -> ") == 2  # one up to debian, one down to the app
    alone = graphbuild("graph", "--depth", "2", cwd=project)
    assert alone.returncode == 2 and "--depth needs --focus" in alone.stderr
    assert alone.stdout == ""
    zero = graphbuild("graph", "--focus", "r.test/app", "--depth", "0", cwd=project)
    assert zero.returncode == 2 and zero.stdout == ""


def test_a_damaged_index_is_rebuilt(project):
    assert graphbuild("sync", cwd=project).returncode == 0
    for name in ("index.db-wal", "index.db-shm"):
        (project / ".graphbuild" / name).unlink(missing_ok=True)
    (project / ".graphbuild/index.db").write_bytes(b"not a database at all" * 100)
    done = graphbuild("uses", "debian", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "is damaged" in done.stderr
    assert [r["image"] for r in json.loads(done.stdout)] == ["r.test/base:1", "r.test/app:latest"]


def test_the_first_query_shows_the_problems_its_sync_found(project):
    """Shown, not only pointed at: the first ones, each `repo:path:line: message`."""
    (project / "app/Dockerfile").write_text("FROM r.test/base:1\nFROM --platform x y\n")
    done = graphbuild("uses", "debian", cwd=project)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    at = lines.index("The sync found 1 problem:")
    assert lines[at + 1].startswith("  error      app:Dockerfile:2: "), done.stderr


def test_sync_on_a_terminal_draws_progress_and_still_reports(project):
    """On a TTY the progress bar is drawn on stderr; the summary still reaches stdout."""
    import pty

    leader, follower = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "graphbuild", "sync"],
        cwd=project, stdin=follower, stdout=subprocess.PIPE, stderr=follower, timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert done.returncode == 0
    assert b"Syncing" in drawn and b"\x1b[" in drawn  # a live, redrawn bar
    assert b"Synced 2 repositories" in done.stdout


def test_check_reports_bases_and_images_and_exits_0(tmp_path, registry):
    base = registry.image("lib/base", "1")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text(f"FROM {registry.host}/lib/base:1\n")
    (tmp_path / "repos.yaml").write_text(
        f'registries:\n  "{registry.host}": {{insecure: true}}\n'
        f'repos:\n  - name: app\n    path: app\n    images: [{{image: "{registry.host}/app"}}]\n'
    )
    done = graphbuild("check", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(b["id"], b["status"], b["digest"]) for b in report["bases"]] == [
        (f"{registry.host}/lib/base:1", "new", base)
    ]
    assert [(i["id"], i["status"], i["reason"]) for i in report["images"]] == [
        (f"{registry.host}/app:latest", "missing", "missing")
    ]
    assert report["counts"] == {"bases new": 1, "images missing": 1}
    assert report["requests"] == 3  # the base's HEAD and the GET proving its new digest; the app
    human = graphbuild("check", cwd=tmp_path)
    assert human.returncode == 0
    assert "Bases\nBASE" in human.stdout and "unchanged" in human.stdout
    assert "1 base unchanged, 1 image missing; 2 registry requests." in human.stdout


def test_check_and_sweep_say_which_credential_each_registry_was_given(tmp_path, registry):
    """Once per registry, on stderr: a stale `az acr login` winning over Entra ID (or no
    identity found, so anonymous) is seen in the first run's output. `--json` is unchanged."""
    registry.image("lib/base", "1")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text(f"FROM {registry.host}/lib/base:1\n")
    (tmp_path / "repos.yaml").write_text(
        f'registries:\n  "{registry.host}": {{insecure: true}}\n'
        f'repos:\n  - name: app\n    path: app\n    images: [{{image: "{registry.host}/app"}}]\n'
    )
    said = f"Registry {registry.host}: anonymous."
    human = graphbuild("check", cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert human.stderr.splitlines().count(said) == 1, human.stderr
    assert said not in human.stdout
    as_json = graphbuild("check", "--json", cwd=tmp_path)
    assert said in as_json.stderr
    keys = {"bases", "images", "counts", "requests", "ratelimits"}
    assert set(json.loads(as_json.stdout)) == keys
    swept = graphbuild("sweep", "--dry-run", cwd=tmp_path)
    assert swept.stderr.splitlines().count(said) == 1, swept.stderr


def test_plan_what_if_a_base_changed_asks_no_registry(project):
    """`plan --updated` is answered offline: r.test does not even resolve."""
    done = graphbuild("plan", "--updated", "debian:bookworm-slim", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["waves"] == [["r.test/base:1"], ["r.test/app:latest"]]
    assert [s["reason"] for s in answer["steps"]] == ["base-changed", "parent-rebuilt"]
    unknown = graphbuild("plan", "--updated", "nothing:here", cwd=project)
    assert unknown.returncode == 2
    assert "nothing:here is not in the graph" in unknown.stderr


def test_a_sweep_while_another_holds_the_lock_exits_3_busy(project):
    """Busy is not broken: a cron wrapper tells "try later" (3) from bad input (2)."""
    lock = project / ".graphbuild" / "sweep.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'a'); f.write('pid 1 since 2026-01-01T00:00:00+00:00'); f.flush()\n"
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        busy = graphbuild("sweep", cwd=project)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 3
    assert busy.stderr == f"graphbuild: {lock} is held by pid 1 since 2026-01-01T00:00:00+00:00\n"


def test_runs_id_shows_what_the_run_held_back(project):
    """`runs ID` and `runs ID --json` say which images and workloads a run held back from
    deploy, why, and which image caused it; the exit code of `runs` stays 0."""
    from graphbuild.state import GateRecord, HeldRecord, RunNode, State

    base, app = "r.test/base:1", "r.test/app:latest"
    bad, child = "sha256:" + "b" * 64, "sha256:" + "c" * 64
    why = f"built on {base}, which failed a gate"
    with State(project / ".graphbuild") as state:
        run = state.create_run(
            "sweep",
            None,
            {},
            [RunNode(base, 0, "stale", "", []), RunNode(app, 1, "parent-rebuilt", "", [])],
        )
        state.update_node(run, RunNode(base, 0, "stale", "", [], "succeeded", digest=bad))
        state.update_node(run, RunNode(app, 1, "parent-rebuilt", "", [], "succeeded",
                                       digest=child))  # fmt: skip
        state.record_gate(run, GateRecord(base, "trivy", bad, "failed", "1 critical", []))
        state.record_held(run, [
            HeldRecord(app, child, why, base),
            HeldRecord(app, child, why, base, "kubectl:app", "app", "dev"),
            HeldRecord(base, bad, "failed gate trivy: 1 critical", base),
        ])  # fmt: skip
        state.finish_run(run, "failed")

    shown = graphbuild("runs", run, "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["held"] == [
        {"node": app, "digest": child, "reason": why, "cause": base, "workload": None,
         "name": None, "ring": None},
        {"node": app, "digest": child, "reason": why, "cause": base, "workload": "kubectl:app",
         "name": "app", "ring": "dev"},
        {"node": base, "digest": bad, "reason": "failed gate trivy: 1 critical", "cause": base,
         "workload": None, "name": None, "ring": None},
    ]  # fmt: skip
    table = graphbuild("runs", run, cwd=project)
    assert table.returncode == 0, table.stderr
    held = table.stdout.split("Held back from deploy:\n", 1)[1].splitlines()
    assert held[-1].startswith("Started ")
    assert [line.split() for line in held[:-1]] == [
        ["IMAGE", "DIGEST", "REASON"],
        ["r.test/app:latest", "sha256:cccccccccccc…", *why.split()],
        ["r.test/base:1", "sha256:bbbbbbbbbbbb…", "failed", "gate", "trivy:", "1", "critical"],
        ["Workloads", "held", "back:"],
        ["RING", "WORKLOAD", "IMAGE", "REASON"],
        ["dev", "app", "r.test/app:latest", *why.split()],
    ]


HEAVY = ("networkx", "httpx", "git", "azure", "graphbuild.builders", "graphbuild.deployers",
         "graphbuild.execute", "graphbuild.builds", "graphbuild.scheduler", "graphbuild.pipeline",
         "graphbuild.sources", "graphbuild.discovery", "graphbuild.deploy_yaml")  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ("uses", "debian:bookworm-slim", "--json"),
        ("parents", "r.test/app", "--json"),
        ("images", "--json"),
        ("bases", "--json"),
        ("graph",),
        ("graph", "--format", "dot", "--focus", "r.test/base"),
    ],
)
def test_queries_import_none_of_the_build_machinery(project, args):
    """A query answers from index.db: it pays for neither the graph library, the HTTP and
    git clients, the builders and deployers, nor the reading of repositories and their YAML
    (`python -X importtime` lists every import)."""
    assert graphbuild("sync", cwd=project).returncode == 0
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "graphbuild", *args],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}  # fmt: skip
    assert "graphbuild.queries" in imported  # the listing is read
    assert [m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY or
            any(m.startswith(h + ".") for h in HEAVY)] == []  # fmt: skip


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ((), ["--version"]),
        (("uses",), ["--direct", "--json"]),
        (("sweep",), ["--dry-run", "--yes", "--wait", "--json"]),
        (("rebuild",), ["--no-downstream", "--no-cache", "--json"]),
        (("deploy",), ["--dry-run", "--rollback", "--json"]),
        (("mirror",), ["--dry-run", "--json"]),
    ],
)
def test_help_shows_flags_as_flags(tmp_path, command, flags):
    """A flag takes no value: help that shows one (`--json <bool>`, as typer 0.29 does) leads
    to `--json true`, an error. The lowest-versions job (scripts/test_lowest.sh) runs this on
    the oldest typer pyproject.toml allows."""
    done = graphbuild(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines()
             if len(line.split()) > 1 and line.split()[1].startswith("--")}  # fmt: skip
    for flag in [*flags, "--help"]:
        assert flag in lines, done.stdout
        assert "<bool>" not in lines[flag] and "BOOLEAN" not in lines[flag], lines[flag]


def test_the_version_is_printed_when_asked_and_only_then(project):
    """typer 0.12.5 with click 8.2 or newer ran the --version callback for every command."""
    from graphbuild import __version__

    assert graphbuild("--version", cwd=project).stdout == f"graphbuild {__version__}\n"
    done = graphbuild("images", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "graphbuild " + __version__ not in done.stdout
    assert isinstance(json.loads(done.stdout), list)


def _two_registries(tmp_path: Path, registry) -> str:
    """A fleet on two registries: `registry` (up) and a loopback port nobody listens on
    (down), which three references name. Returns the down one's host."""
    from .oci import free_port

    down = f"127.0.0.1:{free_port()}"
    registry.image("lib/base", "1")
    files = {"up": f"FROM {registry.host}/lib/base:1\n", "down": f"FROM {down}/lib/base:1\n",
             "other": f"FROM {down}/lib/other:1\n"}  # fmt: skip
    for name, text in files.items():
        (tmp_path / "fleet" / name).mkdir(parents=True)
        (tmp_path / "fleet" / name / "Dockerfile").write_text(text)
    (tmp_path / "repos.yaml").write_text(
        f'registries:\n  "{registry.host}": {{insecure: true}}\n  "{down}": {{insecure: true}}\n'
        "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
        f'      - {{image: "{registry.host}/up", dockerfile: up/Dockerfile}}\n'
        f'      - {{image: "{down}/down", dockerfile: down/Dockerfile}}\n'
        f'      - {{image: "{down}/other", dockerfile: other/Dockerfile}}\n'
    )
    return down


def test_a_registry_that_is_down_is_named_once_and_the_others_are_still_answered(
    tmp_path, registry
):
    """With one registry down, `check` and `plan` say so first, once for that registry, with
    what to check; still answer for the registry that is up; and exit 1, since their answer
    is incomplete. A refused connection is not waited on (the subprocess timeout of 120 s
    only bounds a hang)."""
    down = _two_registries(tmp_path, registry)
    checked = graphbuild("check", "--json", cwd=tmp_path)
    assert checked.returncode == 1, checked.stderr
    answer = json.loads(checked.stdout)
    status = {b["id"]: b["status"] for b in answer["bases"] + answer["images"]}
    assert status[f"{registry.host}/lib/base:1"] == "new"
    assert status[f"{registry.host}/up:latest"] == "missing"
    assert status[f"{down}/lib/base:1"] == status[f"{down}/lib/other:1"] == "unknown"
    assert status[f"{down}/down:latest"] == status[f"{down}/other:latest"] == "unknown"
    named = [line for line in checked.stderr.splitlines() if "cannot be reached" in line]
    assert len(named) == 1, checked.stderr
    assert named[0].startswith(f"Registry {down} cannot be reached (connection refused)")
    assert "Is it running" in named[0]
    human = graphbuild("check", cwd=tmp_path)
    assert human.returncode == 1
    assert human.stderr.splitlines()[0] == named[0]
    planned = graphbuild("plan", cwd=tmp_path)
    assert planned.returncode == 1, planned.stderr
    assert [line for line in planned.stderr.splitlines() if "cannot be reached" in line] == named
    assert "up:latest" in planned.stdout and "missing" in planned.stdout  # still answered
    assert "2 images could not be judged" in planned.stdout


def test_plan_with_every_registry_down_does_not_say_nothing_to_rebuild(tmp_path):
    from .oci import free_port

    down = f"127.0.0.1:{free_port()}"
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text(f"FROM {down}/lib/base:1\n")
    (tmp_path / "repos.yaml").write_text(
        f'registries:\n  "{down}": {{insecure: true}}\n'
        f'repos:\n  - name: app\n    path: app\n    images: [{{image: "{down}/app"}}]\n'
    )
    planned = graphbuild("plan", cwd=tmp_path)
    assert planned.returncode == 1, planned.stderr
    assert "Nothing to rebuild." not in planned.stdout
    assert planned.stdout.startswith("Nothing to rebuild among the images that could be judged")
    assert "1 image could not be judged" in planned.stdout
    as_json = graphbuild("plan", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["unknown"] == [f"{down}/app:latest"]
    dry_run = graphbuild("sweep", "--dry-run", cwd=tmp_path)  # the plan a sweep would carry out
    assert (dry_run.returncode, dry_run.stdout) == (1, planned.stdout)
    swept = graphbuild("sweep", cwd=tmp_path)
    assert swept.returncode == 1, swept.stderr
    assert swept.stdout.startswith("Nothing to rebuild among the images that could be judged")


def test_an_unknown_run_id_is_quoted_and_the_runs_are_pointed_at(project):
    """`no run 0` read like "you gave no ID": the value is quoted, and said to be an ID."""
    for args in (("runs", "20990101-x"), ("resume", "20990101-x")):
        done = graphbuild(*args, cwd=project)
        assert done.returncode == 2
        assert done.stderr == ("graphbuild: there is no run with ID '20990101-x'; "
                               "`graphbuild runs` lists them\n")  # fmt: skip


def test_without_a_terminal_a_sync_is_one_summary_line_unless_verbose(project):
    """A cron log gets one line for a sync, not one per repository on every command that
    syncs; `-v` lists each repository."""
    first = graphbuild("uses", "debian", cwd=project)
    assert first.stderr.splitlines() == ["No index yet: syncing first (graphbuild sync).",
                                         "Synced 2 repositories (0 with new commits)."]  # fmt: skip
    quiet = graphbuild("sync", cwd=project)
    assert quiet.stderr == ""  # its summary is its answer, on stdout
    assert quiet.stdout.startswith("Synced 2 repositories (0 with new commits); ")
    chatty = graphbuild("sync", "-v", cwd=project)
    assert sorted(chatty.stderr.splitlines()) == ["app: local folder", "base: local folder"]
    assert chatty.stdout == quiet.stdout


@pytest.mark.parametrize("command", ["sync", "plan", "sweep", "rebuild", "resume", "deploy",
                                     "mirror", "listen"])  # fmt: skip
def test_every_command_that_syncs_takes_verbose(project, command):
    done = graphbuild(command, "--help", cwd=project, env={"COLUMNS": "200"})
    assert done.returncode == 0
    assert "--verbose" in done.stdout and "-v" in done.stdout


def test_counts_agree_with_their_nouns(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one/Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (tmp_path / "repos.yaml").write_text(
        'repos:\n  - name: one\n    path: one\n    images: [{image: "r.test/one"}]\n'
    )
    done = graphbuild("sync", cwd=tmp_path)
    assert done.stdout.startswith("Synced 1 repository (0 with new commits); indexed 1 image: "
                                  "parsed 1 Dockerfile, 0 from cache.")  # fmt: skip


def test_nothing_to_rebuild_is_qualified_only_when_a_registry_did_not_answer(capsys):
    """An image unknown for lack of evidence (exit 0) is listed, and the plan is "Nothing to
    rebuild."; only an unanswered registry (exit 1) makes it "… that could be judged"."""
    from graphbuild.commands import plan as command
    from graphbuild.plan import Plan

    judged = Plan([], unknown=["r.test/a:1"])
    command.show(judged, as_json=False)
    assert capsys.readouterr().out.startswith("Nothing to rebuild.\n")
    command.show(judged, as_json=False, incomplete=True)
    assert capsys.readouterr().out.startswith("Nothing to rebuild among the images that could")
