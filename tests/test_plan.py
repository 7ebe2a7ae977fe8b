"""Plans: what a sweep or an on-call rebuild would build, in which waves, and why.

Graphs are built by graph.build from parsed Dockerfiles (no git, no registry); check
results are written out as detect's own dataclasses.
"""

import pytest

from graphbuild import detect, dockerfile, graph, plan
from graphbuild.detect import MISSING_TAG, STALE, UNKNOWN, UP_TO_DATE, Check, ImageCheck
from graphbuild.index import BuildOptions, Image
from graphbuild.plan import Step

DEBIAN = "docker.io/library/debian:12"
SLIM = "docker.io/library/python:3.12-slim"
ALPINE = "docker.io/library/alpine:3.20"
BASE = "reg.test/base:1"
PY = "reg.test/python:3.12"
APP = "reg.test/app:1"
CLI = "reg.test/cli:1"
JQ = "reg.test/jq:1"
LEFT, RIGHT, TOP = "reg.test/left:1", "reg.test/right:1", "reg.test/top:1"

FLEET = {
    BASE: "FROM debian:12\n",
    PY: f"FROM {BASE}\nCOPY --from=python:3.12-slim /usr/local /usr/local\n",
    APP: f"FROM {PY}\nCOPY --from={BASE} /etc/os-release /etc/base-release\n",
    CLI: f"FROM {APP}\n",
    JQ: "FROM alpine:3.20\n",
}
DIAMOND = {
    BASE: "FROM debian:12\n",
    LEFT: f"FROM {BASE}\n",
    RIGHT: f"FROM {BASE}\n",
    TOP: f"FROM {LEFT}\nCOPY --from={RIGHT} /a /a\n",
}


def fleet(dockerfiles):
    images = [
        Image(
            "repo",
            tag.rsplit(":", 1)[0],
            [tag],
            BuildOptions("Dockerfile", "."),
            parsed=dockerfile.parse(text),
        )
        for tag, text in dockerfiles.items()
    ]
    g, problems = graph.build(images)
    assert problems == []
    return g


def image(node, status, reason="", detail="", chain=None):
    return ImageCheck(node, status, reason, detail, chain or [node])


def built_on(parent):
    return f"built on {parent}, which this run rebuilds"


def assert_waves_follow_edges(g, result):
    """Every image comes in a later wave than each of its parents that is rebuilt too."""
    wave = {step.node: step.wave for step in result.steps}
    for node in wave:
        for parent in g.predecessors(node):
            if parent in wave:
                assert wave[parent] < wave[node], (parent, node)
    assert result.waves == [
        sorted(n for n, w in wave.items() if w == i) for i in range(len(result.waves))
    ]


# -- from_check


def test_stale_and_missing_roots_take_every_descendant_with_them():
    g = fleet(FLEET)
    check = Check(
        [],
        [
            image(BASE, STALE, detect.BASE_CHANGED, "debian moved", [BASE, DEBIAN]),
            image(JQ, MISSING_TAG, MISSING_TAG, "not in the registry yet"),
            image(PY, UP_TO_DATE, chain=[PY, BASE]),
            image(APP, UP_TO_DATE, chain=[APP, PY]),
            image(CLI, UP_TO_DATE, chain=[CLI, APP]),
        ],
        digests={DEBIAN: "sha256:d", ALPINE: "sha256:a"},
    )
    result = plan.from_check(g, check)
    assert result.steps == [
        Step(BASE, 0, "base-changed", "debian moved", [BASE, DEBIAN]),
        Step(JQ, 0, "missing", "not in the registry yet", [JQ]),
        Step(PY, 1, "parent-rebuilt", built_on(BASE), [PY, BASE, DEBIAN]),
        # APP is also built on BASE directly (COPY --from): the shortest chain explains it
        Step(APP, 2, "parent-rebuilt", built_on(BASE), [APP, BASE, DEBIAN]),
        Step(CLI, 3, "parent-rebuilt", built_on(APP), [CLI, APP, BASE, DEBIAN]),
    ]
    assert result.waves == [[BASE, JQ], [PY], [APP], [CLI]]
    assert result.digests == check.digests  # what the parents outside the set are pinned to
    assert result.unknown == []
    assert_waves_follow_edges(g, result)


