"""The eager DAG scheduler on synthetic graphs, with a fake work function (threads, tiny sleeps)."""

from __future__ import annotations

import random
import threading
import time

import networkx as nx
import pytest

from graphbuild.scheduler import Failed, Outcome, Scheduler
from graphbuild.state import NodeStatus

BLOCKED, FAILED, PENDING = NodeStatus.BLOCKED, NodeStatus.FAILED, NodeStatus.PENDING
RUNNING, SUCCEEDED = NodeStatus.RUNNING, NodeStatus.SUCCEEDED


class Recorder:
    """A fake build: logs start/end on one logical clock and counts work running at once."""

    def __init__(self, sleep=None, group_of=None, behave=None):
        self.lock = threading.Lock()
        self.clock = 0
        self.sleep = sleep or {}  # node -> seconds of work
        self.group_of = group_of or (lambda node: "")
        self.behave = behave or {}  # node -> callable(node, cancel, attempt), may raise
        self.starts: dict[str, list[int]] = {}
        self.ends: dict[str, list[int]] = {}
        self.times: dict[str, list[tuple[float, float]]] = {}
        self.running: dict[str, int] = {}  # group -> now; "*" is everything
        self.peak: dict[str, int] = {}
        self.cancels: list[threading.Event] = []
        self.events: list[tuple[str, str, dict]] = []
        self.event_threads: set[int] = set()

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _move(self, node, step):
        for key in ("*", self.group_of(node)):
            self.running[key] = self.running.get(key, 0) + step
            self.peak[key] = max(self.peak.get(key, 0), self.running[key])

    def work(self, node, cancel):
        with self.lock:
            self.starts.setdefault(node, []).append(self._tick())
            self._move(node, +1)
            self.cancels.append(cancel)
            attempt = len(self.starts[node])
        began = time.monotonic()
        try:
            if node in self.sleep:
                time.sleep(self.sleep[node])
            if node in self.behave:
                result = self.behave[node](node, cancel, attempt)
                if result is not None:
                    return result
            return Outcome(SUCCEEDED, f"sha256:{node}")
        finally:
            with self.lock:
                self.ends.setdefault(node, []).append(self._tick())
                self._move(node, -1)
                self.times.setdefault(node, []).append((began, time.monotonic()))

    def on_event(self, node, status, info):
        self.event_threads.add(threading.get_ident())
        self.events.append((node, status, info))

    def statuses(self, status):
        return [(n, s) for n, s, _ in self.events if s == status]


def scheduler(deps, rec, **options):
    options.setdefault("max_parallel", 4)
    options.setdefault("backoff", 0.01)
    return Scheduler(deps, rec.work, on_event=rec.on_event, **options)


def random_dag(seed, nodes=200, max_parents=3):
    """Node i takes 0..max_parents parents among the nodes before it: acyclic by construction."""
    rng = random.Random(seed)
    names = [f"n{i:03d}" for i in range(nodes)]
    deps = {}
    for i, name in enumerate(names):
        k = rng.randint(0, min(i, max_parents)) if i else 0
        deps[name] = {names[j] for j in rng.sample(range(i), k)}
    return deps


def digraph(deps):
    g = nx.DiGraph()
    g.add_nodes_from(deps)
    g.add_edges_from((p, c) for c, parents in deps.items() for p in parents)
    return g


def assert_order(deps, rec):
    """Every node's work started after every parent's work ended (on the logical clock)."""
    for node, parents in deps.items():
        for parent in parents:
            assert rec.starts[node][0] > rec.ends[parent][-1], f"{node} started before {parent}"


# ---------------------------------------------------------------- trivial graphs


def test_an_empty_dag_runs_nothing():
    rec = Recorder()
    assert scheduler({}, rec).run() == {}
    assert rec.starts == {} and rec.events == []


def test_a_single_node_runs_once_and_reports_on_the_calling_thread():
    rec = Recorder()
    s = scheduler({"a": set()}, rec)
    assert s.run() == {"a": SUCCEEDED}
    assert [(n, st) for n, st, _ in rec.events] == [("a", RUNNING), ("a", SUCCEEDED)]
    assert rec.events[0][2] == {"attempt": 1}
    assert rec.events[1][2] == {"digest": "sha256:a", "detail": ""}
    assert s.attempts == {"a": 1}
    assert rec.event_threads == {threading.get_ident()}


