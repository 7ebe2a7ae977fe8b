"""repos.yaml: find it, load it safely, and check every key.

A bad config must stop graphbuild before it does anything, with a message that
names the file, the line and the key (`repos[3].images[0].tags: expected a
list`), never a traceback; so every value is checked here, once, and the rest
of graphbuild receives plain dataclasses it can trust.

Each key is declared once, on the field it fills: `read(check)` in the field's
metadata says how its value is read, the field's default is the key's default
(schema.py walks them). What involves several keys is the record's `@rule`, below
the records.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from graphbuild import clouds, config_cache, platforms, refs, schema
from graphbuild.errors import ConfigError, InvalidReference, UnsafeURL
from graphbuild.schema import (
    POSITION,
    Check,
    Key,
    Reader,
    Where,
    argv,
    beside,
    beside_text,
    command,
    count,
    falsy,
    flag,
    null,
    read,
    record,
    records,
    relpath,
    rule,
    seconds,
    string,
    string_map,
    strings,
    tagged,
)
from graphbuild.urls import redact, safe_git_url
from graphbuild.workspace import INDEX

DEFAULT_FILE = "repos.yaml"
ENV_VAR = "GRAPHBUILD_CONFIG"
DEFAULT_WORKSPACE = ".graphbuild"
GLOB_CHARS = frozenset("*?[")
CHECK_TIMEOUT = 600.0  # seconds for a whole check (detection) pass; `check.timeout`
SEVERITIES = ("unknown", "low", "medium", "high", "critical")  # scanners' scale, low to high
IMAGE_CONTEXT = "docker-image://"  # a named build context that is an image

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a conventional variable name: a token pasted in its place (npm_..., ghp_...) has lower case
_SECRET_ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_REMOTE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|git@|github\.com/)")  # a URL, target:…
# Variables the build tools read themselves: a secret build arg reaches buildah and docker as
# the variable of its own name, so it may not be one of these
_TOOL_ENV_RE = re.compile(
    r"(PATH|HOME|USER|SHELL|TMPDIR|LANG|LC_\w+|XDG_\w+|DOCKER_\w+|BUILDAH_\w+|BUILDKIT_\w+"
    r"|BUILDX_\w+|CONTAINERS_\w+|REGISTRY_AUTH_FILE|SSL_CERT_\w+|LD_\w+)",
    re.IGNORECASE,
)
_Hosted = TypeVar("_Hosted", "RegistrySpec", "RegistryLogin")  # a record keyed by its host
_REF_RE = re.compile(r"^(?![-/])[^\x00-\x20\x7f ~^:?*\[\\]+(?<!/)$")  # git check-ref-format
# Operating systems images are built for that containerd's list (an older Go's) lacks: Go's
# wasip1, and wasi, which Docker's Wasm builds target (`--platform wasi/wasm`)
_TARGET_OS = platforms.KNOWN_OS | {"wasi", "wasip1"}
# The login servers of ACR in Azure's clouds (public, China, US Government)
ACR_DOMAINS = clouds.SUFFIXES  # login servers on these are an ACR registry's own


# -- checks of one value that are repos.yaml's own


def _name(r: Reader, value: Any, where: Where) -> str:
    name = string(r, value, where)
    if not _NAME_RE.match(name):
        raise r.fail(where, "use letters, digits, '.', '_' and '-' only")
    return name


def _image(r: Reader, value: Any, where: Where) -> str:
    """A repository, which may hold {dir}."""
    image = string(r, value, where)
    try:
        refs.repository(image.replace("{dir}", "x"))
    except InvalidReference as err:
        raise r.fail(where, err.reason) from None
    return image


def _tags(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    tags = strings(r, value, where)
    if not tags:
        raise r.fail(where, "must list at least one tag")
    for i, tag in enumerate(tags):
        if not _TAG_RE.match(tag.replace("{dir}", "x")):
            raise r.fail([*where, i], f"{tag!r} is not a valid tag")
    return tags


def _platforms(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    """`os/arch[/variant]` normalised as BuildKit normalises a target platform, so that
    builders and the graph get one spelling (`linux/aarch64` is `linux/arm64`). An OS or
    architecture that neither Go nor Docker (`wasi`) knows is a typo here, though
    containerd would pass it on."""
    seen: list[str] = []
    for i, text in enumerate(strings(r, value, where)):
        at = [*where, i]
        if "/" not in text:
            raise r.fail(at, f"{text!r} is not os/arch[/variant]")
        try:
            platform = platforms.parse(text)
        except ValueError as err:
            raise r.fail(at, str(err)) from None
        if platform.os not in _TARGET_OS:
            raise r.fail(at, f"{text!r}: unknown operating system {platform.os!r}")
        if platform.arch not in platforms.KNOWN_ARCH:
            raise r.fail(at, f"{text!r}: unknown architecture {platform.arch!r}")
        if str(platform) in seen:
            raise r.fail(at, f"{text!r} is {platform} twice")
        seen.append(str(platform))
    return tuple(seen)


def _secret_args(r: Reader, value: Any, where: Where) -> dict[str, str]:
    """Build-arg name -> the environment variable holding its value, read at build time: the
    value is never in repos.yaml, the index, the config cache or a log."""
    out: dict[str, str] = string_map(_ARG_RE.match)(r, value, where)
    for name, variable in out.items():
        if _TOOL_ENV_RE.fullmatch(name):
            raise r.fail([*where, name], f"{name!r}: the builder's own environment has "
                         "this variable, and a secret build arg reaches it as one")  # fmt: skip
        if not _SECRET_ENV_RE.fullmatch(variable):  # not echoed: it may be the token itself
            expected = "an environment variable name in capitals (A-Z, 0-9, _; at most 64"
            raise r.fail([*where, name], f"expected {expected} characters), whose value "
                         "the build gets")  # fmt: skip
    return out


def _contexts(r: Reader, value: Any, where: Where) -> dict[str, str]:
    """Named build contexts a build can be given exactly as its key covers them: an
    image (pinned to a digest at build time) or a folder of the repository. A URL's
    content moves under graphbuild's feet, so it is refused."""
    out: dict[str, str] = string_map(bool)(r, value, where)
    for name, text in out.items():
        if text.startswith(IMAGE_CONTEXT):
            try:
                refs.normalize(text[len(IMAGE_CONTEXT) :])
            except InvalidReference as err:
                raise r.fail([*where, name], err.reason) from None
        elif _REMOTE_RE.match(text):
            raise r.fail([*where, name], f"{text!r}: a named context is "
                         f"{IMAGE_CONTEXT}IMAGE or a folder of the repository; "
                         "graphbuild cannot pin what a URL serves")  # fmt: skip
        else:
            out[name] = relpath(r, text, [*where, name])
    return out


