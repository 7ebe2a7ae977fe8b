"""repos.yaml: find it, load it safely, and check every key.

A bad config must stop graphbuild before it does anything, with a message that
names the file, the line and the key (`repos[3].images[0].tags: expected a
list`), never a traceback; so every value is checked here, once, and the rest
of graphbuild receives plain dataclasses it can trust.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import fnmatch
import functools
import hashlib
import ipaddress
import json
import os
import posixpath
import re
import stat
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import yaml

from graphbuild import platforms, refs
from graphbuild.errors import ConfigError, InvalidReference, UnsafeURL
from graphbuild.urls import redact, safe_git_url
from graphbuild.workspace import INDEX

DEFAULT_FILE = "repos.yaml"
ENV_VAR = "GRAPHBUILD_CONFIG"
DEFAULT_WORKSPACE = ".graphbuild"
MAX_SECONDS = 7 * 24 * 3600  # the longest timeout repos.yaml may set: a week
GLOB_CHARS = frozenset("*?[")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMAGE_CONTEXT = "docker-image://"  # a named build context that is an image
_REMOTE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|git@|github\.com/)")  # a URL, target:…
# Operating systems images are built for that containerd's list (an older Go's) lacks: Go's
# wasip1, and wasi, which Docker's Wasm builds target (`--platform wasi/wasm`)
_TARGET_OS = platforms.KNOWN_OS | {"wasi", "wasip1"}
_BUILDER_KEYS = {
    "buildah": {"isolation", "storage_driver", "root", "runroot"},
    "docker": {"builder"},
    "command": {"argv"},
    "acr": {"agent_pool", "timeout", "poll"},  # and the registry: `azure:`
}
_AZURE_KEYS = {"subscription", "resource_group", "registry", "login_server", "endpoint",
               "ca_bundle"}  # fmt: skip
_REGISTRY_KEYS = {"insecure", "auth", "username", "password_env", "password_file", "ca_bundle",
                  "max_requests", "max_builds", "redirect_hosts", "password"}  # fmt: skip
CHECK_TIMEOUT = 600.0  # seconds for a whole check (detection) pass; `check.timeout`
SEVERITIES = ("unknown", "low", "medium", "high", "critical")  # scanners' scale, low to high
_GATE_KEYS = {"name", "scan", "test", "images", "fail_on", "allow", "timeout"}
_RING_KEYS = {"name", "health", "timeout", "manual"}
_DEPLOY_REPO_KEYS = {"name", "url", "branch", "push_branch", "rings"}
_WORKLOAD_KEYS = {"name", "image", "ring", "kubectl"}
_KUBECTL_KEYS = {"resource", "container", "namespace", "context", "kubeconfig", "timeout"}
_REF_RE = re.compile(r"^(?![-/])[^\x00-\x20\x7f ~^:?*\[\\]+(?<!/)$")  # git check-ref-format


@dataclass(frozen=True)
class ImageSpec:
    """One `images:` entry; with a glob `dockerfile` it stands for one image per match."""

    image: str  # repository, may contain {dir}
    dockerfile: str  # path in the repository, may be a glob
    tags: tuple[str, ...] = ("latest",)
    context: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platforms: tuple[str, ...] = ()
    contexts: Mapping[str, str] = field(default_factory=dict)
    key: str = ""  # where it is in repos.yaml, for messages

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARS for c in self.dockerfile)


@dataclass(frozen=True)
class RepoSpec:
    name: str
    url: str | None = None  # cloned into the workspace
    path: Path | None = None  # read in place
    ref: str | None = None
    images: tuple[ImageSpec, ...] = ()
    key: str = ""


@dataclass(frozen=True)
class RegistrySpec:
    """How to reach one registry: `registries: {host: {...}}` in repos.yaml."""

    host: str
    insecure: bool = False  # plain http: loopback registries only
    auth: str = "auto"  # auto (docker's credentials, else none; Entra ID for ACR) | anonymous
    # | basic | acr
    username: str | None = None
    password_env: str | None = None  # the password is read from this variable, never the file
    password_file: Path | None = None
    ca_bundle: Path | None = None
    max_requests: int | None = None  # requests in flight to this registry
    max_builds: int | None = None  # builds pushing to this registry at once
    redirect_hosts: tuple[str, ...] = ()  # other hosts a manifest request may be sent on to


@dataclass(frozen=True)
class AzureSpec:
    """The Azure Container Registry graphbuild drives: ACR Tasks builds, imports, webhooks."""

    resource_group: str
    registry: str  # the resource's name
    subscription: str | None = None  # else $AZURE_SUBSCRIPTION_ID
    login_server: str | None = None  # else <registry>.azurecr.io
    endpoint: str = "https://management.azure.com"  # Azure Resource Manager (other clouds)
    ca_bundle: str | None = None  # trusted instead of the system's CAs (a TLS proxy, tests)

    @property
    def server(self) -> str:
        return self.login_server or f"{self.registry}.azurecr.io"


@dataclass(frozen=True)
class Allowed:
    """An accepted finding: a vulnerability id the scanner gate ignores until a date."""

    id: str
    until: dt.date
    reason: str = ""


@dataclass(frozen=True)
class GateSpec:
    """A check every rebuilt image must pass before anything deploys it."""

    name: str
    kind: str  # scan (a scanner and its JSON report) | test (a command that must exit 0)
    argv: tuple[str, ...]
    images: tuple[str, ...] = ()  # repository patterns it applies to; none: every image
    fail_on: str = "critical"  # scan: the lowest severity that fails the image
    allow: tuple[Allowed, ...] = ()
    timeout: float = 1800.0

    def applies(self, repository: str) -> bool:
        return not self.images or any(fnmatch.fnmatchcase(repository, p) for p in self.images)


@dataclass(frozen=True)
class RingSpec:
    """One stage of a rollout; rings deploy in the order listed."""

    name: str
    health: tuple[str, ...] = ()  # argv that must exit 0 before the next ring starts
    timeout: float = 600.0
    manual: bool = False  # a sweep stops before this ring; `graphbuild deploy` takes it on


@dataclass(frozen=True)
class DeployRepoSpec:
    """A GitOps repository: its manifests are scanned for images and updated by digest."""

    name: str
    url: str
    branch: str = "main"  # read from, and pushed to unless push_branch is set
    push_branch: str | None = None  # may hold {run} and {ring}: one branch per rollout step
    rings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ring -> path globs
    key: str = ""

    @property
    def source(self) -> RepoSpec:
        """As a repository to sync (read like the image repositories, at `branch`)."""
        return RepoSpec(self.name, url=self.url, ref=self.branch, key=self.key)


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload listed by hand: patched in its cluster with kubectl."""

    name: str
    image: str  # repository
    tag: str  # which of the repository's images it runs
    ring: str
    kubectl: Mapping[str, str]
    key: str = ""


