"""Builders: the argv each one runs (never a shell line), the digest each returns,
and how each fails, with real small commands.

buildah and docker themselves are not run here: where a build() is exercised, a small
script of the same name on PATH stands in for the tool and writes what it would.
"""

import hashlib
import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from graphbuild import builders
from graphbuild.builders import BuildRequest
from graphbuild.builders.buildah import Buildah
from graphbuild.builders.command import Command
from graphbuild.builders.docker import Docker
from graphbuild.config import BuildahSpec, CommandSpec, DockerSpec
from graphbuild.errors import CommandFailed, GraphbuildError
from graphbuild.process import run

APP = "reg.test/team/app:1.0"
APP_LATEST = "reg.test/team/app:latest"
AMD64, ARM64 = "linux/amd64", "linux/arm64"
DIGEST = "sha256:" + "d" * 64
# Each must reach the tool as one argument, exactly as written.
HOSTILE = "a b; rm -rf / $(id) `id` 'single' \"double\" && echo $HOME | cat"


def request(tmp_path, **kw):
    kw.setdefault("tags", (APP, APP_LATEST))
    return BuildRequest(
        image=APP,
        context=tmp_path / "ctx",
        dockerfile=tmp_path / "Dockerfile.pinned",
        log=tmp_path / "app.log",
        **kw,
    )


def values(argv, flag):
    """What follows each occurrence of `flag` in argv."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def never():
    return threading.Event()


def tool(tmp_path, monkeypatch, name, script):
    """`name` on PATH: a shell script standing in for the real tool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return path


# -- buildah


def test_buildah_single_platform(tmp_path):
    argv = Buildah(BuildahSpec()).bud_argv(request(tmp_path, platforms=(ARM64,)))
    assert argv == [
        "buildah", "--storage-driver", "vfs", "bud", "--isolation", "chroot", "--quiet",
        "-f", str(tmp_path / "Dockerfile.pinned"), "-t", APP, "--platform", ARM64,
        str(tmp_path / "ctx"),
    ]  # fmt: skip


def test_buildah_without_platforms_builds_for_the_host():
    argv = Buildah(BuildahSpec()).bud_argv(request(Path("/w")))
    assert "--platform" not in argv
    assert values(argv, "-t") == [APP]  # the other tags are pushed from this one
    assert "--manifest" not in argv


def test_buildah_multi_platform_builds_one_manifest_list():
    argv = Buildah(BuildahSpec()).bud_argv(request(Path("/w"), platforms=(AMD64, ARM64)))
    # a list of this build's own: one left by an earlier build would be added to
    (local,) = values(argv, "--manifest")
    assert local.startswith("localhost/graphbuild-list:")
    other = Buildah(BuildahSpec()).bud_argv(request(Path("/w2"), platforms=(AMD64, ARM64)))
    assert values(other, "--manifest") != [local]
    assert values(argv, "--platform") == [f"{AMD64},{ARM64}"]
    assert "-t" not in argv
    assert argv[-1] == "/w/ctx"


def test_buildah_build_options():
    req = request(
        Path("/w"),
        build_args={"PY": "3.12", "EMPTY": ""},
        target="runtime",
        labels={"io.graphbuild.run": "r1"},
        annotations={"io.graphbuild.reason": "stale: x"},
        no_cache=True,
    )
    argv = Buildah(BuildahSpec()).bud_argv(req)
    assert values(argv, "--build-arg") == ["PY=3.12", "EMPTY="]
    assert values(argv, "--target") == ["runtime"]
    assert values(argv, "--label") == ["io.graphbuild.run=r1"]
    assert values(argv, "--annotation") == ["io.graphbuild.reason=stale: x"]
    assert "--no-cache" in argv
    assert "--tls-verify=false" not in argv
    assert argv[-1] == "/w/ctx"


def test_buildah_defaults_leave_options_out():
    argv = Buildah(BuildahSpec()).bud_argv(request(Path("/w")))
    for flag in ("--build-arg", "--target", "--label", "--annotation", "--no-cache"):
        assert flag not in argv


def test_buildah_insecure_registry_turns_tls_verification_off():
    argv = Buildah(BuildahSpec()).bud_argv(request(Path("/w"), insecure_pull=True))
    assert argv.count("--tls-verify=false") == 1
    assert argv.index("--tls-verify=false") > argv.index("bud")  # a bud option, not global
    assert "--tls-verify=false" not in Buildah(BuildahSpec()).bud_argv(
        request(Path("/w"), insecure_push=True)
    )


