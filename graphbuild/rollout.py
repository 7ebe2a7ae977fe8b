"""After the builds: validate every rebuilt image, then deploy the validated ones, ring by ring.

Build, validate and deploy are separate steps (design rule 9). An image that
failed a gate is never deployed, and neither is what is built on it unless
repos.yaml says otherwise. Rings go in order; a ring's deploys must all land
and its health check pass before the next ring starts, and a ring marked
manual waits for `graphbuild deploy`. Every outcome is recorded as it happens.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import networkx as nx

from graphbuild import deployers, gates, process
from graphbuild.builds import log_name
from graphbuild.config import Config, GateSpec, RingSpec
from graphbuild.console import plural
from graphbuild.deployers import Applied, Change, Context
from graphbuild.errors import CommandFailed, GraphbuildError
from graphbuild.graph import image_data
from graphbuild.indexdb import IMAGE
from graphbuild.state import (
    DeployRecord,
    DeployStatus,
    GateRecord,
    GateStatus,
    HeldRecord,
    NodeStatus,
    RingRecord,
    RingStatus,
    Run,
    RunStatus,
    State,
)
from graphbuild.workloads import Workload, running


def roll_out(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    run_id: str,
    targets: list[Workload],
    rings: Iterable[str] | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    judged: Collection[tuple[str, str, str]] = (),
    streamed: Collection[str] = (),
) -> bool:
    """Validate what run `run_id` built, then deploy what passed. When anything failed
    (a gate, a deploy, a health check) the run is marked failed and the answer is False.
    `judged` are the (image, gate, digest) the builds' own pass has just judged, not run
    again; `streamed` the rings it has deployed as their images were ready, not deployed
    again. Ctrl-C stops it; `resume` finishes it."""
    cancel = threading.Event()
    try:
        # Ctrl-C or SIGTERM stops the gates and deploys running (they run in process groups
        # of their own, so the terminal's signal reaches only graphbuild)
        with process.on_stop_signals(lambda count: cancel.set()):
            run = state.run(run_id)
            assert run is not None
            if not dry_run:
                for record in validate(config, graph, state, run, cancel, say=say, judged=judged):
                    say(said(record))
                run = state.run(run_id)
                assert run is not None
            images, held = deployable(config, graph, run, state)
            for node, hold in sorted(held.items()):
                say(f"{node}: not deployed, {hold.reason}")
            if not dry_run:
                state.record_held(run_id, held_records(graph, state, targets, held))
            ok = not held
            if config.deployments.rings:
                planned = changes(graph, state, targets, images)
                ok = deploy(config, state, run, planned, cancel, rings, dry_run, say,
                            streamed) and ok  # fmt: skip
            if not ok and not dry_run and run.status == RunStatus.SUCCEEDED:
                state.finish_run(run_id, RunStatus.FAILED)
            return ok
    except GraphbuildError as err:
        if dry_run:
            raise
        if isinstance(err, CommandFailed) and cancel.is_set():
            state.finish_run(run_id, RunStatus.INTERRUPTED)
            say(f"Interrupted. Finish it with: graphbuild resume {run_id}")
        else:  # what was recorded stays; the run says it did not finish well
            state.finish_run(run_id, RunStatus.FAILED)
            say(f"Validating and deploying stopped: {err}")
        return False


def reference(graph: nx.DiGraph[str], node: str, digest: str) -> str:
    """`name:tag@digest` of a built image: what gates scan and deploys pin."""
    return f"{image_data(graph, node)['tags'][0]}@{digest}"


def validate(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    run: Run,
    cancel: threading.Event,
    today: dt.date | None = None,
    say: Callable[[str], None] = print,
    judged: Collection[tuple[str, str, str]] = (),
) -> list[GateRecord]:
    """Run every gate that applies on each image the run built, until it passes on that
    digest: a rerun (resume, deploy) judges again what failed, with today's allowlist, but
    not what is in `judged` (judged by this process already, as each image was built).
    `deployments.gate_concurrency` gates run at once."""
    today = today or dt.date.today()
    done = {(g.node, g.gate, g.digest) for g in run.gates if g.status == GateStatus.PASSED}
    done |= set(judged)
    work = []
    for entry in run.nodes:
        if entry.status != NodeStatus.SUCCEEDED or not entry.digest or entry.node not in graph:
            continue
        repository = image_data(graph, entry.node)["image"]
        for gate in config.gates:
            if gate.applies(repository) and (entry.node, gate.name, entry.digest) not in done:
                work.append((entry.node, entry.digest, gate))
    if not work:
        return []
    images = len({node for node, _, _ in work})
    say(f"Validating {images} image{'s' if images != 1 else ''}: {len(work)} gate runs.")

    def check(item: tuple[str, str, GateSpec]) -> GateRecord:
        return judge(config, graph, run.id, *item, cancel, today)

    records = []
    with ThreadPoolExecutor(max_workers=config.deployments.gate_concurrency) as pool:
        for record in pool.map(check, work):
            state.record_gate(run.id, record)  # here, in the thread that owns the database
            records.append(record)
    return records


def judge(
    config: Config,
    graph: nx.DiGraph[str],
    run_id: str,
    node: str,
    digest: str,
    gate: GateSpec,
    cancel: threading.Event,
    today: dt.date,
) -> GateRecord:
    """Run one gate on one built image, its output in a log of its own (gates run at
    once): the result, for the caller to record on the thread that owns state.db."""
    folder = config.workspace / "runs" / run_id / "gates"
    name = f"{log_name(node).removesuffix('.log')}-{gate.name}"
    scratch, log = folder / name, folder / f"{name}.log"
    scratch.mkdir(parents=True, exist_ok=True)
    result = gates.check(gate, reference(graph, node, digest), log, cancel, today, scratch)
    findings = [asdict(f) for f in result.findings]
    return GateRecord(node, gate.name, digest, result.status, result.summary, findings)


def said(record: GateRecord) -> str:
    """The line a gate's result gets, whenever it ran."""
    return f"{record.node}: gate {record.gate} {record.status} ({record.summary})"


