from __future__ import annotations

import tempfile
from contextlib import closing
from pathlib import Path

import networkx as nx
import pytest

from graphbuild import config, graph, index, indexdb, queries, sources
from graphbuild.errors import CycleError, GraphbuildError, NotFound

NGINX = "nginx:1.27@sha256:" + "a" * 64


def build(path):
    cfg = config.load(path)
    synced = sources.sync(cfg)
    with closing(indexdb.connect(cfg.workspace)) as db, index.Indexer(cfg, synced, db) as indexer:
        indexer.scan()
        return graph.build(indexer.parse().images, cfg.mirrors)


def stored(g):
    db = indexdb.connect(Path(tempfile.mkdtemp(prefix="graphbuild-test-")))
    graph.save(db, g, {"fingerprint": "x"})
    return db


@pytest.fixture
def fleet(remotes, write_config):
    """Three git repositories: a base chain, a multi-stage app, a glob-discovered tool set."""
    platform = remotes(
        "platform",
        {
            "base/Dockerfile": "FROM debian:bookworm-slim\n",
            "python/Dockerfile": "ARG BASE=registry.test/platform/base:bookworm\n"
            "FROM ${BASE}\n"
            "COPY --from=python:3.12-slim /usr/local /usr/local\n",
        },
    )
    app = remotes(
        "app",
        {
            "Dockerfile": "FROM registry.test/platform/python:3.12 AS base\n"
            "FROM base AS build\n"
            "RUN --mount=from=ghcr.io/astral-sh/uv:0.4,source=/uv,target=/bin/uv uv sync\n"
            "FROM build AS dist\n"
            "FROM dist\n"
            f"COPY --from={NGINX} /etc/nginx /etc/nginx\n",
        },
    )
    tools = remotes(
        "tools",
        {
            "images/cli/Dockerfile": "FROM registry.test/app:1.0\n",
            "images/jq/Dockerfile": "FROM alpine:3.20\n",
            "README.md": "not an image\n",
        },
    )
    path = write_config(
        [
            {
                "name": "platform",
                "url": str(platform.url),
                "images": [
                    {
                        "image": "registry.test/platform/base",
                        "dockerfile": "base/Dockerfile",
                        "tags": ["bookworm", "latest"],
                    },
                    {
                        "image": "registry.test/platform/python",
                        "dockerfile": "python/Dockerfile",
                        "tags": ["3.12"],
                    },
                ],
            },
            {
                "name": "app",
                "url": str(app.url),
                "images": [
                    {"image": "registry.test/app", "tags": ["1.0"]},
                ],
            },
            {
                "name": "tools",
                "url": str(tools.url),
                "images": [
                    {"image": "registry.test/tools/{dir}", "dockerfile": "images/*/Dockerfile"},
                ],
            },
        ]
    )
    g, problems = build(path)
    assert problems == []
    return g


BASE = "registry.test/platform/base:bookworm"
PYTHON = "registry.test/platform/python:3.12"
APP = "registry.test/app:1.0"
CLI = "registry.test/tools/cli:latest"
JQ = "registry.test/tools/jq:latest"


def test_edges_across_repositories(fleet):
    edges = {
        (u, v, d["kind"], d["repo"], d["dockerfile"], d["line"])
        for u, v, d in fleet.edges(data=True)
    }
    assert edges == {
        ("docker.io/library/debian:bookworm-slim", BASE, "from", "platform", "base/Dockerfile", 1),
        (BASE, PYTHON, "from", "platform", "python/Dockerfile", 2),
        ("docker.io/library/python:3.12-slim", PYTHON, "copy", "platform", "python/Dockerfile", 3),
        (PYTHON, APP, "from", "app", "Dockerfile", 1),
        ("ghcr.io/astral-sh/uv:0.4", APP, "mount", "app", "Dockerfile", 3),
        (f"docker.io/library/{NGINX}", APP, "copy", "app", "Dockerfile", 6),
        (APP, CLI, "from", "tools", "images/cli/Dockerfile", 1),
        ("docker.io/library/alpine:3.20", JQ, "from", "tools", "images/jq/Dockerfile", 1),
    }
    assert fleet.nodes[BASE]["tags"] == [BASE, "registry.test/platform/base:latest"]
    assert fleet.nodes[f"docker.io/library/{NGINX}"]["pinned"] is True
    assert fleet.nodes[APP]["commit"]


