"""The eager DAG scheduler: which image starts when, and what a failure or a stop blocks.

It starts a node the moment all its parents are done, under a global cap (and
optional per-group caps, e.g. per registry); work of another kind (gates) may run
in a lane of its own, with its own cap, that the builds do not use up. Among
ready nodes, the one heading the longest remaining chain goes first. A failure
blocks the node's descendants and nothing else; transient failures are retried
with backoff. A stop request starts nothing new and lets running work finish, or
cancels it on a second request. It knows nothing of images: the work it runs is
a function of a node.
"""

from __future__ import annotations

import heapq
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass

import networkx as nx

from graphbuild import process, retry
from graphbuild.state import NodeStatus


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


class Scheduler:
    """Eager DAG scheduling under caps; `work(node, cancel)` returns an Outcome or raises Failed.

    Events reach `on_event(node, status, info)` on the calling thread, in order. A node is
    in the lane `lane_of(node)`: "" (the default), of `max_parallel` workers, or one named
    in `lanes`, with that many workers of its own; the work of a lane in `stop_at_once` is
    cancelled by the first stop. What is blocked by a failed node says `why_blocked(node)`.
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
        lane_of: Callable[[str], str] | None = None,
        lanes: Mapping[str, int] | None = None,
        why_blocked: Callable[[str], str] | None = None,
        stop_at_once: Collection[str] = (),
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
        self.lane_of = lane_of or (lambda node: "")
        self.lanes = {lane: max(1, cap) for lane, cap in (lanes or {}).items()}
        self.lanes[""] = self.max_parallel
        self.why_blocked = why_blocked or (lambda node: f"{node} failed")  # what a blocked one says
        self.on_event = on_event or (lambda node, status, info: None)
        self.priority = self._bottom_levels(weights or {})
        self.status: dict[str, NodeStatus] = dict.fromkeys(deps, NodeStatus.PENDING)
        self.attempts: dict[str, int] = dict.fromkeys(deps, 0)
        self.stopping = False
        self.stopped_by: str | None = None  # why work stopped the run itself (Stop)
        self.cancel = threading.Event()  # the default lane's
        # a lane in `stop_at_once` has its work cancelled by the first stop, not the second
        self.cancels = {lane: threading.Event() for lane in self.lanes}
        self.cancels[""] = self.cancel
        self.at_once = set(stop_at_once)

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
        """Start nothing new; with `cancel_running` (or in a lane that stops at once), also
        ask running work to stop."""
        self.stopping = True
        for lane, cancel in self.cancels.items():
            if cancel_running or lane in self.at_once:
                cancel.set()

    def run(self) -> dict[str, NodeStatus]:
        waiting = {node: set(parents) for node, parents in self.deps.items()}
        ready = [(-self.priority[n], n) for n, parents in waiting.items() if not parents]
        heapq.heapify(ready)
        delayed: list[tuple[float, str]] = []
        running: dict[Future, str] = {}
        busy: dict[str, int] = {}
        used = dict.fromkeys(self.lanes, 0)
        with ExitStack() as stack:
            pools = {lane: stack.enter_context(ThreadPoolExecutor(cap, initializer=_shielded))
                     for lane, cap in self.lanes.items()}  # fmt: skip
            while True:
                now_ = time.monotonic()
                while delayed and delayed[0][0] <= now_:
                    _, node = heapq.heappop(delayed)
                    heapq.heappush(ready, (-self.priority[node], node))
                if not self.stopping:
                    self._launch(pools, ready, running, busy, used)
                if not running and (self.stopping or (not ready and not delayed)):
                    break
                timeout = 0.2 if not delayed else max(0.0, min(0.2, delayed[0][0] - now_))
                finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    node = running.pop(future)
                    busy[self.group_of(node)] -= 1
                    used[self.lane_of(node)] -= 1
                    self._finish(node, future, waiting, ready, delayed)
        return self.status

    def _launch(
        self,
        pools: Mapping[str, ThreadPoolExecutor],
        ready: list,
        running: dict[Future, str],
        busy: dict[str, int],
        used: dict[str, int],
    ) -> None:
        held = []
        while ready and not self.stopping and any(used[k] < n for k, n in self.lanes.items()):
            item = heapq.heappop(ready)
            node = item[1]
            group, lane = self.group_of(node), self.lane_of(node)
            cap = self.caps.get(group)
            if used[lane] >= self.lanes[lane] or (cap is not None and busy.get(group, 0) >= cap):
                held.append(item)
                continue
            busy[group] = busy.get(group, 0) + 1
            used[lane] += 1
            self.attempts[node] += 1
            self.status[node] = NodeStatus.RUNNING
            self.on_event(node, NodeStatus.RUNNING, {"attempt": self.attempts[node]})
            running[pools[lane].submit(self.work, node, self.cancels[lane])] = node
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
                self.on_event(child, NodeStatus.BLOCKED, {"error": self.why_blocked(node)})
                todo += self.children[child]


def _shielded() -> None:
    """Workers never take SIGINT, and neither does what they start (git, builders) inherit
    it: a terminal sends Ctrl-C to its whole foreground group, and it is graphbuild's to
    handle (stop starting builds), not theirs to die of."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def interruptible(
    scheduler: Scheduler, note: Callable[[str], None]
) -> AbstractContextManager[None]:
    """Ctrl-C or SIGTERM: start nothing new; a second one cancels the builds running."""

    def handle(count: int) -> None:
        scheduler.stop(cancel_running=count > 1)
        note("Stopping: no new builds; running ones finish (again to cancel them)."
             if count == 1 else "Cancelling the running builds.")  # fmt: skip

    return process.on_stop_signals(handle)