def test_up_to_date_and_unknown_images_are_not_rebuilt():
    g = fleet(FLEET)
    check = Check(
        [],
        [
            image(BASE, UP_TO_DATE),
            image(PY, UNKNOWN, UNKNOWN, "cannot tell"),
            image(APP, UP_TO_DATE),
            image(CLI, UNKNOWN, UNKNOWN, "cannot tell"),
            image(JQ, UP_TO_DATE),
        ],
    )
    result = plan.from_check(g, check)
    assert result.steps == []
    assert result.waves == []
    assert result.counts() == {}
    assert result.unknown == [CLI, PY]


def test_only_what_is_built_on_a_stale_image_follows_it():
    """Parents and unrelated images stay; an unknown image elsewhere is listed, not built."""
    g = fleet(FLEET)
    check = Check(
        [],
        [
            image(BASE, UP_TO_DATE),
            image(PY, STALE, STALE, f"built on {BASE} x", [PY, BASE]),
            image(APP, UP_TO_DATE),
            image(CLI, UP_TO_DATE),
            image(JQ, UNKNOWN, UNKNOWN, "registry down"),
        ],
    )
    result = plan.from_check(g, check)
    assert [(s.node, s.wave, s.reason) for s in result.steps] == [
        (PY, 0, "stale"),
        (APP, 1, "parent-rebuilt"),
        (CLI, 2, "parent-rebuilt"),
    ]
    assert result.unknown == [JQ]


def test_a_stale_image_below_a_stale_one_keeps_its_own_reason():
    g = fleet(FLEET)
    check = Check(
        [],
        [
            image(BASE, STALE, detect.BASE_CHANGED, "debian moved", [BASE, DEBIAN]),
            image(PY, STALE, detect.BASE_CHANGED, "slim moved", [PY, SLIM]),
        ],
    )
    steps = {s.node: s for s in plan.from_check(g, check).steps}
    assert (steps[PY].wave, steps[PY].reason, steps[PY].chain) == (1, "base-changed", [PY, SLIM])
    assert steps[CLI].reason == "parent-rebuilt"


def test_a_child_waits_for_its_latest_parent():
    """APP is built on BASE (wave 0) and on PY (wave 1): it belongs in wave 2, not 1."""
    g = fleet(FLEET)
    check = Check([], [image(BASE, STALE, STALE, "x", [BASE, DEBIAN])])
    result = plan.from_check(g, check)
    assert {s.node: s.wave for s in result.steps} == {BASE: 0, PY: 1, APP: 2, CLI: 3}
    assert_waves_follow_edges(g, result)


def test_a_diamond_is_rebuilt_once_after_both_sides():
    g = fleet(DIAMOND)
    check = Check([], [image(BASE, STALE, detect.BASE_CHANGED, "moved", [BASE, DEBIAN])])
    result = plan.from_check(g, check)
    assert result.waves == [[BASE], [LEFT, RIGHT], [TOP]]
    (top,) = [s for s in result.steps if s.node == TOP]
    assert top.chain == [TOP, LEFT, BASE, DEBIAN]
    assert_waves_follow_edges(g, result)


def test_an_image_using_a_fleet_frontend_is_not_rebuilt_with_it():
    frontend = "reg.test/frontend:1"
    g = fleet(
        {
            frontend: "FROM alpine:3.20\n",
            APP: f"# syntax={frontend}\nFROM debian:12\n",
        }
    )
    assert g.edges[frontend, APP]["kind"] == "syntax"
    check = Check([], [image(frontend, STALE, detect.BASE_CHANGED, "moved", [frontend, ALPINE])])
    assert [s.node for s in plan.from_check(g, check).steps] == [frontend]


# -- forced