def uses(g, ref, depth=None):
    db = stored(g)
    return [(u.image, u.depth, u.base) for u in indexdb.uses(db, indexdb.match(db, ref), depth)]


def test_uses_answers(fleet):
    debian = "docker.io/library/debian:bookworm-slim"
    assert uses(fleet, "debian:bookworm-slim") == [
        (BASE, 1, debian),
        (PYTHON, 2, BASE),
        (APP, 3, PYTHON),
        (CLI, 4, APP),
    ]
    assert uses(fleet, "debian") == uses(fleet, "debian:bookworm-slim")
    assert uses(fleet, "debian:bookworm-slim", depth=1) == [(BASE, 1, debian)]
    assert uses(fleet, "debian:bookworm-slim", depth=2) == [(BASE, 1, debian), (PYTHON, 2, BASE)]
    # a produced image, by any of its tags, or by its repository alone
    for ref in ("registry.test/platform/base:latest", "registry.test/platform/base", BASE):
        assert uses(fleet, ref) == [(PYTHON, 1, BASE), (APP, 2, PYTHON), (CLI, 3, APP)]
    # a tag also matches the references that pin it by digest
    pinned = f"docker.io/library/{NGINX}"
    assert uses(fleet, "nginx:1.27") == [(APP, 1, pinned), (CLI, 2, APP)]
    assert uses(fleet, "nginx@sha256:" + "a" * 64) == [(APP, 1, pinned), (CLI, 2, APP)]
    assert uses(fleet, "nginx:1.26") == []
    assert uses(fleet, "ghcr.io/astral-sh/uv") == [
        (APP, 1, "ghcr.io/astral-sh/uv:0.4"),
        (CLI, 2, APP),
    ]


def test_parents_answers(fleet):
    chain = [
        (p.image, p.base, p.depth, p.kind, p.line, p.external)
        for p in indexdb.parents(stored(fleet), CLI)
    ]
    assert chain == [
        (CLI, APP, 1, "from", 1, False),
        (APP, f"docker.io/library/{NGINX}", 2, "copy", 6, True),
        (APP, "ghcr.io/astral-sh/uv:0.4", 2, "mount", 3, True),
        (APP, PYTHON, 2, "from", 1, False),
        (PYTHON, "docker.io/library/python:3.12-slim", 3, "copy", 3, True),
        (PYTHON, BASE, 3, "from", 2, False),
        (BASE, "docker.io/library/debian:bookworm-slim", 4, "from", 1, True),
    ]


def test_focus_and_exports(fleet):
    data = queries.graph(stored(fleet), "alpine")
    assert [n["id"] for n in data["nodes"]] == ["docker.io/library/alpine:3.20", JQ]
    assert data["nodes"] == [
        {
            "id": "docker.io/library/alpine:3.20",
            "kind": "external",
            "name": "docker.io/library/alpine",
            "tag": "3.20",
            "digest": None,
            "pinned": False,
        },
        {**{"id": JQ}, **fleet.nodes[JQ]},
    ]
    edge = data["edges"][0]
    assert {k: edge[k] for k in ("source", "target", "kind", "repo", "dockerfile", "line")} == {
        "source": "docker.io/library/alpine:3.20",
        "target": JQ,
        "kind": "from",
        "repo": "tools",
        "dockerfile": "images/jq/Dockerfile",
        "line": 1,
    }
    assert f'"docker.io/library/alpine:3.20" -> "{JQ}" [label="from"];' in queries.dot(data)
    mermaid = queries.mermaid(data)
    assert mermaid.startswith("graph LR\n")
    assert 'n0(["docker.io/library/alpine:3.20"])' in mermaid and "n0 -->|from| n1" in mermaid