def _git_url(r: Reader, value: Any, where: Where) -> str:
    try:
        return safe_git_url(string(r, value, where), r.base)
    except UnsafeURL as err:
        raise r.fail(where, str(err)) from None


def _browse(r: Reader, value: Any, where: Where) -> str:
    """A repository's web URL for a file and line, for the web view's links: http(s) only
    (no `javascript:`), with only {path} and {line} filled in."""
    template = string(r, value, where)
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in Formatter().parse(template) if name is not None]  # fmt: skip
    except ValueError as err:  # a lone { or }
        raise r.fail(where, f"{template!r}: {err}") from None
    scheme = template.split("://", 1)[0].lower() if "://" in template else ""
    if scheme not in ("https", "http"):
        raise r.fail(where, f"{template!r}: an http(s) URL is needed, like "
                     "https://git.example.com/team/app/blob/main/{path}#L{line}")  # fmt: skip
    if any(name not in ("path", "line") or spec or conversion for name, spec, conversion in fields):
        raise r.fail(where, f"{template!r}: only {{path}} and {{line}} are filled in")
    return template


def _folder(r: Reader, value: Any, where: Where) -> Path:
    return Path(os.path.abspath(os.path.join(r.base, string(r, value, where))))


def _ref(r: Reader, value: Any, where: Where) -> str:
    ref = string(r, value, where)
    if not _REF_RE.match(ref) or ".." in ref or "@{" in ref or ref.endswith((".lock", ".")):
        raise r.fail(where, f"{ref!r} is not a branch, tag or commit name")
    return ref


def _branch(r: Reader, value: Any, where: Where, placeholders: bool = False) -> str:
    """A branch name; a push branch may hold {run} and {ring}."""
    branch = plain = string(r, value, where)
    if placeholders:
        plain = branch.replace("{run}", "x").replace("{ring}", "x")
    if "{" in plain or "}" in plain:
        hint = "only {run} and {ring} are filled in, and only in push_branch"
        raise r.fail(where, f"{branch!r}: {hint}")
    bad = ".." in plain or "@{" in plain or plain.endswith((".lock", "."))
    if not _REF_RE.match(plain) or bad:
        raise r.fail(where, f"{branch!r} is not a branch name")
    return branch


def _push_branch(r: Reader, value: Any, where: Where) -> str:
    return _branch(r, value, where, placeholders=True)


def _scanner(r: Reader, value: Any, where: Where) -> tuple[str, ...]:
    found = command(r, value, where)
    if not any("{report}" in arg for arg in found):
        hint = "where the scanner writes its JSON report, e.g. --output {report}"
        raise r.fail(where, f"must hold {{report}}: {hint}")
    return found


def _severity(r: Reader, value: Any, where: Where) -> str:
    severity = string(r, value, where).lower()
    if severity not in SEVERITIES:
        raise r.fail(where, f"expected one of {', '.join(SEVERITIES)}")
    return severity


def _date(r: Reader, value: Any, where: Where) -> dt.date:
    """YAML reads 2027-01-31 as a date already; a quoted one is read here."""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise r.fail(where, "expected a date, YYYY-MM-DD")
    return value


def _by_tag(r: Reader, value: Any, where: Where) -> refs.Reference:
    """name:tag, as a Deployment's image field says it (the workload's rule splits it)."""
    try:
        ref = refs.normalize(string(r, value, where))
    except InvalidReference as err:
        raise r.fail(where, err.reason) from None
    if ref.digest is not None:
        raise r.fail(where, "name the image by tag; deploys pin the digest")
    return ref


def _ring_globs(r: Reader, value: Any, where: Where) -> dict[str, tuple[str, ...]]:
    """ring -> paths of its manifests (the rings are checked against deployments.rings by
    the deployments' rule)."""
    out = {}
    for ring, patterns in value.items():
        at = [*where, str(ring)]
        name = string(r, ring, at)
        out[name] = tuple(relpath(r, p, [*at, j]) for j, p in enumerate(strings(r, patterns, at)))
    return out


def _no_ring_globs(value: Any) -> bool:
    return not isinstance(value, dict) or not value


