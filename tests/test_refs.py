"""Image reference normalisation: the distribution/reference table in
shared/reference/dockerfile-semantics.md, row by row, plus the Reference helpers."""

import pytest

from graphbuild import refs
from graphbuild.errors import InvalidReference

HEX = "0123456789abcdef" * 4  # a well-formed sha256 hex part (64 digits)
DIGEST = f"sha256:{HEX}"


def valid(text, canonical, note=""):
    return pytest.param(text, canonical, id=text if not note else f"{text} ({note})")


def invalid(text, reason, note=""):
    return pytest.param(text, reason, id=text if not note else f"{text} ({note})")


# One entry per line of the table, in table order.
VALID_ROWS = [
    valid("ubuntu", "docker.io/library/ubuntu:latest"),
    valid("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    valid("user/app", "docker.io/user/app:latest"),
    valid("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
    valid("index.docker.io/alpine", "docker.io/library/alpine:latest", "legacy host"),
    valid("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    valid(
        "registry-1.docker.io/library/alpine",
        "registry-1.docker.io/library/alpine:latest",
        "a different name",
    ),
    valid("localhost", "docker.io/library/localhost:latest", "no slash, so Hub"),
    valid("localhost/foo", "localhost/foo:latest"),
    valid("localhost:5000/x", "localhost:5000/x:latest"),
    valid("myreg:443/team/img:1", "myreg:443/team/img:1"),
    valid("127.0.0.1:5000/team/app:v2", "127.0.0.1:5000/team/app:v2"),
    valid("[::1]:5000/x:1", "[::1]:5000/x:1"),
    valid("quay.io:443/org/img", "quay.io:443/org/img:latest", "not quay.io/org/img"),
    valid("example.com", "docker.io/library/example.com:latest", "no slash, so Hub"),
    valid("example.com/repo", "example.com/repo:latest"),
    valid("ghcr.io/owner/img:1.2", "ghcr.io/owner/img:1.2"),
    valid("mcr.microsoft.com/dotnet/runtime:8.0", "mcr.microsoft.com/dotnet/runtime:8.0"),
    valid("Foo/bar", "Foo/bar:latest", "upper case makes it a domain"),
    valid("Registry.Example.com/x", "Registry.Example.com/x:latest", "domain case kept"),
    valid("ubuntu:Latest", "docker.io/library/ubuntu:Latest", "tags are case-sensitive"),
    valid(f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}", "no latest added"),
    valid(f"busybox:latest@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", "tag dropped"),
    valid(DIGEST, f"docker.io/library/{DIGEST}", "repo sha256 with a tag"),
]

INVALID_ROWS = [
    invalid("UBUNTU", "lowercase"),
    invalid("docker.io/Library/ubuntu", "lowercase"),
    invalid(HEX, "64-byte", "bare 64 hex"),
    invalid("alpine:", "invalid reference format"),
    invalid("foo___bar", "invalid reference format", "bad separator"),
]


def test_table_has_every_row():
    assert len(VALID_ROWS) + len(INVALID_ROWS) == 29


@pytest.mark.parametrize(("text", "canonical"), VALID_ROWS)
def test_normalisation_table_valid(text, canonical):
    assert refs.normalize(text).docker_ref == canonical


@pytest.mark.parametrize(("text", "reason"), INVALID_ROWS)
def test_normalisation_table_invalid(text, reason):
    with pytest.raises(InvalidReference) as info:
        refs.normalize(text)
    assert reason in info.value.reason
    assert info.value.ref == text


# -- TagNameOnly, tag + digest, and the path rules behind the table


def test_parse_adds_no_tag_and_normalize_adds_latest():
    assert refs.parse("ubuntu").tag is None
    assert refs.normalize("ubuntu").tag == "latest"
    assert refs.normalize(f"alpine@{DIGEST}").tag is None


def test_tag_and_digest_both_kept_in_str():
    ref = refs.normalize(f"busybox:latest@{DIGEST}")
    assert (ref.tag, ref.digest) == ("latest", DIGEST)
    assert str(ref) == f"docker.io/library/busybox:latest@{DIGEST}"
    assert ref.docker_ref == f"docker.io/library/busybox@{DIGEST}"


@pytest.mark.parametrize(
    ("text", "tagged"),
    [
        pytest.param(
            f"busybox:latest@{DIGEST}", "docker.io/library/busybox:latest", id="tag+digest"
        ),
        pytest.param(f"alpine@{DIGEST}", "docker.io/library/alpine", id="digest-only"),
        pytest.param("ghcr.io/o/i:1", "ghcr.io/o/i:1", id="tag-only"),
    ],
)
def test_tagged_drops_the_digest(text, tagged):
    assert refs.parse(text).tagged == tagged


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("docker.io/library/ubuntu:22.04", "ubuntu:22.04"),
        ("ubuntu", "ubuntu:latest"),
        ("index.docker.io/user/app", "user/app:latest"),
        ("docker.io/library/foo/bar:1", "library/foo/bar:1"),
        ("ghcr.io/owner/img:1.2", "ghcr.io/owner/img:1.2"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        (f"alpine@{DIGEST}", f"alpine@{DIGEST}"),
        (f"python:3.12@{DIGEST}", f"python:3.12@{DIGEST}"),
    ],
)
def test_familiar(text, familiar):
    assert refs.normalize(text).familiar == familiar


def test_path_longer_than_255_characters_is_rejected():
    assert refs.normalize("a" * 200).path == "library/" + "a" * 200
    with pytest.raises(InvalidReference, match="255"):
        refs.normalize("a" * 256)


def test_digest_must_have_the_algorithm_length():
    with pytest.raises(InvalidReference, match="length"):
        refs.normalize(f"alpine@sha256:{HEX[:40]}")


# -- repository(): a repos.yaml `image:` is a repository, never a tag or digest


def test_repository_normalises_without_a_tag():
    assert refs.repository("python") == "docker.io/library/python"
    assert refs.repository("ghcr.io/owner/img") == "ghcr.io/owner/img"
    assert refs.repository("localhost:5000/team/base") == "localhost:5000/team/base"


@pytest.mark.parametrize("text", ["python:3.12", f"python@{DIGEST}", f"python:3@{DIGEST}"])
def test_repository_rejects_tag_or_digest(text):
    with pytest.raises(InvalidReference, match="tags go in"):
        refs.repository(text)


def test_repository_rejects_invalid_names():
    with pytest.raises(InvalidReference, match="lowercase"):
        refs.repository("UBUNTU")


@pytest.mark.parametrize("text", ["app:v1\n", "app\n", f"app@{DIGEST}\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_reference(text):
    """A YAML block scalar ends in a newline; `$` would have let it through."""
    with pytest.raises(InvalidReference):
        refs.parse(text)


# -- upstream() and mirrored(): repos.yaml `mirrors:`, upstream prefix -> mirror prefix

MIRRORS = {"docker.io": "myacr.azurecr.io/mirror", "ghcr.io/org": "myacr.azurecr.io/ghcr"}


@pytest.mark.parametrize(
    ("up", "mirror"),
    [
        ("docker.io/library/python:3.12", "myacr.azurecr.io/mirror/library/python:3.12"),
        ("docker.io/user/app:1", "myacr.azurecr.io/mirror/user/app:1"),
        ("ghcr.io/org/tool:2", "myacr.azurecr.io/ghcr/tool:2"),
        (f"docker.io/library/alpine@{DIGEST}", f"myacr.azurecr.io/mirror/library/alpine@{DIGEST}"),
        (
            f"docker.io/library/python:3.12@{DIGEST}",
            f"myacr.azurecr.io/mirror/library/python:3.12@{DIGEST}",
        ),
    ],
)
def test_mirrored_and_upstream_are_each_others_inverse(up, mirror):
    assert refs.mirrored(up, MIRRORS) == mirror
    assert refs.upstream(mirror, MIRRORS) == up
    assert refs.upstream(refs.mirrored(up, MIRRORS), MIRRORS) == up
    assert refs.mirrored(refs.upstream(mirror, MIRRORS), MIRRORS) == mirror
    assert refs.parse(refs.upstream(mirror, MIRRORS)) == refs.parse(up)  # tag and digest kept


def test_a_prefix_matches_only_on_a_path_boundary():
    assert refs.upstream("myacr.azurecr.io/mirror2/x:1", MIRRORS) == "myacr.azurecr.io/mirror2/x:1"
    assert refs.upstream("myacr.azurecr.io/mirror:1", MIRRORS) == "myacr.azurecr.io/mirror:1"
    assert refs.mirrored("docker.io.example/x:1", MIRRORS) is None
    assert refs.mirrored("ghcr.io/organisation/x:1", MIRRORS) is None
    assert refs.mirrored("ghcr.io/other/x:1", MIRRORS) is None  # only ghcr.io/org is mirrored


def test_references_outside_every_mirror():
    for ref in ("quay.io/org/x:1", "myacr.azurecr.io/apps/web:1", "docker.io/library/python:3"):
        assert refs.upstream(ref, {}) == ref
        assert refs.mirrored(ref, {}) is None
    assert refs.upstream("quay.io/org/x:1", MIRRORS) == "quay.io/org/x:1"
    assert refs.upstream("myacr.azurecr.io/apps/web:1", MIRRORS) == "myacr.azurecr.io/apps/web:1"
    assert refs.mirrored("quay.io/org/x:1", MIRRORS) is None
    assert refs.mirrored("myacr.azurecr.io/mirror/library/python:3.12", MIRRORS) is None
