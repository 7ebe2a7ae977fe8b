"""Detection against a real registry: moved tags, indexes, stale chains, missing tags, pins,
outages. Images are real OCI images pushed to docker-registry; the graph comes from a sync."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from contextlib import closing

import pytest

from graphbuild import config, detect, dockerfile, graph, indexdb
from graphbuild.config import RegistrySpec
from graphbuild.index import BuildOptions, Image
from graphbuild.pipeline import sync
from graphbuild.registry import Registry
from graphbuild.state import State

from .hostile_registry import Drip
from .oci import BASE_DIGEST, BASE_NAME, OCI_MANIFEST, LocalRegistry, free_port, sha
from .servers import FaultProxy
from .site import require


class Fleet:
    """Dockerfiles in a local folder, a repos.yaml for them, and checks against `registry`."""

    def __init__(self, tmp_path, registry: LocalRegistry) -> None:
        self.root, self.registry, self.host = tmp_path, registry, registry.host
        self.images: list[str] = []

    def dockerfile(self, name: str, text: str, tags=("1",), platforms=()) -> str:
        folder = self.root / "fleet" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(textwrap.dedent(text).replace("H/", f"{self.host}/"))
        entry = {"image": f"{self.host}/{name}", "dockerfile": f"{name}/Dockerfile",
                 "tags": list(tags), "platforms": list(platforms)}  # fmt: skip
        self.images.append(str(entry).replace("'", '"'))
        return f"{self.host}/{name}:{tags[0]}"

    def check(self, registry_host: str | None = None, top: str = "", **client) -> detect.Check:
        host = registry_host or self.host
        (self.root / "repos.yaml").write_text(
            f'registries:\n  "{host}": {{insecure: true}}\n{top}'
            "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
            + "".join(f"      - {image}\n" for image in self.images)
        )
        cfg = config.load(self.root / "repos.yaml")
        sync(cfg)
        with closing(indexdb.connect(cfg.workspace)) as db:
            g = graph.load(db)
        specs = {host: RegistrySpec(host, insecure=True)}
        with State(cfg.workspace) as state, Registry(specs, backoff=0.01, **client) as registry:
            return detect.check(g, registry, state, cfg.mirrors)

    def push(self, ref: str, built_on: str | None = None, parent: str | None = None, **kw) -> str:
        """Push `ref` as buildah would: OCI base annotations naming the parent it was built on."""
        notes = {BASE_DIGEST: built_on, BASE_NAME: parent} if built_on else None
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        return self.registry.image(repo, tag, annotations=notes, content=f"{ref} {built_on}", **kw)


@pytest.fixture
def fleet(tmp_path, registry):
    return Fleet(tmp_path, registry)


def by_id(result: detect.Check) -> dict:
    return {item.id: item for item in [*result.bases, *result.images]}


def test_a_moved_tag_is_a_changed_base_and_its_image_is_stale(fleet):
    base = f"{fleet.host}/lib/base:1"
    first = fleet.registry.image("lib/base", "1", content="v1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n")
    fleet.push(app, first, base)

    result = by_id(fleet.check())
    assert (result[base].status, result[app].status) == (detect.NEW, detect.UP_TO_DATE)
    assert result[app].chain == [app, base]

    second = fleet.registry.image("lib/base", "1", content="v2")
    result = by_id(fleet.check())
    assert result[base].status == detect.CHANGED
    assert (result[base].previous, result[base].digest) == (first, second)
    assert (result[app].status, result[app].reason) == (detect.STALE, detect.BASE_CHANGED)
    assert result[app].detail == f"built on {base} {first}, which is now {second}"

    again = by_id(fleet.check())  # the change is seen once; the image stays stale until rebuilt
    assert again[base].status == detect.UNCHANGED
    assert again[app].status == detect.STALE


def test_a_multi_arch_base_changes_only_when_a_platform_built_for_changes(fleet):
    registry = fleet.registry
    amd, arm = (
        registry.image("lib/multi", "a1", content="amd-1"),
        registry.image("lib/multi", "r1", content="arm-1", platform="linux/arm64"),
    )
    registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64": arm}, attestation=True)
    base = f"{fleet.host}/lib/multi:1"
    app = fleet.dockerfile("app", "FROM H/lib/multi:1\n", platforms=["linux/arm64"])
    fleet.push(app, arm, base, platform="linux/arm64")
    first = by_id(fleet.check())
    assert first[base].platforms == {"linux/arm64": arm}
    assert first[app].status == detect.UP_TO_DATE  # the arm64 child digest was recorded

    amd2 = registry.image("lib/multi", "a2", content="amd-2")
    registry.index("lib/multi", "1", {"linux/amd64": amd2, "linux/arm64": arm})
    second = by_id(fleet.check())
    assert second[base].status == detect.UNCHANGED
    assert second[base].detail == "the index changed, the platforms built for did not"
    assert second[app].status == detect.UP_TO_DATE

    arm2 = registry.image("lib/multi", "r2", content="arm-2", platform="linux/arm64")
    registry.index("lib/multi", "1", {"linux/amd64": amd2, "linux/arm64": arm2})
    third = by_id(fleet.check())
    assert third[base].status == detect.CHANGED and "(linux/arm64)" in third[base].detail
    assert third[app].status == detect.STALE


def test_an_image_built_on_an_old_parent_digest_is_stale(fleet):
    external = f"{fleet.host}/lib/base:1"
    base_digest = fleet.registry.image("lib/base", "1")
    parent = fleet.dockerfile("platform", "FROM H/lib/base:1\n")
    child = fleet.dockerfile("app", "FROM H/platform:1\n")
    old = fleet.push(
        parent,
        base_digest,
        external,
    )
    fleet.push(child, old, parent)
    assert {i.status for i in fleet.check().images} == {detect.UP_TO_DATE}
    new = fleet.registry.image("platform", "1", content="rebuilt by someone else",
                               annotations={BASE_DIGEST: base_digest})  # fmt: skip
    result = by_id(fleet.check())
    assert result[parent].status == detect.UP_TO_DATE
    assert (result[child].status, result[child].reason) == (detect.STALE, "stale")
    assert result[child].detail == f"built on {parent} {old}, which is now {new}"
    assert result[child].chain == [child, parent]


def test_a_stale_parent_makes_every_descendant_stale_with_the_chain(fleet):
    registry = fleet.registry
    base = f"{fleet.host}/lib/base:1"
    v1 = registry.image("lib/base", "1", content="v1")
    a = fleet.dockerfile("a", "FROM H/lib/base:1\n")
    b = fleet.dockerfile("b", "FROM H/a:1\n")
    c = fleet.dockerfile("c", "FROM H/b:1\n")
    a1 = fleet.push(a, v1, base)
    b1 = fleet.push(b, a1, a)
    fleet.push(c, b1, b)
    assert {i.status for i in fleet.check().images} == {detect.UP_TO_DATE}
    registry.image("lib/base", "1", content="v2")
    result = by_id(fleet.check())
    assert [result[x].status for x in (a, b, c)] == [detect.STALE] * 3
    assert result[a].chain == [a, base]
    assert result[c].chain == [c, b, a, base]
    assert result[c].detail == f"built on {b}, which is stale"


def test_a_missing_tag_and_what_is_built_on_it(fleet):
    registry = fleet.registry
    base = f"{fleet.host}/lib/base:1"
    v1 = registry.image("lib/base", "1")
    a = fleet.dockerfile("a", "FROM H/lib/base:1\n")
    b = fleet.dockerfile("b", "FROM H/a:1\n")
    fleet.push(b, "sha256:" + "1" * 64, a)
    result = by_id(fleet.check())
    assert (result[a].status, result[a].reason) == (detect.MISSING_TAG, "missing")
    assert (result[b].status, result[b].chain) == (detect.STALE, [b, a])
    assert result[base].digest == v1


def test_an_inherited_label_does_not_fool_it(fleet):
    """A LABEL from a grandparent describes the grandparent: only manifest annotations count."""
    registry = fleet.registry
    grand = f"{fleet.host}/lib/grand:1"
    grand_digest = registry.image("lib/grand", "1")
    registry.image("lib/parent", "1", content="parent v1")
    app = fleet.dockerfile("app", "FROM H/lib/parent:1\n")
    labels = {BASE_DIGEST: grand_digest, BASE_NAME: grand}  # inherited from the grandparent
    fleet.registry.image("app", "1", labels=labels, docker_format=True)  # no annotations
    result = by_id(fleet.check())
    assert result[app].status == detect.UNKNOWN
    assert "no OCI base annotation or graphbuild build record" in result[app].detail


def test_a_graphbuild_build_record_covers_every_parent(fleet):
    registry = fleet.registry
    base, tool = f"{fleet.host}/lib/base:1", f"{fleet.host}/lib/tool:1"
    base1, tool1 = registry.image("lib/base", "1"), registry.image("lib/tool", "1", content="t1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\nCOPY --from=H/lib/tool:1 /t /t\n")
    app_digest = registry.image("app", "1", docker_format=True)
    fleet.check()
    with State(fleet.root / ".graphbuild") as state:
        state.record_build(app, app_digest, {base: base1, tool: tool1})
    assert by_id(fleet.check())[app].status == detect.UP_TO_DATE
    registry.image("lib/tool", "1", content="t2")
    result = by_id(fleet.check())
    assert result[app].status == detect.STALE
    assert result[app].chain == [app, tool]


def test_an_image_graphbuild_just_built_is_judged_by_its_record_without_reading_it(fleet):
    """After a build, the next check takes the digest graphbuild pushed, from the HEADs of
    its tags, with the build record: it used to read the manifest of every image a run had
    built, once (111 registry questions became 211 after a sweep of 100 images). A digest
    another pusher put under the tag is still read, and so is an index graphbuild built,
    for its platforms' digests."""
    registry = fleet.registry
    base = f"{fleet.host}/lib/base:1"
    base1 = registry.image("lib/base", "1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n", tags=("1", "1.0"))
    multi = fleet.dockerfile("multi", "FROM H/lib/base:1\n", platforms=("linux/amd64",))
    built = registry.image("app", "1", content="graphbuild's build")
    assert registry.image("app", "1.0", content="graphbuild's build") == built
    child = registry.image("multi", "amd64", content="multi")
    index = registry.index("multi", "1", {"linux/amd64": child})
    with State(fleet.root / ".graphbuild") as state:
        state.record_build(app, built, {base: base1})
        state.record_build(multi, index, {base: base1})

    def reads(name: str) -> int:
        return registry.log.read_text().count(f'"GET /v2/{name}/manifests/')

    checked = by_id(fleet.check())
    assert (checked[app].status, checked[multi].status) == (detect.UP_TO_DATE, detect.UP_TO_DATE)
    assert reads("app") == 0, "read a manifest of the digest graphbuild built"
    assert reads("multi") == 2  # the index, for its platform's digest, and that child
    registry.image("app", "1", annotations={BASE_DIGEST: base1, BASE_NAME: base},
                   content="pushed by someone else")  # fmt: skip
    assert by_id(fleet.check())[app].status == detect.UP_TO_DATE  # by its annotations
    assert reads("app") == 1


