from __future__ import annotations

from contextlib import closing

import pytest

from graphbuild import config, index, indexdb, sources, trees
from graphbuild.errors import ERROR, UNRESOLVED


def run(path):
    cfg = config.load(path)
    synced = sources.sync(cfg)
    with closing(indexdb.connect(cfg.workspace)) as db, index.Indexer(cfg, synced, db) as indexer:
        indexer.scan()
        return indexer.parse()


def test_no_change_parses_nothing_and_one_commit_parses_only_what_it_touched(remotes, write_config):
    files = {f"images/{n}/Dockerfile": f"FROM alpine:3.{n}\n" for n in range(10, 15)}
    remote = remotes("fleet", files)
    path = write_config(
        [
            {
                "name": "fleet",
                "url": str(remote.url),
                "images": [{"image": "registry.test/{dir}", "dockerfile": "images/*/Dockerfile"}],
            },
        ]
    )
    cold = run(path)
    assert (cold.parsed, cold.cached, len(cold.images)) == (5, 0, 5)

    warm = run(path)
    assert (warm.parsed, warm.cached) == (0, 5)

    remote.commit({"images/12/Dockerfile": "FROM alpine:3.99\n", "README": "docs only\n"})
    touched = run(path)
    assert (touched.parsed, touched.cached) == (1, 4)
    by_id = {i.id: i for i in touched.images}
    assert by_id["registry.test/12:latest"].parsed.refs[0].raw == "alpine:3.99"


def test_a_local_folder_is_read_in_place_and_cached_by_content(tmp_path, write_config):
    repo = tmp_path / "base"
    repo.mkdir()
    (repo / "Dockerfile").write_text("FROM debian:12\n")
    path = write_config([{"name": "base", "path": "base", "images": [{"image": "r.test/base"}]}])
    assert run(path).parsed == 1
    assert run(path).parsed == 0
    (repo / "Dockerfile").write_text("FROM debian:13\n")
    changed = run(path)
    assert changed.parsed == 1
    assert changed.images[0].parsed.refs[0].ref == "docker.io/library/debian:13"
    assert changed.images[0].commit is None


def test_the_same_file_with_other_build_args_is_parsed_again(tmp_path, write_config):
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text("ARG V=1\nFROM alpine:$V\n")
    images = [
        {"image": "r.test/one", "build_args": {"V": "3.19"}},
        {"image": "r.test/two", "build_args": {"V": "3.20"}},
    ]
    result = run(write_config([{"name": "app", "path": "app", "images": images}]))
    assert result.parsed == 2
    assert [i.parsed.refs[0].raw for i in result.images] == ["alpine:3.19", "alpine:3.20"]


def test_bad_dockerfiles_are_reported_and_the_rest_is_indexed(tmp_path, write_config):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/good").write_text("FROM alpine:3.20\n")
    (tmp_path / "r/broken").write_text("FROM alpine\nRUN <<EOF\necho never ends\n")
    (tmp_path / "r/unresolved").write_text("ARG BASE\nFROM $BASE\n")
    images = [
        {"image": "r.test/good", "dockerfile": "good"},
        {"image": "r.test/broken", "dockerfile": "broken"},
        {"image": "r.test/missing", "dockerfile": "missing"},
        {"image": "r.test/unresolved", "dockerfile": "unresolved"},
    ]
    result = run(write_config([{"name": "r", "path": "r", "images": images}]))
    assert [i.image for i in result.images] == ["r.test/good", "r.test/unresolved"]
    problems = [(p.level, str(p)) for p in result.problems]
    assert problems == [
        (ERROR, "r:missing: no such Dockerfile (repos[0].images[2].dockerfile)"),
        (ERROR, "r:broken:2: unterminated heredoc"),
        (
            UNRESOLVED,
            "r:unresolved:2: from '$BASE' unresolved: ARG BASE has no value; set it in build_args",
        ),
    ]


def test_a_glob_that_matches_nothing_is_a_warning(tmp_path, write_config):
    (tmp_path / "r").mkdir()
    images = [{"image": "r.test/{dir}", "dockerfile": "nope/*/Dockerfile"}]
    result = run(write_config([{"name": "r", "path": "r", "images": images}]))
    assert [p.level for p in result.problems] == ["warning"]
    assert "matches no file" in result.problems[0].message


