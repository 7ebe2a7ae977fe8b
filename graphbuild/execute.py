"""Run a plan: an eager DAG scheduler, and the builds it schedules.

The scheduler starts a node the moment all its parents are done, under a
global cap (and optional per-group caps, e.g. per registry); among ready
nodes, the one heading the longest remaining chain goes first. A failure
blocks the node's descendants and nothing else; transient failures are
retried with backoff. A stop request starts nothing new and lets running
work finish, or cancels it on a second request.

The build side gives every node a content-addressed key (source, Dockerfile,
build options, the exact digests of its parents), skips keys already built,
pins the Dockerfile to the parents' digests, and records every change in
state.db as it happens, so a crash loses nothing and a run can be resumed.
"""

from __future__ import annotations

import hashlib
import heapq
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from graphbuild import contexts, detect, dockerfile, keys, pin, process, refs, retry, sources, trees
from graphbuild.builders import Builder, BuildRequest
from graphbuild.config import IMAGE_CONTEXT, Config, RepoSpec
from graphbuild.errors import CommandFailed, ContextError, DockerfileError, GraphbuildError
from graphbuild.graph import BUILD_INPUTS, builds_on, edge_data, image_data, node_items
from graphbuild.index import BuildOptions
from graphbuild.indexdb import EXTERNAL, ImageNode
from graphbuild.plan import Plan
from graphbuild.registry.manifests import BASE_DIGEST, BASE_NAME
from graphbuild.state import (
    NodeStatus,
    RunNode,
    RunStatus,
    State,
    drop_group,
    find_build,
    note_group,
    now,
)
from graphbuild.state import scratch as scratch_dir
from graphbuild.workspace import stuck

DONE = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED})
UP_TO_DATE = "up-to-date"


@dataclass(frozen=True)
class Outcome:
    status: NodeStatus  # succeeded | skipped
    digest: str
    detail: str = ""


class Stop(Exception):
    """Not this image's fault: the workspace cannot be written. The run stops, and what is
    left stays to do for a resume."""