def test_a_parts_check_takes_the_fleet_frontends_it_uses_with_their_bases():
    """`needed` (a push's sweep, `rebuild`): a fleet image the part uses as a `# syntax`
    frontend is judged, with what it is built on, since a run holds a build back when the
    frontend's digest failed a gate; an external frontend and what the part does not use
    are not asked about."""
    dockerfiles = {
        "reg.test/frontend:1": "FROM alpine:3.20\n",
        "reg.test/app:1": "# syntax=reg.test/frontend:1\nFROM debian:12\n",
        "reg.test/web:1": "# syntax=docker/dockerfile:1\nFROM reg.test/app:1\n",
        "reg.test/other:1": "FROM busybox:1\n",
    }
    options = BuildOptions("Dockerfile", ".")
    images = [Image("repo", tag.rsplit(":", 1)[0], [tag], options, parsed=dockerfile.parse(text))
              for tag, text in dockerfiles.items()]  # fmt: skip
    g, problems = graph.build(images)
    assert problems == []
    assert detect.needed(g, ["reg.test/app:1"]) == {
        "reg.test/app:1", "reg.test/web:1", "docker.io/library/debian:12",
        "reg.test/frontend:1", "docker.io/library/alpine:3.20",
    }  # fmt: skip


def test_a_pin_behind_its_tag_is_reported_not_rebuilt(fleet):
    registry = fleet.registry
    old = registry.image("lib/base", "1", content="old")
    pinned = f"{fleet.host}/lib/base:1@{old}"
    app = fleet.dockerfile("app", f"FROM H/lib/base:1@{old}\n")
    fleet.push(app, old, f"{fleet.host}/lib/base:1@{old}")
    assert by_id(fleet.check())[pinned].status == detect.PINNED
    new = registry.image("lib/base", "1", content="new")
    result = by_id(fleet.check())
    assert result[pinned].status == detect.PINNED_OUTDATED
    assert result[pinned].detail == f"pinned {old}, the tag now points at {new}"
    assert result[app].status == detect.UP_TO_DATE  # it is built on exactly what it pins