def test_forced_image_and_everything_built_on_it():
    g = fleet(FLEET)
    digests = {BASE: "sha256:b", SLIM: "sha256:s"}
    result = plan.forced(g, [PY], "CVE-2026-1234", digests=digests)
    assert result.steps == [
        Step(PY, 0, "forced", "CVE-2026-1234", [PY]),
        Step(APP, 1, "forced", "CVE-2026-1234", [APP, PY]),
        Step(CLI, 2, "forced", "CVE-2026-1234", [CLI, APP, PY]),
    ]
    assert result.digests == digests
    assert result.unknown == []


def test_forced_external_base_roots_at_its_direct_children():
    g = fleet(FLEET)
    result = plan.forced(g, [SLIM], "CVE-2026-1234")
    assert result.steps == [
        Step(PY, 0, "forced", "CVE-2026-1234", [PY, SLIM]),
        Step(APP, 1, "forced", "CVE-2026-1234", [APP, PY, SLIM]),
        Step(CLI, 2, "forced", "CVE-2026-1234", [CLI, APP, PY, SLIM]),
    ]
    assert SLIM not in result.waves[0]  # a base is not built, only what is built on it


def test_forced_several_at_once_share_one_plan():
    g = fleet(FLEET)
    result = plan.forced(g, [DEBIAN, ALPINE], "weekly")
    assert result.waves == [[BASE, JQ], [PY], [APP], [CLI]]
    assert {s.reason for s in result.steps} == {"forced"}
    assert {s.detail for s in result.steps} == {"weekly"}
    assert result.counts() == {"forced": 5}


def test_no_downstream_is_only_the_named_images():
    g = fleet(FLEET)
    assert plan.forced(g, [PY], "r", downstream=False).steps == [Step(PY, 0, "forced", "r", [PY])]
    on_base = plan.forced(g, [DEBIAN], "r", downstream=False)
    assert on_base.steps == [Step(BASE, 0, "forced", "r", [BASE, DEBIAN])]
    # named images built on each other still come in order; with nothing rebuilt between
    # them, CLI is built on the APP that is served now and need not wait for BASE
    assert plan.forced(g, [BASE, PY], "r", downstream=False).waves == [[BASE], [PY]]
    assert plan.forced(g, [BASE, CLI], "r", downstream=False).waves == [[BASE, CLI]]


@pytest.mark.parametrize(
    ("depth", "nodes"),
    [(1, [PY, APP]), (2, [PY, APP, CLI]), (3, [PY, APP, CLI]), (None, [PY, APP, CLI])],
)
def test_depth_limits_levels_below_a_forced_image(depth, nodes):
    g = fleet(FLEET)
    result = plan.forced(g, [PY], "r", depth=depth)
    assert sorted(s.node for s in result.steps) == sorted(nodes)
    assert {s.reason for s in result.steps} == {"forced"}


def test_depth_counts_from_each_forced_image():
    g = fleet(FLEET)
    result = plan.forced(g, [BASE], "r", depth=1)
    # PY and APP (through its COPY --from) are both one level below BASE; CLI is two
    assert result.waves == [[BASE], [PY], [APP]]
    assert [s.chain for s in result.steps] == [[BASE], [PY, BASE], [APP, BASE]]


def test_depth_on_a_base_counts_from_the_base_like_uses():
    g = fleet(FLEET)
    assert [s.node for s in plan.forced(g, [DEBIAN], "r", depth=1).steps] == [BASE]


# -- updated (what-if)


def test_updated_base_plans_what_is_built_on_it():
    g = fleet(FLEET)
    result = plan.updated(g, [DEBIAN])
    why = f"{DEBIAN} updated (what-if)"
    assert result.steps[0] == Step(BASE, 0, "base-changed", why, [BASE, DEBIAN])
    assert [(s.node, s.reason) for s in result.steps[1:]] == [
        (PY, "parent-rebuilt"),
        (APP, "parent-rebuilt"),
        (CLI, "parent-rebuilt"),
    ]
    assert result.digests == {}
    assert JQ not in result.waves[0]