@dataclass(frozen=True)
class Held:
    """Why a built image may not deploy, and the image whose gate that is about."""

    digest: str
    reason: str
    cause: str  # the image itself, or the one below it that failed a gate


def deployable(
    config: Config, graph: nx.DiGraph[str], run: Run, state: State
) -> tuple[dict[str, str], dict[str, Held]]:
    """The images that may deploy (node -> digest), and why each other built one may not.

    What is built on an image that failed a gate is held too: one failed in this run, or
    the exact parent digest it was built on, which failed in an earlier run."""
    built = {n.node: n.digest for n in run.nodes if n.status == NodeStatus.SUCCEEDED and n.digest}
    results: dict[str, dict[str, tuple[str, str]]] = {}
    for g in run.gates:
        if built.get(g.node) == g.digest:
            results.setdefault(g.node, {})[g.gate] = (g.status, g.summary)
    failed = {
        node for node, by in results.items() if any(s != GateStatus.PASSED for s, _ in by.values())
    }
    ok: dict[str, str] = {}
    held: dict[str, Held] = {}
    for node, digest in built.items():
        if node not in graph:
            held[node] = Held(digest, "no longer in the graph", node)
            continue
        repository = image_data(graph, node)["image"]
        missing = [g.name for g in config.gates if g.applies(repository)
                   and g.name not in results.get(node, {})]  # fmt: skip
        bad = [f"{gate}: {summary}" for gate, (status, summary) in results.get(node, {}).items()
               if status != GateStatus.PASSED]  # fmt: skip
        upstream = sorted(nx.ancestors(graph, node) & failed) or _failed_below(
            config, graph, state, node, digest
        )
        if bad:
            held[node] = Held(digest, "failed gate " + "; ".join(bad), node)
        elif missing:
            held[node] = Held(digest, f"not validated: gate {', '.join(missing)} has not run",
                              node)  # fmt: skip
        elif upstream and config.deployments.hold_descendants:
            held[node] = Held(digest, f"built on {upstream[0]}, which failed a gate", upstream[0])
        else:
            ok[node] = digest
    return ok, held