def _resource(r: Reader, value: Any, where: Where) -> str:
    resource = string(r, value, where)
    if "/" not in resource:
        raise r.fail(where, "expected kind/name, e.g. deployment/web")
    return resource


def _seconds_text(r: Reader, value: Any, where: Where) -> str:
    return f"{seconds(r, value, where):g}"


def _acr_seconds(r: Reader, value: Any, where: Where) -> float:
    timeout = seconds(r, value, where)
    if not 300 <= timeout <= 28800:
        raise r.fail(where, "ACR runs take 300 to 28800 seconds")
    return timeout


def _acr_name(r: Reader, value: Any, where: Where) -> str:
    """Lowercase: ACR names are case-insensitive, and the login server made of one is
    lowercase (`MyACR` pushes to myacr.azurecr.io)."""
    name = string(r, value, where)
    if not re.fullmatch(r"[A-Za-z0-9]{5,50}", name):
        raise r.fail(where, "an ACR name: 5-50 letters and digits")
    return name.lower()


def _login_server(r: Reader, value: Any, where: Where) -> str:
    """A registry host, lowercase as ACR gives it: images are tagged with it as it is."""
    text = string(r, value, where)
    host = text.lower()
    try:
        named = refs.parse(f"{host}/x").domain
    except InvalidReference:
        named = None
    if named != host:
        raise r.fail(where, f"{text!r}: a host, with its port unless 443, e.g. myacr.azurecr.io")
    return host


def _https(r: Reader, value: Any, where: Where) -> str:
    url = string(r, value, where)
    if url.split("://")[0] != "https":
        raise r.fail(where, "Azure Resource Manager is reached over https")
    return url


def _cloud(r: Reader, value: Any, where: Where) -> str:
    name = string(r, value, where)
    if name not in clouds.CLOUDS:
        raise r.fail(where, "expected public, china or usgovernment")
    return name


def _auth(r: Reader, value: Any, where: Where) -> str:
    auth = string(r, value, where)
    if auth not in ("auto", "anonymous", "basic", "acr"):
        raise r.fail(where, "expected auto, anonymous, basic or acr")
    return auth


def _host(r: Reader, value: Any, where: Where) -> str:
    """Another registry host a manifest request may be sent on to (the registry's rule
    refuses the registry itself)."""
    host = string(r, value, where)
    try:
        named = refs.parse(f"{host}/x").domain
    except InvalidReference:
        named = None
    if named != host:
        raise r.fail(where, f"{host!r}: {_REDIRECT_HINT}")
    return host


_REDIRECT_HINT = "a host, with its port unless 443, other than the registry itself"


def _no_password(r: Reader, value: Any, where: Where) -> None:
    hint = "name an environment variable in password_env, or use password_file"
    raise r.fail(where, f"never put a password in this file; {hint}")


def _by_host(cls: type[_Hosted]) -> Check:
    """`host: {settings}` read into `cls`, each host once however it is spelled (its rule
    normalises `host`: case, `index.docker.io`)."""

    def check(r: Reader, value: Any, where: Where) -> dict[str, _Hosted]:
        if not isinstance(value, dict):
            raise r.fail(where, f"expected a mapping, got {schema.kind(value)}")
        out: dict[str, _Hosted] = {}
        for host, settings in value.items():
            at = [*where, str(host)]
            spec = r.record(cls, {} if settings is None else settings, at, host=host)
            if spec.host in out:
                raise r.fail(at, f"{spec.host} is configured twice")
            out[spec.host] = spec
        return out

    return check


def _registry_host(r: Reader, host: Any, where: Where) -> str:
    """A `registries:` or `azure.credentials:` key as image references name its registry:
    lowercase (host names are not case-sensitive), `index.docker.io` as docker.io."""
    text = str(host).lower()
    try:
        domain = refs.parse(f"{text}/x").domain
    except InvalidReference:
        domain = None
    if domain is None or (domain != text and (domain, text) != _HUB_ALIAS):
        hint = "a host with a dot or a port, or localhost; `myreg` alone would mean Docker Hub"
        raise r.fail(where, f"not a registry host ({hint})")
    return domain


_HUB_ALIAS = ("docker.io", "index.docker.io")


_VAULT_SECRET_RE = re.compile(
    r"https://[A-Za-z0-9-]{3,24}\.vault\.[A-Za-z0-9.-]+/secrets/[A-Za-z0-9-]{1,127}"
    r"(/[0-9a-fA-F]{32})?/?"
)
_CLIENT_ID_RE = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _vault_secret(r: Reader, value: Any, where: Where) -> str:
    """A Key Vault secret's URI (its latest version, or one version): what ACR Tasks reads
    a `Vaultsecret` from. No query: a URI with a signature in it would be a secret."""
    uri = string(r, value, where)
    if not _VAULT_SECRET_RE.fullmatch(uri):
        hint = "https://<vault>.vault.azure.net/secrets/<name>[/<version>]"
        raise r.fail(where, f"not a Key Vault secret URI, {hint}")  # it may be the secret
    return uri


def _env_name(r: Reader, value: Any, where: Where) -> str:
    name = string(r, value, where)
    if not _ARG_RE.match(name):
        raise r.fail(where, "expected the name of an environment variable, e.g. HUB_TOKEN")
    return name


