"""A run, from plan to records: the builds not done yet, scheduled, every change in state.db.

Every change is recorded as it happens, so a crash loses nothing and a run can
be resumed; a stopped run is left interrupted with what is left to do pending.
Each image's gates run as soon as it is built, in a lane of their own
(`deployments.gate_concurrency`), and what is built on it waits for them unless
`deployments.build_during_gates` (or `hold_descendants: false`) says not to: a
failed gate blocks it. A digest the run builds on but did not build, which a
stopped run built and no gate judged, gets its gates in the same lane first. A
ring marked `as_ready` (and each such ring right after it) is deployed from the
same scheduler, once every image of the run that its workloads run is
validated, rather than after the whole run.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx

from graphbuild import detect, refs, rollout
from graphbuild.builders import Builder
from graphbuild.builds import Builds, RunSettings, log_name
from graphbuild.config import Config, GateSpec, RingSpec
from graphbuild.deployers import Applied, Change, Context
from graphbuild.errors import CommandFailed, GraphbuildError
from graphbuild.graph import image_data
from graphbuild.plan import VULNERABLE, Plan
from graphbuild.report import BUILDING, GATED, GATING, short
from graphbuild.scheduler import Failed, Outcome, Scheduler, interruptible
from graphbuild.state import (
    GateRecord,
    GateStatus,
    NodeStatus,
    RingRecord,
    RingStatus,
    Run,
    RunNode,
    RunStatus,
    State,
    now,
)
from graphbuild.state import scratch as scratch_dir
from graphbuild.workloads import Workload

DONE = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED})
UP_TO_DATE = "up-to-date"
GATES = "gates"  # the scheduler's lane of the gates
DEPLOYS = "deploys"  # and of the rings deployed as their images are ready, one at a time


@dataclass
class Executed:
    """What the builds' pass left: each image's status, the (image, gate, digest) it
    judged (validation after it does not run those again), and the rings it deployed."""

    statuses: dict[str, NodeStatus]
    judged: set[tuple[str, str, str]] = field(default_factory=set)
    streamed: set[str] = field(default_factory=set)


def execute(
    config: Config,
    graph: nx.DiGraph[str],
    plan: Plan,
    state: State,
    builder: Builder,
    settings: RunSettings,
    run_id: str,
    on_event: Callable[[str, str, dict], None],
    note: Callable[[str], None],
    targets: Sequence[Workload] = (),
) -> Executed:
    """Build the plan's steps not done yet in run `run_id`, and run the gates of each image
    as it is built (and those not passed yet of what the run built before); record every
    change as it happens.

    `on_event` gets every change of an image's status on this thread, and BUILDING from the
    build's own thread as its builder starts (never for an image skipped as up to date);
    GATING and GATED as a gate starts and ends (for `IMAGE gate NAME`);
    `note` each gate's result and each ring's end. `targets` are the workloads, which an
    `as_ready` ring needs.
    """
    run = state.run(run_id)
    assert run is not None
    records = {n.node: n for n in run.nodes}
    todo = {step.node for step in plan.steps if records[step.node].status not in DONE}
    passed = {(g.node, g.gate, g.digest) for g in run.gates if g.status == GateStatus.PASSED}
    gated = _gates(config, graph, records, todo, passed)
    wait = config.deployments.hold_descendants and not config.deployments.build_during_gates
    gates_of: dict[str, set[str]] = {}
    for gid, (image, _) in gated.items():
        gates_of.setdefault(image, set()).add(gid)
    digests = dict(plan.digests)
    digests.update({n.node: n.digest for n in run.nodes if n.status in DONE and n.digest})
    judging = set(gates_of)  # the images this pass judges
    # a digest no gate judged because the run that built it was stopped first: judged in this
    # pass (a parent's gates, as if it were rebuilt; an image skipped as served, as it is)
    again: dict[str, str] = {}  # gate node -> that digest
    if config.deployments.hold_descendants and config.gates:
        # and those this run judged on a parent and failed before: a resume judges them again
        failed_here = {(g.node, g.gate, g.digest) for g in run.gates
                       if g.status != GateStatus.PASSED and g.node not in judging}  # fmt: skip
        caught = _catch_up(config, graph, state, records, todo, digests, failed_here)
        for gid, (parent, digest, gate) in caught.items():
            if parent not in judging:  # a resume judges what its run built in its own way
                gated[gid], again[gid] = (parent, gate), digest
                gates_of.setdefault(parent, set()).add(gid)
    # a parent this pass does not judge, whose digest failed a gate before: a node each, that
    # fails at once and so blocks what would be built on it
    refused = (
        _refused(config, graph, state, todo, judging, digests)
        if wait and config.gates else {}
    )  # fmt: skip
    refused = {gid: why for gid, why in refused.items() if gid not in again}
    for gid, (image, _) in refused.items():
        gates_of.setdefault(image, set()).add(gid)
    deps: dict[str, set[str]] = {}
    for node in todo:  # on an image being judged: on its gates, unless the config says not
        deps[node] = set()
        for parent in graph.predecessors(node):
            deps[node] |= (gates_of.get(parent, set()) if wait else set()) or ({parent} & todo)
    deps.update({gid: {image} & todo for gid, (image, _) in gated.items()})
    deps.update({gid: set() for gid in refused})
    why = {gid: f"{image} failed gate {gate.name}" for gid, (image, gate) in gated.items()}
    why.update({gid: said for gid, (_, said) in refused.items()})
    rings = _as_ready(config, run, graph, state, targets, gates_of, todo)
    for rid, (_, wanted) in rings.items():
        deps[rid] = wanted
    reasons = {step.node: f"{step.reason}: {step.detail}" for step in plan.steps}
    logs = config.workspace / "runs" / run_id
    missing = frozenset(s.node for s in plan.steps if s.reason == detect.MISSING_TAG)

    def building(node: str) -> None:  # its builder starts: the attempt the scheduler counts
        on_event(node, BUILDING, {"attempt": records[node].attempts})

    fresh = frozenset(s.node for s in plan.steps if s.reason == VULNERABLE)
    builds = Builds(config, graph, digests, builder, run_id, reasons, settings, logs, missing,
                    building, fresh)  # fmt: skip

    judged: dict[str, GateRecord] = {}  # gate node -> its result, set on its worker
    today = dt.date.today()

    served: dict[str, dict[str, str]] = {}  # skipped as up to date: gates it failed before

    def judge(gid: str, cancel: threading.Event) -> Outcome:
        image, gate = gated[gid]
        digest = again.get(gid)
        if digest is None:
            entry = records[image]
            if gate.name in served.get(image, {}):  # what it serves failed this gate before
                raise Failed(served[image][gate.name])
            if entry.status != NodeStatus.SUCCEEDED or not entry.digest:  # up to date: no gate
                return Outcome(NodeStatus.SKIPPED, "", "not built")
            digest = entry.digest
        try:
            result = rollout.judge(config, graph, run_id, image, digest, gate, cancel, today)
        except CommandFailed as err:  # cancelled: not judged, left to do
            raise Failed(str(err)) from None
        judged[gid] = result
        if result.status != GateStatus.PASSED:
            raise Failed(result.summary)
        return Outcome(NodeStatus.SUCCEEDED, digest)

    due: dict[str, tuple[list[Change], str]] = {}  # ring node -> changes, why; as it starts
    landed: dict[str, tuple[list[Applied], RingRecord]] = {}  # set on its worker
    arrived: dict[str, list[Applied]] = {}  # what landed of each, even if it did not end
    streamed: set[str] = set()

    def deploy(rid: str, cancel: threading.Event) -> Outcome:
        ring, (items, reason) = rings[rid][0], due[rid]
        if not items:
            return Outcome(NodeStatus.SKIPPED, "", "nothing to deploy")
        log = config.workspace / "runs" / run_id / "deploy.log"
        context = Context(run_id, ring.name, reason, log, cancel, config.workspace)
        context.log.parent.mkdir(parents=True, exist_ok=True)
        applied = arrived[rid] = []  # each deploy as it lands: recorded however the ring ends
        try:
            ended = rollout.land(config, run_id, ring, items, context, applied.append)
        except GraphbuildError as err:  # cancelled (left to do), or a deployer's error
            raise Failed(str(err)) from None
        landed[rid] = (applied, ended)
        if ended.status != RingStatus.HEALTHY:
            raise Failed(ended.detail)
        return Outcome(NodeStatus.SUCCEEDED, "")

    def ring_event(rid: str, status: str, info: dict) -> None:
        """A ring node: its changes as it starts, its deploys and end as it ends."""
        ring = rings[rid][0]
        if status == NodeStatus.RUNNING:
            now_run = state.run(run_id)
            assert now_run is not None
            images, _ = rollout.deployable(config, graph, now_run, state)
            planned = rollout.changes(graph, state, targets, images)
            items = [c for c in planned if c.workload.ring == ring.name]
            due[rid] = (items, rollout.commit_reason(now_run, planned))
            return
        if status == NodeStatus.SKIPPED:
            ended = RingRecord(ring.name, RingStatus.NOTHING_TO_DEPLOY, "no workload runs these")
            state.record_ring(run_id, ended)
            streamed.add(ring.name)
            return
        for a in arrived.pop(rid, []):  # a stop or a fault may have ended it half-way
            state.record_deploy(run_id, rollout.deploy_record(ring, a))
        if rid in landed and status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
            ended = landed[rid][1]
            state.record_ring(run_id, ended)
            streamed.add(ring.name)
            note(rollout.ring_said(ended))
        elif status == NodeStatus.FAILED and info.get("error"):  # not blocked: it broke
            note(f"{ring.name}: deploying as its images were ready stopped ({info['error']}); "
                 "it is deployed again after the builds")  # fmt: skip

    def work(node: str, cancel: threading.Event) -> Outcome:
        if node in rings:
            return deploy(node, cancel)
        if node in why and node not in gated:
            raise Failed(why[node])
        return judge(node, cancel) if node in gated else builds.work(node, cancel)

    def record(node: str, status: str, info: dict) -> None:
        if node in rings:
            ring_event(node, status, info)
            return
        if node in why:  # a gate's result, recorded here, on the thread owning state.db
            image = gated[node][0] if node in gated else ""
            if image and (node in again or records[image].status == NodeStatus.SUCCEEDED):
                label = f"{short(image)} gate {gated[node][1].name}"  # progress counts images only
                on_event(label, GATING if status == NodeStatus.RUNNING else GATED, {})
            if node in judged and status in (NodeStatus.SUCCEEDED, NodeStatus.FAILED):
                state.record_gate(run_id, judged[node])
                note(rollout.said(judged[node]))
            return
        entry = records[node]
        if status == NodeStatus.RUNNING:
            entry.status, entry.started, entry.attempts = NodeStatus.RUNNING, now(), info["attempt"]
            entry.log = str(logs / log_name(node))
        elif status == "retrying":
            entry.status, entry.error = NodeStatus.PENDING, info["error"]
        else:
            entry.status, entry.finished = NodeStatus(status), now()
            entry.digest = info.get("digest", entry.digest)
            entry.error = info.get("error")
            source, entry.key = builds.keys.get(node, (None, entry.key))
            if status == NodeStatus.SKIPPED:  # the reason code says why nothing was built (rule 6)
                entry.detail = f"{info['detail']}; planned as {entry.reason}: {entry.detail}"
                entry.reason, entry.log = UP_TO_DATE, None
                if node in gates_of and entry.digest:  # before its gates can start
                    if wait:
                        served[node] = _failed(config, graph, state, {node: entry.digest}).get(
                            node, {})  # fmt: skip
                        for gate, said in served[node].items():  # what its children are told
                            why[f"{node} gate:{gate}"] = said
                    if config.deployments.hold_descendants:
                        for image, gate in _unjudged(config, graph, state, {node: entry.digest}):
                            again[f"{image} gate:{gate}"] = entry.digest
            if status == NodeStatus.SUCCEEDED:
                state.record_build(node, info["digest"], builds.parents[node], run_id,
                                   key=entry.key, source=source)  # fmt: skip
        state.update_node(run_id, entry)
        on_event(node, status, info)

    def blocked(node: str) -> str:  # what a failed gate blocks names the image and the gate
        return why.get(node, f"{node} failed")

    def group(node: str) -> str:  # the registry it pushes to
        if node in why or node in rings:
            return ""
        return refs.parse(image_data(graph, node)["tags"][0]).domain

    def lane(node: str) -> str:
        return GATES if node in why else DEPLOYS if node in rings else ""

    caps = {host: spec.max_builds for host, spec in config.registries.items() if spec.max_builds}

    scheduler = Scheduler(
        deps, work, max_parallel=settings.max_parallel, retries=settings.retries,
        backoff=settings.backoff, group_of=group, caps=caps, on_event=record,
        weights=state.durations(),  # the longest chain of past build time goes first
        lane_of=lane, lanes={GATES: config.deployments.gate_concurrency, DEPLOYS: 1},
        why_blocked=blocked, stop_at_once={GATES, DEPLOYS},  # as after the builds
    )  # fmt: skip
    with interruptible(scheduler, note):
        statuses = scheduler.run()
    if scheduler.stopped_by:
        note(f"{scheduler.stopped_by}. Once it can be written again, "
             f"`graphbuild resume {run_id}` finishes the run.")  # fmt: skip
    shutil.rmtree(scratch_dir(config.workspace, run_id), ignore_errors=True)
    for node, status in statuses.items():  # never started (stopped): left pending for resume
        if node in why or node in rings:
            continue
        if status == NodeStatus.PENDING and records[node].status != NodeStatus.PENDING:
            records[node].status = NodeStatus.PENDING
            state.update_node(run_id, records[node])
    final = {n.node: n.status for n in records.values()}
    others = [statuses[n] for n in [*gated, *rings]]
    left = [s for s in [*final.values(), *others] if s == NodeStatus.PENDING]
    if scheduler.stopping and left:  # a gate or ring not run yet is left to do too
        state.finish_run(run_id, RunStatus.INTERRUPTED)
    else:
        failed = any(s in (NodeStatus.FAILED, NodeStatus.BLOCKED) for s in final.values())
        # a gate run on a digest the run did not build, which failed: said by the run's end
        failed = failed or any(statuses.get(gid) == NodeStatus.FAILED for gid in again)
        state.finish_run(run_id, RunStatus.FAILED if failed else RunStatus.SUCCEEDED)
    done = {(r.node, r.gate, r.digest) for r in judged.values()}
    return Executed(final, done, streamed)


def _gates(
    config: Config,
    graph: nx.DiGraph[str],
    records: dict[str, RunNode],
    todo: set[str],
    passed: set[tuple[str, str, str]],
) -> dict[str, tuple[str, GateSpec]]:
    """The gate runs this pass schedules, by node name (the image's, a space, `gate:` and
    the gate's; no image reference holds a space): every gate that applies on each image
    to build, and each not passed yet on what the run built before (a resume)."""
    out: dict[str, tuple[str, GateSpec]] = {}
    for node, entry in records.items():
        if node not in graph or not (node in todo or entry.status == NodeStatus.SUCCEEDED):
            continue
        repository = image_data(graph, node)["image"]
        for gate in config.gates:
            if gate.applies(repository) and (
                node in todo or (node, gate.name, entry.digest) not in passed
            ):
                out[f"{node} gate:{gate.name}"] = (node, gate)
    return out


def new_run(state: State, kind: str, reason: str | None, plan: Plan, options: dict) -> str:
    nodes = [RunNode(s.node, s.wave, s.reason, s.detail, s.chain) for s in plan.steps]
    return state.create_run(kind, reason, {**options, "digests": plan.digests}, nodes)


def _refused(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    todo: set[str],
    judged: set[str],
    digests: dict[str, str],
) -> dict[str, tuple[str, str]]:
    """Each parent of an image to build that this pass neither builds nor judges, and whose
    digest failed, in an earlier run, a gate that still applies to it: a node per failed
    gate, whose failure says which run can judge it again."""
    parents = {p for node in todo for p in graph.predecessors(node)} - todo - judged
    wanted = {parent: digests[parent] for parent in parents if digests.get(parent)}
    failed = _failed(config, graph, state, wanted) if wanted else {}
    return {f"{parent} gate:{gate}": (parent, said)
            for parent, gates in failed.items() for gate, said in gates.items()}  # fmt: skip


def _failed(
    config: Config, graph: nx.DiGraph[str], state: State, images: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Of images (node -> digest), the gates that apply to each now and that its digest
    failed last (a gate since removed or narrowed holds nothing back): node -> gate ->
    why, naming the run whose resume judges it again."""
    held: dict[str, dict[str, str]] = {}
    for node, gates in state.failed_gates_of(images).items():
        for gate in sorted(set(gates) & rollout.applying(config, graph, node)):
            run = gates[gate]
            held.setdefault(node, {})[gate] = (
                f"{node} failed gate {gate} in run {run} (judged again by `graphbuild resume "
                f"{run}`, or rebuild the image)")  # fmt: skip
    return held


def _catch_up(
    config: Config,
    graph: nx.DiGraph[str],
    state: State,
    records: dict[str, RunNode],
    todo: set[str],
    digests: dict[str, str],
    failed_here: set[tuple[str, str, str]],
) -> dict[str, tuple[str, str, GateSpec]]:
    """The gates to run on digests the run does not build: those a gate that applies now has
    never judged because the run that built them was stopped first, among the parents of
    what the run builds or has built, and the images it found already served; and each gate
    this run ran so and failed in an earlier pass (`failed_here`: node, gate, digest). A
    resume so judges, whatever is left to build, what a stop or a failure left unjudged.
    Gate node -> (image, digest, gate)."""
    built = {node for node, entry in records.items() if entry.status == NodeStatus.SUCCEEDED}
    parents = {p for node in todo | built if node in graph for p in graph.predecessors(node)}
    wanted = {parent: digests[parent] for parent in parents - set(records) if digests.get(parent)}
    skipped = {node: entry.digest for node, entry in records.items()
               if entry.status == NodeStatus.SKIPPED and entry.digest}  # fmt: skip
    wanted.update({node: digest for node, digest in skipped.items() if node in graph})
    found = {(node, gate, wanted[node]) for node, gate in _unjudged(config, graph, state, wanted)}
    found |= {(node, gate, digest) for node, gate, digest in failed_here
              if node in graph and gate in rollout.applying(config, graph, node)}  # fmt: skip
    specs = {gate.name: gate for gate in config.gates}
    return {f"{node} gate:{name}": (node, digest, specs[name])
            for node, name, digest in sorted(found)}  # fmt: skip


def _unjudged(
    config: Config, graph: nx.DiGraph[str], state: State, images: dict[str, str]
) -> list[tuple[str, str]]:
    """(image, gate) for each gate that applies to an image now and never judged its
    digest, which a run built and was then stopped (an interrupted run runs no gates after
    its builds, and a stop cancels those running)."""
    out = []
    for node, judged in state.stopped_before_gates(images).items():
        out += [(node, gate) for gate in sorted(rollout.applying(config, graph, node) - judged)]
    return out


def _as_ready(
    config: Config,
    run: Run,
    graph: nx.DiGraph[str],
    state: State,
    targets: Sequence[Workload],
    gates_of: dict[str, set[str]],
    todo: set[str],
) -> dict[str, tuple[RingSpec, set[str]]]:
    """The rings deployed from the scheduler, by node name (`ring `, the ring's; no image
    reference holds a space), and what each waits for: the first rings, in order, up to
    one not `as_ready` or one an earlier pass of the run deployed. Each waits for the gates
    (or the build) of every image to build that its workloads run, those of the images
    below them, and the ring before it."""
    ended = {r.ring: r.status for r in run.rings}
    images = [n.node for n in run.nodes if n.node in graph]
    out: dict[str, tuple[RingSpec, set[str]]] = {}
    previous: str | None = None
    for ring in config.deployments.rings:
        if not ring.as_ready:
            break
        if ring.name in ended:  # an earlier pass reached it: the rest go after the builds,
            break  # in order, so that no later ring gets an image before it
        runs = {c.node for c in rollout.changes(graph, state, targets, dict.fromkeys(images, ""))
                if c.workload.ring == ring.name}  # fmt: skip
        wanted = {previous} if previous else set()
        for image in runs:
            for node in {image} | nx.ancestors(graph, image):
                wanted |= gates_of.get(node) or ({node} & todo)
        out[previous := f"ring {ring.name}"] = (ring, wanted)
    return out