def test_buildah_pushes_without_tls_only_to_a_plain_http_registry(tmp_path, monkeypatch):
    """Parents on a loopback mirror must not turn verification off for a push to ghcr.io."""
    calls = tmp_path / "calls"
    tool(tmp_path, monkeypatch, "buildah",
         f'printf "%s\\n" "$*" >> {calls}\n'
         'while [ $# -gt 0 ]; do [ "$1" = --digestfile ] && printf "%s\\n" '
         f'"{DIGEST}" > "$2"; shift; done\n')  # fmt: skip
    Buildah(BuildahSpec()).build(request(tmp_path, insecure_pull=True), never())
    bud, *pushes = calls.read_text().splitlines()
    assert "--tls-verify=false" in bud.split() and len(pushes) == 2
    assert all("--tls-verify=false" not in push.split() for push in pushes)


def test_buildah_storage_options_come_before_the_verb():
    argv = Buildah(BuildahSpec("oci", "overlay", root="/var/lib/gb", runroot="/run/gb")).bud_argv(
        request(Path("/w"))
    )
    assert argv[:8] == [
        "buildah", "--storage-driver", "overlay", "--root", "/var/lib/gb",
        "--runroot", "/run/gb", "bud",
    ]  # fmt: skip
    assert values(argv, "--isolation") == ["oci"]


