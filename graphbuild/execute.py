"""A run, from plan to records: the builds not done yet, scheduled, every change in state.db.

Every change is recorded as it happens, so a crash loses nothing and a run can
be resumed; a stopped run is left interrupted with what is left to do pending.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import networkx as nx

from graphbuild import detect, refs
from graphbuild.builders import Builder
from graphbuild.builds import Builds, RunSettings, log_name
from graphbuild.config import Config
from graphbuild.graph import image_data
from graphbuild.plan import VULNERABLE, Plan
from graphbuild.report import BUILDING
from graphbuild.scheduler import Scheduler, interruptible
from graphbuild.state import NodeStatus, RunNode, RunStatus, State, now
from graphbuild.state import scratch as scratch_dir

DONE = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED})
UP_TO_DATE = "up-to-date"


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
) -> dict[str, NodeStatus]:
    """Build the plan's steps not done yet in run `run_id`; record every change as it happens.

    `on_event` gets every change of an image's status on this thread, and BUILDING from the
    build's own thread as its builder starts (never for an image skipped as up to date).
    """
    run = state.run(run_id)
    assert run is not None
    records = {n.node: n for n in run.nodes}
    digests = dict(plan.digests)
    digests.update({n.node: n.digest for n in run.nodes if n.status in DONE and n.digest})
    todo = {step.node for step in plan.steps if records[step.node].status not in DONE}
    deps = {node: set(graph.predecessors(node)) & todo for node in todo}
    reasons = {step.node: f"{step.reason}: {step.detail}" for step in plan.steps}
    logs = config.workspace / "runs" / run_id
    missing = frozenset(s.node for s in plan.steps if s.reason == detect.MISSING_TAG)

    def building(node: str) -> None:  # its builder starts: the attempt the scheduler counts
        on_event(node, BUILDING, {"attempt": records[node].attempts})

    fresh = frozenset(s.node for s in plan.steps if s.reason == VULNERABLE)
    builds = Builds(config, graph, digests, builder, run_id, reasons, settings, logs, missing,
                    building, fresh)  # fmt: skip

    def record(node: str, status: str, info: dict) -> None:
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
            if status == NodeStatus.SUCCEEDED:
                state.record_build(node, info["digest"], builds.parents[node], run_id,
                                   key=entry.key, source=source)  # fmt: skip
        state.update_node(run_id, entry)
        on_event(node, status, info)

    def group(node: str) -> str:  # the registry it pushes to
        return refs.parse(image_data(graph, node)["tags"][0]).domain

    caps = {host: spec.max_builds for host, spec in config.registries.items() if spec.max_builds}

    scheduler = Scheduler(
        deps, builds.work, max_parallel=settings.max_parallel, retries=settings.retries,
        backoff=settings.backoff, group_of=group, caps=caps, on_event=record,
        weights=state.durations(),  # the longest chain of past build time goes first
    )  # fmt: skip
    with interruptible(scheduler, note):
        statuses = scheduler.run()
    if scheduler.stopped_by:
        note(f"{scheduler.stopped_by}. Once it can be written again, "
             f"`graphbuild resume {run_id}` finishes the run.")  # fmt: skip
    shutil.rmtree(scratch_dir(config.workspace, run_id), ignore_errors=True)
    for node, status in statuses.items():  # never started (stopped): left pending for resume
        if status == NodeStatus.PENDING and records[node].status != NodeStatus.PENDING:
            records[node].status = NodeStatus.PENDING
            state.update_node(run_id, records[node])
    final = {n.node: n.status for n in records.values()}
    if scheduler.stopping and any(s == NodeStatus.PENDING for s in final.values()):
        state.finish_run(run_id, RunStatus.INTERRUPTED)
    else:
        failed = any(s in (NodeStatus.FAILED, NodeStatus.BLOCKED) for s in final.values())
        state.finish_run(run_id, RunStatus.FAILED if failed else RunStatus.SUCCEEDED)
    return final


def new_run(state: State, kind: str, reason: str | None, plan: Plan, options: dict) -> str:
    nodes = [RunNode(s.node, s.wave, s.reason, s.detail, s.chain) for s in plan.steps]
    return state.create_run(kind, reason, {**options, "digests": plan.digests}, nodes)