class Failed(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# ---------------------------------------------------------------- the scheduler


class Scheduler:
    """Eager DAG scheduling under caps; `work(node, cancel)` returns an Outcome or raises Failed.

    Events reach `on_event(node, status, info)` on the calling thread, in order.
    """

    def __init__(
        self,
        deps: Mapping[str, set[str]],
        work: Callable[[str, threading.Event], Outcome],
        *,
        max_parallel: int = 4,
        retries: int = 2,
        backoff: float = 5.0,
        weights: Mapping[str, float] | None = None,
        group_of: Callable[[str], str] | None = None,
        caps: Mapping[str, int] | None = None,
        on_event: Callable[[str, str, dict], None] | None = None,
    ) -> None:
        known = set(deps)
        self.deps = {node: set(parents) & known for node, parents in deps.items()}
        self.children: dict[str, set[str]] = {node: set() for node in deps}
        for node, parents in self.deps.items():
            for parent in parents:
                self.children[parent].add(node)
        self.work, self.max_parallel = work, max(1, max_parallel)
        # the waits alone, not retry.call: an image waiting for its retry holds no worker
        self.retries, self.backoff = retries, retry.Backoff(backoff)
        self.group_of = group_of or (lambda node: "")
        self.caps = {group: max(1, cap) for group, cap in (caps or {}).items()}
        self.on_event = on_event or (lambda node, status, info: None)
        self.priority = self._bottom_levels(weights or {})
        self.status: dict[str, NodeStatus] = dict.fromkeys(deps, NodeStatus.PENDING)
        self.attempts: dict[str, int] = dict.fromkeys(deps, 0)
        self.stopping = False
        self.stopped_by: str | None = None  # why work stopped the run itself (Stop)
        self.cancel = threading.Event()

    def _bottom_levels(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Longest chain of work from each node to the end: who should go first."""
        dag: nx.DiGraph[str] = nx.DiGraph()
        dag.add_nodes_from(self.deps)
        dag.add_edges_from((p, c) for c, parents in self.deps.items() for p in parents)
        level: dict[str, float] = {}
        for node in reversed(list(nx.topological_sort(dag))):
            below = max((level[c] for c in self.children[node]), default=0.0)
            level[node] = weights.get(node, 1.0) + below
        return level

    def stop(self, cancel_running: bool = False) -> None:
        """Start nothing new; with `cancel_running`, also ask running work to stop."""
        self.stopping = True
        if cancel_running:
            self.cancel.set()

    def run(self) -> dict[str, NodeStatus]:
        waiting = {node: set(parents) for node, parents in self.deps.items()}
        ready = [(-self.priority[n], n) for n, parents in waiting.items() if not parents]
        heapq.heapify(ready)
        delayed: list[tuple[float, str]] = []
        running: dict[Future, str] = {}
        busy: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=self.max_parallel, initializer=_shielded) as pool:
            while True:
                now_ = time.monotonic()
                while delayed and delayed[0][0] <= now_:
                    _, node = heapq.heappop(delayed)
                    heapq.heappush(ready, (-self.priority[node], node))
                if not self.stopping:
                    self._launch(pool, ready, running, busy)
                if not running and (self.stopping or (not ready and not delayed)):
                    break
                timeout = 0.2 if not delayed else max(0.0, min(0.2, delayed[0][0] - now_))
                finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    node = running.pop(future)
                    group = self.group_of(node)
                    busy[group] -= 1
                    self._finish(node, future, waiting, ready, delayed)
        return self.status

    def _launch(
        self, pool: ThreadPoolExecutor, ready: list, running: dict[Future, str], busy: dict
    ) -> None:
        held = []
        while ready and len(running) < self.max_parallel and not self.stopping:
            item = heapq.heappop(ready)
            node = item[1]
            group = self.group_of(node)
            cap = self.caps.get(group)
            if cap is not None and busy.get(group, 0) >= cap:
                held.append(item)
                continue
            busy[group] = busy.get(group, 0) + 1
            self.attempts[node] += 1
            self.status[node] = NodeStatus.RUNNING
            self.on_event(node, NodeStatus.RUNNING, {"attempt": self.attempts[node]})
            running[pool.submit(self.work, node, self.cancel)] = node
        for item in held:
            heapq.heappush(ready, item)

    def _finish(self, node: str, future: Future, waiting: dict, ready: list, delayed: list) -> None:
        try:
            outcome = future.result()
            status, digest, detail = outcome.status, outcome.digest, outcome.detail
        except Failed as err:
            if err.transient and self.attempts[node] <= self.retries and not self.stopping:
                wait_for = self.backoff.wait(self.attempts[node] - 1)
                self.status[node] = NodeStatus.PENDING
                self.on_event(node, "retrying", {"error": str(err), "in": wait_for})
                heapq.heappush(delayed, (time.monotonic() + wait_for, node))
                return
            self._fail(node, str(err))
            return
        except Stop as err:
            self.stop()
            self.stopped_by = str(err)
            self._fail(node, str(err))
            return
        except Exception as err:  # a bug in one build must not stop the others
            self._fail(node, f"internal error: {type(err).__name__}: {err}")
            return
        self.status[node] = status
        self.on_event(node, status, {"digest": digest, "detail": detail})
        for child in sorted(self.children[node]):
            waiting[child].discard(node)
            if not waiting[child] and self.status[child] == NodeStatus.PENDING:
                heapq.heappush(ready, (-self.priority[child], child))

    def _fail(self, node: str, error: str) -> None:
        """Failed, blocking its descendants; or, after a stop, left to do for a resume: the
        signal may have reached what the build was running (git, a registry client)."""
        self.status[node] = NodeStatus.PENDING if self.stopping else NodeStatus.FAILED
        self.on_event(node, self.status[node], {"error": error})
        if self.status[node] != NodeStatus.FAILED:
            return  # cancelled: it stays to do, and so do its descendants
        todo = list(self.children[node])
        while todo:
            child = todo.pop()
            if self.status[child] == NodeStatus.PENDING:
                self.status[child] = NodeStatus.BLOCKED
                self.on_event(child, NodeStatus.BLOCKED, {"error": f"{node} failed"})
                todo += self.children[child]


def _shielded() -> None:
    """Workers never take SIGINT, and neither does what they start (git, builders) inherit
    it: a terminal sends Ctrl-C to its whole foreground group, and it is graphbuild's to
    handle (stop starting builds), not theirs to die of."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


# ---------------------------------------------------------------- the builds


@dataclass
class RunSettings:
    max_parallel: int = 4
    retries: int = 2
    backoff: float = 5.0
    force: bool = False  # build even when a build with the same key exists
    no_cache: bool = False


class Builds:
    """The work of one run: for a node, decide its key, skip or build it, record it."""

    def __init__(
        self,
        config: Config,
        graph: nx.DiGraph[str],
        digests: Mapping[str, str],
        builder: Builder,
        run_id: str,
        reasons: Mapping[str, str],
        settings: RunSettings,
        logs: Path,
        missing: frozenset[str] = frozenset(),
    ) -> None:
        self.config, self.graph, self.builder = config, graph, builder
        self.missing = missing  # a tag is not in the registry: a push is due whatever the key
        self.served = dict(digests)  # node -> digest the registry served when the plan was made
        self.digests = dict(digests)  # node -> digest to pin to; built nodes are added
        self.run_id, self.reasons, self.settings, self.logs = run_id, reasons, settings, logs
        self.lock = threading.Lock()
        self.keys: dict[str, tuple[str, str]] = {}  # node -> (source, key)
        self.parents: dict[str, dict[str, str]] = {}
        self.repos = {repo.name: repo for repo in config.repos}
        self.by_tag = {tag: node for node, attrs in node_items(graph)
                       if attrs["kind"] != EXTERNAL for tag in attrs["tags"]}  # fmt: skip

    def work(self, node: str, cancel: threading.Event) -> Outcome:
        """One node's build; a failure on a workspace that cannot be written stops the run."""
        try:
            return self._attempt(node, cancel)
        except (Failed, OSError) as err:
            why = stuck(self.config.workspace)
            if why is None:
                raise
            raise Stop(f"the workspace {self.config.workspace} {why}: stopping the run "
                       f"({err})") from None  # fmt: skip

    def _attempt(self, node: str, cancel: threading.Event) -> Outcome:
        attrs = image_data(self.graph, node)
        repo = self.repos.get(attrs["repo"])
        if repo is None:
            raise Failed(f"repository {attrs['repo']} is no longer in the config")
        # in the workspace, not /tmp: a killed graphbuild's is removed by the next run
        scratch = scratch_dir(self.config.workspace, self.run_id) / log_name(node)[: -len(".log")]
        shutil.rmtree(scratch, ignore_errors=True)  # an earlier attempt's, if it left any
        watch = process.Watch(
            lambda group: note_group(self.config.workspace, self.run_id, node, group),
            lambda group: drop_group(self.config.workspace, self.run_id, group),
        )
        try:
            try:
                scratch.mkdir(parents=True)
            except OSError as err:
                raise Failed(f"cannot make {scratch}: {err.strerror}") from None
            with process.watched(watch):
                outcome = self._build(node, attrs, repo, scratch, cancel)
        except CommandFailed as err:
            raise Failed(str(err), err.transient) from None
        except GraphbuildError as err:  # what the repository holds: that image fails, alone
            raise Failed(str(err)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if outcome.status == NodeStatus.SUCCEEDED:
            with self.lock:
                self.digests[node] = outcome.digest
        return outcome

    def _build(
        self, node: str, attrs: ImageNode, repo: RepoSpec, scratch: Path, cancel: threading.Event
    ) -> Outcome:
        options = BuildOptions.of(attrs)  # exactly what the graph was linked with
        context, text, content, folders = self._source(repo, attrs, options, scratch)
        try:
            parsed = options.parse(text)
        except DockerfileError as err:  # changed since the sync read it
            parts = (attrs["repo"], attrs["dockerfile"], err.line)
            where = ":".join(str(p) for p in parts if p)
            raise Failed(f"{where}: {err.message}") from None
        pins, parents = self._pins(node, parsed.refs)
        named = {name: digest for name, (_, digest) in folders.items()}
        source = keys.source_key(node, attrs, content, named)
        key = keys.build_key(source, parents)
        with self.lock:
            self.keys[node], self.parents[node] = (source, key), parents
        done = None if self.settings.force else find_build(self.config.workspace, key)
        served = done is not None and done.digest == self.served.get(node)
        if done is not None and served and node not in self.missing:
            return Outcome(
                NodeStatus.SKIPPED, done.digest, "up-to-date: this exact build is served"
            )
        pinned = scratch / "Dockerfile.pinned"
        try:
            pinned.write_text(pin.pin(text, parsed.refs, pins), "utf-8", "surrogateescape")
        except pin.Unpinnable as err:
            raise Failed(f"{attrs['repo']}:{attrs['dockerfile']}: {err}") from None
        except OSError as err:
            raise Failed(f"cannot write {pinned}: {err.strerror}") from None
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / log_name(node)
        reason = f"{self.reasons.get(node, '')}"[:200]
        marks = {"io.graphbuild.run": self.run_id, "io.graphbuild.reason": reason}
        request = BuildRequest(
            image=node, tags=tuple(attrs["tags"]), context=context, dockerfile=pinned,
            build_args=options.build_args, target=options.target, platforms=options.platforms,
            contexts=_build_contexts(options, pins, {n: p for n, (p, _) in folders.items()}),
            labels=marks,
            annotations={**marks, **_base_annotations(parsed.refs, parents, attrs["base"])},
            no_cache=self.settings.no_cache, log=log,
            insecure_pull=self._insecure(parents), insecure_push=self._insecure([node]),
        )  # fmt: skip
        return Outcome(NodeStatus.SUCCEEDED, self.builder.build(request, cancel))

    def _source(
        self, repo: RepoSpec, attrs: ImageNode, options: BuildOptions, scratch: Path
    ) -> tuple[Path, str, str, dict[str, tuple[Path, str]]]:
        """The build context written into `scratch`, the Dockerfile's text, the digest of
        that context's content, and each named context that is a folder (where it was
        written, its content's digest), at the commit the graph read: the key covers what
        is sent."""
        tree = self._tree(repo, attrs)
        folders: dict[str, tuple[Path, str]] = {}
        where = f"{repo.name}:{options.dockerfile}"
        try:
            dockerfile.check_size(tree.size(options.dockerfile))  # a local file may have grown
            # surrogateescape: a byte that is not UTF-8 goes back into the pinned copy as it was
            text = tree.read(options.dockerfile).decode("utf-8", "surrogateescape")
            context, content = contexts.export(tree, repo.name, options.context,
                                              scratch / "context")  # fmt: skip
            for i, (name, folder) in enumerate(sorted(options.folders.items())):
                try:  # written like the main context: nothing through a symlink, nothing outside
                    folders[name] = contexts.export(tree, repo.name, folder,
                                                   scratch / f"named-{i}")  # fmt: skip
                except ContextError as err:
                    raise Failed(f"{err} (named context contexts.{name})") from None
        except DockerfileError as err:
            raise Failed(f"{where}: {err.message}") from None
        except FileNotFoundError:
            raise Failed(f"{where} is gone") from None
        except OSError as err:  # a local folder's file, unreadable since the sync
            raise Failed(f"{where}: cannot read it ({err.strerror})") from None
        finally:
            tree.close()
        return context, text, content, folders

    def _tree(self, repo: RepoSpec, attrs: ImageNode) -> trees.Tree:
        """The repository at the commit the graph read."""
        result = sources.SyncResult(repo.name, attrs["commit"])
        if repo.path is not None:
            return trees.open_tree(repo, result, self.config.workspace, {}, {})
        from git.exc import GitError

        try:
            return trees.open_tree(repo, result, self.config.workspace, {}, {})
        except (GitError, OSError) as err:  # the clone, not what the repository holds
            raise Failed(f"{attrs['repo']}: cannot read commit {attrs['commit']} from its "
                         f"clone ({type(err).__name__}); `graphbuild sync` fetches it "
                         "again") from None  # fmt: skip

    def _pins(
        self, node: str, bases: list[dockerfile.BaseRef]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """`name:tag` -> digest for the Dockerfile, and parent node -> digest for the record."""
        pins: dict[str, str] = {}
        parents: dict[str, str] = {}
        tracked = {
            p for p in self.graph.predecessors(node) if builds_on(edge_data(self.graph, p, node))
        }
        for base in bases:
            if base.ref is None or base.kind not in BUILD_INPUTS:
                continue
            ref = refs.parse(base.ref)
            parent = self._node_for(ref)
            if parent not in tracked:
                continue
            if ref.digest is not None:  # pinned in the Dockerfile: built on that, whatever moved
                parents[parent] = ref.digest
                continue
            with self.lock:
                digest = self.digests.get(parent)
            if digest is None:
                raise Failed(f"no digest to pin {parent} to: its registry gave no answer")
            parents[parent] = pins[ref.tagged] = digest
        return pins, parents

    def _node_for(self, ref: refs.Reference) -> str:
        """The graph node a reference names: an image by any of its tags, else the base."""
        name = refs.upstream(str(ref), self.config.mirrors)  # a mirrored base is its upstream
        return self.by_tag.get(ref.tagged, name) if ref.tag is not None else name

    def _insecure(self, nodes: Iterable[str]) -> bool:
        """Is any of these images' registry a plain-http loopback one?"""
        hosts = {refs.parse(node).domain for node in nodes}
        return any(spec.insecure for host, spec in self.config.registries.items() if host in hosts)


def _build_contexts(
    options: BuildOptions, pins: Mapping[str, str], folders: Mapping[str, Path]
) -> dict[str, str]:
    """The named contexts as `--build-context` takes them: an image pinned to the digest the
    Dockerfile's own uses of it are pinned to (so the build record's parents and base
    annotations name what was built on), a folder where it was written. An image no
    reached stage uses has no such digest and goes as written, like such a stage's FROM."""
    out = {}
    for name, value in options.contexts.items():
        if name in folders:
            out[name] = str(folders[name])
            continue
        ref = refs.normalize(value[len(IMAGE_CONTEXT) :])
        digest = pins.get(ref.tagged) if ref.digest is None else None
        out[name] = f"{IMAGE_CONTEXT}{ref.tagged}@{digest}" if digest else IMAGE_CONTEXT + str(ref)
    return out


def _base_annotations(
    bases: list[dockerfile.BaseRef], parents: Mapping[str, str], base: str | None
) -> dict[str, str]:
    """The OCI base annotations, for every builder: the parent as the Dockerfile names it
    (`name:tag`) and the exact digest it was pinned to. buildah's own would name
    `name@digest`, and BuildKit writes none."""
    final = next((b for b in bases if b.final and b.kind == dockerfile.FROM and b.ref), None)
    if base is None or base not in parents or final is None or final.ref is None:
        return {}
    return {BASE_NAME: refs.parse(final.ref).tagged if "@" not in final.ref else final.ref,
            BASE_DIGEST: parents[base]}  # fmt: skip


def log_name(node: str) -> str:
    """A file name per image, readable, and distinct even where two names read alike."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)[:100]
    return f"{safe}-{hashlib.sha256(node.encode()).hexdigest()[:8]}.log"


# ---------------------------------------------------------------- a run, from plan to records


def interruptible(
    scheduler: Scheduler, note: Callable[[str], None]
) -> AbstractContextManager[None]:
    """Ctrl-C or SIGTERM: start nothing new; a second one cancels the builds running."""

    def handle(count: int) -> None:
        scheduler.stop(cancel_running=count > 1)
        note("Stopping: no new builds; running ones finish (again to cancel them)."
             if count == 1 else "Cancelling the running builds.")  # fmt: skip

    return process.on_stop_signals(handle)


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
    """Build the plan's steps not done yet in run `run_id`; record every change as it happens."""
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
    builds = Builds(config, graph, digests, builder, run_id, reasons, settings, logs, missing)

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