def test_an_outage_is_unknown_and_the_change_behind_it_is_still_seen(fleet, registry, tmp_path):
    base = f"{fleet.host}/lib/base:1"
    v1 = registry.image("lib/base", "1", content="v1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n")
    fleet.push(app, v1, base)
    fleet.check()
    registry.image("lib/base", "1", content="v2")
    registry.stop()
    down = by_id(fleet.check(retries=0))
    assert down[base].status == detect.UNKNOWN and "unreachable" in down[base].detail
    assert down[app].status == detect.UNKNOWN
    back = LocalRegistry(registry.folder, port=registry.port).start()  # same storage, same port
    try:
        up = by_id(fleet.check())
    finally:
        back.stop()
    assert up[base].status == detect.CHANGED and up[base].previous == v1
    assert up[app].status == detect.STALE


def test_ten_thousand_dockerfiles_naming_500_bases_make_500_requests(tmp_path, registry):
    """Each unique reference is asked once, however many Dockerfiles name it; a digest
    never seen before is read once (the 500 tags share 7 manifests) to prove it."""
    for n in range(500):
        registry.image("base", f"b{n}", content=str(n % 7))  # 500 tags, shared layers
    pushed = registry.requests()
    fleet_dir = tmp_path / "fleet"
    for i in range(10_000):
        folder = fleet_dir / "images" / f"i{i:05d}"
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(f"FROM {registry.host}/base:b{i % 500}\n")
    elsewhere = f"127.0.0.1:{free_port()}"  # where the fleet's own images would be: down
    (tmp_path / "repos.yaml").write_text(
        f'registries:\n  "{registry.host}": {{insecure: true}}\n'
        f'  "{elsewhere}": {{insecure: true}}\n'
        "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
        f'      - {{image: "{elsewhere}/{{dir}}", dockerfile: "images/*/Dockerfile"}}\n'
    )
    cfg = config.load(tmp_path / "repos.yaml")
    sync(cfg)
    with closing(indexdb.connect(cfg.workspace)) as db:
        g = graph.load(db)
    with State(cfg.workspace) as state, Registry(cfg.registries, retries=0) as client:
        result = detect.check(g, client, state)
    assert registry.requests(r"^/v2/base/manifests/b\d+$") == 500
    assert registry.requests() - pushed == 500 + 7
    assert {b.status for b in result.bases} == {detect.NEW}
    again = registry.requests()
    with State(cfg.workspace) as state, Registry(cfg.registries, retries=0) as client:
        assert {b.status for b in detect.check(g, client, state).bases} == {detect.UNCHANGED}
    assert registry.requests() - again == 500
    assert len(result.images) == 10_000
    assert {i.status for i in result.images} == {detect.UNKNOWN}