def applying(config: Config, graph: nx.DiGraph[str], image: str) -> set[str]:
    """The names of the gates that apply to `image` now (a gate since removed or narrowed
    holds nothing back)."""
    repository = image_data(graph, image)["image"]
    return {gate.name for gate in config.gates if gate.applies(repository)}


def _failed_below(
    config: Config, graph: nx.DiGraph[str], state: State, node: str, digest: str
) -> list[str]:
    """The first image, down the chain of exact digests `node@digest` was built on, whose
    digest failed, in any run, a gate that applies to it now (graphbuild's build records
    say what each was built on; one no longer in the graph counts every gate)."""
    seen: set[tuple[str, str]] = set()
    stack = [(node, digest)]
    while stack:
        build = state.build_of(*stack.pop())
        for parent, parent_digest in (build.parents if build else {}).items():
            if (parent, parent_digest) in seen:
                continue
            seen.add((parent, parent_digest))
            failed = set(state.failed_gates(parent, parent_digest))
            if parent in graph and graph.nodes[parent]["kind"] == IMAGE:
                failed &= applying(config, graph, parent)
            if failed:
                return [parent]
            stack.append((parent, parent_digest))
    return []


def held_records(
    graph: nx.DiGraph[str], state: State, workloads: Iterable[Workload], held: dict[str, Held]
) -> list[HeldRecord]:
    """Each held image, then each workload that runs it and so keeps its old digest (found
    as `changes` finds the workloads a deploy points at a new one)."""
    targets = list(workloads)
    records = []
    for node, hold in sorted(held.items()):
        records.append(HeldRecord(node, hold.digest, hold.reason, hold.cause))
        found = (
            running(targets, image_data(graph, node), state.built_digests(node))
            if node in graph
            else []
        )
        records += [HeldRecord(node, hold.digest, hold.reason, hold.cause, w.id, w.name, w.ring)
                    for w in sorted(found, key=lambda w: w.id)]  # fmt: skip
    return records


def changes(
    graph: nx.DiGraph[str], state: State, workloads: Iterable[Workload], images: dict[str, str]
) -> list[Change]:
    """Every workload that runs one of `images`, pointed at its new digest."""
    targets = list(workloads)
    return [
        Change(workload, node, workload.tag, digest)
        for node, digest in images.items()
        for workload in running(targets, image_data(graph, node), state.built_digests(node))
    ]


def deploy(
    config: Config,
    state: State,
    run: Run,
    planned: list[Change],
    cancel: threading.Event,
    rings: Iterable[str] | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    streamed: Collection[str] = (),
) -> bool:
    """Deploy ring by ring; False when a deploy failed or a ring was not healthy.

    `rings` None means every ring up to the first manual one; named rings are
    deployed even if manual (that is how a person takes a run to prod). A ring in
    `streamed` was deployed during the builds: it is not deployed again, and unless it
    ended healthy (or with nothing to deploy) the later rings are not deployed.
    """
    chosen = set(rings) if rings is not None else None
    reason = commit_reason(run, planned)
    ended = {r.ring: r.status for r in run.rings}
    log = config.workspace / "runs" / run.id / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for ring in config.deployments.rings:
        if chosen is not None and ring.name not in chosen:
            continue
        if ring.name in streamed:
            if ended.get(ring.name) in (RingStatus.HEALTHY, RingStatus.NOTHING_TO_DEPLOY):
                continue
            return False
        if cancel.is_set():  # Ctrl-C during a ring: the next one does not start
            raise CommandFailed(f"deploy of {ring.name}: cancelled")
        if chosen is None and ring.manual:
            detail = f"deploy it with `graphbuild deploy {run.id} --ring {ring.name}`"
            if not dry_run:
                state.record_ring(run.id, RingRecord(ring.name, RingStatus.MANUAL, detail))
            say(f"{ring.name}: manual; {detail}")
            return True
        items = [c for c in planned if c.workload.ring == ring.name]
        if not items:
            if dry_run:  # a preview that prints nothing would leave a person guessing
                say(f"{ring.name}: nothing to deploy (no workload in it runs an image of this run)")
            else:
                nothing = RingRecord(
                    ring.name, RingStatus.NOTHING_TO_DEPLOY, "no workload runs these"
                )
                state.record_ring(run.id, nothing)
            continue
        context = Context(run.id, ring.name, reason, log, cancel, config.workspace)
        if dry_run:
            shown = [text for kind, group in _by_deployer(items)
                     for text in deployers.make(kind, config).preview(group, context)]  # fmt: skip
            for text in shown:
                say(text.rstrip("\n"))
            if not shown:
                say(f"{ring.name}: nothing to deploy (its workloads already run this run's images)")
            continue
        if not _ring(config, state, run, ring, items, context, say):
            return False
    return True