@dataclass(frozen=True)
class Deployments:
    rings: tuple[RingSpec, ...] = ()
    repos: tuple[DeployRepoSpec, ...] = ()
    workloads: tuple[WorkloadSpec, ...] = ()
    hold_descendants: bool = True  # an image that failed a gate holds back what is built on it


@dataclass(frozen=True)
class Config:
    file: Path
    workspace: Path
    repos: tuple[RepoSpec, ...]
    registries: Mapping[str, RegistrySpec] = field(default_factory=dict)
    builder: Mapping[str, Any] = field(default_factory=lambda: {"kind": "buildah"})
    gates: tuple[GateSpec, ...] = ()
    deployments: Deployments = field(default_factory=Deployments)
    azure: AzureSpec | None = None
    mirrors: Mapping[str, str] = field(default_factory=dict)  # upstream prefix -> mirror prefix
    check_timeout: float = CHECK_TIMEOUT  # a whole check pass; then what is left is unknown

    @property
    def sources(self) -> tuple[RepoSpec, ...]:
        """Every git repository a sync reads: the image repositories and the deploy ones."""
        return self.repos + tuple(d.source for d in self.deployments.repos)


def find(explicit: str | os.PathLike | None = None) -> Path:
    """`--config`, else $GRAPHBUILD_CONFIG, else ./repos.yaml."""
    chosen = explicit or os.environ.get(ENV_VAR) or DEFAULT_FILE
    path = Path(chosen)
    if not path.is_file():
        if explicit or os.environ.get(ENV_VAR):
            given = "--config" if explicit else f"${ENV_VAR}"
            raise ConfigError(str(path), "", f"no such config file (given by {given})")
        hint = "create one here, or pass --config (see docs/config.md)"
        raise ConfigError(str(path), "", f"no such config file; {hint}")
    return path