def test_parents_outside_the_dag_are_not_waited_for():
    """Only nodes in `deps` are scheduled: a parent already built elsewhere must not hang a run."""
    rec = Recorder()
    assert scheduler({"a": {"built-earlier"}, "b": {"a"}}, rec).run() == {
        "a": SUCCEEDED,
        "b": SUCCEEDED,
    }
    assert "built-earlier" not in rec.starts


# ---------------------------------------------------------------- ordering


HAND_MADE = {
    "chain": {"a": set(), "b": {"a"}, "c": {"b"}, "d": {"c"}},
    "diamond": {"top": set(), "left": {"top"}, "right": {"top"}, "bottom": {"left", "right"}},
    "fan-in": {**{f"p{i}": set() for i in range(8)}, "sink": {f"p{i}" for i in range(8)}},
    "fan-out": {"root": set(), **{f"c{i}": {"root"} for i in range(8)}},
    "two-trees": {"a": set(), "a1": {"a"}, "a2": {"a1"}, "b": set(), "b1": {"b"}, "x": {"a2", "b"}},
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_parents_finish_before_children_start_on_hand_made_dags(name):
    deps = HAND_MADE[name]
    rec = Recorder(sleep={n: 0.002 * (i % 3) for i, n in enumerate(sorted(deps))})
    assert scheduler(deps, rec).run() == dict.fromkeys(deps, SUCCEEDED)
    assert_order(deps, rec)
    assert all(len(rec.starts[n]) == 1 for n in deps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parents_finish_before_children_start_on_random_dags(seed):
    deps = random_dag(seed)
    rng = random.Random(seed)
    rec = Recorder(sleep={n: rng.choice([0, 0, 0.001, 0.003]) for n in deps})
    statuses = scheduler(deps, rec, max_parallel=8).run()
    assert statuses == dict.fromkeys(deps, SUCCEEDED)
    assert sorted(rec.starts) == sorted(deps) and all(len(v) == 1 for v in rec.starts.values())
    assert_order(deps, rec)
    assert rec.peak["*"] <= 8
    assert rec.event_threads == {threading.get_ident()}


# ---------------------------------------------------------------- caps


@pytest.mark.parametrize("cap", [1, 3, 6])
def test_the_global_cap_is_reached_and_never_exceeded(cap):
    deps = {f"n{i:02d}": set() for i in range(4 * cap)}
    rec = Recorder(sleep=dict.fromkeys(deps, 0.01))
    scheduler(deps, rec, max_parallel=cap).run()
    assert rec.peak["*"] == cap  # never more, and enough ready work does fill it


def test_the_global_cap_holds_on_a_random_dag():
    deps = random_dag(7)
    rec = Recorder(sleep=dict.fromkeys(deps, 0.004))
    assert set(scheduler(deps, rec, max_parallel=5).run().values()) == {SUCCEEDED}
    assert rec.peak["*"] == 5


def test_group_caps_are_reached_and_never_exceeded():
    """A full group holds its own nodes back, not the other groups' (nor the global cap)."""
    deps = {f"{g}{i:02d}": set() for g in "abc" for i in range(12)}

    def group(node):
        return node[0]

    rec = Recorder(sleep=dict.fromkeys(deps, 0.01), group_of=group)
    statuses = scheduler(deps, rec, max_parallel=5, group_of=group, caps={"a": 1, "b": 2}).run()
    assert set(statuses.values()) == {SUCCEEDED}
    assert rec.peak["a"] == 1
    assert rec.peak["b"] == 2
    assert rec.peak["*"] == 5  # group c, uncapped, fills what a and b may not use


def test_a_lane_has_workers_of_its_own_that_the_default_lane_does_not_use_up():
    """Gates in their own lane: one build worker, busy with a slow build until every gate
    has ended, while the gates of what was built run beside it, two at a time."""
    deps = {"built": set(), "slow": set(), **{f"gate{i}": {"built"} for i in range(4)}}

    def lane(node):
        return "gates" if node.startswith("gate") else ""

    def slow(node, cancel, attempt):
        deadline = time.monotonic() + 10  # bounded: a lane without workers of its own hangs
        while time.monotonic() < deadline and len(rec.ends.keys() & gates) < len(gates):
            time.sleep(0.01)

    gates = {node for node in deps if lane(node)}
    rec = Recorder(sleep=dict.fromkeys(gates, 0.05), group_of=lane, behave={"slow": slow})
    s = scheduler(deps, rec, max_parallel=1, lane_of=lane, lanes={"gates": 2})
    assert set(s.run().values()) == {SUCCEEDED}
    assert rec.starts["slow"][0] > rec.ends["built"][0]  # one build worker: one after the other
    assert all(rec.ends[gate][0] < rec.ends["slow"][0] for gate in gates)
    assert rec.peak["gates"] == 2  # never more than its cap
    assert rec.peak[""] == 1


def test_the_first_stop_cancels_the_work_of_a_lane_that_stops_at_once_and_no_other():
    """Gates are cancelled by the first Ctrl-C, as after the builds; builds finish."""
    started = threading.Event()

    def gate(node, cancel, attempt):
        started.set()
        if not cancel.wait(10):  # bounded: a gate nobody cancels ends the test, failed
            return Outcome(SUCCEEDED, "sha256:gate")
        raise Failed("cancelled")

    def build(node, cancel, attempt):
        assert started.wait(10)
        s.stop()
        time.sleep(0.05)
        assert not cancel.is_set()

    rec = Recorder(behave={"gate": gate, "build": build})
    lanes = {"gate": "gates", "build": "", "later": ""}
    s = scheduler({"gate": set(), "build": set(), "later": {"build"}}, rec, lane_of=lanes.get,
                  lanes={"gates": 1}, stop_at_once={"gates"})  # fmt: skip
    assert s.run() == {"gate": PENDING, "build": SUCCEEDED, "later": PENDING}
    assert rec.statuses(FAILED) == []


def test_a_node_blocked_says_what_why_blocked_makes_of_the_failed_one():
    rec = Recorder(behave={"bad": lambda node, cancel, attempt: _fail("no")})
    deps = {"bad": set(), "child": {"bad"}, "grandchild": {"child"}}
    s = scheduler(deps, rec, why_blocked=lambda node: f"{node} failed its gate")
    assert s.run() == {"bad": FAILED, "child": BLOCKED, "grandchild": BLOCKED}
    assert [info for _, st, info in rec.events if st == BLOCKED] == [
        {"error": "bad failed its gate"}] * 2  # fmt: skip


def _fail(message):
    raise Failed(message)


def test_group_caps_hold_on_a_random_dag():
    deps = random_dag(11)

    def group(node):
        return "slow-registry" if int(node[1:]) % 3 == 0 else "fast-registry"

    rec = Recorder(sleep=dict.fromkeys(deps, 0.004), group_of=group)
    s = scheduler(deps, rec, max_parallel=6, group_of=group, caps={"slow-registry": 2})
    assert set(s.run().values()) == {SUCCEEDED}
    assert rec.peak["slow-registry"] == 2
    assert rec.peak["*"] <= 6
    assert_order(deps, rec)


# ---------------------------------------------------------------- eagerness and priority


def test_a_child_starts_when_its_own_parents_are_done_not_the_whole_wave():
    """`slow` (wave 0) waits for `grandchild` (wave 2): only an eager scheduler lets it finish."""
    grandchild_done = threading.Event()
    waited = []

    def slow(node, cancel, attempt):
        waited.append(grandchild_done.wait(5))

    def grandchild(node, cancel, attempt):
        grandchild_done.set()

    deps = {
        "slow": set(),
        "fast": set(),
        "child": {"fast"},
        "grandchild": {"child"},
        "after-slow": {"slow"},
    }
    rec = Recorder(behave={"slow": slow, "grandchild": grandchild})
    assert set(scheduler(deps, rec).run().values()) == {SUCCEEDED}
    assert waited == [True], "grandchild waited for the slow node of wave 0"
    assert rec.ends["grandchild"][0] < rec.ends["slow"][0]
    assert_order(deps, rec)


def test_with_one_slot_the_head_of_the_longest_weighted_chain_goes_first():
    """Names and node counts point the other way: only the weights say z-long is most urgent."""
    deps = {
        "a-short": set(),  # 5
        "b-mid": set(),  # 3 + 3 = 6
        "b-mid-child": {"b-mid"},
        "z-long": set(),  # 1 + 10 = 11
        "z-long-child": {"z-long"},
    }
    weights = {"a-short": 5, "b-mid": 3, "b-mid-child": 3, "z-long": 1, "z-long-child": 10}
    rec = Recorder()
    scheduler(deps, rec, max_parallel=1, weights=weights).run()
    order = [n for n, _ in rec.statuses(RUNNING)]
    assert order == ["z-long", "z-long-child", "b-mid", "a-short", "b-mid-child"]


def test_without_weights_the_longest_chain_by_count_goes_first():
    deps = {"a": set(), "b": set(), "c": set(), "z": set(), "z1": {"z"}, "z2": {"z1"}}
    rec = Recorder()
    scheduler(deps, rec, max_parallel=1).run()
    # z heads a chain of 3, z1 one of 2; then every chain left is 1 long (ties go by name)
    assert [n for n, _ in rec.statuses(RUNNING)] == ["z", "z1", "a", "b", "c", "z2"]


# ---------------------------------------------------------------- failures


def boom(node, cancel, attempt):
    raise Failed(f"{node} broke")


@pytest.mark.parametrize("slow", ["bad", "ok"])
def test_a_failure_blocks_its_descendants_and_nothing_else(slow):
    """`d` has one failed and one good parent: blocked, whichever parent finishes first."""
    deps = {
        "root": set(),
        "bad": {"root"},
        "c1": {"bad"},
        "c2": {"c1"},
        "c3": {"bad"},
        "ok": {"root"},
        "d": {"bad", "ok"},
        "e": {"ok"},
        "f": set(),
    }
    rec = Recorder(sleep={slow: 0.02}, behave={"bad": boom})
    s = scheduler(deps, rec)
    statuses = s.run()
    blocked = {"c1", "c2", "c3", "d"}
    assert statuses == {
        **dict.fromkeys(deps.keys() - blocked - {"bad"}, SUCCEEDED),
        "bad": FAILED,
        **dict.fromkeys(blocked, BLOCKED),
    }
    assert not blocked & rec.starts.keys(), "a blocked node ran"
    assert s.attempts["bad"] == 1
    assert ("bad", FAILED, {"error": "bad broke"}) in rec.events
    assert sorted(n for n, _ in rec.statuses(BLOCKED)) == sorted(blocked)
    assert all(info == {"error": "bad failed"} for _, st, info in rec.events if st == BLOCKED)


@pytest.mark.parametrize("seed", [4, 5])
def test_failures_on_a_random_dag_block_exactly_their_descendants(seed):
    deps = random_dag(seed)
    g = digraph(deps)
    failing = set(random.Random(seed).sample(sorted(deps), 6))
    rec = Recorder(behave=dict.fromkeys(failing, boom))
    statuses = scheduler(deps, rec, max_parallel=6).run()
    below = set().union(*(nx.descendants(g, f) for f in failing))
    failed = failing - below  # a failing node below another failure never runs
    expected = {n: BLOCKED if n in below else FAILED if n in failed else SUCCEEDED for n in deps}
    assert statuses == expected
    assert rec.starts.keys() == deps.keys() - below
    assert sorted(n for n, _ in rec.statuses(BLOCKED)) == sorted(below)
    assert SUCCEEDED in statuses.values() and BLOCKED in statuses.values()


def test_an_unexpected_exception_fails_only_that_node():
    def bug(node, cancel, attempt):
        raise KeyError("oops")

    deps = {"a": set(), "buggy": set(), "child": {"buggy"}, "other": {"a"}}
    rec = Recorder(behave={"buggy": bug})
    s = scheduler(deps, rec)
    assert s.run() == {"a": SUCCEEDED, "buggy": FAILED, "child": BLOCKED, "other": SUCCEEDED}
    [(_, _, info)] = [e for e in rec.events if e[:2] == ("buggy", FAILED)]
    assert info["error"].startswith("internal error: KeyError")
    assert s.attempts["buggy"] == 1  # a bug is not transient: no retry


# ---------------------------------------------------------------- retries


def flaky(times, transient=True):
    def behave(node, cancel, attempt):
        if attempt <= times:
            raise Failed(f"try {attempt}", transient=transient)

    return behave


def test_a_transient_failure_is_retried_with_backoff_then_succeeds():
    deps = {"a": set(), "child": {"a"}}
    rec = Recorder(behave={"a": flaky(2)})
    s = scheduler(deps, rec, retries=2, backoff=0.01)
    assert s.run() == {"a": SUCCEEDED, "child": SUCCEEDED}
    assert s.attempts == {"a": 3, "child": 1}
    a_events = [(st, info) for n, st, info in rec.events if n == "a"]
    assert a_events == [
        (RUNNING, {"attempt": 1}),
        ("retrying", {"error": "try 1", "in": 0.01}),
        (RUNNING, {"attempt": 2}),
        ("retrying", {"error": "try 2", "in": 0.02}),
        (RUNNING, {"attempt": 3}),
        (SUCCEEDED, {"digest": "sha256:a", "detail": ""}),
    ]
    (_, end1), (start2, end2), (start3, _) = rec.times["a"]
    assert start2 - end1 >= 0.01 and start3 - end2 >= 0.02  # the backoff doubles
    assert rec.starts["child"][0] > rec.ends["a"][-1]


def test_a_transient_failure_that_persists_fails_after_the_retries():
    deps = {"a": set(), "child": {"a"}, "free": set()}
    rec = Recorder(behave={"a": flaky(99)})
    s = scheduler(deps, rec, retries=3)
    assert s.run() == {"a": FAILED, "child": BLOCKED, "free": SUCCEEDED}
    assert s.attempts["a"] == 4 and len(rec.starts["a"]) == 4
    assert len([1 for n, st, _ in rec.events if (n, st) == ("a", "retrying")]) == 3
    assert ("a", FAILED, {"error": "try 4"}) in rec.events


@pytest.mark.parametrize(("transient", "retries"), [(False, 3), (True, 0)])
def test_no_retry_for_a_permanent_failure_or_without_retries(transient, retries):
    rec = Recorder(behave={"a": flaky(1, transient=transient)})
    s = scheduler({"a": set()}, rec, retries=retries)
    assert s.run() == {"a": FAILED}
    assert s.attempts["a"] == 1
    assert rec.statuses("retrying") == []


def test_other_work_goes_on_during_a_backoff():
    """A node waiting to retry holds no slot: with cap 1, `b` runs in the meantime."""
    deps = {"a": set(), "b": set()}
    rec = Recorder(behave={"a": flaky(1)})
    s = scheduler(deps, rec, max_parallel=1, retries=1, backoff=0.05, weights={"a": 2})
    assert s.run() == {"a": SUCCEEDED, "b": SUCCEEDED}
    assert rec.starts["a"][0] < rec.starts["b"][0] < rec.starts["a"][1]


# ---------------------------------------------------------------- stopping


def test_after_stop_nothing_new_starts_and_running_work_finishes():
    """`a` stops the run while `b` runs: `b` finishes; `c` (no slot) and the children never run."""
    b_started, stopped = threading.Event(), threading.Event()
    holder = {}

    def a(node, cancel, attempt):
        assert b_started.wait(5)
        holder["s"].stop()
        stopped.set()

    def b(node, cancel, attempt):
        b_started.set()
        assert stopped.wait(5)
        time.sleep(0.02)  # still running well after the stop

    deps = {"a": set(), "b": set(), "c": set(), "a1": {"a"}, "b1": {"b"}, "b2": {"b1"}}
    rec = Recorder(behave={"a": a, "b": b})
    holder["s"] = s = scheduler(deps, rec, max_parallel=2, weights={"a": 3, "b": 2})
    statuses = s.run()
    assert statuses == {
        "a": SUCCEEDED,
        "b": SUCCEEDED,
        **dict.fromkeys(["c", "a1", "b1", "b2"], PENDING),
    }
    assert set(rec.starts) == {"a", "b"}
    assert not s.cancel.is_set()
    assert rec.statuses(BLOCKED) == [] and rec.statuses(FAILED) == []


def test_stop_before_run_starts_nothing():
    rec = Recorder()
    s = scheduler({"a": set(), "b": {"a"}}, rec)
    s.stop()
    assert s.run() == {"a": PENDING, "b": PENDING}
    assert rec.starts == {} and rec.events == []


def test_stop_during_a_backoff_leaves_the_node_pending_without_waiting():
    rec = Recorder(behave={"a": flaky(1)})
    s = scheduler({"a": set(), "a1": {"a"}}, rec, retries=2, backoff=600.0)

    def on_event(node, status, info):
        rec.on_event(node, status, info)
        if status == "retrying":
            s.stop()

    s.on_event = on_event
    began = time.monotonic()
    assert s.run() == {"a": PENDING, "a1": PENDING}
    assert time.monotonic() - began < 60, "the run waited out the backoff"
    assert s.attempts["a"] == 1


def test_cancelling_asks_running_work_to_stop_and_leaves_it_to_do():
    """A cancelled build that raises Failed stays pending (not failed), its descendants too."""
    started, b_started = threading.Event(), threading.Event()

    def waits_for_cancel(node, cancel, attempt):
        assert b_started.wait(5)  # both are running when the cancel comes
        started.set()
        if cancel.wait(5):
            raise Failed("cancelled", transient=True)

    def ignores_cancel(node, cancel, attempt):
        b_started.set()
        assert cancel.wait(5)
        time.sleep(0.02)

    deps = {"a": set(), "a1": {"a"}, "a2": {"a1"}, "b": set(), "b1": {"b"}, "c": set()}
    rec = Recorder(behave={"a": waits_for_cancel, "b": ignores_cancel})
    s = scheduler(deps, rec, max_parallel=2, retries=3, weights={"a": 3, "b": 2})
    runner = threading.Thread(target=lambda: rec.__dict__.setdefault("result", s.run()))
    runner.start()
    assert started.wait(5)
    s.stop(cancel_running=True)
    runner.join(5)
    assert not runner.is_alive()
    assert rec.result == {
        "a": PENDING,
        "a1": PENDING,
        "a2": PENDING,
        "b": SUCCEEDED,  # finished despite the cancel: its result stands
        "b1": PENDING,
        "c": PENDING,
    }
    assert all(cancel is s.cancel for cancel in rec.cancels) and s.cancel.is_set()
    assert s.attempts["a"] == 1  # a cancelled transient failure is not retried
    assert ("a", PENDING, {"error": "cancelled"}) in rec.events
    assert rec.statuses(BLOCKED) == [] and rec.statuses(FAILED) == []
    assert set(rec.starts) == {"a", "b"}


def test_a_stop_during_a_launch_starts_nothing_more():
    """Ctrl-C lands on the scheduling thread, even in the middle of starting a batch."""
    rec = Recorder(sleep={n: 0.05 for n in "abcd"})
    deps = {node: set() for node in "abcd"}
    s = scheduler(deps, rec)
    original = rec.on_event

    def stop_on_first_start(node, status, info):
        original(node, status, info)
        if status == RUNNING:
            s.stop()

    s.on_event = stop_on_first_start
    result = s.run()
    assert len(rec.starts) == 1
    assert sorted(result.values()) == [PENDING, PENDING, PENDING, SUCCEEDED]


def test_a_group_cap_below_one_still_builds():
    """A cap of 0 would leave ready work waiting forever; it counts as 1."""
    rec = Recorder(group_of=lambda n: "reg")
    s = scheduler({"a": set(), "b": set()}, rec, group_of=rec.group_of, caps={"reg": 0})
    assert s.run() == {"a": SUCCEEDED, "b": SUCCEEDED}
    assert rec.peak["reg"] == 1


def test_work_returning_garbage_fails_only_that_node():
    rec = Recorder(behave={"bad": lambda node, cancel, attempt: "not an Outcome"})
    deps = {"bad": set(), "child": {"bad"}, "other": set()}
    result = scheduler(deps, rec).run()
    assert result == {"bad": FAILED, "child": BLOCKED, "other": SUCCEEDED}
    assert "internal error" in next(i["error"] for n, s, i in rec.events if s == FAILED)


def test_a_transient_failure_while_stopping_is_left_to_do_not_failed():
    """A resume should retry a registry hiccup that came after Ctrl-C, not report it broken."""
    rec = Recorder()
    deps = {"a": set(), "a1": {"a"}}

    def hiccup(node, cancel, attempt):
        s.stop()
        raise Failed("503 service unavailable", transient=True)

    rec.behave["a"] = hiccup
    s = scheduler(deps, rec, retries=3)
    assert s.run() == {"a": PENDING, "a1": PENDING}
    assert rec.statuses(FAILED) == [] and rec.statuses("retrying") == []


def test_any_failure_after_a_stop_is_left_to_do():
    """Ctrl-C reaches the whole foreground group: a git the build ran may die of it."""
    rec = Recorder()
    deps = {"a": set(), "a1": {"a"}}

    def killed_git(node, cancel, attempt):
        s.stop()
        raise RuntimeError("git ls-tree: killed by SIGINT")

    rec.behave["a"] = killed_git
    s = scheduler(deps, rec)
    assert s.run() == {"a": PENDING, "a1": PENDING}
    assert rec.statuses(BLOCKED) == []
