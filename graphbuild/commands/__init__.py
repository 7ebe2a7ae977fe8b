"""One module per command: each takes a loaded Config and plain options, returns an exit code.

What several commands share lives here: reading the graph (syncing first
when asked), planning from a check, running a plan as a recorded run, and
the guard every command runs in (a damaged or unwritable workspace).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import networkx as nx

from graphbuild import (
    builders,
    deployers,
    errors,
    execute,
    graphdb,
    keys,
    report,
    rollout,
    workloads,
    workspace,
)
from graphbuild.config import Config
from graphbuild.detect import Check
from graphbuild.graph import load  # not `graph`: that name is the graph command's module
from graphbuild.plan import Plan, from_check
from graphbuild.state import Run, State, now

SHOWN = 20  # sync errors a run lists before pointing at `graphbuild sync`
T = TypeVar("T")


def ensure(config: Config) -> sqlite3.Connection:
    """The index with its stored graph; a query syncs first only when there is none yet."""
    db = graphdb.connect(config.workspace)
    if graphdb.meta(db) is None:
        from graphbuild.commands.sync import refresh

        report.note("No index yet: syncing first (graphbuild sync).")
        problems = refresh(config).problems
        if problems:
            report.note(f"The sync found {len(problems)} problem(s): see `graphbuild sync`.")
    db.execute("BEGIN")  # one snapshot: a sync that commits meanwhile is not half seen
    return db


def synced(config: Config, names: Sequence[str] = ()) -> tuple[nx.DiGraph, list[str], bool]:
    """Sync first, then the graph, the nodes `names` match, and whether the sync had errors.

    Builds start from what the repositories say now: a fix merged a minute ago
    is what an on-call rebuild or a resume must build.
    """
    from graphbuild.commands.sync import refresh

    problems = refresh(config).problems
    failed = [p for p in problems if p.level == errors.ERROR]
    if failed:  # a cron log must say which repository, file and line, not only how many
        report.note(f"The sync found {len(failed)} error(s); what they concern is not built:")
        for problem in failed[:SHOWN]:
            report.note(f"  {problem}")
        if len(failed) > SHOWN:
            report.note(f"  … and {len(failed) - SHOWN} more: see `graphbuild sync`.")
    with closing(graphdb.connect(config.workspace)) as db:
        return load(db), matched(db, names), bool(failed)


def matched(db: sqlite3.Connection, names: Sequence[str]) -> list[str]:
    """The graph nodes each of `names` means; one that means nothing is bad input."""
    nodes = []
    for name in names:
        found = graphdb.match(db, name)
        if not found:
            raise errors.NotFound(f"{name} is not in the graph; see `graphbuild images`")
        nodes += found
    return nodes


def _carry_out(
    config: Config,
    g: nx.DiGraph,
    plan: Plan,
    state: State,
    builder: builders.Builder,
    settings: execute.RunSettings,
    run_id: str,
) -> Run:
    """Build what the run has left, then validate and deploy unless it was interrupted."""
    with report.RunProgress(len(plan.steps), len(plan.waves)) as progress:
        execute.execute(config, g, plan, state, builder, settings, run_id, progress.event,
                        report.note)  # fmt: skip
    built = state.run(run_id)
    assert built is not None
    if built.status != "interrupted" and (config.gates or config.deployments.rings):
        targets = deploy_targets(config)
        rollout.roll_out(config, g, state, run_id, targets, settings.max_parallel,
                         say=report.note)  # fmt: skip
    finished = state.run(run_id)
    assert finished is not None
    return finished


def deploy_targets(config: Config) -> list[workloads.Workload]:
    """The workloads found in deploy repositories at the last sync, and those listed."""
    with closing(graphdb.connect(config.workspace)) as db:
        return workloads.load(db, config)


def planned(config: Config, g: nx.DiGraph, concurrency: int = 16) -> tuple[Plan, Check]:
    """What a sweep rebuilds: the check's stale and missing images, the images whose own
    source changed since graphbuild built them, and what is built on those."""
    from graphbuild.commands.check import checked

    check = checked(config, g, concurrency)
    with State(config.workspace) as state:
        changed = keys.changed_sources(config, g, check.digests, state)
    return from_check(g, check, changed), check


def build(
    config: Config,
    g: nx.DiGraph,
    plan: Plan,
    kind: str,
    reason: str | None,
    settings: execute.RunSettings,
    as_json: bool,
    run_id: str | None = None,
) -> int:
    """Execute a plan as a new run (or finish `run_id`), write its reports, say how it went.

    Callers hold the sweep lock: a run still marked running is one whose process died.
    """
    builder = builders.make(config.builder)
    deployers.check(config)
    with State(config.workspace) as state:
        for dead in set(state.abandon_runs()) - {run_id}:
            report.note(f"Run {dead} stopped when its process was killed: marked interrupted.")
        if run_id is None:
            if not plan.steps:
                if as_json:  # the shape of a run document, so scripts read one thing
                    report.emit_json({"id": None, "status": "up-to-date", "nodes": []})
                else:
                    print("Nothing to rebuild.")
                return errors.OK
            options = {"max_parallel": settings.max_parallel, "force": settings.force,
                       "no_cache": settings.no_cache}  # fmt: skip
            run_id = execute.new_run(state, kind, reason, plan, options)
        else:
            state.reopen_run(run_id)
        finished = None
        try:
            finished = _carry_out(config, g, plan, state, builder, settings, run_id)
            folder = config.workspace / "runs" / run_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "report.json").write_text(report.json_text(report.run_document(finished)))
            (folder / "report.md").write_text(report.run_markdown(finished))
        except (OSError, sqlite3.OperationalError) as err:  # a full disk, a read-only mount
            problem = workspace.unusable(err, config.workspace)
            if problem is None:
                raise
            if finished is not None:  # it ran to its end: only its reports are missing
                why = f"run {run_id} {finished.status}, but its reports could not be written"
                raise workspace.Unusable(f"{problem}; {why}: see `graphbuild runs`") from None
            with contextlib.suppress(sqlite3.Error):  # else the next run finds it abandoned
                state.finish_run(run_id, "interrupted")
            raise workspace.Unusable(
                f"{problem}; run {run_id} is interrupted: once the workspace can be "
                f"written again, `graphbuild resume {run_id}` finishes it"
            ) from None
    if as_json:
        report.emit_json(report.run_document(finished))
    else:
        report.run_table(finished)
        print(f"Reports and build logs: {folder}/")
    if finished.status == "interrupted":
        report.note(f"Interrupted. Finish it with: graphbuild resume {run_id}")
    return errors.OK if finished.status == "succeeded" else errors.FAILED


def guarded(
    config: Config, command: Callable[[], T], note: Callable[[str], None] = report.note
) -> T:
    """Run a command; if SQLite found a damaged index.db, rebuild it and run the command
    once more (unless it had started a run: that is resumed, not repeated), and if it found
    a damaged state.db, say so (StateDamaged) and touch nothing. A file that cannot be
    written is one line (Unusable). SQLite finds damage only when a query reads a damaged
    page, anywhere in a command: so this wraps the whole command and costs nothing until
    SQLite complains."""
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