def _identity(r: Reader, value: Any, where: Where) -> str:
    """As the Tasks API's `identity` takes it: `system`, or a user-assigned client id."""
    identity = string(r, value, where)
    if identity != "system" and not _CLIENT_ID_RE.fullmatch(identity):
        hint = "`system` (the run's system-assigned identity) or a user-assigned identity's "
        raise r.fail(where, f"expected {hint}client id (a GUID)")  # not echoed: a secret?
    return identity


def _no_registry_password(r: Reader, value: Any, where: Where) -> None:
    hint = ("name a Key Vault secret in password_vault (builds) or an environment "
            "variable in password_env (mirror imports)")  # fmt: skip
    raise r.fail(where, f"never put a password in this file; {hint}")


def _mirrors(r: Reader, value: Any, where: Where) -> dict[str, str]:
    """`upstream prefix: mirror prefix`, both a registry host and optional path:
    `docker.io: myacr.azurecr.io/mirror`."""
    out = {}
    for key, value_ in string_map(bool)(r, value, where).items():
        source, target = key.rstrip("/"), value_.rstrip("/")
        for side in (source, target):
            try:
                ref = refs.parse(f"{side}/x")
            except InvalidReference as err:
                raise r.fail([*where, key], f"{side!r}: {err.reason}") from None
            if not ref.name.startswith(side + "/"):
                hint = "start with the registry host, e.g. myacr.azurecr.io/mirror"
                raise r.fail([*where, key], f"{side!r}: {hint}")
        out[source] = target
    return out


# -- the records: each field that is a key says how it is read


@dataclass(frozen=True)
class ImageSpec:
    """One `images:` entry; with a glob `dockerfile` it stands for one image per match."""

    # repository, may contain {dir}
    image: str = field(metadata=read(_image, missing="the repository this Dockerfile produces"))
    # path in the repository, may be a glob
    dockerfile: str = field(metadata=read(relpath, absent="Dockerfile"))
    tags: tuple[str, ...] = field(default=("latest",), metadata=read(_tags))
    context: str | None = field(default=None, metadata=read(relpath, blank=falsy))
    build_args: Mapping[str, str] = field(
        default_factory=dict, metadata=read(string_map(_ARG_RE.match))
    )
    target: str | None = field(default=None, metadata=read(string, blank=null))
    platforms: tuple[str, ...] = field(default=(), metadata=read(_platforms))
    contexts: Mapping[str, str] = field(default_factory=dict, metadata=read(_contexts))
    # build-arg name -> environment variable: passed as a secret, never stored or logged
    secret_build_args: Mapping[str, str] = field(
        default_factory=dict, metadata=read(_secret_args, blank=falsy)
    )
    key: str = field(default="", metadata=POSITION)  # where it is in repos.yaml, for messages

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARS for c in self.dockerfile)


@dataclass(frozen=True)
class RepoSpec:
    name: str = field(metadata=read(_name, missing="every repository needs a unique name"))
    url: str | None = field(default=None, metadata=read(_git_url))  # cloned into the workspace
    path: Path | None = field(default=None, metadata=read(_folder))  # read in place
    ref: str | None = field(default=None, metadata=read(_ref))
    images: tuple[ImageSpec, ...] = field(default=(), metadata=read(records(ImageSpec)))
    # the web view links repo:path:line here: https://host/team/app/blob/main/{path}#L{line}
    browse: str | None = field(default=None, metadata=read(_browse))
    key: str = field(default="", metadata=POSITION)


@dataclass(frozen=True)
class RegistrySpec:
    """How to reach one registry: `registries: {host: {...}}` in repos.yaml."""

    host: str  # the key it is listed under, normalised by its rule
    # plain http: loopback registries only
    insecure: bool = field(default=False, metadata=read(flag))
    # auto (docker's credentials, else none; Entra ID for ACR) | anonymous | basic | acr
    auth: str = field(default="auto", metadata=read(_auth))
    username: str | None = field(default=None, metadata=read(string))
    # the password is read from this variable, never the file
    password_env: str | None = field(default=None, metadata=read(string))
    password_file: Path | None = field(default=None, metadata=read(beside))
    ca_bundle: Path | None = field(default=None, metadata=read(beside))
    # requests in flight to this registry
    max_requests: int | None = field(default=None, metadata=read(count, blank=null))
    # builds pushing to this registry at once
    max_builds: int | None = field(default=None, metadata=read(count, blank=null))
    # other hosts a manifest request may be sent on to
    redirect_hosts: tuple[str, ...] = field(default=(), metadata=read(schema.each(_host)))


@dataclass(frozen=True)
class RegistryLogin:
    """How ACR logs in to another registry: `azure.credentials.<host>`. ACR Tasks runs read
    the password from Key Vault (`password_vault`) or log in with a managed identity;
    an import takes the password itself, so `mirror` reads it from `password_env`.
    A secret is only ever named here, never written."""

    host: str  # the key it is listed under, normalised by its rule
    # a user name is not a secret: sent as it is (`Opaque`)
    username: str | None = field(default=None, metadata=read(string))
    username_vault: str | None = field(default=None, metadata=read(_vault_secret))
    # builds: a Key Vault secret the run reads (`Vaultsecret`)
    password_vault: str | None = field(default=None, metadata=read(_vault_secret))
    # mirror imports: the variable the password is read from when importing
    password_env: str | None = field(default=None, metadata=read(_env_name))
    # builds: `system` or a user-assigned client id; logs in, or reads the vault
    identity: str | None = field(default=None, metadata=read(_identity))


_NAMED = "the registry's resource group and name"