def test_updated_image_plans_it_and_what_is_built_on_it():
    g = fleet(FLEET)
    result = plan.updated(g, [APP])
    assert result.steps == [
        Step(APP, 0, "base-changed", f"{APP} updated (what-if)", [APP]),
        Step(CLI, 1, "parent-rebuilt", built_on(APP), [CLI, APP]),
    ]


def test_updated_image_reached_twice_is_planned_once_as_a_root():
    """PY is built on SLIM and, through BASE, on DEBIAN: its own base decides its reason."""
    g = fleet(FLEET)
    result = plan.updated(g, [DEBIAN, SLIM])
    assert result.waves == [[BASE], [PY], [APP], [CLI]]
    assert result.steps[1] == Step(PY, 1, "base-changed", f"{SLIM} updated (what-if)", [PY, SLIM])
    assert result.counts() == {"base-changed": 2, "parent-rebuilt": 2}


# -- Plan


def test_counts_and_waves_from_the_steps():
    result = plan.Plan(
        [
            Step("a", 0, "stale", "", ["a"]),
            Step("b", 0, "missing", "", ["b"]),
            Step("c", 1, "parent-rebuilt", "", ["c", "a"]),
            Step("d", 1, "parent-rebuilt", "", ["d", "a"]),
            Step("e", 2, "parent-rebuilt", "", ["e", "c", "a"]),
        ]
    )
    assert result.waves == [["a", "b"], ["c", "d"], ["e"]]
    assert result.counts() == {"stale": 1, "missing": 1, "parent-rebuilt": 3}


def test_an_image_that_pins_its_parent_by_digest_stays_on_it():
    """A new build of the parent changes nothing for a child that names a digest."""
    pin = "sha256:" + "1" * 64
    g = fleet({
        BASE: "FROM debian:12\n",
        PY: f"FROM {BASE}@{pin}\n",  # pinned on every use: not rebuilt with BASE
        APP: f"FROM {BASE}@{pin}\nCOPY --from={BASE} /x /x\n",  # one use follows the tag
    })  # fmt: skip
    assert [s.node for s in plan.forced(g, [BASE], "r").steps] == [BASE, APP]
    assert [s.node for s in plan.updated(g, [DEBIAN]).steps] == [BASE, APP]


def test_source_changed_images_are_roots_with_their_own_reason():
    g = fleet(FLEET)
    check = Check([], [image(PY, detect.UP_TO_DATE)])
    result = plan.from_check(g, check, {PY: "its Dockerfile changed"})
    assert result.steps[0] == Step(PY, 0, "source-changed", "its Dockerfile changed", [PY])
    assert {s.node: s.reason for s in result.steps[1:]} == {
        APP: "parent-rebuilt",
        CLI: "parent-rebuilt",
    }


# -- Plan.within: a push event's sweep, only what is at or below the pushed images


def stale_py_plan():
    """PY stale (so APP and CLI follow it), CLI and JQ unjudged, two parents' digests."""
    g = fleet(FLEET)
    check = Check(
        [],
        [
            image(BASE, UP_TO_DATE),
            image(PY, STALE, STALE, "x", [PY, BASE]),
            image(APP, UP_TO_DATE),
            image(CLI, UNKNOWN, UNKNOWN, "registry down"),
            image(JQ, UNKNOWN, UNKNOWN, "registry down"),
        ],
        digests={BASE: "sha256:b", SLIM: "sha256:s"},
    )
    whole = plan.from_check(g, check)
    assert [s.node for s in whole.steps] == [PY, APP, CLI]
    assert whole.unknown == [CLI, JQ]
    return g, whole