def test_images_built_by_buildah_carry_the_annotations_detection_reads(tmp_path, fleet):
    """Real builds: buildah writes base.name/base.digest into the manifests it pushes."""
    require("buildah")
    storage = ["--root", str(tmp_path / "storage"), "--runroot", str(tmp_path / "run"),
               "--storage-driver", "vfs"]  # fmt: skip

    def buildah(*args: str) -> None:
        subprocess.run(["buildah", *storage, *args], check=True, capture_output=True)

    def build(ref: str, containerfile: str, content: str) -> None:
        context = tmp_path / ref.rsplit("/", 1)[1].replace(":", "-")
        context.mkdir(exist_ok=True)
        (context / "content").write_text(content)
        (context / "Containerfile").write_text(containerfile)
        buildah("bud", "--isolation", "chroot", "--tls-verify=false", "-q", "-t", ref, str(context))
        buildah("push", "--tls-verify=false", "-q", ref)

    base = f"{fleet.host}/lib/base:1"
    app = fleet.dockerfile("app", "FROM H/lib/base:1\nCOPY content /app\n")
    build(base, "FROM scratch\nCOPY content /base\n", "base v1")
    build(app, f"FROM {base}\nCOPY content /app\n", "app")
    result = by_id(fleet.check())
    assert (result[base].status, result[app].status) == (detect.NEW, detect.UP_TO_DATE)

    build(base, "FROM scratch\nCOPY content /base\n", "base v2")
    result = by_id(fleet.check())
    assert result[base].status == detect.CHANGED
    assert (result[app].status, result[app].reason) == (detect.STALE, detect.BASE_CHANGED)

    build(app, f"FROM {base}\nCOPY content /app\n", "app")  # rebuilt on the new base
    assert by_id(fleet.check())[app].status == detect.UP_TO_DATE