def test_queries_answer_from_sql_what_networkx_says(fleet, tmp_path):
    """images, bases and graph read index.db by SQL; their answers are what the whole graph
    in networkx gives, field for field (the JSON contracts of docs/commands.md)."""
    db = stored(fleet)
    assert queries.images(db) == [
        {"id": n, **attrs, "bases": sorted(fleet.predecessors(n))}
        for n, attrs in sorted(fleet.nodes(data=True))
        if attrs["kind"] == graph.IMAGE
    ]
    assert queries.bases(db, tmp_path) == [
        {
            "id": n,
            "pinned": attrs["pinned"],
            "images": len(list(fleet.successors(n))),
            "all_images": len(nx.descendants(fleet, n)),
            "kinds": sorted({fleet.edges[n, c]["kind"] for c in fleet.successors(n)}),
            "status": None,  # no check has run in this workspace
            "since": None,
        }
        for n, attrs in sorted(fleet.nodes(data=True))
        if attrs["kind"] == graph.EXTERNAL
    ]
    assert queries.graph(db) == {
        "nodes": [{"id": n, **attrs} for n, attrs in sorted(fleet.nodes(data=True))],
        "edges": [{"source": u, "target": v, **attrs}
                  for u, v, attrs in sorted(fleet.edges(data=True), key=lambda e: e[:2])],
    }  # fmt: skip
    around = queries.graph(db, "python:3.12-slim")
    keep = {"docker.io/library/python:3.12-slim"}
    keep |= nx.descendants(fleet, "docker.io/library/python:3.12-slim")
    assert {n["id"] for n in around["nodes"]} == keep
    assert {(e["source"], e["target"]) for e in around["edges"]} == set(fleet.subgraph(keep).edges)
    with pytest.raises(NotFound):
        queries.graph(db, "nothing:1")


def test_a_focus_with_a_depth_keeps_what_is_within_that_many_edges_up_and_down(fleet):
    """Every node of the fleet as the focus, every depth: the nodes within `depth` edges above
    and below it (not its siblings), and every edge among them, field for field as networkx
    has them; an edge no walk crossed (BASE -> APP, both within 1 of PYTHON) is kept too."""
    g = fleet.copy()
    g.add_edge(BASE, APP, **{**g.edges[PYTHON, APP], "kind": "copy", "line": 2})
    db = stored(g)
    for focus in g.nodes:
        for depth in (1, 2, 3, None):
            up = nx.single_source_shortest_path_length(g.reverse(), focus, cutoff=depth)
            down = nx.single_source_shortest_path_length(g, focus, cutoff=depth)
            keep = sorted(set(up) | set(down))
            assert queries.graph(db, focus, depth) == {
                "nodes": [{"id": n, **g.nodes[n]} for n in keep],
                "edges": [{"source": u, "target": v, **attrs}
                          for u, v, attrs in sorted(g.subgraph(keep).edges(data=True),
                                                    key=lambda e: e[:2])],
            }, (focus, depth)  # fmt: skip
    around = queries.graph(db, PYTHON, 1)
    assert [n["id"] for n in around["nodes"]] == [
        "docker.io/library/python:3.12-slim", APP, BASE, PYTHON]  # fmt: skip
    assert (BASE, APP) in {(e["source"], e["target"]) for e in around["edges"]}
    with pytest.raises(NotFound):
        queries.graph(db, "nothing:1", 1)
    for focus, depth in ((None, 1), (APP, 0)):
        with pytest.raises(GraphbuildError, match="depth"):
            queries.graph(db, focus, depth)


def test_store_and_load_round_trip(fleet, tmp_path):
    with closing(indexdb.connect(tmp_path)) as db:
        assert indexdb.meta(db) is None
        graph.save(db, fleet, {"fingerprint": "abc", "problems": []})
        loaded = graph.load(db)
        assert sorted(loaded.edges(data=True)) == sorted(fleet.edges(data=True))
        assert dict(loaded.nodes(data=True)) == dict(fleet.nodes(data=True))
        assert indexdb.meta(db)["fingerprint"] == "abc"
        graph.save(db, graph.nx.DiGraph(), {"fingerprint": "empty"})
        assert len(graph.load(db)) == 0


def local(tmp_path, write_config, files: dict[str, str], images: list[dict], **top):
    (tmp_path / "r").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "r" / name).write_text(text)
    return build(write_config([{"name": "r", "path": "r", "images": images}], **top))