def _ring(
    config: Config,
    state: State,
    run: Run,
    ring: RingSpec,
    items: list[Change],
    context: Context,
    say: Callable[[str], None],
) -> bool:
    def landed(a: Applied) -> None:  # recorded as each lands
        state.record_deploy(run.id, deploy_record(ring, a))

    record = land(config, run.id, ring, items, context, landed)
    state.record_ring(run.id, record)
    say(ring_said(record))
    return record.status == RingStatus.HEALTHY


def land(
    config: Config,
    run_id: str,
    ring: RingSpec,
    items: list[Change],
    context: Context,
    landed: Callable[[Applied], None],
) -> RingRecord:
    """Deploy a ring's changes and run its health check: how the ring ended. Each deploy
    goes to `landed` as it lands; nothing here writes state.db, so a ring can be deployed
    from a worker of the builds' scheduler (a ring deployed as its images are ready)."""
    applied: list[Applied] = []
    for kind, group in _by_deployer(items):
        deployer = deployers.make(kind, config)
        for batch in [group] if deployer.batched else [[c] for c in group]:
            for a in deployer.apply(batch, context):
                landed(a)
                applied.append(a)
    failed = [a for a in applied if a.status == DeployStatus.FAILED]
    deployed = sum(1 for a in applied if a.status == DeployStatus.DEPLOYED)
    unchanged = sum(1 for a in applied if a.status == DeployStatus.UNCHANGED)
    if failed:
        first = failed[0]
        detail = (f"{plural(len(failed), 'deploy')} failed, first "
                  f"{first.change.workload.name}: {first.detail}")  # fmt: skip
        return RingRecord(ring.name, RingStatus.FAILED, detail)
    if ring.health:
        argv = [a.replace("{ring}", ring.name).replace("{run}", run_id) for a in ring.health]
        try:
            process.run(argv, context.log, context.cancel, f"health check of {ring.name}",
                        timeout=ring.timeout)  # fmt: skip
        except CommandFailed as err:
            if context.cancel.is_set():
                raise
            return RingRecord(ring.name, RingStatus.UNHEALTHY, str(err))
    detail = f"{deployed} deployed, {unchanged} already there" + (
        ", health check passed" if ring.health else ", no health check configured"
    )
    return RingRecord(ring.name, RingStatus.HEALTHY, detail)


def deploy_record(ring: RingSpec, a: Applied) -> DeployRecord:
    w = a.change.workload
    return DeployRecord(ring.name, w.id, w.name, a.change.node, a.change.reference, w.deployer,
                        a.status, a.detail)  # fmt: skip


def ring_said(record: RingRecord) -> str:
    """The line a ring's end gets."""
    if record.status == RingStatus.FAILED:
        return f"{record.ring}: {record.detail}; later rings not deployed"
    if record.status == RingStatus.UNHEALTHY:
        return f"{record.ring}: unhealthy ({record.detail}); later rings not deployed"
    return f"{record.ring}: {record.detail}"


def _by_deployer(items: list[Change]) -> list[tuple[str, list[Change]]]:
    groups: dict[str, list[Change]] = {}
    for change in items:
        groups.setdefault(change.workload.deployer, []).append(change)
    return sorted(groups.items())


def commit_reason(run: Run, planned: list[Change]) -> str:
    """Why these images changed, for commit messages: the run's reason, or each image's."""
    if run.reason:
        return f"{run.kind} {run.id}: {run.reason}"
    why = {n.node: f"{n.reason}: {n.detail}" for n in run.nodes}
    lines = dict.fromkeys(f"{c.node}: {why.get(c.node, '')}" for c in planned)
    return "\n".join([f"{run.kind} {run.id}", *list(lines)[:20]])