@dataclass(frozen=True)
class AzureSpec:
    """The Azure Container Registry graphbuild drives: ACR Tasks builds, imports, webhooks."""

    resource_group: str = field(metadata=read(string, missing=_NAMED))
    registry: str = field(metadata=read(_acr_name, missing=_NAMED))  # the resource's name
    # else $AZURE_SUBSCRIPTION_ID
    subscription: str | None = field(default=None, metadata=read(string))
    # else <registry>.azurecr.io (.cn, .us in the other clouds)
    login_server: str | None = field(default=None, metadata=read(_login_server))
    # public | china | usgovernment; else the login server's suffix says, else public
    cloud: str | None = field(default=None, metadata=read(_cloud))
    # Azure Resource Manager; the public one's is the default of every cloud (see `arm`)
    endpoint: str = field(default=clouds.PUBLIC.arm, metadata=read(_https))
    # trusted instead of the system's CAs (a TLS proxy, tests)
    ca_bundle: str | None = field(default=None, metadata=read(beside_text))
    # registry host -> how ACR logs in there, for builds (`credentials`) and imports
    credentials: Mapping[str, RegistryLogin] = field(
        default_factory=dict, metadata=read(_by_host(RegistryLogin), blank=falsy)
    )

    @property
    def cloud_settings(self) -> clouds.Cloud:
        """Its cloud's Entra ID authority, ACR audience and Resource Manager."""
        if self.cloud:
            return clouds.CLOUDS[self.cloud]
        return (self.login_server and clouds.of(self.login_server)) or clouds.PUBLIC

    @property
    def arm(self) -> str:
        """Resource Manager: `endpoint` when it is set to another, else the cloud's own."""
        return self.cloud_settings.arm if self.endpoint == clouds.PUBLIC.arm else self.endpoint

    @property
    def server(self) -> str:
        return self.login_server or f"{self.registry}{self.cloud_settings.suffix}"


_FINDING = "an accepted finding needs id and until"


@dataclass(frozen=True)
class Allowed:
    """An accepted finding: a vulnerability id the scanner gate ignores until a date."""

    id: str = field(metadata=read(string, missing=_FINDING))
    until: dt.date = field(metadata=read(_date, missing=_FINDING))
    reason: str = field(default="", metadata=read(string))


_ENTRY = "every entry needs a unique name"


@dataclass(frozen=True)
class GateSpec:
    """A check every rebuilt image must pass before anything deploys it."""

    name: str = field(metadata=read(_name, missing=_ENTRY))
    kind: str  # scan (a scanner and its JSON report) | test (a command that must exit 0)
    argv: tuple[str, ...]  # `scan:` or `test:`, whichever is given
    # repository patterns it applies to; none: every image
    images: tuple[str, ...] = field(default=(), metadata=read(strings))
    # scan: the lowest severity that fails the image
    fail_on: str = field(default="critical", metadata=read(_severity))
    allow: tuple[Allowed, ...] = field(default=(), metadata=read(records(Allowed)))
    timeout: float = field(default=1800.0, metadata=read(seconds))

    def applies(self, repository: str) -> bool:
        return not self.images or any(fnmatch.fnmatchcase(repository, p) for p in self.images)


@dataclass(frozen=True)
class VulnSpec:
    """`vulnerabilities:`, watching what is built and what runs (docs/vulnerabilities.md)."""

    # the scanner, as a scan gate's: {image} {digest} {repository} {tag} {report}
    scan: tuple[str, ...] = field(metadata=read(_scanner, missing="the scanner command to run"))
    # the lowest severity that is shown, rebuilt for and counted in the exposure window
    severity: str = field(default="high", metadata=read(_severity))
    ignore: tuple[Allowed, ...] = field(default=(), metadata=read(records(Allowed)))
    # a digest scanned this recently is not scanned again: scanners' data change daily
    rescan: float = field(default=86400.0, metadata=read(seconds))
    concurrency: int = field(default=4, metadata=read(count))
    timeout: float = field(default=1800.0, metadata=read(seconds))
    # a sweep also rebuilds images whose own layers carry a fixable finding
    rebuild: bool = field(default=False, metadata=read(flag))


@dataclass(frozen=True)
class RingSpec:
    """One stage of a rollout; rings deploy in the order listed."""

    name: str = field(metadata=read(_name, missing=_ENTRY))
    # argv that must exit 0 before the next ring starts
    health: tuple[str, ...] = field(default=(), metadata=read(command))
    timeout: float = field(default=600.0, metadata=read(seconds))
    # a sweep stops before this ring; `graphbuild deploy` takes it on
    manual: bool = field(default=False, metadata=read(flag))
    # deployed during the builds, once every image of the run its workloads run is validated
    as_ready: bool = field(default=False, metadata=read(flag))


_RING_GLOBS = "map each ring to the paths of its manifests, e.g. {dev: ['envs/dev/**']}"


@dataclass(frozen=True)
class DeployRepoSpec:
    """A GitOps repository: its manifests are scanned for images and updated by digest."""

    name: str = field(metadata=read(_name, missing=_ENTRY))
    url: str = field(metadata=read(_git_url, missing="the git repository to update"))
    # read from, and pushed to unless push_branch is set
    branch: str = field(default="main", metadata=read(_branch))
    # may hold {run} and {ring}: one branch per rollout step
    push_branch: str | None = field(default=None, metadata=read(_push_branch))
    # ring -> path globs
    rings: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict,
        metadata=read(_ring_globs, missing=_RING_GLOBS, blank=_no_ring_globs),
    )
    key: str = field(default="", metadata=POSITION)

    @property
    def source(self) -> RepoSpec:
        """As a repository to sync (read like the image repositories, at `branch`)."""
        return RepoSpec(self.name, url=self.url, ref=self.branch, key=self.key)