def test_dir_template_fills_image_tags_and_context(tmp_path, write_config):
    (tmp_path / "r/images/web").mkdir(parents=True)
    (tmp_path / "r/images/web/Dockerfile").write_text("FROM nginx:1.27\n")
    (tmp_path / "r/Dockerfile").write_text("FROM nginx:1.27\n")
    images = [
        {"image": "r.test/{dir}", "dockerfile": "images/*/Dockerfile", "tags": ["{dir}-1", "1"]},
        {"image": "r.test/{dir}", "dockerfile": "Dockerfile"},
    ]
    result = run(write_config([{"name": "r", "path": "r", "images": images}]))
    web, root = result.images
    assert (web.id, web.tags[1], web.options.context) == (
        "r.test/web:web-1",
        "r.test/web:1",
        "images/web",
    )
    assert (root.id, root.options.context) == ("r.test/r:latest", ".")


def test_a_file_changed_between_scan_and_parse_is_cached_under_its_new_content(
    tmp_path, write_config
):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/Dockerfile").write_text("FROM alpine:3.20\n")
    cfg = config.load(write_config([{"name": "r", "path": "r", "images": [{"image": "r.test/x"}]}]))
    synced = sources.sync(cfg)
    with closing(indexdb.connect(cfg.workspace)) as db, index.Indexer(cfg, synced, db) as indexer:
        indexer.scan()
        (tmp_path / "r/Dockerfile").write_text("FROM alpine:3.21\n")
        image = indexer.parse().images[0]
    assert image.parsed.refs[0].raw == "alpine:3.21"
    assert image.blob == trees.blob_sha(b"FROM alpine:3.21\n")


def test_a_parser_bug_is_reported_and_the_rest_is_indexed(tmp_path, write_config, monkeypatch):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/good").write_text("FROM alpine:3.20\n")
    (tmp_path / "r/bad").write_text("FROM trigger-the-bug\n")
    real_parse = index.dockerfile.parse

    def buggy(data, **kw):
        if b"trigger-the-bug" in data:
            raise KeyError("boom")
        return real_parse(data, **kw)

    monkeypatch.setattr(index.dockerfile, "parse", buggy)
    images = [
        {"image": "r.test/good", "dockerfile": "good"},
        {"image": "r.test/bad", "dockerfile": "bad"},
    ]
    result = run(write_config([{"name": "r", "path": "r", "images": images}]))
    assert [i.image for i in result.images] == ["r.test/good"]
    assert [str(p) for p in result.problems] == [
        "r:bad: internal error, please report it: KeyError: 'boom'"
    ]


def test_parses_no_image_uses_any_more_are_forgotten(tmp_path, write_config):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/Dockerfile").write_text("FROM alpine:3.20\n")
    path = write_config([{"name": "r", "path": "r", "images": [{"image": "r.test/x"}]}])
    run(path)
    (tmp_path / "r/Dockerfile").write_text("FROM alpine:3.21\n")
    run(path)
    with closing(indexdb.connect(tmp_path / ".graphbuild")) as db:
        assert db.execute("SELECT count(*) FROM parses").fetchone()[0] == 1
        assert list(indexdb.file_stats(db)) == [str(tmp_path / "r/Dockerfile")]


MIB = 1024 * 1024
# Each ARG doubles the one before: 40 lines would be 512 Gi characters.
DOUBLING = "\n".join(
    [
        "ARG A0=x",
        *(f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, 40)),
        "FROM alpine:$A39",
    ]
)


@pytest.mark.timeout(120)  # proves nothing hangs; each file takes well under a second
def test_hostile_dockerfiles_are_problems_of_their_own_cached_like_parses(tmp_path, write_config):
    r = tmp_path / "r"
    r.mkdir()
    (r / "good").write_text("FROM alpine:3.20\n")
    (r / "doubling").write_text(DOUBLING)
    (r / "pattern").write_text("ARG V=" + "a" * 60_000 + "\nARG W=${V//b/}\nFROM alpine:3.21\n")
    (r / "huge").write_bytes(b"FROM alpine\n" + b"#" * (2 * MIB))
    names = ["good", "doubling", "pattern", "huge"]
    images = [{"image": f"r.test/{name}", "dockerfile": name} for name in names]
    path = write_config([{"name": "r", "path": "r", "images": images}])
    expected = [
        "r:doubling:18: ARG A17 expands to more than 64 KiB",
        f"r:huge: Dockerfile is {2 * MIB + 12} bytes, more than the 2 MiB graphbuild reads",
    ]

    first = run(path)
    assert [i.image for i in first.images] == ["r.test/good", "r.test/pattern"]
    assert [str(p) for p in first.problems] == expected
    assert (first.parsed, first.cached) == (4, 0)

    (r / "good").write_text("FROM alpine:3.21\n")  # a change elsewhere: the fleet is indexed again
    second = run(path)
    assert (second.parsed, second.cached) == (1, 3)  # the failures are not parsed again
    assert [str(p) for p in second.problems] == expected
    assert [p.level for p in second.problems] == [ERROR, ERROR]