def test_a_cycle_is_rejected_and_printed_with_its_lines(tmp_path, write_config):
    files = {"a": "FROM r.test/b:1\n", "b": "FROM alpine\nCOPY --from=r.test/a:1 /x /x\n"}
    images = [
        {"image": "r.test/a", "dockerfile": "a", "tags": ["1"]},
        {"image": "r.test/b", "dockerfile": "b", "tags": ["1"]},
    ]
    with pytest.raises(CycleError) as caught:
        local(tmp_path, write_config, files, images)
    message = str(caught.value)
    assert message.startswith("dependency cycle: ")
    assert "r.test/a:1 -> r.test/b:1 -> r.test/a:1" in message or (
        "r.test/b:1 -> r.test/a:1 -> r.test/b:1" in message
    )
    assert "r:a:1 builds r.test/a:1 on r.test/b:1" in message
    assert "r:b:2 builds r.test/b:1 on r.test/a:1" in message


def test_an_image_built_on_its_own_tag_is_a_cycle(tmp_path, write_config):
    with pytest.raises(CycleError, match=r"r.test/a:1 -> r.test/a:1"):
        local(
            tmp_path,
            write_config,
            {"a": "FROM r.test/a:1\n"},
            [{"image": "r.test/a", "dockerfile": "a", "tags": ["1"]}],
        )


def test_onbuild_triggers_of_a_fleet_image_are_edges_of_its_children(tmp_path, write_config):
    files = {
        "parent": "FROM alpine:3.20\nONBUILD COPY --from=nginx:1.25 /a /a\n",
        "child": "FROM scratch AS unused\nFROM r.test/parent:1\n",
    }
    images = [
        {"image": "r.test/parent", "dockerfile": "parent", "tags": ["1"]},
        {"image": "r.test/child", "dockerfile": "child", "tags": ["1"]},
    ]
    g, _ = local(tmp_path, write_config, files, images)
    edge = g.edges["docker.io/library/nginx:1.25", "r.test/child:1"]
    assert (edge["kind"], edge["line"], edge["via"]) == ("copy", 2, "ONBUILD of r.test/parent:1")
    assert not g.has_edge("docker.io/library/nginx:1.25", "r.test/parent:1")


def test_two_images_claiming_one_tag(tmp_path, write_config):
    files = {"a": "FROM alpine:3.20\n", "b": "FROM alpine:3.21\n", "c": "FROM r.test/x:2\n"}
    images = [
        {"image": "r.test/x", "dockerfile": "a", "tags": ["1", "2"]},
        {"image": "r.test/x", "dockerfile": "b", "tags": ["1"]},
        {"image": "r.test/y", "dockerfile": "c", "tags": ["1"]},
    ]
    g, problems = local(tmp_path, write_config, files, images)
    assert [str(p) for p in problems] == ["r:b: r.test/x:1 is also produced by r:a; skipped"]
    assert g.has_edge("r.test/x:1", "r.test/y:1")


def test_a_base_used_twice_in_one_file_keeps_every_use(tmp_path, write_config):
    files = {
        "a": "FROM alpine:3.20 AS one\nFROM busybox\nCOPY --from=alpine:3.20 /x /x\n"
        "COPY --from=one /y /y\n"
    }
    g, _ = local(tmp_path, write_config, files, [{"image": "r.test/a", "dockerfile": "a"}])
    edge = g.edges["docker.io/library/alpine:3.20", "r.test/a:latest"]
    assert (edge["kind"], edge["line"]) == ("from", 1)
    assert [(u["kind"], u["line"]) for u in edge["also"]] == [("copy", 3)]


def test_from_platform_is_kept_on_the_edge(tmp_path, write_config):
    files = {"a": "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM alpine:3.20\n"
                  "COPY --from=build /app /app\n"}  # fmt: skip
    images = [{"image": "r.test/a", "dockerfile": "a", "platforms": ["linux/arm64"]}]
    g, _ = local(tmp_path, write_config, files, images)
    golang = g.edges["docker.io/library/golang:1.22", "r.test/a:latest"]
    assert (golang["platform"], golang["platforms"]) == ("linux/amd64", ["linux/arm64"])
    alpine = g.edges["docker.io/library/alpine:3.20", "r.test/a:latest"]
    assert (alpine["platform"], alpine["platforms"]) == (None, ["linux/arm64"])