_WORKLOAD = "a workload needs image, ring and kubectl"
# `kubectl:` of a workload, kept as the options kubectl is run with
_KUBECTL = {
    "resource": Key(_resource, missing="the workload to patch, e.g. deployment/web"),
    "container": Key(string, missing="the container that runs the image"),
    "namespace": Key(string),
    "context": Key(string),
    "kubeconfig": Key(beside_text),
    "timeout": Key(_seconds_text),
}


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload listed by hand: patched in its cluster with kubectl."""

    name: str = field(metadata=read(_name, missing=_ENTRY))
    # repository (`image: name:tag` in repos.yaml: the rule splits it)
    image: str = field(metadata=read(_by_tag, missing=_WORKLOAD))
    tag: str  # which of the repository's images it runs
    ring: str = field(metadata=read(string, missing=_WORKLOAD))
    kubectl: Mapping[str, str] = field(metadata=read(schema.section(_KUBECTL), missing=_WORKLOAD))
    key: str = field(default="", metadata=POSITION)


@dataclass(frozen=True)
class Deployments:
    rings: tuple[RingSpec, ...] = field(
        default=(), metadata=read(records(RingSpec, unique=True, shorthand="name"))
    )
    repos: tuple[DeployRepoSpec, ...] = field(
        default=(), metadata=read(records(DeployRepoSpec, unique=True))
    )
    workloads: tuple[WorkloadSpec, ...] = field(
        default=(), metadata=read(records(WorkloadSpec, unique=True))
    )
    # an image that failed a gate holds back what is built on it
    hold_descendants: bool = field(default=True, metadata=read(flag))
    # gate commands at once; they do not take the builds' workers (--max-parallel)
    gate_concurrency: int = field(default=4, metadata=read(count))
    # build an image while the gates of the image it is built on still run
    build_during_gates: bool = field(default=False, metadata=read(flag))


@dataclass(frozen=True)
class BuildahSpec:
    """`builder: {kind: buildah}`: builds and pushes without a Docker engine."""

    kind: Literal["buildah"] = field(default="buildah", init=False)
    isolation: str = field(default="chroot", metadata=read(string))
    storage_driver: str = field(default="vfs", metadata=read(string))
    # the image store, beside the config like the workspace; else buildah's own
    root: str | None = field(default=None, metadata=read(beside_text))
    runroot: str | None = field(default=None, metadata=read(beside_text))


@dataclass(frozen=True)
class DockerSpec:
    """`builder: {kind: docker}`: docker buildx, on its current or a named builder."""

    kind: Literal["docker"] = field(default="docker", init=False)
    builder: str | None = field(default=None, metadata=read(string))


@dataclass(frozen=True)
class CommandSpec:
    """`builder: {kind: command}`: any build service, as an argv template."""

    kind: Literal["command"] = field(default="command", init=False)
    argv: tuple[str, ...] = field(metadata=read(argv, missing="the command that builds and pushes"))


@dataclass(frozen=True)
class AcrSpec:
    """`builder: {kind: acr}`: ACR Tasks quick builds, in the registry of `azure:`."""

    kind: Literal["acr"] = field(default="acr", init=False)
    agent_pool: str | None = field(default=None, metadata=read(string))
    timeout: float = field(default=3600.0, metadata=read(_acr_seconds))
    poll: float = field(default=3.0, metadata=read(seconds))


BuilderSpec = BuildahSpec | DockerSpec | CommandSpec | AcrSpec


@dataclass(frozen=True)
class CheckSpec:
    """`check:`, the detection pass."""

    # a whole check pass; then what is left is unknown
    timeout: float = field(default=CHECK_TIMEOUT, metadata=read(seconds))


@dataclass(frozen=True)
class Config:
    file: Path  # as given, not a key
    workspace: Path = field(metadata=read(beside, absent=DEFAULT_WORKSPACE))
    repos: tuple[RepoSpec, ...] = field(
        metadata=read(records(RepoSpec), missing="list the repositories to read")
    )
    registries: Mapping[str, RegistrySpec] = field(
        default_factory=dict, metadata=read(_by_host(RegistrySpec), blank=falsy)
    )
    # the registry ACR builds, mirror imports and webhooks use
    azure: AzureSpec | None = field(default=None, metadata=read(record(AzureSpec), blank=falsy))
    builder: BuilderSpec = field(
        default_factory=BuildahSpec,
        metadata=read(tagged(BuildahSpec, DockerSpec, CommandSpec, AcrSpec), blank=falsy),
    )
    gates: tuple[GateSpec, ...] = field(
        default=(), metadata=read(records(GateSpec, unique=True), blank=falsy)
    )
    deployments: Deployments = field(
        default_factory=Deployments, metadata=read(record(Deployments), blank=falsy)
    )
    vulnerabilities: VulnSpec | None = field(
        default=None, metadata=read(record(VulnSpec), blank=falsy)
    )
    # upstream prefix -> mirror prefix
    mirrors: Mapping[str, str] = field(default_factory=dict, metadata=read(_mirrors, blank=null))
    check: CheckSpec = field(
        default_factory=CheckSpec, metadata=read(record(CheckSpec), blank=null)
    )

    @property
    def sources(self) -> tuple[RepoSpec, ...]:
        """Every git repository a sync reads: the image repositories and the deploy ones."""
        return self.repos + tuple(d.source for d in self.deployments.repos)

    @property
    def check_timeout(self) -> float:
        return self.check.timeout


# -- the rules: what involves several keys, run once a record's keys are read


@rule(RepoSpec)
def _repo(r: Reader, v: dict[str, Any], where: Where) -> None:
    if ("url" in v) == ("path" in v):
        raise r.fail(where, "give exactly one of `url` (git) or `path` (a local folder)")
    if "ref" in v and "path" in v:
        raise r.fail([*where, "ref"], "a `path` repository is read as it is; no ref")


@rule(ImageSpec)
def _image_spec(r: Reader, v: dict[str, Any], where: Where) -> None:
    for name in v.get("secret_build_args", {}):
        if name in v.get("build_args", {}):
            raise r.fail([*where, "secret_build_args", name], "also in build_args; give it once")


@rule(RegistrySpec, password=Key(_no_password))
def _registry(r: Reader, v: dict[str, Any], where: Where) -> None:
    v["host"] = host = _registry_host(r, v["host"], where)
    if v.get("insecure") and not loopback(host):
        hint = "plain http is only allowed for loopback registries (localhost, 127.0.0.1)"
        raise r.fail([*where, "insecure"], hint)
    auth = v.get("auth", "auto")
    if auth == "basic" and ("username" not in v or not (v.get("password_env") or
                                                        v.get("password_file"))):  # fmt: skip
        raise r.fail(where, "auth: basic needs username and password_env or password_file")
    for key in ("username", "password_env", "password_file"):
        if key in v and auth != "basic":
            raise r.fail([*where, key], "only used with auth: basic")
    redirects = v.get("redirect_hosts", ())
    for i, other in enumerate(redirects):
        if other.lower() == host:
            raise r.fail([*where, "redirect_hosts", i], f"{other!r}: {_REDIRECT_HINT}")
    v["redirect_hosts"] = tuple(other.lower() for other in redirects)


@rule(RegistryLogin, password=Key(_no_registry_password))
def _registry_login(r: Reader, v: dict[str, Any], where: Where) -> None:
    v["host"] = _registry_host(r, v["host"], where)
    if "username" in v and "username_vault" in v:
        raise r.fail(where, "give username or username_vault, not both")
    named = "username" in v or "username_vault" in v
    if "password_vault" in v and not named:
        raise r.fail(where, "password_vault needs username or username_vault")
    if "username_vault" in v and "password_vault" not in v:
        raise r.fail(where, "username_vault needs password_vault (it is for builds)")
    if "username" in v and not ("password_vault" in v or "password_env" in v):
        raise r.fail(where, "a user name needs password_vault (builds) or password_env "
                     "(mirror imports)")  # fmt: skip
    if not ("password_vault" in v or "identity" in v or "password_env" in v):
        raise r.fail(where, "give password_vault, identity or password_env")


@rule(AzureSpec)
def _azure(r: Reader, v: dict[str, Any], where: Where) -> None:
    server, name = v.get("login_server"), v["registry"]
    suffix = next((s for s in ACR_DOMAINS if server and server.endswith(s)), None)
    if server and suffix:  # an ACR host is the registry's own (`-hash`: a domain name label)
        label = server.removesuffix(suffix)
        if label != name and not label.startswith(f"{name}-"):
            message = f"{server!r} is not the login server of {name} ({name}{suffix})"
            raise r.fail([*where, "login_server"], message)
    named = clouds.of(server) if server else None
    cloud = v.get("cloud")
    if cloud and named and named.name != cloud:  # sign-in would go to the wrong Entra ID
        message = (f"{cloud}, but login_server {server} is in the {named.name} cloud "
                   f"(*{named.suffix}); give that cloud, or leave cloud out")  # fmt: skip
        raise r.fail([*where, "cloud"], message)


@rule(GateSpec, scan=Key(_scanner), test=Key(command))
def _gate(r: Reader, v: dict[str, Any], where: Where) -> None:
    if ("scan" in v) == ("test" in v):
        raise r.fail(where, "give exactly one of `scan` (a scanner) or `test` (a command)")
    v["kind"] = "scan" if "scan" in v else "test"
    v["argv"] = v.pop(v["kind"])
    if v["kind"] == "test":
        for key in ("fail_on", "allow"):
            if key in v:
                raise r.fail([*where, key], "only used with `scan`")


@rule(RingSpec)
def _ring(r: Reader, v: dict[str, Any], where: Where) -> None:
    if v.get("as_ready") and v.get("manual"):
        raise r.fail([*where, "as_ready"], "a manual ring waits for `graphbuild deploy`; "
                     "give as_ready or manual, not both")  # fmt: skip


@rule(WorkloadSpec)
def _workload(r: Reader, v: dict[str, Any], where: Where) -> None:
    ref = v["image"]
    v["image"], v["tag"] = ref.name, ref.tag or "latest"


@rule(Deployments)
def _deployments(r: Reader, v: dict[str, Any], where: Where) -> None:
    rings = [ring.name for ring in v.get("rings", ())]
    if (v.get("repos") or v.get("workloads")) and not rings:
        raise r.fail([*where, "rings"], "missing: list the rings to deploy in, in order")
    unknown = "unknown ring {!r}; deployments.rings has " + str(rings)
    for i, repo in enumerate(v.get("repos", ())):
        for ring in repo.rings:
            if ring not in rings:
                raise r.fail([*where, "repos", i, "rings", ring], unknown.format(ring))
    for i, workload in enumerate(v.get("workloads", ())):
        if workload.ring not in rings:
            raise r.fail([*where, "workloads", i, "ring"], unknown.format(workload.ring))


@rule(Config)
def _config(r: Reader, v: dict[str, Any], where: Where) -> None:
    seen: dict[str, int] = {}
    for i, repo in enumerate(v["repos"]):
        if repo.name in seen:
            message = f"duplicate name {repo.name!r} (also repos[{seen[repo.name]}])"
            raise r.fail(["repos", i, "name"], message)
        seen[repo.name] = i
    for i, deploy_repo in enumerate(v.get("deployments", Deployments()).repos):
        if deploy_repo.name in seen:
            message = f"{deploy_repo.name!r} is also the name of a repos entry"
            raise r.fail(["deployments", "repos", i, "name"], message)
    if isinstance(v.get("builder"), AcrSpec) and v.get("azure") is None:
        raise r.fail(["azure"], "missing: builder.kind acr builds in this registry")
    if v.get("azure") is not None and v.get("mirrors"):
        v["mirrors"] = _mirrors_in(r, v["azure"].server, v["mirrors"])
    if isinstance(v.get("builder"), CommandSpec):
        for i, repo in enumerate(v["repos"]):
            for j, image in enumerate(repo.images):
                if image.secret_build_args:
                    raise r.fail(["repos", i, "images", j, "secret_build_args"],
                                 "builder.kind command cannot take a secret: its argv would "
                                 "carry the value; use buildah, docker or acr")  # fmt: skip
    if isinstance(v.get("builder"), AcrSpec):
        for i, repo in enumerate(v["repos"]):
            for j, image in enumerate(repo.images):
                for k, text in enumerate(image.platforms):
                    if not _acr_builds(text):
                        message = f"{text!r}: builder.kind acr does not build it; {_ACR_HINT}"
                        raise r.fail(["repos", i, "images", j, "platforms", k], message)


def _mirrors_in(r: Reader, server: str, mirrors: Mapping[str, str]) -> dict[str, str]:
    """Each mirror in the azure: registry, which `graphbuild mirror` imports into: one
    elsewhere would be imported there, never seen in its own registry, and imported again
    on every run. Its host is lowercased like the login server."""
    out = {}
    for source, target in mirrors.items():
        host, slash, path = target.partition("/")
        if host.lower() != server:
            message = (f"{target!r} is not in {server}, the azure: registry "
                       "`graphbuild mirror` imports into")  # fmt: skip
            raise r.fail(["mirrors", source], message)
        out[source] = server + slash + path
    return out


# What ACR Tasks builds: PlatformProperties in the 2019-06-01-preview Tasks swagger (os Linux or
# Windows; architecture amd64, x86/386, arm, arm64; variant v6, v7, v8), with each variant on
# its own architecture, in the normalised form (`arm64/v8` is `arm64`, `arm` is `arm/v7`)
_ACR_ARCH = {"amd64": ("",), "386": ("",), "arm": ("v6", "v7"), "arm64": ("",)}
_ACR_HINT = "ACR Tasks build linux or windows on amd64, 386 (x86), arm/v6, arm/v7 or arm64/v8"


def _acr_builds(text: str) -> bool:
    platform = platforms.parse(text)  # read already: it parses
    return (platform.os in ("linux", "windows") and not platform.os_version
            and not platform.os_features
            and platform.variant in _ACR_ARCH.get(platform.arch, ()))  # fmt: skip


def loopback(host: str) -> bool:
    """localhost or a loopback address; `127.evil.example` is a name, not an address."""
    name = host if host.endswith("]") else host.rsplit(":", 1)[0] if ":" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


# -- finding and loading


def find(explicit: str | os.PathLike[str] | None = None) -> Path:
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
    is kept in the workspace (config_cache.py), keyed by everything the check reads, and a
    query reads it back instead. A file that changed in any byte is checked again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), "", f"cannot read: {err}") from None
    key = config_cache.key(path, text)
    cache = _cache_file(path, text)
    if cache is not None and (cached := config_cache.read(cache, key, Config)) is not None:
        return cached
    checked = _check(path, text)
    if cache is not None and cache.parent == checked.workspace and _may_keep(checked):
        config_cache.write(cache, key, checked)
    return checked


def _check(path: Path, text: str) -> Config:
    """Parse and check, with no cache."""
    data = schema.parse(path, text)
    r = Reader(path, text)
    if data is None:
        raise r.fail([], "the file is empty; it needs a `repos:` list")
    return r.record(Config, data, [], file=path)


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
    return path.parent.absolute() / value / config_cache.CACHE if value else None


def _may_keep(checked: Config) -> bool:
    """Only in a workspace graphbuild has made (its index.db is there), and never with a
    token from a URL in it."""
    if not (checked.workspace / INDEX).is_file():
        return False
    return not any(s.url and _secret_in(s.url) for s in checked.sources)


def _secret_in(url: str) -> bool:
    """A token or password in a git URL (`https://TOKEN@`, `user:token@`, `?access_token=`).
    An ssh user name (`ssh://git@host/…`, `git@host:…`) is a name, not a secret."""
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        if parts.username and parts.password is None:
            url = url.replace(f"{parts.username}@", "", 1)
    return redact(url) != url