def test_buildah_build_pushes_every_tag_and_returns_the_digest(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    tool(
        tmp_path,
        monkeypatch,
        "buildah",
        f'printf "%s\\n" "$*" >> {calls}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --digestfile ] && printf "%s\\n" '
        f'"{DIGEST}" > "$2"; shift; done\n',
    )
    req = request(tmp_path, platforms=(AMD64, ARM64), insecure_push=True)
    assert Buildah(BuildahSpec()).build(req, never()) == DIGEST
    bud, *pushes, rm = calls.read_text().splitlines()
    assert bud.startswith("--storage-driver vfs bud ")
    local = values(bud.split(), "--manifest")[0]
    assert len(pushes) == 2
    for push, tag in zip(pushes, (APP, APP_LATEST), strict=True):
        assert push.startswith("--storage-driver vfs manifest push --all --tls-verify=false ")
        assert push.endswith(f" {local} docker://{tag}")
    assert rm == f"--storage-driver vfs manifest rm {local}"  # the next build starts afresh


def test_buildah_build_fails_when_tags_get_different_digests(tmp_path, monkeypatch):
    """Each push writes a digest of its own destination: the tags disagree."""
    tool(
        tmp_path,
        monkeypatch,
        "buildah",
        'file=""; for a; do [ "$prev" = --digestfile ] && file=$a; prev=$a; done\n'
        '[ -n "$file" ] && printf "sha256:%s" "$(printf %s "$prev" | sha256sum | cut -c1-64)"'
        ' > "$file"\nexit 0\n',
    )
    with pytest.raises(CommandFailed, match=f"buildah push {APP_LATEST}: no consistent digest"):
        Buildah(BuildahSpec()).build(request(tmp_path), never())


def test_buildah_build_ignores_a_digest_from_an_earlier_attempt(tmp_path, monkeypatch):
    """The same run retries with the same log path: a push that wrote nothing fails."""
    (tmp_path / "app.digest").write_text(DIGEST)
    tool(tmp_path, monkeypatch, "buildah", "exit 0\n")
    with pytest.raises(CommandFailed, match=f"buildah push {APP}: no consistent digest"):
        Buildah(BuildahSpec()).build(request(tmp_path), never())


@pytest.mark.parametrize("kind", ["buildah", "docker"])
def test_a_secret_build_arg_reaches_the_tool_by_environment_never_by_argv(
    tmp_path, monkeypatch, kind
):
    """`--build-arg NAME` with no value: buildah and docker read it from their environment,
    so the value is on no command line and in no log line graphbuild writes."""
    seen = tmp_path / "seen"
    tool(tmp_path, monkeypatch, kind,
         f'printf "%s\\n" "$*" >> {seen}; printf "TOKEN=%s\\n" "$TOKEN" >> {seen}\n'
         'while [ $# -gt 0 ]; do case "$1" in --digestfile) printf "%s\\n" '
         f'"{DIGEST}" > "$2";; --metadata-file) printf \'{{"containerimage.digest": "{DIGEST}"}}\' '
         '> "$2";; esac; shift; done\n')  # fmt: skip
    req = request(tmp_path, build_args={"V": "1"}, secret_args={"TOKEN": "s3cret-value"})
    builder = Buildah(BuildahSpec()) if kind == "buildah" else Docker(DockerSpec())
    assert builder.build(req, never()) == DIGEST
    build_line, env_line = seen.read_text().splitlines()[:2]
    assert "--build-arg V=1 " in build_line and "--build-arg TOKEN " in build_line
    assert env_line == "TOKEN=s3cret-value"
    assert "s3cret" not in build_line and "s3cret" not in (tmp_path / "app.log").read_text()
    assert "s3cret" not in repr(req)


# -- docker buildx


def test_docker_argv():
    req = request(
        Path("/w"),
        build_args={"PY": "3.12"},
        target="runtime",
        platforms=(AMD64, ARM64),
        labels={"l": "1"},
        annotations={"a": "2"},
        no_cache=True,
    )
    assert Docker(DockerSpec("remote")).argv(req, "/w/meta.json") == [
        "docker", "buildx", "build", "--push", "--metadata-file", "/w/meta.json",
        "--file", "/w/Dockerfile.pinned", "--provenance=false", "--builder", "remote",
        "--tag", APP, "--tag", APP_LATEST, "--build-arg", "PY=3.12", "--target", "runtime",
        "--platform", f"{AMD64},{ARM64}", "--label", "l=1", "--annotation", "a=2",
        "--no-cache", "/w/ctx",
    ]  # fmt: skip


def test_docker_defaults_leave_options_out():
    argv = Docker(DockerSpec()).argv(request(Path("/w"), tags=(APP,)), "/w/m.json")
    assert argv == [
        "docker", "buildx", "build", "--push", "--metadata-file", "/w/m.json",
        "--file", "/w/Dockerfile.pinned", "--provenance=false", "--tag", APP, "/w/ctx",
    ]  # fmt: skip


def test_docker_build_reads_the_pushed_digest_from_the_metadata(tmp_path, monkeypatch):
    tool(
        tmp_path,
        monkeypatch,
        "docker",
        'while [ $# -gt 0 ]; do [ "$1" = --metadata-file ] && '
        f"printf '%s' '{json.dumps({'containerimage.digest': DIGEST})}' > \"$2\"; shift; done\n",
    )
    assert Docker(DockerSpec()).build(request(tmp_path), never()) == DIGEST


def test_docker_build_without_metadata_fails(tmp_path, monkeypatch):
    tool(tmp_path, monkeypatch, "docker", "exit 0\n")
    with pytest.raises(CommandFailed, match=f"docker buildx {APP}: no pushed digest"):
        Docker(DockerSpec()).build(request(tmp_path), never())


# -- command


TEMPLATE = [
    "kaniko", "--context={context}", "--dockerfile", "{dockerfile}", "--destination={tag}",
    "{tags}", "{build-args}", "{labels}", "{annotations}", "--target={target}",
    "--custom-platform={platform}", "--digest-file={digestfile}", "--name={image}",
]  # fmt: skip


def test_command_placeholders():
    req = request(
        Path("/w"),
        build_args={"A": "1", "B": "2"},
        target="runtime",
        platforms=(AMD64, ARM64),
        labels={"l": "1"},
        annotations={"a": "2"},
    )
    assert Command(CommandSpec(tuple(TEMPLATE))).argv(req, "/w/app.digest") == [
        "kaniko", "--context=/w/ctx", "--dockerfile", "/w/Dockerfile.pinned",
        f"--destination={APP}", "--tag", APP, "--tag", APP_LATEST,
        "--build-arg", "A=1", "--build-arg", "B=2", "--label", "l=1", "--annotation", "a=2",
        "--target=runtime", f"--custom-platform={AMD64},{ARM64}",
        "--digest-file=/w/app.digest", f"--name={APP}",
    ]  # fmt: skip


def test_command_empty_lists_vanish_and_empty_values_stay():
    argv = Command(CommandSpec(tuple(TEMPLATE))).argv(request(Path("/w"), tags=(APP,)), "/w/d")
    assert argv == [
        "kaniko", "--context=/w/ctx", "--dockerfile", "/w/Dockerfile.pinned",
        f"--destination={APP}", "--tag", APP, "--target=", "--custom-platform=",
        "--digest-file=/w/d", f"--name={APP}",
    ]  # fmt: skip


def test_command_no_cache_becomes_the_flag_where_the_template_asks_for_it():
    """`rebuild --no-cache` reaches a command builder through `{no-cache}`, and only then."""
    template = CommandSpec(("kaniko", "{no-cache}", "--context={context}"))
    asked = Command(template).argv(request(Path("/w"), no_cache=True), "/d")
    assert asked == ["kaniko", "--no-cache", "--context=/w/ctx"]
    assert Command(template).argv(request(Path("/w")), "/d") == ["kaniko", "--context=/w/ctx"]


def test_command_list_placeholders_only_stand_alone():
    """`x{tags}` is not the list placeholder: it stays as written."""
    argv = Command(CommandSpec(("t", "x{tags}", "{tags}x", "{image}{tag}"))).argv(
        request(Path("/w")), "/d"
    )
    assert argv == ["t", "x{tags}", "{tags}x", f"{APP}{APP}"]


def test_command_values_are_not_substituted_twice():
    req = replace(request(Path("/w")), context=Path("/w/ctx-{tag}"))
    assert Command(CommandSpec(("t", "{context}"))).argv(req, "/d") == ["t", "/w/ctx-{tag}"]


# -- no shell: hostile values stay one argument


def hostile_request(tmp_path):
    where = tmp_path / "dir with spaces; $(id)"
    return BuildRequest(
        image=APP,
        tags=(APP,),
        context=where / "ctx",
        dockerfile=where / "Dockerfile",
        build_args={"X": HOSTILE},
        target=HOSTILE,
        labels={"l": HOSTILE},
        annotations={"a": HOSTILE},
        log=tmp_path / "app.log",
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(lambda r: Buildah(BuildahSpec()).bud_argv(r), id="buildah"),
        pytest.param(lambda r: Docker(DockerSpec()).argv(r, "/m.json"), id="docker"),
        pytest.param(lambda r: Command(CommandSpec(tuple(TEMPLATE))).argv(r, "/d"), id="command"),
    ],
)
def test_values_stay_single_arguments(tmp_path, argv):
    req = hostile_request(tmp_path)
    out = argv(req)
    assert out.count(f"X={HOSTILE}") == 1
    assert out.count(f"l={HOSTILE}") == 1
    assert out.count(f"a={HOSTILE}") == 1
    assert str(req.context) in out or f"--context={req.context}" in out
    assert HOSTILE in out or f"--target={HOSTILE}" in out