def test_within_keeps_the_steps_at_or_below_the_starts():
    g, whole = stale_py_plan()
    below = whole.within(g, [APP])
    kept = [s for s in whole.steps if s.node in (APP, CLI)]
    assert [(s.node, s.reason, s.chain) for s in below.steps] == [
        (s.node, s.reason, s.chain) for s in kept]  # chains and reasons kept  # fmt: skip
    assert [(s.node, s.wave) for s in below.steps] == [(APP, 0), (CLI, 1)]  # no empty wave 0
    assert below.digests == {BASE: "sha256:b", SLIM: "sha256:s"}  # parents are still pinned
    assert below.unknown == [CLI]  # JQ is not built on APP
    assert whole.within(g, [PY]).steps == whole.steps
    assert [s.node for s in whole.within(g, [CLI]).steps] == [CLI]
    assert [s.node for s in whole.steps] == [PY, APP, CLI]  # the whole plan is left as it was


def test_within_an_external_base_is_what_is_built_on_it():
    g, whole = stale_py_plan()
    assert whole.within(g, [SLIM]).steps == whole.steps
    on_debian = whole.within(g, [DEBIAN])
    assert on_debian.steps == whole.steps and on_debian.unknown == [CLI]
    on_alpine = whole.within(g, [ALPINE])
    assert (on_alpine.steps, on_alpine.unknown) == ([], [JQ])
    assert on_alpine.digests == whole.digests


def test_within_ignores_starts_not_in_the_graph():
    g, whole = stale_py_plan()
    nothing = whole.within(g, ["reg.test/elsewhere:1", "docker.io/library/nope:1"])
    assert (nothing.steps, nothing.unknown, nothing.waves) == ([], [], [])
    assert nothing.digests == whole.digests
    mixed = whole.within(g, ["reg.test/elsewhere:1", APP])
    assert mixed.steps == whole.within(g, [APP]).steps
    assert whole.within(g, []).steps == []
    assert whole.within(g, iter([APP])).steps == whole.within(g, [APP]).steps  # any iterable


def test_within_several_starts_take_the_union():
    g = fleet(FLEET)
    whole = plan.forced(g, [DEBIAN, ALPINE], "weekly")
    assert [s.node for s in whole.within(g, [CLI, JQ]).steps] == [CLI, JQ]  # one wave now
    assert [s.node for s in whole.within(g, [APP, PY]).steps] == [PY, APP, CLI]


def test_within_waves_count_from_the_first_kept_step():
    g, whole = stale_py_plan()
    below = whole.within(g, [APP])
    assert below.waves == [[APP], [CLI]]
    assert_waves_follow_edges(g, below)


# -- vulnerable


def test_a_vulnerable_image_is_a_root_before_a_changed_source_and_after_a_stale_base():
    """A build with cache may keep the old package layer of an image whose source changed
    after it; a new base rebuilds every layer above it anyway."""
    g = fleet(FLEET)
    check = Check([], [image(BASE, STALE, detect.BASE_CHANGED, "debian moved", [BASE, DEBIAN])])
    vulnerable = {PY: "CVE-1 (high): openssl 1.0 → 1.1", BASE: "CVE-2 (high): zlib"}
    steps = {s.node: s for s in plan.from_check(g, check, {PY: "its COPY changed"},
                                                 vulnerable).steps}  # fmt: skip
    assert (steps[PY].reason, steps[PY].detail) == ("vulnerable", vulnerable[PY])
    assert steps[BASE].reason == "base-changed"
    assert steps[CLI].reason == "parent-rebuilt"


def test_fixing_a_cve_rebuilds_its_carriers_and_what_is_built_on_them_as_deep_as_asked():
    g = fleet(FLEET)
    why = {PY: "CVE-1 (high): openssl 1.0 → 1.1 in its own layer sha256:…"}
    assert [(s.node, s.reason) for s in plan.fixing(g, why, {}).steps] == [
        (PY, "vulnerable"), (APP, "parent-rebuilt"), (CLI, "parent-rebuilt")]  # fmt: skip
    assert [s.node for s in plan.fixing(g, why, {}, downstream=False).steps] == [PY]
    assert [s.node for s in plan.fixing(g, why, {}, depth=1).steps] == [PY, APP]