def load(path: Path) -> Config:
    """Read and check repos.yaml; raises ConfigError naming the file, line and key.

    Checking a 60,000-line file takes about a second, most of it YAML: so the checked form
    is kept in the workspace (`CACHE`), keyed by everything the check reads, and a query
    reads it back instead. A file that changed in any byte is checked again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), "", f"cannot read: {err}") from None
    key = _cache_key(path, text)
    cache = _cache_file(path, text)
    if cache is not None and (cached := _read_cache(cache, key)) is not None:
        return cached
    checked = _check(path, text)
    if cache is not None and cache.parent == checked.workspace:
        _write_cache(cache, key, checked)
    return checked


def _check(path: Path, text: str) -> Config:
    """Parse and check, with no cache."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader, C or Python
    except yaml.reader.ReaderError as err:  # a character YAML forbids, at a character offset
        line: int | None = text.count("\n", 0, err.position) + 1
        raise ConfigError(str(path), "", f"invalid YAML: {err.reason}", line) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        line = mark.line + 1 if mark else None
        raise ConfigError(str(path), "", f"invalid YAML: {problem}", line) from None
    return _Checker(path, text).config(data)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # chosen at import
    """YAML's safe loader (libyaml when present) that refuses duplicate keys.

    Plain YAML keeps the last of two `images:` keys and silently drops the first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    message = f"duplicate key {key.value!r} (first on line {first[key.value]})"
                    raise yaml.constructor.ConstructorError(None, None, message, key.start_mark)
                first[key.value] = key.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        """`until: 2027-02-30` is a date YAML cannot make: an error at its line, not a crash."""
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as err:
            problem = f"{node.value!r} is not a valid date ({err})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


class _Checker:
    """Turns loaded YAML into a Config, failing on the first wrong key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.base = path.parent.absolute()  # logs and reports name absolute paths

    def fail(self, where: list[str | int], message: str) -> ConfigError:
        return ConfigError(str(self.path), _key(where), message, _line_of(self.text, where))

    def mapping(self, value: Any, where: list[str | int], known: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str) or key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail([*where, str(key)], f"unknown key{extra}")
        return value

    def string(self, value: Any, where: list[str | int], *, allow_int: bool = False) -> str:
        if isinstance(value, bool) or value is None:
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if isinstance(value, int) and allow_int:
            return str(value)
        if not isinstance(value, str):
            quote = ' (quote it, e.g. "3.10")' if isinstance(value, int | float) else ""
            raise self.fail(where, f"expected a string, got {_kind(value)}{quote}")
        if not value:
            raise self.fail(where, "must not be empty")
        return value

    def strings(self, value: Any, where: list[str | int]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return tuple(self.string(v, [*where, i]) for i, v in enumerate(value))

    def platform(self, text: str, where: list[str | int]) -> str:
        """`os/arch[/variant]` normalised as BuildKit normalises a target platform, so that
        builders and the graph get one spelling (`linux/aarch64` is `linux/arm64`). An OS or
        architecture that neither Go nor Docker (`wasi`) knows is a typo here, though
        containerd would pass it on."""
        if "/" not in text:
            raise self.fail(where, f"{text!r} is not os/arch[/variant]")
        try:
            platform = platforms.parse(text)
        except ValueError as err:
            raise self.fail(where, str(err)) from None
        if platform.os not in _TARGET_OS:
            raise self.fail(where, f"{text!r}: unknown operating system {platform.os!r}")
        if platform.arch not in platforms.KNOWN_ARCH:
            raise self.fail(where, f"{text!r}: unknown architecture {platform.arch!r}")
        return str(platform)

    def string_map(
        self, value: Any, where: list[str | int], key_check: Callable[[str], object]
    ) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not key_check(k):
                raise self.fail([*where, str(k)], "invalid name")
            out[k] = self.string(v, [*where, k], allow_int=True) if v != "" else ""
        return out

    def relpath(self, value: Any, where: list[str | int]) -> str:
        text = self.string(value, where)
        if text.startswith("/") or ".." in text.split("/"):
            raise self.fail(where, "must be a relative path inside the repository")
        return posixpath.normpath(text)

    def contexts(self, value: Any, where: list[str | int]) -> dict[str, str]:
        """Named build contexts a build can be given exactly as its key covers them: an
        image (pinned to a digest at build time) or a folder of the repository. A URL's
        content moves under graphbuild's feet, so it is refused."""
        out = self.string_map(value, where, bool)
        for name, text in out.items():
            if text.startswith(IMAGE_CONTEXT):
                try:
                    refs.normalize(text[len(IMAGE_CONTEXT) :])
                except InvalidReference as err:
                    raise self.fail([*where, name], err.reason) from None
            elif _REMOTE_RE.match(text):
                raise self.fail([*where, name], f"{text!r}: a named context is "
                                f"{IMAGE_CONTEXT}IMAGE or a folder of the repository; "
                                "graphbuild cannot pin what a URL serves")  # fmt: skip
            else:
                out[name] = self.relpath(text, [*where, name])
        return out

    # -- the schema

    def config(self, data: Any) -> Config:
        if data is None:
            raise self.fail([], "the file is empty; it needs a `repos:` list")
        known = {"repos", "workspace", "registries", "builder", "gates", "deployments", "azure",
                 "mirrors", "check"}  # fmt: skip
        data = self.mapping(data, [], known)
        workspace = self.base / self.string(data.get("workspace", DEFAULT_WORKSPACE), ["workspace"])
        if "repos" not in data:
            raise self.fail(["repos"], "missing: list the repositories to read")
        repos_value = data["repos"]
        if not isinstance(repos_value, list):
            raise self.fail(["repos"], f"expected a list, got {_kind(repos_value)}")
        repos = tuple(self.repo(r, ["repos", i]) for i, r in enumerate(repos_value))
        seen: dict[str, int] = {}
        for i, repo in enumerate(repos):
            if repo.name in seen:
                raise self.fail(
                    ["repos", i, "name"],
                    f"duplicate name {repo.name!r} (also repos[{seen[repo.name]}])",
                )
            seen[repo.name] = i
        registries = data.get("registries") or {}
        if not isinstance(registries, dict):
            raise self.fail(["registries"], f"expected a mapping, got {_kind(registries)}")
        specs: dict[str, RegistrySpec] = {}
        for host, value in registries.items():
            spec = self.registry(host, value, ["registries", str(host)])
            if spec.host in specs:
                raise self.fail(["registries", str(host)], f"{spec.host} is configured twice")
            specs[spec.host] = spec
        azure = self.azure(data["azure"], ["azure"]) if data.get("azure") else None
        builder = self.builder(data.get("builder") or {}, ["builder"], azure)
        gates = self.gates(data.get("gates") or [], ["gates"])
        deployments = self.deployments(data.get("deployments") or {}, ["deployments"])
        for i, deploy_repo in enumerate(deployments.repos):
            if deploy_repo.name in seen:
                where: list[str | int] = ["deployments", "repos", i, "name"]
                raise self.fail(where, f"{deploy_repo.name!r} is also the name of a repos entry")
        mirrors = self.mirrors(_or_empty(data.get("mirrors")), ["mirrors"])
        check = self.mapping(_or_empty(data.get("check")), ["check"], {"timeout"})
        check_timeout = self.number(check.get("timeout", CHECK_TIMEOUT), ["check", "timeout"])
        return Config(self.path, workspace, repos, specs, builder, gates, deployments, azure,
                      mirrors, check_timeout)  # fmt: skip

    def mirrors(self, value: Any, where: list[str | int]) -> dict[str, str]:
        """`upstream prefix: mirror prefix`, both a registry host and optional path:
        `docker.io: myacr.azurecr.io/mirror`."""
        out = {}
        for key, value_ in self.string_map(value, where, bool).items():
            source, target = key.rstrip("/"), value_.rstrip("/")
            for side in (source, target):
                try:
                    ref = refs.parse(f"{side}/x")
                except InvalidReference as err:
                    raise self.fail([*where, key], f"{side!r}: {err.reason}") from None
                if not ref.name.startswith(side + "/"):
                    hint = "start with the registry host, e.g. myacr.azurecr.io/mirror"
                    raise self.fail([*where, key], f"{side!r}: {hint}")
            out[source] = target
        return out

    def azure(self, value: Any, where: list[str | int]) -> AzureSpec:
        data = self.mapping(value, where, _AZURE_KEYS)
        for key in ("resource_group", "registry"):
            if key not in data:
                raise self.fail([*where, key], "missing: the registry's resource group and name")
        text = {key: self.string(item, [*where, key]) for key, item in data.items()}
        if not re.fullmatch(r"[A-Za-z0-9]{5,50}", text["registry"]):
            raise self.fail([*where, "registry"], "an ACR name: 5-50 letters and digits")
        if text.get("endpoint", "https://").split("://")[0] != "https":
            raise self.fail([*where, "endpoint"], "Azure Resource Manager is reached over https")
        if "ca_bundle" in text:
            text["ca_bundle"] = str(self.base / text["ca_bundle"])
        return AzureSpec(**text)

    def listed(self, value: Any, where: list[str | int]) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def named(self, data: dict, where: list[str | int], taken: set[str]) -> str:
        """A required, unique `name`."""
        if "name" not in data:
            raise self.fail([*where, "name"], "missing: every entry needs a unique name")
        name = self.string(data["name"], [*where, "name"])
        if not _NAME_RE.match(name):
            raise self.fail([*where, "name"], "use letters, digits, '.', '_' and '-' only")
        if name in taken:
            raise self.fail([*where, "name"], f"duplicate name {name!r}")
        taken.add(name)
        return name

    def command(self, value: Any, where: list[str | int]) -> tuple[str, ...]:
        """An argv; a program named by a relative path (`scripts/scan.sh`) is found beside
        this file, wherever graphbuild runs from (cron, a CronJob)."""
        argv = self.strings(value, where)
        if not argv:
            raise self.fail(where, "must name the command to run")
        if "/" in argv[0] and not argv[0].startswith("/"):
            argv = (str(self.base / argv[0]), *argv[1:])
        return argv

    def number(self, value: Any, where: list[str | int]) -> float:
        """Seconds: above 0 and at most a week (`.inf` or `.nan` would never end, or end
        everything at once)."""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not 0 < value <= MAX_SECONDS:  # NaN fails every comparison
            raise self.fail(where, f"expected a number of seconds above 0, at most {MAX_SECONDS}")
        return float(value)

    def flag(self, value: Any, where: list[str | int]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {_kind(value)}")
        return value

    def gates(self, value: Any, where: list[str | int]) -> tuple[GateSpec, ...]:
        """`gates:` a list of `{name, scan: argv | test: argv, ...}`."""
        names: set[str] = set()
        out = []
        for i, item in enumerate(self.listed(value, where)):
            at = [*where, i]
            data = self.mapping(item, at, _GATE_KEYS)
            name = self.named(data, at, names)
            if ("scan" in data) == ("test" in data):
                raise self.fail(at, "give exactly one of `scan` (a scanner) or `test` (a command)")
            kind = "scan" if "scan" in data else "test"
            argv = self.command(data[kind], [*at, kind])
            if kind == "scan" and not any("{report}" in arg for arg in argv):
                hint = "where the scanner writes its JSON report, e.g. --output {report}"
                raise self.fail([*at, kind], f"must hold {{report}}: {hint}")
            if kind == "test":
                for key in ("fail_on", "allow"):
                    if key in data:
                        raise self.fail([*at, key], "only used with `scan`")
            fail_on = self.string(data.get("fail_on", "critical"), [*at, "fail_on"]).lower()
            if fail_on not in SEVERITIES:
                raise self.fail([*at, "fail_on"], f"expected one of {', '.join(SEVERITIES)}")
            allow = tuple(
                self.allowed(a, [*at, "allow", j])
                for j, a in enumerate(self.listed(data.get("allow", []), [*at, "allow"]))
            )
            images = self.strings(data.get("images", []), [*at, "images"])
            timeout = self.number(data.get("timeout", 1800), [*at, "timeout"])
            out.append(GateSpec(name, kind, argv, images, fail_on, allow, timeout))
        return tuple(out)

    def allowed(self, value: Any, where: list[str | int]) -> Allowed:
        data = self.mapping(value, where, {"id", "until", "reason"})
        for key in ("id", "until"):
            if key not in data:
                raise self.fail([*where, key], "missing: an accepted finding needs id and until")
        until = data["until"]  # YAML reads 2027-01-31 as a date already
        if isinstance(until, str):
            try:
                until = dt.date.fromisoformat(until)
            except ValueError:
                until = None
        if not isinstance(until, dt.date) or isinstance(until, dt.datetime):
            raise self.fail([*where, "until"], "expected a date, YYYY-MM-DD")
        reason = self.string(data["reason"], [*where, "reason"]) if "reason" in data else ""
        return Allowed(self.string(data["id"], [*where, "id"]), until, reason)

    def deployments(self, value: Any, where: list[str | int]) -> Deployments:
        known = {"rings", "repos", "workloads", "hold_descendants"}
        data = self.mapping(value, where, known)
        names: set[str] = set()
        rings = []
        for i, item in enumerate(self.listed(data.get("rings", []), [*where, "rings"])):
            at = [*where, "rings", i]
            ring = self.mapping({"name": item} if isinstance(item, str) else item, at, _RING_KEYS)
            health = self.command(ring["health"], [*at, "health"]) if "health" in ring else ()
            timeout = self.number(ring.get("timeout", 600), [*at, "timeout"])
            manual = self.flag(ring.get("manual", False), [*at, "manual"])
            rings.append(RingSpec(self.named(ring, at, names), health, timeout, manual))
        if (data.get("repos") or data.get("workloads")) and not rings:
            raise self.fail([*where, "rings"], "missing: list the rings to deploy in, in order")
        ring_names = [r.name for r in rings]
        repos, workloads = [], []
        taken: set[str] = set()
        for i, item in enumerate(self.listed(data.get("repos", []), [*where, "repos"])):
            repos.append(self.deploy_repo(item, [*where, "repos", i], ring_names, taken))
        taken = set()
        for i, item in enumerate(self.listed(data.get("workloads", []), [*where, "workloads"])):
            workloads.append(self.workload(item, [*where, "workloads", i], ring_names, taken))
        hold = self.flag(data.get("hold_descendants", True), [*where, "hold_descendants"])
        return Deployments(tuple(rings), tuple(repos), tuple(workloads), hold)

    def ring(self, value: Any, where: list[str | int], rings: list[str]) -> str:
        ring = self.string(value, where)
        if ring not in rings:
            raise self.fail(where, f"unknown ring {ring!r}; deployments.rings has {rings}")
        return ring

    def deploy_repo(
        self, value: Any, where: list[str | int], rings: list[str], taken: set[str]
    ) -> DeployRepoSpec:
        data = self.mapping(value, where, _DEPLOY_REPO_KEYS)
        name = self.named(data, where, taken)
        if "url" not in data:
            raise self.fail([*where, "url"], "missing: the git repository to update")
        try:
            url = safe_git_url(self.string(data["url"], [*where, "url"]), self.base)
        except UnsafeURL as err:
            raise self.fail([*where, "url"], str(err)) from None
        branches = {}
        for key in ("branch", "push_branch"):
            if key in data:
                branch = branches[key] = self.string(data[key], [*where, key])
                plain = branch
                if key == "push_branch":
                    plain = branch.replace("{run}", "x").replace("{ring}", "x")
                if "{" in plain or "}" in plain:
                    hint = "only {run} and {ring} are filled in, and only in push_branch"
                    raise self.fail([*where, key], f"{branch!r}: {hint}")
                bad = ".." in plain or "@{" in plain or plain.endswith((".lock", "."))
                if not _REF_RE.match(plain) or bad:
                    raise self.fail([*where, key], f"{branch!r} is not a branch name")
        ring_globs = data.get("rings")
        if not isinstance(ring_globs, dict) or not ring_globs:
            hint = "map each ring to the paths of its manifests, e.g. {dev: ['envs/dev/**']}"
            raise self.fail([*where, "rings"], f"missing: {hint}")
        globs = {}
        for ring, patterns in ring_globs.items():
            at = [*where, "rings", str(ring)]
            globs[self.ring(ring, at, rings)] = tuple(
                self.relpath(p, [*at, j]) for j, p in enumerate(self.strings(patterns, at))
            )
        return DeployRepoSpec(name, url, branches.get("branch", "main"),
                              branches.get("push_branch"), globs, _key(where))  # fmt: skip

    def workload(
        self, value: Any, where: list[str | int], rings: list[str], taken: set[str]
    ) -> WorkloadSpec:
        data = self.mapping(value, where, _WORKLOAD_KEYS)
        name = self.named(data, where, taken)
        for key in ("image", "ring", "kubectl"):
            if key not in data:
                raise self.fail([*where, key], "missing: a workload needs image, ring and kubectl")
        try:  # name:tag, as a Deployment's image field says it
            ref = refs.normalize(self.string(data["image"], [*where, "image"]))
        except InvalidReference as err:
            raise self.fail([*where, "image"], err.reason) from None
        if ref.digest is not None:
            raise self.fail([*where, "image"], "name the image by tag; deploys pin the digest")
        image, tag = ref.name, ref.tag or "latest"
        kubectl = self.mapping(data["kubectl"], [*where, "kubectl"], _KUBECTL_KEYS)
        for key, hint in (("resource", "the workload to patch, e.g. deployment/web"),
                          ("container", "the container that runs the image")):  # fmt: skip
            if key not in kubectl:
                raise self.fail([*where, "kubectl", key], f"missing: {hint}")
        options = {}
        for key, item in kubectl.items():
            at = [*where, "kubectl", key]
            if key == "timeout":
                options[key] = f"{self.number(item, at):g}"
            elif key == "kubeconfig":
                options[key] = str(self.base / self.string(item, at))
            else:
                options[key] = self.string(item, at)
        if "/" not in options["resource"]:
            raise self.fail(
                [*where, "kubectl", "resource"], "expected kind/name, e.g. deployment/web"
            )
        ring = self.ring(data["ring"], [*where, "ring"], rings)
        return WorkloadSpec(name, image, tag, ring, options, _key(where))

    def builder(
        self, value: Any, where: list[str | int], azure: AzureSpec | None
    ) -> dict[str, Any]:
        """`builder: {kind: buildah|docker|command, ...}`: each kind's options, checked."""
        kind = value.get("kind", "buildah") if isinstance(value, dict) else None
        if kind not in _BUILDER_KEYS:
            kinds = ", ".join(_BUILDER_KEYS)
            raise self.fail([*where, "kind"], f"expected one of {kinds}")
        data = self.mapping(value, where, {"kind", *_BUILDER_KEYS[kind]})
        out: dict[str, Any] = {"kind": kind}
        for key, item in data.items():
            if key == "argv":
                out[key] = list(self.strings(item, [*where, key]))
                if not out[key]:
                    raise self.fail([*where, key], "must name the command to run")
            elif key in ("root", "runroot"):  # beside the config, like the workspace
                out[key] = str(self.base / self.string(item, [*where, key]))
            elif key in ("timeout", "poll"):
                out[key] = self.number(item, [*where, key])
            elif key != "kind":
                out[key] = self.string(item, [*where, key])
        if kind == "command" and "argv" not in out:
            raise self.fail([*where, "argv"], "missing: the command that builds and pushes")
        if kind == "acr":
            if azure is None:
                raise self.fail(["azure"], "missing: builder.kind acr builds in this registry")
            if not 300 <= out.get("timeout", 3600) <= 28800:
                raise self.fail([*where, "timeout"], "ACR runs take 300 to 28800 seconds")
            out.update(azure.__dict__)
        return out

    def registry(self, host: Any, value: Any, where: list[str | int]) -> RegistrySpec:
        data = self.mapping(value if value is not None else {}, where, _REGISTRY_KEYS)
        try:
            domain = refs.parse(f"{host}/x").domain
        except InvalidReference:
            domain = None
        if domain != str(host) and not (domain == "docker.io" and host == "index.docker.io"):
            hint = "a host with a dot or a port, or localhost; `myreg` alone would mean Docker Hub"
            raise self.fail(where, f"not a registry host ({hint})")
        host = domain
        if "password" in data:
            hint = "name an environment variable in password_env, or use password_file"
            raise self.fail([*where, "password"], f"never put a password in this file; {hint}")
        insecure = data.get("insecure", False)
        if not isinstance(insecure, bool):
            raise self.fail([*where, "insecure"], f"expected true or false, got {_kind(insecure)}")
        if insecure and not loopback(host):
            hint = "plain http is only allowed for loopback registries (localhost, 127.0.0.1)"
            raise self.fail([*where, "insecure"], hint)
        auth = self.string(data.get("auth", "auto"), [*where, "auth"])
        if auth not in ("auto", "anonymous", "basic", "acr"):
            raise self.fail([*where, "auth"], "expected auto, anonymous, basic or acr")

        def text(key: str) -> str | None:
            return self.string(data[key], [*where, key]) if key in data else None

        username, password_env = text("username"), text("password_env")
        password_file = self.base / path if (path := text("password_file")) else None
        ca_bundle = self.base / path if (path := text("ca_bundle")) else None
        if auth == "basic" and (username is None or not (password_env or password_file)):
            raise self.fail(where, "auth: basic needs username and password_env or password_file")
        for key in ("username", "password_env", "password_file"):
            if key in data and auth != "basic":
                raise self.fail([*where, key], "only used with auth: basic")
        limits = {}
        for key in ("max_requests", "max_builds"):
            limit = limits[key] = data.get(key)
            if limit is not None and (type(limit) is not int or limit < 1):
                raise self.fail([*where, key], "expected a whole number of at least 1")
        redirects = self.strings(data.get("redirect_hosts", []), [*where, "redirect_hosts"])
        for i, other in enumerate(redirects):
            try:
                named = refs.parse(f"{other}/x").domain
            except InvalidReference:
                named = None
            if named != other or other == host:
                hint = "a host, with its port unless 443, other than the registry itself"
                raise self.fail([*where, "redirect_hosts", i], f"{other!r}: {hint}")
        return RegistrySpec(host, insecure, auth, username, password_env, password_file,
                            ca_bundle, limits["max_requests"], limits["max_builds"],
                            tuple(r.lower() for r in redirects))  # fmt: skip

    def repo(self, value: Any, where: list[str | int]) -> RepoSpec:
        data = self.mapping(value, where, {"name", "url", "path", "ref", "images"})
        if "name" not in data:
            raise self.fail([*where, "name"], "missing: every repository needs a unique name")
        name = self.string(data["name"], [*where, "name"])
        if not _NAME_RE.match(name):
            raise self.fail([*where, "name"], "use letters, digits, '.', '_' and '-' only")
        if ("url" in data) == ("path" in data):
            raise self.fail(where, "give exactly one of `url` (git) or `path` (a local folder)")
        url = path = None
        if "url" in data:
            url = self.string(data["url"], [*where, "url"])
            try:
                url = safe_git_url(url, self.base)
            except UnsafeURL as err:
                raise self.fail([*where, "url"], str(err)) from None
        else:
            folder = self.string(data["path"], [*where, "path"])
            path = Path(os.path.abspath(os.path.join(self.base, folder)))
        ref = None
        if "ref" in data:
            if path is not None:
                raise self.fail([*where, "ref"], "a `path` repository is read as it is; no ref")
            ref = self.string(data["ref"], [*where, "ref"])
            if not _REF_RE.match(ref) or ".." in ref or "@{" in ref or ref.endswith((".lock", ".")):
                raise self.fail([*where, "ref"], f"{ref!r} is not a branch, tag or commit name")
        images_value = data.get("images", [])
        if not isinstance(images_value, list):
            raise self.fail([*where, "images"], f"expected a list, got {_kind(images_value)}")
        images = tuple(self.image(v, [*where, "images", i]) for i, v in enumerate(images_value))
        return RepoSpec(name, url, path, ref, images, _key(where))

    def image(self, value: Any, where: list[str | int]) -> ImageSpec:
        known = {
            "image",
            "dockerfile",
            "tags",
            "context",
            "build_args",
            "target",
            "platforms",
            "contexts",
        }
        data = self.mapping(value, where, known)
        if "image" not in data:
            raise self.fail([*where, "image"], "missing: the repository this Dockerfile produces")
        image = self.string(data["image"], [*where, "image"])
        try:
            refs.repository(image.replace("{dir}", "x"))
        except InvalidReference as err:
            raise self.fail([*where, "image"], err.reason) from None
        tags: tuple[str, ...] = ("latest",)
        if "tags" in data:
            tags = self.strings(data["tags"], [*where, "tags"])
            if not tags:
                raise self.fail([*where, "tags"], "must list at least one tag")
            for i, tag in enumerate(tags):
                if not _TAG_RE.match(tag.replace("{dir}", "x")):
                    raise self.fail([*where, "tags", i], f"{tag!r} is not a valid tag")
        platforms: tuple[str, ...] = ()
        if "platforms" in data:
            seen: list[str] = []
            for i, text in enumerate(self.strings(data["platforms"], [*where, "platforms"])):
                key = [*where, "platforms", i]
                platform = self.platform(text, key)
                if platform in seen:
                    raise self.fail(key, f"{text!r} is {platform} twice")
                seen.append(platform)
            platforms = tuple(seen)
        target = data.get("target")
        return ImageSpec(
            image=image,
            dockerfile=self.relpath(data.get("dockerfile", "Dockerfile"), [*where, "dockerfile"]),
            tags=tags,
            context=self.relpath(data["context"], [*where, "context"])
            if data.get("context")
            else None,
            build_args=self.string_map(
                data.get("build_args", {}), [*where, "build_args"], _ARG_RE.match
            ),
            target=None if target is None else self.string(target, [*where, "target"]),
            platforms=platforms,
            contexts=self.contexts(data.get("contexts", {}), [*where, "contexts"]),
            key=_key(where),
        )


def loopback(host: str) -> bool:
    """localhost or a loopback address; `127.evil.example` is a name, not an address."""
    name = host if host.endswith("]") else host.rsplit(":", 1)[0] if ":" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _key(where: list[str | int]) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _or_empty(value: Any) -> Any:
    """An absent or empty (`key:`) section is an empty mapping; `false` or `0` stay wrong."""
    return {} if value is None else value


def _kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "nothing",
    }
    return names.get(type(value), type(value).__name__)


def _line_of(text: str, where: list[str | int]) -> int | None:
    """The line of the deepest node of `where` that exists; only paid on errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in where:
        if isinstance(node, yaml.MappingNode):
            match = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                break
            line = match.start_mark.line + 1
            node = next(v for k, v in node.value if k is match)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


# -- the checked form, kept in the workspace

CACHE = "config-cache.json"  # in the workspace: the last repos.yaml checked there, as checked
_CACHE_FORMAT = 1
MAX_CACHE = 64 * 1024 * 1024  # bytes; a 63,000-line repos.yaml is kept in 1.4 MB
_PACKAGE = Path(__file__).parent


def _cache_key(path: Path, text: str) -> str:
    """Everything the check reads: the text, the file's name as given and the folder it
    resolves against (relative paths in it, and `Config.file`), and the code that checks.
    The check reads no environment variable and no other file."""
    digest = hashlib.sha256()
    for part in (_CACHE_FORMAT, _code(), yaml.__version__, path, path.parent.absolute()):
        digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


@functools.cache
def _code() -> str:
    """graphbuild's own files, by size and time: a new version or an edited checkout is a
    new check (the schema, or what a URL or platform is, may have changed)."""
    found = []
    for folder, dirs, names in os.walk(_PACKAGE):
        dirs.sort()
        for name in sorted(n for n in names if n.endswith(".py")):
            info = os.stat(os.path.join(folder, name))
            found.append(f"{folder}/{name} {info.st_size} {info.st_mtime_ns}")
    return "\n".join(found)


def _cache_file(path: Path, text: str) -> Path | None:
    """Where the cache is, if the top-level `workspace:` says it plainly (or is absent).

    Only a guess from the text: a hit needs the key, and a write needs the guess to be
    the workspace the check found.
    """
    key = "\nworkspace:"  # a top-level key starts a line: found without a regex per line
    text = "\n" + text
    at = text.find(key)
    if at < 0:
        value = DEFAULT_WORKSPACE
    elif text.find(key, at + 1) >= 0:
        return None
    else:
        end = text.find("\n", at + 1)
        value = text[at + len(key) : end if end >= 0 else None].split(" #", 1)[0].strip()
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return path.parent.absolute() / value / CACHE if value else None


def _read_cache(cache: Path, key: str) -> Config | None:
    """The Config stored under `key`, or None for anything else: no file, another key, a
    damaged or foreign file. Nothing in it is run; it is JSON read into Config's types."""
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a FIFO never waits
        with os.fdopen(fd, "rb") as file:
            facts = os.fstat(file.fileno())
            if not stat.S_ISREG(facts.st_mode) or facts.st_size > MAX_CACHE:
                return None
            raw = file.read(MAX_CACHE + 1)
        head, _, body = raw.partition(b"\n")
        expected = {"format": _CACHE_FORMAT, "key": key, "sum": hashlib.sha256(body).hexdigest()}
        if json.loads(head) != expected:
            return None
        return cast(Config, _record_reader(Config)(json.loads(body)))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return None


def _write_cache(cache: Path, key: str, checked: Config) -> None:
    """Store the checked form, only in a workspace graphbuild has made (its index.db is
    there), never with a token from a URL in it, atomically; a failure only costs speed."""
    if not (cache.parent / INDEX).is_file():
        return
    if any(s.url and _secret_in(s.url) for s in checked.sources):
        return
    body = json.dumps(_plain(checked), separators=(",", ":")).encode()
    sum_ = hashlib.sha256(body).hexdigest()
    head = json.dumps({"format": _CACHE_FORMAT, "key": key, "sum": sum_}).encode()
    temp = None
    try:
        with tempfile.NamedTemporaryFile(dir=cache.parent, prefix=f".{CACHE}.", delete=False) as f:
            temp = Path(f.name)
            f.write(head + b"\n" + body)
        os.replace(temp, cache)
    except OSError:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _secret_in(url: str) -> bool:
    """A token or password in a git URL (`https://TOKEN@`, `user:token@`, `?access_token=`).
    An ssh user name (`ssh://git@host/…`, `git@host:…`) is a name, not a secret."""
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        if parts.username and parts.password is None:
            url = url.replace(f"{parts.username}@", "", 1)
    return redact(url) != url


def _plain(value: Any) -> Any:
    """A Config as JSON: records as lists of their fields in order."""
    if value is None or isinstance(value, str | int | float):  # most values: first
        return value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):  # every Mapping in a Config is one
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    record: Any = type(value)  # a dataclass: every other kind of value is above
    return [_plain(getattr(value, name)) for name in _field_names(record)]


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _reader(hint: Any) -> Callable[[Any], Any] | None:
    """What turns the JSON of a value of type `hint` back into it (None: JSON's own value),
    from the dataclasses' annotations: a record of the wrong length is refused."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record_reader(hint)
    if origin in (typing.Union, types.UnionType):
        optional = _reader(next(a for a in args if a is not type(None)))
        return None if optional is None else lambda v: None if v is None else optional(v)
    if origin is tuple:
        item = _reader(args[0])
        return tuple if item is None else lambda v: tuple(map(item, v))
    if origin is Mapping:  # JSON makes a new dict: only its values may need reading
        inner = _reader(args[1])
        return None if inner is None else lambda v: {k: inner(x) for k, x in v.items()}
    if hint is Path:
        return Path
    if hint is dt.date:
        return dt.date.fromisoformat
    return None  # str, int, float, bool, Any: as JSON has them


@functools.cache
def _record_reader(cls: type) -> Callable[[Any], Any]:
    """Fields are set as a frozen dataclass's __init__ sets them, without its per-field
    object.__setattr__: 10,000 images read back in a third less time. None of these
    classes has a __post_init__, and every field is in the record."""
    assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__")
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    steps = [(i, r) for i, name in enumerate(names) if (r := _reader(hints[name])) is not None]
    new = object.__new__

    def read(value: Any) -> Any:
        if type(value) is not list or len(value) != len(names):
            raise ValueError(f"not a {cls.__name__}")
        for i, step in steps:
            value[i] = step(value[i])
        record: Any = new(cls)
        record.__dict__.update(zip(names, value, strict=True))
        return record

    return read
