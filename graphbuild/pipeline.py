"""The sweep's path, one function per step: sync → check → plan → build → deploy → report.

`sweep`, `rebuild`, `resume`, `deploy`, `mirror`, `plan` and `listen` are thin
adapters over these steps: each picks the steps it needs and prints what they
return. Nothing here prints a result; it notes progress and problems on stderr
(report.note), so a command's stdout stays its answer alone.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from graphbuild import (
    acr_admin,
    builders,
    builds,
    deployers,
    detect,
    errors,
    execute,
    graph,
    indexdb,
    keys,
    refs,
    report,
    rollout,
    scanning,
    vulns,
    workloads,
    workspace,
)
from graphbuild.config import Config
from graphbuild.console import plural
from graphbuild.plan import VULNERABLE, Plan, from_check
from graphbuild.registry import Failure, Registry, Resolved
from graphbuild.state import (
    REGISTRY_ERRORS,
    REGISTRY_REQUESTS,
    DeployStatus,
    Freshness,
    NodeStatus,
    Run,
    RunStatus,
    State,
    add_counts,
    now,
)
from graphbuild.syncing import say_problems, sync

# ---------------------------------------------------------------- sync


@dataclass
class Fresh:
    """The graph just synced, the nodes a command's names mean, and whether the sync had
    errors (what they concern is not built, and the command exits 1)."""

    graph: nx.DiGraph[str]
    nodes: list[str]
    failed: bool


def ready(config: Config) -> None:
    """The builder can build here (installed; for ACR, the azure extra): said before a sync,
    a check and a plan, not after them."""
    builders.make(config.builder, config.azure)


def fresh(config: Config, names: Sequence[str] = ()) -> Fresh:
    """Sync first, then the graph and the nodes `names` mean.

    Builds start from what the repositories say now: a fix merged a minute ago
    is what an on-call rebuild or a resume must build.
    """
    problems = sync(config).problems
    failed = [p for p in problems if p.level == errors.ERROR]
    if failed:  # a cron log must say which repository, file and line, not only how many
        say_problems(failed, f"The sync found {plural(len(failed), 'error')}; the images "
                     "concerned are not built:")  # fmt: skip
    with closing(indexdb.connect(config.workspace)) as db:
        return Fresh(graph.load(db), indexdb.match_all(db, names), bool(failed))


# ---------------------------------------------------------------- check and plan


def check(
    config: Config,
    g: nx.DiGraph[str],
    concurrency: int = 16,
    only: Collection[str] | None = None,
) -> detect.Check:
    """Ask the registries about every reference of the graph (design rule 2: all of them),
    or, for a push's sweep, only about the nodes `only` names (detect.needed): their
    freshness is updated, the rest of the fleet's stays what the last whole check said."""
    try:
        with (
            State(config.workspace) as state,
            registry_for(config, concurrency=concurrency) as registry,
        ):
            checked = detect.check(g, registry, state, config.mirrors, config.check_timeout,
                                   only)  # fmt: skip
            state.record_freshness(freshness(checked), whole=only is None)
            say_unreachable(registry)
            say_signed_in(registry)
            return checked
    except sqlite3.OperationalError as err:  # a state.db held locked by another process 30 s
        if not (getattr(err, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY"):
            raise  # damaged, read-only, full: the workspace guard says what to do
        raise errors.GraphbuildError(f"{config.workspace / workspace.STATE}: {err}") from None


def freshness(checked: detect.Check) -> list[Freshness]:
    """A check's answer as state.db keeps it for the web view and /metrics."""
    at = now()
    return [
        *(Freshness(b.id, indexdb.EXTERNAL, b.status, "", b.detail, [], b.digest, b.since, at)
          for b in checked.bases),
        *(Freshness(i.id, indexdb.IMAGE, i.status, i.reason, i.detail, i.chain, i.digest, None,
                    at) for i in checked.images),
    ]  # fmt: skip


def built(state: State, run_id: str) -> list[Freshness]:
    """What the run built (or found already served) is up to date on the digests it was
    planned on. Not where anything newer than the run has spoken: a later check (a resume
    builds on the digests of the run's own check, which a later one may have found moved
    on), nor this run's own earlier pass, which recorded its images when it ended."""
    run, at = state.run(run_id), now()
    assert run is not None
    checked = state.freshness()
    return [Freshness(n.node, indexdb.IMAGE, detect.UP_TO_DATE, "", f"built by run {run_id}",
                      [], n.digest, None, at)
            for n in run.nodes
            if n.status in (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED) and n.digest
            and not ((seen := checked.get(n.node)) and seen.at > run.started)]  # fmt: skip


@contextmanager
def registry_for(config: Config, concurrency: int = 16) -> Iterator[Registry]:
    """The registry client for `config`: its `registries:`, and the cloud of `azure:`'s
    registry, which a login server on a custom domain does not say by its name. Its
    requests and errors per host are added to state.db's counters when it closes."""
    azure = config.azure
    clouds = {azure.server: azure.cloud_settings} if azure else {}
    registry = Registry(config.registries, concurrency=concurrency, clouds=clouds)
    try:
        yield registry
    finally:
        registry.close()
        counts = {REGISTRY_REQUESTS: registry.requests, REGISTRY_ERRORS: registry.errors}
        add_counts(config.workspace, counts)


def say_unreachable(registry: Registry) -> None:
    """Each registry that could not be reached at all, once, with what to check: before the
    answer, whose unknowns it explains."""
    for host, why in registry.unreachable().items():
        if "CERTIFICATE" in why or "SSL" in why:
            hint = f"Is its certificate trusted (registries.{host}.ca_bundle in repos.yaml)?"
        else:
            hint = f"Is it running, and is {host} its address?"
        report.note(f"Registry {host} cannot be reached ({why}). {hint} "
                    "What is on it is unknown in this answer.")  # fmt: skip


def say_signed_in(registry: Registry) -> None:
    """Which credential each registry was given, once each: under `auth: auto` a stale
    `az acr login` in docker's config wins over Entra ID, and no identity at all reads
    anonymously; a first run should show which happened, not leave it to be guessed."""
    for host, source in registry.signed_in().items():
        report.note(f"Registry {host}: {source}.")


def plan(config: Config, g: nx.DiGraph[str], checked: detect.Check) -> Plan:
    """What a sweep rebuilds: the check's stale and missing images, the images whose own
    source changed since graphbuild built them, with `vulnerabilities.rebuild` those whose
    own layers carry a finding a rebuild fixes (by the stored scans), and what is built on
    those. Only the images the check judged (those with a digest) have their sources read:
    after a push's narrowed check, not the rest of the fleet."""
    vulnerable: dict[str, str] = {}
    with State(config.workspace) as state:
        changed = keys.changed_sources(config, g, checked.digests, state)
        if config.vulnerabilities and config.vulnerabilities.rebuild:
            roots = vulns.rebuilds(config, g, state, targets(config), checked.digests)
            vulnerable = {node: vulns.reasons(found) for node, found in roots.items()}
    return from_check(g, checked, changed, vulnerable)


# ---------------------------------------------------------------- vulnerabilities


def scan(
    config: Config, g: nx.DiGraph[str], names: Sequence[str] = (), force: bool = False
) -> list[scanning.Outcome]:
    """Scan the fleet's images, the bases they are built on and what the workloads run
    (those `names` name); a digest scanned within the rescan period is not scanned again."""
    running = targets(config)
    with State(config.workspace) as state, registry_for(config) as registry:
        wanted = scanning.targets(config, g, running, names)
        try:
            outcomes = scanning.scan(config, g, wanted, registry, state, threading.Event(), force)
        except KeyboardInterrupt:
            report.note("Interrupted while scanning: what was scanned is kept.")
            raise
        say_unreachable(registry)
        vulns.expose(config, state, running)
    for outcome in outcomes:
        if outcome.status == scanning.FAILED:
            report.note(f"{outcome.ref} ({report.brief(outcome.digest or '')}): not scanned: "
                        f"{outcome.detail}")  # fmt: skip
    return outcomes


def _fixes_begin(
    config: Config, g: nx.DiGraph[str], steps: Plan, state: State, run_id: str
) -> None:
    """Record which findings the run's `vulnerable` rebuilds set out to fix."""
    fixing = {s.node for s in steps.steps if s.reason == VULNERABLE}
    if not fixing or config.vulnerabilities is None:
        return
    roots = vulns.rebuilds(config, g, state, targets(config), steps.digests)
    state.record_fix_attempts(vulns.attempts(run_id, {n: roots[n] for n in fixing & set(roots)}))


def _fixes_end(config: Config, g: nx.DiGraph[str], state: State, run_id: str) -> None:
    """Scan what the run built; a `vulnerable` rebuild that left its finding is recorded
    as not fixing it, and said."""
    built = state.run(run_id)
    assert built is not None
    made = {n.node: n.digest for n in built.nodes
            if n.status == NodeStatus.SUCCEEDED and n.digest}  # fmt: skip
    if not made or config.vulnerabilities is None:
        return
    with registry_for(config) as registry:
        wanted = scanning.targets(config, g, [], list(made))
        for outcome in scanning.scan(config, g, wanted, registry, state, threading.Event()):
            if outcome.status in (scanning.FAILED, scanning.UNREACHABLE):
                report.note(f"{outcome.ref}: its new digest was not scanned: {outcome.detail}")
    for attempt in vulns.settle(state, run_id, made):
        if attempt.status == vulns.NOT_FIXED:
            report.note(f"{attempt.node}: the rebuild did not fix {attempt.id} "
                        f"({attempt.package} still at {attempt.still})")  # fmt: skip


def exposure(config: Config, state: State, run_id: str) -> None:
    """After a deploy: close the exposure of what no deployed image carries any more."""
    if config.vulnerabilities is None:
        return
    finished = state.run(run_id)
    assert finished is not None
    deployed = {d.workload: d.reference.rsplit("@", 1)[1] for d in finished.deploys
                if d.status != DeployStatus.FAILED and "@" in d.reference}  # fmt: skip
    # a window is the run's to close only if its deploy changed what runs
    changed = any(d.status == DeployStatus.DEPLOYED for d in finished.deploys)
    vulns.expose(config, state, targets(config), run_id if changed else None, deployed)


# ---------------------------------------------------------------- mirror


@dataclass
class Mirrored:
    """The imports due into the ACR mirror, those done and failed, and the bases whose
    registry did not answer (not mirrored)."""

    due: list[acr_admin.Import]
    done: list[acr_admin.Import]
    failed: list[acr_admin.Import]
    unanswered: list[str]


def mirror(
    config: Config, g: nx.DiGraph[str], dry_run: bool, only: Collection[str] | None = None
) -> Mirrored:
    """Copy the external bases the graph uses (those among `only`, for a push's sweep)
    into the mirror, by digest; an image already there is not imported again."""
    assert config.azure is not None
    externals = [node for node, data in graph.node_items(g) if data["kind"] == indexdb.EXTERNAL
                 and (only is None or node in only)]  # fmt: skip
    pairs = {node: target for node in externals if (target := refs.mirrored(node, config.mirrors))}
    wanted = {ref: () for pair in pairs.items() for ref in pair}  # both sides, once each
    with registry_for(config) as registry:
        answers = registry.resolve_all(wanted, timeout=config.check_timeout)
        say_unreachable(registry)
    digests = {ref: a.digest if isinstance(a, Resolved) else None for ref, a in answers.items()}
    due, unanswered = acr_admin.imports_due(list(pairs), config.mirrors, digests)
    for base in unanswered:
        failure = answers[base]
        assert isinstance(failure, Failure)  # its digest is None: it was not resolved
        report.note(f"{base}: its registry did not answer ({failure.message}); not mirrored")
    result = Mirrored(due, [], [], unanswered)
    if dry_run or not due:
        return result
    with acr_admin.client(config.azure) as manager:
        for item in due:
            try:
                acr_admin.import_image(manager, config.azure, item)
            except errors.CommandFailed as err:  # the others are still worth importing
                report.note(str(err))
                result.failed.append(item)
                continue
            report.note(f"Imported {item.source} ({report.brief(item.digest)}) as {item.target}")
            result.done.append(item)
    return result


# ---------------------------------------------------------------- build, deploy, report


def run(
    config: Config,
    g: nx.DiGraph[str],
    steps: Plan,
    kind: str,
    reason: str | None,
    settings: builds.RunSettings,
    run_id: str | None = None,
) -> Run | None:
    """Carry out a plan as a new run (or finish `run_id`): build, validate and deploy, then
    write its reports. None when there was nothing to build.

    Callers hold the sweep lock: a run still marked running is one whose process died.
    """
    builder = builders.make(config.builder, config.azure)
    deployers.check(config)
    with State(config.workspace) as state:
        for dead in set(state.abandon_runs()) - {run_id}:
            report.note(f"Run {dead} stopped when its process was killed: marked interrupted.")
        if run_id is None:
            if not steps.steps:
                return None
            options = {"max_parallel": settings.max_parallel, "force": settings.force,
                       "no_cache": settings.no_cache}  # fmt: skip
            run_id = execute.new_run(state, kind, reason, steps, options)
            _fixes_begin(config, g, steps, state, run_id)
        else:
            state.reopen_run(run_id)
        finished = None
        try:
            done = build(config, g, steps, state, builder, settings, run_id)
            state.record_freshness(built(state, run_id), whole=False)
            _fixes_end(config, g, state, run_id)
            deploy(config, g, state, run_id, done)
            exposure(config, state, run_id)
            finished = state.run(run_id)
            assert finished is not None
            write_reports(config, finished)
        except (OSError, sqlite3.OperationalError) as err:  # a full disk, a read-only mount
            raise _unusable(config, err, run_id, finished, state) from None
        except KeyboardInterrupt:  # stopped while scanning what it built: nothing deployed
            state.finish_run(run_id, RunStatus.INTERRUPTED)
            report.note(f"Interrupted. Finish it with: graphbuild resume {run_id}")
            raise
    return finished


def build(
    config: Config,
    g: nx.DiGraph[str],
    steps: Plan,
    state: State,
    builder: builders.Builder,
    settings: builds.RunSettings,
    run_id: str,
) -> execute.Executed:
    """Build what the run has left, wave by wave, showing progress, each image's gates run
    as it is built, and an `as_ready` ring deployed once its images are validated."""
    ready = any(ring.as_ready for ring in config.deployments.rings)
    with report.RunProgress(len(steps.steps), len(steps.waves)) as progress:
        return execute.execute(config, g, steps, state, builder, settings, run_id,
                               progress.event, report.note,
                               targets(config) if ready else [])  # fmt: skip


def deploy(
    config: Config,
    g: nx.DiGraph[str],
    state: State,
    run_id: str,
    done: execute.Executed,
) -> Run:
    """Validate the run's images (what the builds' pass has not judged) and deploy the
    validated ones, ring by ring (those it has not deployed), unless the build was
    interrupted; the run as it then stands."""
    built = state.run(run_id)
    assert built is not None
    if built.status != RunStatus.INTERRUPTED and (config.gates or config.deployments.rings):
        rollout.roll_out(config, g, state, run_id, targets(config), say=report.note,
                         judged=done.judged, streamed=done.streamed)  # fmt: skip
    finished = state.run(run_id)
    assert finished is not None
    return finished


def targets(config: Config) -> list[workloads.Workload]:
    """The workloads found in deploy repositories at the last sync, and those listed."""
    with closing(indexdb.connect(config.workspace)) as db:
        return workloads.load(db, config)


def reports_folder(config: Config, run_id: str) -> Path:
    """Where a run's report.json, report.md and build logs are."""
    return config.workspace / "runs" / run_id


def write_reports(config: Config, finished: Run) -> None:
    """report.json and report.md beside the run's build logs."""
    folder = reports_folder(config, finished.id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.json_text(report.run_document(finished)))
    (folder / "report.md").write_text(report.run_markdown(finished))


def _unusable(
    config: Config, err: OSError | sqlite3.OperationalError, run_id: str, finished: Run | None,
    state: State,
) -> Exception:  # fmt: skip
    """What to raise when the workspace failed a run: the run's fate in one line."""
    problem = workspace.unusable(err, config.workspace)
    if problem is None:
        return err
    if finished is not None:  # it ran to its end: only its reports are missing
        why = f"run {run_id} {finished.status}, but its reports could not be written"
        return workspace.Unusable(f"{problem}; {why}: see `graphbuild runs`")
    with contextlib.suppress(sqlite3.Error):  # else the next run finds it abandoned
        state.finish_run(run_id, RunStatus.INTERRUPTED)
    return workspace.Unusable(
        f"{problem}; run {run_id} is interrupted: once the workspace can be "
        f"written again, `graphbuild resume {run_id}` finishes it"
    )


# ---------------------------------------------------------------- the sweep


@dataclass
class Sweep:
    """What one sweep found and did. `run` is None when it built nothing: nothing to do, a
    dry run, or a plan over `max_images` (`too_big`)."""

    plan: Plan
    unanswered: list[str]
    failed_sync: bool
    run: Run | None = None
    too_big: bool = False

    @property
    def incomplete(self) -> bool:
        """A repository not fetched or a registry that did not answer: not the whole truth."""
        return self.failed_sync or bool(self.unanswered)


def sweep(
    config: Config,
    settings: builds.RunSettings,
    *,
    max_images: int,
    yes: bool = False,
    dry_run: bool = False,
    only: Sequence[str] = (),
    synced: Fresh | None = None,
) -> Sweep:
    """Sync, check, plan, and carry the plan out. `only` limits it to what is built on
    those references (a push event's sweep): only those and what they are built on are
    checked and planned, which answers for them exactly as a whole check would; the
    scheduled sweep checks everything (design rule 2). `synced`, a sync the caller has just
    made for them (`listen`'s batch), is used instead of syncing again. The caller holds
    the sweep lock."""
    if not dry_run:
        ready(config)
    now = fresh(config, only) if synced is None else synced
    checked = check(config, now.graph, only=detect.needed(now.graph, now.nodes) if only else None)
    if config.vulnerabilities and config.vulnerabilities.rebuild and not dry_run and not only:
        # what was not scanned within the rescan period; a push's sweep uses the last scans
        scan(config, now.graph)
    steps = plan(config, now.graph, checked)
    if only:  # a push event: what is built on the pushed images, nothing else
        steps = steps.within(now.graph, now.nodes)
    unanswered = checked.unanswered()
    if unanswered:
        some = ", ".join(unanswered[:3]) + (", …" if len(unanswered) > 3 else "")
        report.note(f"{plural(len(unanswered), 'reference')} got no answer from their registry "
                    f"({some}): what is built on them was not judged. "
                    "See `graphbuild check`.")  # fmt: skip
    result = Sweep(steps, unanswered, now.failed)
    if dry_run:
        return result
    if len(steps.steps) > max_images and not yes:
        result.too_big = True
        return result
    result.run = run(config, now.graph, steps, "sweep", None, settings)
    return result