def test_a_huge_dockerfile_in_git_is_a_problem_and_the_rest_is_indexed(remotes, write_config):
    remote = remotes("big", {"huge/Dockerfile": "FROM alpine\n" + "#" * 3 * MIB + "\n",
                             "ok/Dockerfile": "FROM alpine:3.20\n"})  # fmt: skip
    images = [{"image": "r.test/{dir}", "dockerfile": "*/Dockerfile"}]
    path = write_config([{"name": "big", "url": str(remote.url), "images": images}])
    result = run(path)
    assert [i.image for i in result.images] == ["r.test/ok"]
    assert [str(p) for p in result.problems] == [
        f"big:huge/Dockerfile: Dockerfile is {3 * MIB + 13} bytes, "
        "more than the 2 MiB graphbuild reads"
    ]
    assert run(path).parsed == 0


def test_a_repository_past_its_parse_time_waits_for_the_next_sync_and_costs_only_itself(
    tmp_path, write_config, monkeypatch
):
    """Each file is bounded, but a thousand bounded files are not: what a repository has
    not parsed within its time this sync is a problem of its own, read by the next sync.
    At a limit of 0 s each repository parses exactly one new file per sync."""
    from graphbuild.pipeline import sync

    monkeypatch.setattr(index, "REPO_SECONDS", 0.0)
    for repo, count in (("slow", 3), ("fine", 1)):
        for n in range(count):
            (tmp_path / repo / f"i{n}").mkdir(parents=True)
            (tmp_path / repo / f"i{n}/Dockerfile").write_text(f"FROM {repo}:3.{n}\n")
    cfg = config.load(write_config([
        {"name": name, "path": name,
         "images": [{"image": f"r.test/{name}/{{dir}}", "dockerfile": "*/Dockerfile"}]}
        for name in ("slow", "fine")
    ]))  # fmt: skip
    first = sync(cfg)
    assert (first.parsed, first.images) == (2, 2)
    deferred = [str(p) for p in first.problems if p.level == ERROR]
    assert deferred == [
        f"slow:i{n}/Dockerfile: not read in this sync: the repository's Dockerfiles took more "
        "than 0 s, the most one repository gets in a sync; the next sync reads on"
        for n in (1, 2)
    ]
    second = sync(cfg)  # nothing changed, yet the sync is not skipped: it reads on
    assert (second.parsed, second.images) == (1, 3)
    third = sync(cfg)
    assert (third.parsed, third.images, third.problems) == (1, 4, [])
    assert sync(cfg).parsed == 0  # all read: an unchanged fleet costs nothing again


def test_the_build_options_the_index_makes_are_what_the_stored_graph_gives_back(
    tmp_path, write_config
):
    """One value from the index to the builder: a build reads the Dockerfile with exactly
    what the graph was linked with, named contexts included (once dropped on the way)."""
    from graphbuild import graph
    from graphbuild.pipeline import sync

    (tmp_path / "r/app").mkdir(parents=True)
    (tmp_path / "r/app/Dockerfile").write_text("FROM base\nCOPY --from=src /s /s\n")
    images = [{"image": "r.test/app", "dockerfile": "app/Dockerfile", "build_args": {"V": "1"},
               "target": None, "platforms": ["linux/arm64"],
               "contexts": {"base": "docker-image://alpine:3", "src": "shared"}}]  # fmt: skip
    path = write_config([{"name": "r", "path": "r", "images": images}])
    (image,) = run(path).images
    assert image.options == index.BuildOptions(
        "app/Dockerfile", "app", {"V": "1"}, None, ("linux/arm64",),
        {"base": "docker-image://alpine:3", "src": "shared"},
    )  # fmt: skip
    assert [ref.ref for ref in image.parsed.refs] == ["docker.io/library/alpine:3"]
    sync(config.load(path))
    with closing(indexdb.connect(tmp_path / ".graphbuild")) as db:
        stored = graph.load(db).nodes["r.test/app:latest"]
    assert index.BuildOptions.of(stored) == image.options
    assert image.options.parse(b"FROM base\n").refs == image.parsed.refs[:1]
    with pytest.raises(TypeError):  # frozen all the way down: nothing edits it on its way
        image.options.contexts["base"] = "docker-image://busybox"  # type: ignore[index]