def test_a_from_wins_over_an_earlier_copy_of_the_same_image(tmp_path, write_config):
    files = {
        "parent": "FROM alpine:3.20\nONBUILD COPY --from=nginx:1.25 /a /a\n",
        "child": "FROM alpine AS a\nCOPY --from=r.test/parent:1 /x /x\n"
        "FROM r.test/parent:1\nCOPY --from=a /x /x\n",
    }
    images = [
        {"image": "r.test/parent", "dockerfile": "parent", "tags": ["1"]},
        {"image": "r.test/child", "dockerfile": "child", "tags": ["1"]},
    ]
    g, _ = local(tmp_path, write_config, files, images)
    edge = g.edges["r.test/parent:1", "r.test/child:1"]
    assert (edge["kind"], edge["line"]) == ("from", 3)
    assert [(u["kind"], u["line"]) for u in edge["also"]] == [("copy", 2)]
    assert g.edges["docker.io/library/nginx:1.25", "r.test/child:1"]["via"] == (
        "ONBUILD of r.test/parent:1"
    )


# -- mirrors: a base pulled through a mirror is the upstream base's node

MIRROR = {"docker.io": "myacr.azurecr.io/mirror"}
UPSTREAM = "docker.io/library/python:3.12"
THROUGH = "myacr.azurecr.io/mirror/library/python:3.12"
TWO_WAYS = {"a": f"FROM {UPSTREAM}\n", "b": f"FROM {THROUGH}\n"}
A_AND_B = [
    {"image": "r.test/a", "dockerfile": "a", "tags": ["1"]},
    {"image": "r.test/b", "dockerfile": "b", "tags": ["1"]},
]


def test_a_base_named_through_its_mirror_is_the_upstream_base(tmp_path, write_config):
    g, problems = local(tmp_path, write_config, TWO_WAYS, A_AND_B, mirrors=MIRROR)
    assert problems == []
    externals = [n for n, kind in g.nodes(data="kind") if kind == indexdb.EXTERNAL]
    assert externals == [UPSTREAM]
    assert g.nodes[UPSTREAM] == {"kind": "external", "name": "docker.io/library/python",
                                 "tag": "3.12", "digest": None, "pinned": False}  # fmt: skip
    assert sorted(g.successors(UPSTREAM)) == ["r.test/a:1", "r.test/b:1"]
    assert g.edges[UPSTREAM, "r.test/a:1"]["ref"] == UPSTREAM
    assert g.edges[UPSTREAM, "r.test/b:1"]["ref"] == THROUGH  # the Dockerfile's own words
    assert g.nodes["r.test/b:1"]["base"] == UPSTREAM
    assert uses(g, "python:3.12") == [("r.test/a:1", 1, UPSTREAM), ("r.test/b:1", 1, UPSTREAM)]


def test_without_mirrors_the_mirror_is_a_base_of_its_own(tmp_path, write_config):
    g, _ = local(tmp_path, write_config, TWO_WAYS, A_AND_B)
    externals = sorted(n for n, kind in g.nodes(data="kind") if kind == indexdb.EXTERNAL)
    assert externals == [UPSTREAM, THROUGH]
    assert list(g.successors(UPSTREAM)) == ["r.test/a:1"]
    assert list(g.successors(THROUGH)) == ["r.test/b:1"]


def test_a_mirrored_base_pinned_by_digest_keeps_its_digest(tmp_path, write_config):
    digest = "sha256:" + "b" * 64
    files = {"b": f"FROM {THROUGH}@{digest}\n"}
    g, _ = local(tmp_path, write_config, files, A_AND_B[1:], mirrors=MIRROR)
    (base,) = g.predecessors("r.test/b:1")
    assert base == f"{UPSTREAM}@{digest}"
    assert (g.nodes[base]["digest"], g.nodes[base]["pinned"]) == (digest, True)
    assert g.edges[base, "r.test/b:1"]["pinned"] is True


def test_a_mirrored_name_of_a_fleet_tag_links_to_the_image_that_produces_it(tmp_path, write_config):
    files = {"python": "FROM debian:12\n", "b": f"FROM {THROUGH}\n"}
    images = [
        {"image": "docker.io/library/python", "dockerfile": "python",
         "tags": ["3.12-bookworm", "3.12"]},
        {"image": "r.test/b", "dockerfile": "b", "tags": ["1"]},
    ]  # fmt: skip
    g, _ = local(tmp_path, write_config, files, images, mirrors=MIRROR)
    assert list(g.predecessors("r.test/b:1")) == ["docker.io/library/python:3.12-bookworm"]
    assert UPSTREAM not in g  # the tag is the fleet image's, not a base of its own