# ---------------------------------------------------------------- what the review asked for


def test_a_change_stays_visible_until_the_image_is_rebuilt(fleet):
    """A check never consumes a change: an image with no annotation is judged against the
    parent digest it was first seen with, and only a build moves that baseline."""
    registry = fleet.registry
    base = f"{fleet.host}/lib/base:1"
    registry.image("lib/base", "1", content="v1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n")
    registry.image("app", "1", docker_format=True)  # built elsewhere: no annotations
    assert by_id(fleet.check())[app].status == detect.UNKNOWN
    registry.image("lib/base", "1", content="v2")
    for _ in range(3):  # the first check sees the change; the others must not forget it
        result = by_id(fleet.check())
        assert (result[app].status, result[app].reason) == (detect.STALE, detect.BASE_CHANGED)
    assert result[base].status == detect.UNCHANGED  # the base table reports the event once


def test_a_copy_from_base_that_moves_is_not_hidden_by_an_annotated_from(fleet):
    registry = fleet.registry
    base, tool = f"{fleet.host}/lib/base:1", f"{fleet.host}/lib/tool:1"
    base1 = registry.image("lib/base", "1")
    registry.image("lib/tool", "1", content="t1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\nCOPY --from=H/lib/tool:1 /t /t\n")
    fleet.push(app, base1, base)
    assert by_id(fleet.check())[app].status == detect.UP_TO_DATE
    registry.image("lib/tool", "1", content="t2")
    for _ in range(2):
        result = by_id(fleet.check())
        assert (result[app].status, result[app].reason, result[app].chain) == (
            detect.STALE, detect.BASE_CHANGED, [app, tool]
        )  # fmt: skip


def test_a_moving_syntax_frontend_is_no_reason_to_rebuild(fleet):
    registry = fleet.registry
    base = f"{fleet.host}/lib/base:1"
    base1 = registry.image("lib/base", "1")
    registry.image("frontend", "1", content="f1")
    app = fleet.dockerfile("app", "# syntax=H/frontend:1\nFROM H/lib/base:1\n")
    fleet.push(app, base1, base)
    fleet.check()
    registry.image("frontend", "1", content="f2")
    result = by_id(fleet.check())
    assert result[f"{fleet.host}/frontend:1"].status == detect.CHANGED
    assert result[app].status == detect.UP_TO_DATE


def test_remembered_index_children_serve_every_platform(fleet):
    """A platform first asked after the index was seen is still resolved correctly."""
    registry = fleet.registry
    amd = registry.image("lib/multi", "a", content="amd")
    arm = registry.image("lib/multi", "r", content="arm", platform="linux/arm64")
    registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64": arm})
    base = f"{fleet.host}/lib/multi:1"
    first = fleet.dockerfile("amd-app", "FROM H/lib/multi:1\n")
    fleet.push(first, amd, base)
    fleet.check()
    second = fleet.dockerfile("arm-app", "FROM H/lib/multi:1\n", platforms=["linux/arm64"])
    fleet.push(second, arm, base, platform="linux/arm64")
    result = by_id(fleet.check())
    assert (result[first].status, result[second].status) == (detect.UP_TO_DATE,) * 2


