"""The /metrics document: what state.db says of the fleet, in Prometheus's text format.

Read from state.db at every scrape, read-only and in one snapshot (a sweep may be
writing): nothing is kept in memory, so `serve` and `listen --ui`, in different
processes or after a restart, give the same answer, and the counters go on across
the CLI runs that add to them (registry requests are counted by `check` and
`sweep`, webhook events by `listen`). docs/web.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from graphbuild import detect
from graphbuild.events import ACCEPTED, IGNORED, REFUSED
from graphbuild.indexdb import EXTERNAL, IMAGE
from graphbuild.state import (
    BUILDS,
    REGISTRY_ERRORS,
    REGISTRY_REQUESTS,
    WEBHOOK_EVENTS,
    NodeStatus,
    RunStatus,
    State,
)
from graphbuild.workspace import STATE

# the classic text format (0.0.4): what every Prometheus reads, and what generate_latest
# writes for names like ours
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

IMAGE_STATUSES = (detect.UP_TO_DATE, detect.STALE, detect.MISSING_TAG, detect.UNKNOWN)
BASE_STATUSES = (detect.CHANGED, detect.UNCHANGED, detect.NEW, detect.PINNED,
                 detect.PINNED_OUTDATED, detect.UNKNOWN)  # fmt: skip
# how an image's build in a run ended (state.OUTCOMES); pending and running are none yet
OUTCOMES = (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED, NodeStatus.FAILED, NodeStatus.BLOCKED)
WEBHOOK_OUTCOMES = (ACCEPTED, IGNORED, REFUSED)
SWEEP = "sweep"  # the runs table's kind of a sweep's run


def render(workspace: Path) -> bytes:
    """The document for GET /metrics, served as CONTENT_TYPE. A workspace with no state.db
    yet gives every count 0 and no time. Raises GraphbuildError when state.db cannot be
    read (another graphbuild's schema)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(workspace))
    return generate_latest(registry)


class _Collector:
    """Reads state.db when the registry collects; a new one for every scrape."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def collect(self) -> list[Metric]:
        if not (self.workspace / STATE).exists():
            return _families(_Facts())
        with State.reader(self.workspace) as state:
            state.db.execute("BEGIN")  # one snapshot: a sweep's writes land before or after
            try:
                return _families(_read(state))
            finally:
                state.db.rollback()


@dataclass
class _Facts:
    """What the document says, as read from state.db; as it is without one by default."""

    freshness: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status): n
    last_check: str | None = None
    sweep: tuple[str, str | None, str] | None = None  # started, finished, status
    outcomes: dict[str, int] = field(default_factory=dict)  # builds by how they ended
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # name: label: n
    exposures_open: int | None = None  # None: no table of exposures


def _read(state: State) -> _Facts:
    db = state.db
    fresh = db.execute("SELECT kind, status, COUNT(*) FROM freshness GROUP BY kind, status")
    sweep = db.execute(  # the newest, in the order `runs` lists them
        "SELECT started, finished, status FROM runs WHERE kind = ? "
        "ORDER BY started DESC, id DESC LIMIT 1",
        (SWEEP,),
    ).fetchone()
    return _Facts(
        freshness={(kind, status): n for kind, status, n in fresh},
        last_check=state.last_whole_check(),
        sweep=None if sweep is None else (sweep[0], sweep[1], sweep[2]),
        outcomes={str(label): n for label, n in state.counters(BUILDS).items()},
        counters={name: {str(label): n for label, n in state.counters(name).items()}
                  for name in (REGISTRY_REQUESTS, REGISTRY_ERRORS, WEBHOOK_EVENTS)},
        exposures_open=db.execute(
            "SELECT COUNT(*) FROM exposures WHERE closed IS NULL"
        ).fetchone()[0],
    )  # fmt: skip


def _families(facts: _Facts) -> list[Metric]:
    fresh, sweep, counters = facts.freshness, facts.sweep, facts.counters
    requests, errors = counters.get(REGISTRY_REQUESTS, {}), counters.get(REGISTRY_ERRORS, {})
    hosts = sorted(requests.keys() | errors.keys())  # each with both, 0 included
    started, ended = (_seconds(sweep[0]), _seconds(sweep[1])) if sweep else (None, None)
    if sweep and sweep[2] == RunStatus.RUNNING:
        ended = None  # a resumed run's end is the one to come
    return [
        _by("graphbuild_images",
            "Images of the fleet by the last check's status: up-to-date, stale (built on a "
            "base that has moved since), missing (not in its registry), unknown (no answer).",
            "status", IMAGE_STATUSES,
            {status: n for (kind, status), n in fresh.items() if kind == IMAGE}),
        _by("graphbuild_bases",
            "External bases by the last check's status: changed, unchanged, new (first seen), "
            "pinned (by digest), pinned-outdated (its tag has moved off the pinned digest), "
            "unknown (no answer).",
            "status", BASE_STATUSES,
            {status: n for (kind, status), n in fresh.items() if kind == EXTERNAL}),
        *_gauge("graphbuild_last_check_timestamp_seconds",
                "When the last check of the whole graph (check, plan, sweep, rebuild; not a "
                "push's sweep) asked the registries, Unix time.", _seconds(facts.last_check)),
        *_gauge("graphbuild_last_sweep_start_timestamp_seconds",
                "When the last sweep's run started, Unix time (a sweep that finds nothing to "
                "rebuild makes no run).", started),
        *_gauge("graphbuild_last_sweep_end_timestamp_seconds",
                "When the last sweep's run ended, Unix time; absent while it runs.", ended),
        _by("graphbuild_last_sweep_status",
            "1 for the status of the last sweep's run (running, succeeded, failed, "
            "interrupted), 0 for the others.",
            "status", RunStatus, {sweep[2]: 1} if sweep else {}, others=False),
        _by("graphbuild_builds_total",
            "Builds of images in all runs by how they ended, each counted when it ended: "
            "succeeded (built and pushed), skipped (this exact build was already served), "
            "failed, blocked (something it is built on failed). An image that failed and "
            "then succeeded on resume counts once in each.",
            "outcome", OUTCOMES, facts.outcomes, counter=True, others=False),
        _by("graphbuild_registry_requests_total",
            "Requests to each registry host, each try counted (token servers not included).",
            "host", hosts, requests, counter=True),
        _by("graphbuild_registry_errors_total",
            "Requests to each registry host that got no answer, a 429 or a 5xx.",
            "host", hosts, errors, counter=True),
        _by("graphbuild_webhook_events_total",
            "POSTs to listen's webhook routes: accepted (a push, queued), ignored (not a push "
            "of a tag), refused (any 4xx or 5xx reply).",
            "outcome", WEBHOOK_OUTCOMES, counters.get(WEBHOOK_EVENTS, {}), counter=True),
        *_gauge("graphbuild_exposures_open",
                "Exposure windows open now: a vulnerability seen in a deployed image, not yet "
                "ended by a deploy or a scan.", facts.exposures_open),
    ]  # fmt: skip


def _gauge(name: str, help_text: str, value: float | None) -> list[Metric]:
    """A family of one sample; none at all for a value there is not (yet)."""
    return [] if value is None else [GaugeMetricFamily(name, help_text, value=value)]


def _by(
    name: str,
    help_text: str,
    label: str,
    known: Iterable[str],
    counts: Mapping[str, int],
    counter: bool = False,
    others: bool = True,
) -> Metric:
    """One family, a sample per `known` value (0 when not counted) and, with `others`, per
    other value counted: a status state.db holds that the list lacks is shown, not dropped."""
    values = dict.fromkeys(map(str, known), 0)
    values.update((str(key), n) for key, n in counts.items() if others or str(key) in values)
    family = (CounterMetricFamily if counter else GaugeMetricFamily)(
        name, help_text, labels=[label]
    )
    for value, n in values.items():
        family.add_metric([value], n)
    return family


def _seconds(stamp: str | None) -> float | None:
    """A stored timestamp (ISO 8601, UTC) as Unix time; None for none or one not readable."""
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError):  # TypeError: not text, in a state.db someone edited
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
