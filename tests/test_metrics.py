"""/metrics: the document read back by Prometheus's own text parser, after real checks against
real registries, real webhook posts and runs recorded as graphbuild records them, must say
what state.db says."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from graphbuild import events, metrics
from graphbuild.commands import listen
from graphbuild.errors import GraphbuildError
from graphbuild.state import (
    REGISTRY_ERRORS,
    REGISTRY_REQUESTS,
    Freshness,
    NodeStatus,
    RunNode,
    RunStatus,
    State,
    now,
)

from .hostile_registry import Reply, Scripted, manifest, served
from .oci import BASE_DIGEST, BASE_NAME, free_port
from .site import graphbuild

IMAGE_STATUSES = ["missing", "stale", "unknown", "up-to-date"]
BASE_STATUSES = ["changed", "new", "pinned", "pinned-outdated", "unchanged", "unknown"]
OUTCOMES = ["blocked", "failed", "skipped", "succeeded"]
RUN_STATUSES = ["failed", "interrupted", "running", "succeeded"]
TYPES = {  # every family the document may hold, and its type
    "graphbuild_images": "gauge",
    "graphbuild_bases": "gauge",
    "graphbuild_last_check_timestamp_seconds": "gauge",
    "graphbuild_last_sweep_start_timestamp_seconds": "gauge",
    "graphbuild_last_sweep_end_timestamp_seconds": "gauge",
    "graphbuild_last_sweep_status": "gauge",
    "graphbuild_builds": "counter",  # the parser names a counter's family without `_total`
    "graphbuild_registry_requests": "counter",
    "graphbuild_registry_errors": "counter",
    "graphbuild_webhook_events": "counter",
    "graphbuild_exposures_open": "gauge",
}


class Scrape:
    """One render() as the Prometheus text parser reads it."""

    def __init__(self, workspace) -> None:
        text = metrics.render(workspace).decode()
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        assert {name: f.type for name, f in self.families.items()} == {
            name: TYPES[name] for name in self.families
        }
        assert all(f.documentation for f in self.families.values())  # every HELP says what

    def by(self, sample: str, label: str) -> dict[str, float]:
        """The samples named `sample`, by the value of their one label."""
        found = {}
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample:
                    assert list(s.labels) == [label]
                    found[s.labels[label]] = s.value
        return found

    def value(self, sample: str) -> float | None:
        values = [s.value for f in self.families.values() for s in f.samples if s.name == sample]
        assert len(values) <= 1
        return values[0] if values else None


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# ---------------------------------------------------------------- after real checks


def test_a_check_is_counted_by_status_and_its_registry_requests_and_errors_by_host(
    tmp_path, registry
):
    """A fleet on three registries: the loopback docker-registry, one that answers each path
    503 once before answering it, and one nobody listens on. `check` (the CLI, as a user runs
    it) twice: each image and base counted by its status, requests and errors by host, summed
    over both runs, equal to what state.db holds and to what the registries saw."""
    h = registry.host
    old = registry.image("lib/base", "1", content="old")
    new = registry.image("lib/base", "1", content="new")
    registry.image("fresh", "latest", annotations={BASE_NAME: f"{h}/lib/base:1", BASE_DIGEST: new})
    registry.image("stale", "latest", annotations={BASE_NAME: f"{h}/lib/base:1", BASE_DIGEST: old})
    turned_away: Counter[str] = Counter()

    def once_503(seen):
        if seen.path not in turned_away:
            turned_away[seen.path] += 1
            return Reply(503)
        return served(manifest("other"))

    flaky = Scripted(once_503).start()
    down = f"127.0.0.1:{free_port()}"
    dockerfiles = {
        "fresh": f"FROM {h}/lib/base:1\n",
        "stale": f"FROM {h}/lib/base:1\n",
        "app": f"FROM {h}/lib/base:1\n",  # never pushed: missing
        "pinned": f"FROM {h}/lib/base:1@{new}\n",
        "other": f"FROM {flaky.address}/lib/other:1\n",
        "lost": f"FROM {down}/lib/lost:1\n",
    }
    images = {name: f"{h}/{name}" for name in dockerfiles} | {"lost": f"{down}/lost"}
    for name, text in dockerfiles.items():
        (tmp_path / "fleet" / name).mkdir(parents=True)
        (tmp_path / "fleet" / name / "Dockerfile").write_text(text)
    (tmp_path / "repos.yaml").write_text(
        "registries:\n"
        + "".join(f'  "{host}": {{insecure: true}}\n' for host in (h, flaky.address, down))
        + "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
        + "".join(
            f'      - {{image: "{images[n]}", dockerfile: {n}/Dockerfile}}\n' for n in dockerfiles
        )
    )
    workspace = tmp_path / ".graphbuild"
    try:
        before = time.time()
        done = graphbuild("check", "--json", cwd=tmp_path)
        after = time.time()
        assert done.returncode == 1, done.stderr  # `down` gave no answer: incomplete
        first = json.loads(done.stdout)
        scrape = Scrape(workspace)
        # the fleet covers these statuses, so the test shows each is counted
        images_seen = Counter(i["status"] for i in first["images"])
        bases_seen = Counter(b["status"] for b in first["bases"])
        assert images_seen == {"up-to-date": 1, "stale": 1, "missing": 3, "unknown": 1}
        assert bases_seen == {"new": 2, "pinned": 1, "unknown": 1}
        assert scrape.by("graphbuild_images", "status") == {
            status: images_seen[status] for status in IMAGE_STATUSES
        }
        assert scrape.by("graphbuild_bases", "status") == {
            status: bases_seen[status] for status in BASE_STATUSES
        }
        with State.reader(workspace) as state:
            rows = state.freshness()
            requests, errors = state.counters(REGISTRY_REQUESTS), state.counters(REGISTRY_ERRORS)
        assert Counter(f.status for f in rows.values() if f.kind == "image") == images_seen
        last_check = max(seconds(f.at) for f in rows.values())
        assert scrape.value("graphbuild_last_check_timestamp_seconds") == last_check
        assert before <= last_check <= after
        assert scrape.by("graphbuild_registry_requests_total", "host") == requests
        assert sum(requests.values()) == first["requests"]
        assert requests[flaky.address] == len(flaky.seen)
        assert requests[down] == 1  # refused: given up for the run
        # every host asked has its errors, 0 included, so errors/requests is always defined
        assert scrape.by("graphbuild_registry_errors_total", "host") == {
            h: 0,
            flaky.address: sum(turned_away.values()),
            down: 1,
        }
        assert errors == {flaky.address: sum(turned_away.values()), down: 1}

        again = graphbuild("check", "--json", cwd=tmp_path)
        assert again.returncode == 1, again.stderr
        second = Scrape(workspace)
        asked = second.by("graphbuild_registry_requests_total", "host")
        assert sum(asked.values()) == first["requests"] + json.loads(again.stdout)["requests"]
        assert asked[flaky.address] == len(flaky.seen)  # counted across processes
        assert second.by("graphbuild_registry_errors_total", "host")[down] == 2
        assert second.by("graphbuild_bases", "status")["unchanged"] == 2  # new no more
        assert second.value("graphbuild_last_check_timestamp_seconds") > last_check
    finally:
        flaky.stop()


# ---------------------------------------------------------------- webhook events


def test_webhook_events_are_counted_by_outcome_as_listen_counts_them(tmp_path):
    """Real posts to the webhook server, counted by the function `listen` gives it."""
    workspace = tmp_path / ".graphbuild"
    secret = "s3cr3t-Shared-Value-9f8e7d"
    queued = []
    server = events.serve("127.0.0.1", 0, secret, queued.append, on_event=listen.counted(workspace))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    push = {"action": "push", "target": {"repository": "team/app", "tag": "1.2"},
            "request": {"host": "myacr.azurecr.io"}}  # fmt: skip
    ping = {"action": "ping", "target": {}}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}",
                          trust_env=False) as client:  # fmt: skip
            signed = {events.SECRET_HEADER: secret}
            answers = [
                client.post("/hooks/acr", json=push, headers=signed).status_code,  # accepted
                client.post("/hooks/acr", json=push, headers=signed).status_code,  # accepted
                client.post("/hooks/acr", json=ping, headers=signed).status_code,  # ignored
                client.post("/hooks/acr", json=push).status_code,  # refused: no secret
                client.post("/hooks/acr", content=b"{", headers=signed).status_code,  # refused
                # not counted: no hook route, or no POST
                client.post("/hooks/gcr", json=push, headers=signed).status_code,
                client.get("/hooks/acr").status_code,
                client.get("/healthz").status_code,
            ]
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [202, 202, 202, 401, 400, 404, 404, 200]
    assert len(queued) == 2
    scrape = Scrape(workspace)
    assert scrape.by("graphbuild_webhook_events_total", "outcome") == {
        "accepted": 2,
        "ignored": 1,
        "refused": 2,
    }


# ---------------------------------------------------------------- runs and exposures


def test_builds_the_last_sweep_and_open_exposures_are_what_state_recorded(tmp_path):
    workspace = tmp_path / ".graphbuild"
    with State(workspace) as state:
        swept = state.create_run("sweep", None, {}, [RunNode(n, 0, "missing", "", [n])
                                                     for n in "abcde"])  # fmt: skip
        for node, status in zip("abcd", OUTCOMES, strict=True):
            state.update_node(swept, RunNode(node, 0, "missing", "", [node], NodeStatus(status)))
        state.finish_run(swept, RunStatus.FAILED)  # e: never started, pending
        rebuilt = state.create_run("rebuild", "on-call", {}, [RunNode("a", 0, "forced", "", [])])
        state.update_node(rebuilt, RunNode("a", 0, "forced", "", [], NodeStatus.SUCCEEDED))
        state.finish_run(rebuilt, RunStatus.SUCCEEDED)
        running = state.create_run("sweep", None, {}, [RunNode("f", 0, "stale", "", ["f"])])
        state.update_node(running, RunNode("f", 0, "stale", "", ["f"], NodeStatus.RUNNING))
        for vuln in ("CVE-2026-1", "CVE-2026-2", "CVE-2026-3"):
            state.open_exposure(vuln, now(), "sha256:" + "a" * 64, "r.test/app:1")
        state.close_exposure("CVE-2026-2", now(), rebuilt)

        scrape = Scrape(workspace)
        outcomes = Counter(n.status for r in state.runs() for n in state.run(r.id).nodes)
        assert outcomes == {"succeeded": 2, "failed": 1, "blocked": 1, "skipped": 1,
                            "pending": 1, "running": 1}  # fmt: skip
        assert scrape.by("graphbuild_builds_total", "outcome") == {
            outcome: outcomes[outcome]
            for outcome in OUTCOMES  # not pending, not running
        }
        last = state.run(running, nodes=False)
        assert scrape.value("graphbuild_last_sweep_start_timestamp_seconds") == seconds(
            last.started
        )
        assert scrape.value("graphbuild_last_sweep_end_timestamp_seconds") is None  # running
        assert scrape.by("graphbuild_last_sweep_status", "status") == {
            status: float(status == "running") for status in RUN_STATUSES
        }
        open_now = [e for e in state.exposures() if e.closed is None]
        assert scrape.value("graphbuild_exposures_open") == len(open_now) == 2

        state.finish_run(running, RunStatus.INTERRUPTED)
        ended = state.run(running, nodes=False)
        state.close_exposure("CVE-2026-1", now(), None)
        scrape = Scrape(workspace)
        assert scrape.value("graphbuild_last_sweep_end_timestamp_seconds") == seconds(
            ended.finished
        )
        assert scrape.by("graphbuild_last_sweep_status", "status") == {
            status: float(status == "interrupted") for status in RUN_STATUSES
        }
        assert scrape.value("graphbuild_exposures_open") == 1
        assert scrape.by("graphbuild_builds_total", "outcome")["succeeded"] == 2  # a rebuild's too


# ---------------------------------------------------------------- nothing yet, and odd data


def zeros(scrape: Scrape) -> None:
    """What a workspace without history says: every status counted 0, no time, no host."""
    assert scrape.by("graphbuild_images", "status") == dict.fromkeys(IMAGE_STATUSES, 0)
    assert scrape.by("graphbuild_bases", "status") == dict.fromkeys(BASE_STATUSES, 0)
    assert scrape.by("graphbuild_builds_total", "outcome") == dict.fromkeys(OUTCOMES, 0)
    assert scrape.by("graphbuild_last_sweep_status", "status") == dict.fromkeys(RUN_STATUSES, 0)
    assert scrape.by("graphbuild_webhook_events_total", "outcome") == {
        "accepted": 0,
        "ignored": 0,
        "refused": 0,
    }
    assert scrape.by("graphbuild_registry_requests_total", "host") == {}
    for absent in ("check", "sweep_start", "sweep_end"):
        assert scrape.value(f"graphbuild_last_{absent}_timestamp_seconds") is None


def test_a_missing_workspace_or_an_empty_state_says_zero(tmp_path):
    nothing = tmp_path / "nothing"
    scrape = Scrape(nothing)
    zeros(scrape)
    assert scrape.value("graphbuild_exposures_open") is None  # no exposures table to count
    assert not nothing.exists()  # reading made nothing
    State(tmp_path / "empty").db.close()
    scrape = Scrape(tmp_path / "empty")
    zeros(scrape)
    assert scrape.value("graphbuild_exposures_open") == 0
    assert metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_a_state_of_another_schema_is_a_graphbuild_error(tmp_path):
    (tmp_path / "state.db").touch()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(GraphbuildError, match="has schema 99"):
        metrics.render(tmp_path)


def test_a_state_someone_edited_is_read_back_exactly_or_left_out(tmp_path):
    """Label values with quotes, backslashes and newlines: no registry host name holds them,
    but a state.db is a file anyone may have edited. A time that is none is left out."""
    odd = 'a"b\\c\nd}, x="1'
    with State(tmp_path) as state:
        state.count(REGISTRY_REQUESTS, {odd: 3, "r.test": 1})
        state.count(REGISTRY_ERRORS, {odd: 1})
        state.record_freshness(
            [Freshness("r.test/app:1", "image", odd, "", "", [], None, None, now())]
        )
    # what graphbuild never writes: times that are no times, bytes where text belongs
    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute("INSERT INTO runs VALUES ('x', 'sweep', NULL, 'yesterday', ?, 'failed', '{}')",
                   (b"\xff",))  # fmt: skip
        db.execute("INSERT INTO counters VALUES (?, ?, 2)", (REGISTRY_REQUESTS, b"bytes"))
        db.execute("INSERT INTO freshness VALUES ('r.test/b:1', 'image', ?, '', '', '[]', NULL, "
                   "NULL, ?)", (b"bytes", now()))  # fmt: skip
    scrape = Scrape(tmp_path)
    assert scrape.value("graphbuild_last_sweep_start_timestamp_seconds") is None
    assert scrape.value("graphbuild_last_sweep_end_timestamp_seconds") is None
    assert scrape.by("graphbuild_last_sweep_status", "status")["failed"] == 1
    assert scrape.by("graphbuild_registry_requests_total", "host") == {
        odd: 3,
        "r.test": 1,
        "b'bytes'": 2,
    }
    assert scrape.by("graphbuild_registry_errors_total", "host") == {
        odd: 1,
        "r.test": 0,
        "b'bytes'": 0,
    }
    assert scrape.by("graphbuild_images", "status") == {
        **dict.fromkeys(IMAGE_STATUSES, 0),
        odd: 1,
        "b'bytes'": 1,
    }


def test_a_build_is_counted_when_it_ends_so_a_resume_never_takes_one_back(tmp_path):
    """failed, then resumed to succeeded: one of each, and the counter never goes down;
    the same status recorded again (a retry's attempt count, say) is not counted twice."""
    workspace = tmp_path / ".graphbuild"
    with State(workspace) as state:
        run = state.create_run("sweep", None, {}, [RunNode("a", 0, "stale", "", ["a"])])
        for status in (NodeStatus.RUNNING, NodeStatus.FAILED, NodeStatus.FAILED):
            state.update_node(run, RunNode("a", 0, "stale", "", ["a"], status))
        first = Scrape(workspace).by("graphbuild_builds_total", "outcome")
        assert (first["failed"], first["succeeded"]) == (1, 0)
        for status in (NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.SUCCEEDED):
            state.update_node(run, RunNode("a", 0, "stale", "", ["a"], status))
        after = Scrape(workspace).by("graphbuild_builds_total", "outcome")
        assert (after["failed"], after["succeeded"]) == (1, 1)