def test_an_image_on_a_pinned_index_annotated_with_its_platform_child(fleet):
    registry = fleet.registry
    amd = registry.image("lib/multi", "a", content="amd")
    index = registry.index("lib/multi", "1", {"linux/amd64": amd})
    app = fleet.dockerfile("app", f"FROM H/lib/multi:1@{index}\n")
    fleet.push(app, amd, f"{fleet.host}/lib/multi:1@{index}")  # buildah records the child
    for _ in range(2):
        assert by_id(fleet.check())[app].status == detect.UP_TO_DATE


def test_a_platform_move_only_affects_images_built_for_it(fleet):
    registry = fleet.registry
    amd = registry.image("lib/multi", "a1", content="amd-1")
    arm = registry.image("lib/multi", "r1", content="arm-1", platform="linux/arm64")
    registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64": arm})
    base = f"{fleet.host}/lib/multi:1"
    amd_app = fleet.dockerfile("amd-app", "FROM H/lib/multi:1\n")
    arm_app = fleet.dockerfile("arm-app", "FROM H/lib/multi:1\n", platforms=["linux/arm64"])
    registry.image("amd-app", "1", docker_format=True)  # no annotations: baselines decide
    registry.image("arm-app", "1", docker_format=True, platform="linux/arm64")
    fleet.check()
    arm2 = registry.image("lib/multi", "r2", content="arm-2", platform="linux/arm64")
    registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64": arm2})
    result = by_id(fleet.check())
    assert result[arm_app].status == detect.STALE
    assert result[amd_app].status == detect.UNKNOWN  # still no evidence, but nothing moved
    assert result[base].status == detect.CHANGED


def test_every_platform_of_a_multi_arch_image_is_compared(fleet):
    registry = fleet.registry
    amd = registry.image("lib/multi", "a1", content="amd-1")
    arm = registry.image("lib/multi", "r1", content="arm-1", platform="linux/arm64")
    registry.index("lib/multi", "1", {"linux/amd64": amd, "linux/arm64": arm})
    base = f"{fleet.host}/lib/multi:1"
    app = fleet.dockerfile("app", "FROM H/lib/multi:1\n", platforms=["linux/amd64", "linux/arm64"])
    note = {BASE_NAME: base}
    app_amd = registry.image("app", "amd", annotations={**note, BASE_DIGEST: amd})
    stale_arm = "sha256:" + "7" * 64  # the arm64 half was built on an older base
    app_arm = registry.image("app", "arm", platform="linux/arm64",
                             annotations={**note, BASE_DIGEST: stale_arm})  # fmt: skip
    registry.index("app", "1", {"linux/amd64": app_amd, "linux/arm64": app_arm})
    result = by_id(fleet.check())
    assert result[app].status == detect.STALE and stale_arm in result[app].detail


def test_an_alias_tag_that_is_missing(fleet):
    registry = fleet.registry
    base1 = registry.image("lib/base", "1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n", tags=("1", "stable"))
    tool = fleet.dockerfile("tool", "FROM H/app:1\n")
    app1 = fleet.push(app, base1, f"{fleet.host}/lib/base:1")
    fleet.push(tool, app1, app)
    result = by_id(fleet.check())
    assert result[app].status == detect.MISSING_TAG
    assert result[app].detail == f"tag {fleet.host}/app:stable not in the registry"
    assert result[tool].status == detect.UP_TO_DATE  # the image itself is there


def test_a_second_check_reads_no_manifest_again(fleet):
    registry = fleet.registry
    base1 = registry.image("lib/base", "1")
    app = fleet.dockerfile("app", "FROM H/lib/base:1\n")
    fleet.push(app, base1, f"{fleet.host}/lib/base:1")
    fleet.check()
    gets = registry.log.read_text().count('"GET /v2/app/manifests/')
    assert by_id(fleet.check())[app].status == detect.UP_TO_DATE
    assert registry.log.read_text().count('"GET /v2/app/manifests/') == gets  # a HEAD only