def test_hostile_values_reach_the_command_untouched(tmp_path):
    """Really run: each value arrives at the process as one argument, exactly as written."""
    req = hostile_request(tmp_path)
    seen = tmp_path / "seen"
    template = ["sh", "-c", 'for a; do printf "%s\\n" "$a"; done > "$0"', str(seen), "{target}"]
    template += ["{build-args}", "{context}"]
    run(Command(CommandSpec(tuple(template))).argv(req, "/d"), req.log, never(), "t")
    assert seen.read_text().splitlines() == [
        HOSTILE,
        "--build-arg",
        f"X={HOSTILE}",
        str(req.context),
    ]


# -- make


def test_make_picks_the_builder_and_passes_its_options(tmp_path, monkeypatch):
    for program in ("buildah", "docker", "sh"):  # make() only checks they are on PATH
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    default = builders.make(BuildahSpec())
    assert isinstance(default, Buildah) and default.store == ["--storage-driver", "vfs"]
    buildah = builders.make(BuildahSpec(storage_driver="overlay", root="/r"))
    assert buildah.store == ["--storage-driver", "overlay", "--root", "/r"]
    docker = builders.make(DockerSpec(builder="remote"))
    assert isinstance(docker, Docker) and docker.builder == "remote"
    command = builders.make(CommandSpec(("sh", "{context}")))
    assert isinstance(command, Command) and command.template == ["sh", "{context}"]
    assert command.name == "command" and docker.name == "docker" and buildah.name == "buildah"


def test_a_builder_that_is_not_installed_is_bad_input_before_any_build(monkeypatch, tmp_path):
    with pytest.raises(GraphbuildError, match=r"builder\.kind command: kaniko is not installed"):
        builders.make(CommandSpec(("kaniko", "{context}")))
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    with pytest.raises(GraphbuildError, match="buildah is not installed") as err:
        builders.make(BuildahSpec())
    assert err.value.exit_code == 2


# -- command builder, end to end