def test_a_parent_with_no_answer_makes_its_children_unknown_not_stale(fleet):
    """An outage upstream in the graph must not start a rebuild storm downstream."""
    down = f"127.0.0.1:{free_port()}"
    parent = f"{down}/platform/base:1"
    folder = fleet.root / "fleet" / "base"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM scratch\n")
    fleet.images.append(f'{{"image": "{down}/platform/base", "dockerfile": "base/Dockerfile", '
                        '"tags": ["1"], "platforms": []}')  # fmt: skip
    app = fleet.dockerfile("app", f"FROM {parent}\n")
    fleet.push(app, "sha256:" + "3" * 64, parent)
    result = by_id(fleet.check(retries=0))
    assert result[parent].status == detect.UNKNOWN
    assert result[app].status == detect.UNKNOWN and "no answer" in result[app].detail


def test_a_base_annotation_naming_the_mirror_names_the_upstream_base(fleet):
    """buildah records the FROM as written, the mirror's name; the graph's node is the
    upstream base it mirrors. That is the same parent, not a changed Dockerfile."""
    mirror = f"mirrors: {{'{fleet.host}/lib': '{fleet.host}/mirror/lib'}}\n"
    base = f"{fleet.host}/lib/base:1"
    digest = fleet.registry.image("lib/base", "1", content="v1")
    app = fleet.dockerfile("app", "FROM H/mirror/lib/base:1\nCOPY x /x\n")
    fleet.push(app, built_on=digest, parent=f"{fleet.host}/mirror/lib/base:1@{digest}")
    result = by_id(fleet.check(top=mirror))
    assert result[app].status == detect.UP_TO_DATE, result[app].detail
    assert base in result  # watched upstream


def test_a_digest_the_registry_cannot_prove_is_no_change_and_is_not_stored(fleet, registry):
    """A registry that answers a HEAD with a self-consistent digest of garbage: the base is
    unknown with the reason, not changed, and the bogus digest is never recorded."""
    proxy = FaultProxy(registry.host).start()
    base = f"{proxy.address}/lib/base:1"
    v1 = registry.image("lib/base", "1", content="v1")
    fleet.dockerfile("app", f"FROM {base}\n")
    try:
        assert by_id(fleet.check(proxy.address, retries=0))[base].digest == v1
        garbage = b"<html>Bad gateway</html>"
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(garbage)}
        proxy.answer(200, b"", headers)  # the HEAD
        proxy.answer(200, garbage, headers)  # the GET of that digest
        lied = by_id(fleet.check(proxy.address, retries=0))[base]
        honest = by_id(fleet.check(proxy.address, retries=0))[base]
    finally:
        proxy.stop()
    assert lied.status == detect.UNKNOWN, lied
    assert lied.detail.startswith(f"error: {base}: the registry names {sha(garbage)}, but ")
    assert "not JSON" in lied.detail
    with State(fleet.root / ".graphbuild") as state:
        assert state.latest(base).digest == v1
    assert honest.status == detect.UNCHANGED


def test_check_stops_waiting_at_its_deadline_and_says_so(tmp_path):
    """`check.timeout` bounds the whole pass: a registry that drips its answers makes its
    references unknown, with the reason, and `graphbuild check` still finishes."""
    drip = Drip.headers().start()
    folder = tmp_path / "fleet" / "app"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(f"FROM {drip.address}/lib/base:1\n")
    (tmp_path / "repos.yaml").write_text(
        f'check: {{timeout: 3}}\nregistries:\n  "{drip.address}": {{insecure: true}}\n'
        "repos:\n  - name: fleet\n    path: fleet\n    images:\n"
        f'      - {{image: "{drip.address}/app", dockerfile: "app/Dockerfile"}}\n'
    )
    cli = [sys.executable, "-m", "graphbuild", "--config", str(tmp_path / "repos.yaml")]
    try:
        subprocess.run([*cli, "sync"], check=True, capture_output=True, timeout=60)
        done = subprocess.run([*cli, "check", "--json"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    finally:
        drip.stop()
    answer = json.loads(done.stdout)
    base = f"{drip.address}/lib/base:1"
    (found,) = [b for b in answer["bases"] if b["id"] == base]
    assert found["status"] == "unknown"
    assert found["detail"] == (f"unreachable: {base}: no answer before the check's deadline "
                               "of 3 s passed (check.timeout in repos.yaml)")  # fmt: skip
    assert "Traceback" not in done.stderr