def test_command_build_returns_the_digest_it_wrote(tmp_path):
    script = 'printf "sha256:%s\\n" "$(printf %s "$1" | sha256sum | cut -c1-64)" > "$2"'
    req = request(tmp_path)
    digest = Command(CommandSpec(tuple(["sh", "-c", script, "sh", "{tag}", "{digestfile}"]))).build(
        req, never()
    )
    assert digest == "sha256:" + hashlib.sha256(APP.encode()).hexdigest()
    assert (tmp_path / "app.digest").read_text() == digest + "\n"


def test_command_build_without_a_digest_fails(tmp_path):
    with pytest.raises(CommandFailed, match="sh wrote no digest"):
        Command(CommandSpec(tuple(["sh", "-c", "echo built", "sh", "{digestfile}"]))).build(
            request(tmp_path), never()
        )


def test_command_build_failure_is_a_build_failure(tmp_path):
    with pytest.raises(CommandFailed, match=r"^sh exited 2: push denied$"):
        Command(CommandSpec(tuple(["sh", "-c", "echo push denied; exit 2"]))).build(
            request(tmp_path), never()
        )


@pytest.mark.parametrize("kind", ["command", "docker"])
def test_a_digest_from_an_earlier_attempt_is_not_returned(tmp_path, monkeypatch, kind):
    """Attempt 1 pushed and wrote its digest, then failed; attempt 2 exits 0 writing nothing."""
    if kind == "command":
        (tmp_path / "app.digest").write_text(DIGEST)
        builder = Command(CommandSpec(tuple(["sh", "-c", "true", "sh", "{digestfile}"])))
    else:
        (tmp_path / "app.metadata.json").write_text(json.dumps({"containerimage.digest": DIGEST}))
        tool(tmp_path, monkeypatch, "docker", "exit 0\n")
        builder = Docker(DockerSpec())
    with pytest.raises(CommandFailed):
        builder.build(request(tmp_path), never())


def test_command_build_writing_bytes_that_are_no_digest_fails_cleanly(tmp_path):
    """Not a crash that reads as an internal error: the build failed, and says why."""
    script = "printf 'sha256:\\377\\376' > \"$1\""
    with pytest.raises(CommandFailed, match="sh wrote no digest"):
        Command(CommandSpec(tuple(["sh", "-c", script, "sh", "{digestfile}"]))).build(
            request(tmp_path), never()
        )


# -- named build contexts

CONTEXTS = {"base": f"docker-image://docker.io/library/alpine:3@{DIGEST}", "src": "/w/named-0/lib"}


def test_buildah_and_docker_pass_each_named_context():
    """Defect: no builder passed `--build-context`, so `FROM base` was pulled as an image
    called `base`, not the one the graph linked the image to."""
    req = request(Path("/w"), contexts=CONTEXTS)
    wanted = [f"base=docker-image://docker.io/library/alpine:3@{DIGEST}", "src=/w/named-0/lib"]
    assert values(Buildah(BuildahSpec()).bud_argv(req), "--build-context") == wanted
    assert values(Docker(DockerSpec()).argv(req, "/w/m.json"), "--build-context") == wanted
    assert (
        Buildah(BuildahSpec()).bud_argv(req)[-1]
        == Docker(DockerSpec()).argv(req, "/w/m.json")[-1]
        == "/w/ctx"
    )
    assert "--build-context" not in Buildah(BuildahSpec()).bud_argv(request(Path("/w")))


def test_command_passes_named_contexts_through_its_placeholder():
    argv = Command(CommandSpec(tuple(["t", "{build-contexts}", "{context}"]))).argv(
        request(Path("/w"), contexts=CONTEXTS), "/d"
    )
    assert argv == ["t", "--build-context", f"base={CONTEXTS['base']}",
                    "--build-context", f"src={CONTEXTS['src']}", "/w/ctx"]  # fmt: skip
    assert Command(CommandSpec(tuple(["t", "{build-contexts}"]))).argv(
        request(Path("/w")), "/d"
    ) == ["t"]


def test_command_without_the_placeholder_refuses_an_image_with_named_contexts(tmp_path):
    """Built without its contexts, the image would not be what the graph says it is."""
    ran = tmp_path / "ran"
    builder = Command(CommandSpec(tuple(["sh", "-c", 'touch "$1"', "sh", str(ran)])))
    with pytest.raises(CommandFailed) as err:
        builder.build(request(tmp_path, contexts=CONTEXTS), never())
    assert str(err.value) == (
        f"sh: {APP} uses named contexts (contexts: base, src) and builder.argv has no "
        "{build-contexts} to pass them"
    )
    assert not err.value.transient and not ran.exists()
