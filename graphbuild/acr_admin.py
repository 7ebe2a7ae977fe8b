"""Azure Container Registry's management side: the ARM client, base mirroring, webhooks.

One package, azure-mgmt-containerregistry 14.x (the `azure` extra), serves all of it:
its 2019-06-01-preview API has the ACR Tasks runs the Azure CLI uses, and its
default (2025-04-01) has image import and webhooks. docs/azure.md says why
not 15.0.0 (no Tasks) or azure-mgmt-containerregistrytasks (a beta). Azure
credentials come from azure-identity's DefaultAzureCredential: graphbuild
stores none.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphbuild import refs, retry
from graphbuild.config import AzureSpec
from graphbuild.console import note
from graphbuild.errors import CommandFailed, ConfigError, GraphbuildError

TASKS_API = "2019-06-01-preview"  # the Tasks API the Azure CLI uses for runs
# a throttled import (ARM's 429, or Docker Hub's TOOMANYREQUESTS) waits 5, 15, then 45 s
# (or the Retry-After asked for, up to 2 minutes) before its next try; 4 tries in all
IMPORT_BACKOFF = retry.Backoff(5.0, factor=3.0, most=120.0, jitter=0.2)
IMPORT_TRIES = 4


def subscription(spec: AzureSpec) -> str:
    found = spec.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not found:
        raise GraphbuildError("azure.subscription: not set, and $AZURE_SUBSCRIPTION_ID is empty")
    return found


def identity(spec: AzureSpec) -> Any:
    """DefaultAzureCredential, signing in at the Entra ID of `spec`'s cloud."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(authority=spec.cloud_settings.authority)


def client(spec: AzureSpec, api_version: str | None = None, credential: Any = None) -> Any:
    """A ContainerRegistryManagementClient for `spec`'s subscription, on its cloud's
    Resource Manager."""
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    options: dict[str, Any] = {"api_version": api_version} if api_version else {}
    return ContainerRegistryManagementClient(
        credential or identity(spec), subscription(spec), base_url=spec.arm,
        connection_verify=spec.ca_bundle or True,
        credential_scopes=[f"{spec.arm.rstrip('/')}/.default"],
        polling_interval=2,  # when Azure sends no Retry-After: imports take seconds, not 30
        **options,
    )  # fmt: skip


def transient(err: Exception) -> bool:
    """No answer, throttled (after the SDK's own retries) or a server error: try again later.
    Refused credentials or a bad request are not going to change."""
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(err, ClientAuthenticationError):  # no identity, or one Azure refuses
        return False
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status is None or status == 429 or status >= 500


def tls(spec: AzureSpec) -> ssl.SSLContext | bool:
    """TLS for the blob URLs (upload, logs), trusting what the SDK trusts for ARM."""
    if not spec.ca_bundle:
        return True
    try:
        return ssl.create_default_context(cafile=spec.ca_bundle)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(spec.ca_bundle, "azure.ca_bundle",
                          f"not a readable CA bundle ({err})") from None  # fmt: skip


# What Azure's answer to a Tasks request on a free-trial or free-credit subscription means
TASKS_NOT_ALLOWED = ("(this subscription may not run ACR Tasks, as free-trial and free-credit "
                     "ones may not: use a paid subscription, or build with builder.kind buildah "
                     "or docker)")  # fmt: skip


NO_ROLE = ("(the identity graphbuild signs in with lacks a role on the registry: ACR Tasks "
           "runs, imports and webhooks need Contributor on it; docs/azure.md, roles)")  # fmt: skip
_HINTS = {"TasksOperationsNotAllowed": TASKS_NOT_ALLOWED, "AuthorizationFailed": NO_ROLE}


def first_line(err: Exception) -> str:
    """The error's first line, and what it means when Azure's own words do not say."""
    text = str(getattr(err, "message", None) or err).strip()
    line = text.splitlines()[0][:300] if text else type(err).__name__
    hint = _HINTS.get(getattr(getattr(err, "error", None), "code", None) or "")
    return f"{line} {hint}" if hint else line


# ---------------------------------------------------------------- mirroring


@dataclass(frozen=True)
class Import:
    """One base to copy into the mirror: the upstream image by digest, to the mirror's tag."""

    source: str  # upstream reference, with its tag
    digest: str  # what the upstream tag serves now: imported by this digest
    target: str  # the mirror's reference, same tag


def imports_due(
    bases: Iterable[str], mirrors: Mapping[str, str], digests: Mapping[str, str | None]
) -> tuple[list[Import], list[str]]:
    """What the mirror lacks: each tagged base whose mirror tag does not serve the upstream
    digest yet. `digests` holds both sides' answers (None: no answer or no such tag).
    Returns the imports, and the bases whose upstream did not answer."""
    due, unanswered = [], []
    for base in sorted(set(bases)):
        target = refs.mirrored(base, mirrors)
        if target is None or refs.parse(base).digest is not None:
            continue  # not mirrored, or pinned by digest: no tag to keep in step
        digest = digests.get(base)
        if digest is None:
            unanswered.append(base)
        elif digests.get(target) != digest:
            due.append(Import(base, digest, target))
    return due, unanswered


def import_image(
    manager: Any,
    spec: AzureSpec,
    item: Import,
    *,
    backoff: retry.Backoff = IMPORT_BACKOFF,
    tries: int = IMPORT_TRIES,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Import one image by digest into the mirror's tag; Force, since the tag moves.

    With a `password_env` login for the source registry, ACR logs in there with it (the
    import API takes the password itself, no Key Vault reference). Throttling is tried
    again after a wait; any other failure is final."""
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource

    source, target = refs.parse(item.source), refs.parse(item.target)
    parameters = ImportImageParameters(
        source=ImportSource(registry_uri=source.domain,
                            source_image=f"{source.path}@{item.digest}",
                            credentials=_import_login(spec, source.domain)),
        target_tags=[f"{target.path}:{target.tag}"], mode="Force",
    )  # fmt: skip

    def attempt(_: int) -> None:
        try:
            manager.registries.begin_import_image(spec.resource_group, spec.registry,
                                                  parameters).result()  # fmt: skip
        except HttpResponseError as err:
            if _throttled(err):
                asked = (getattr(err.response, "headers", None) or {}).get("Retry-After")
                wait = retry.retry_after(asked) if err.status_code == 429 else None
                raise retry.Again(first_line(err), wait=wait) from None
            raise

    def said(again: retry.Again, wait: float) -> None:
        note(f"import {item.source}: rate limited ({again.why}); trying again in {wait:.0f} s")

    try:
        retry.call(attempt, tries=tries, backoff=backoff, on_retry=said, sleep=sleep)
    except retry.Again as last:
        raise CommandFailed(f"import {item.source}: {last.why}", transient=True) from None
    except AzureError as err:
        raise CommandFailed(f"import {item.source}: {first_line(err)}", transient(err)) from None


def _import_login(spec: AzureSpec, host: str) -> Any:
    """The source registry's user name and password for an import, the password read from
    the variable `azure.credentials` names (never from repos.yaml); None: anonymous."""
    from azure.mgmt.containerregistry.models import ImportSourceCredentials

    login = spec.credentials.get(host)
    if login is None or login.password_env is None:
        return None
    password = os.environ.get(login.password_env)
    if not password:
        key = f"azure.credentials.{host}.password_env"
        raise ConfigError("environment", key, f"${login.password_env} is not set or empty")
    return ImportSourceCredentials(username=login.username, password=password)


def _throttled(err: Any) -> bool:
    """ARM's 429 (after the SDK's own tries), or an import whose operation failed because
    the source registry refused the pull as over its rate limit (Docker Hub's
    TOOMANYREQUESTS)."""
    if err.status_code == 429:
        return True
    error = getattr(err, "error", None)
    said = f"{getattr(error, 'code', '')} {getattr(error, 'message', '')} {err.message}"
    return "toomanyrequests" in said.lower()


# ---------------------------------------------------------------- webhooks

# The forms ACR documents for a webhook's scope (WebhookPropertiesCreateParameters.scope).
# Any other form (e.g. 'mirror/*') matches no push: such a webhook would never fire.
SCOPE_FORMS = "'REPO:*' (every tag of REPO), 'REPO:TAG', 'REPO' (REPO:latest) or empty (every push)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # a repository path, as in refs
_SCOPE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*(?::(?:\*|\w[\w.-]{{0,127}}))?", re.ASCII)
_NAME = re.compile(r"[a-zA-Z0-9]{5,50}", re.ASCII)  # ACR's rule for webhook names


def check_webhook(name: str, scope: str) -> None:
    """Refuse, before any call, a name ACR refuses and a scope that matches no push."""
    if not _NAME.fullmatch(name):
        raise GraphbuildError(f"--name {name!r}: a webhook name is 5 to 50 letters and digits")
    if scope and not _SCOPE.fullmatch(scope):
        raise GraphbuildError(
            f"--scope {scope!r}: not a webhook scope ACR documents; give {SCOPE_FORMS}"
        )


def regions(manager: Any, spec: AzureSpec) -> list[str]:
    """Where the registry has replicas, its home region first: a webhook hears only the
    pushes that land on its own region's replica. Only Premium registries replicate."""
    from azure.core.exceptions import AzureError

    try:
        registry = manager.registries.get(spec.resource_group, spec.registry)
        found = [registry.location]
        if registry.sku is not None and registry.sku.name == "Premium":
            found += [r.location for r in
                      manager.replications.list(spec.resource_group, spec.registry)]  # fmt: skip
    except AzureError as err:
        raise CommandFailed(
            f"registry {spec.registry}: {first_line(err)}", transient(err)
        ) from None
    return list(dict.fromkeys(region.lower().replace(" ", "") for region in found))


def webhook_name(name: str, region: str, home: str) -> str:
    """`name` in the home region, `name` + the region elsewhere (ACR's names are unique
    per registry, alphanumeric, at most 50 characters)."""
    if region == home:
        return name
    suffix = re.sub(r"[^a-z0-9]", "", region.lower())
    return f"{name[: 50 - len(suffix)]}{suffix}"


def create_webhook(
    manager: Any, spec: AzureSpec, name: str, url: str, secret: str, scope: str, region: str
) -> str:
    """A push webhook in `region`'s replica that posts to `url` with the shared secret
    header; its resource id. The secret goes to Azure and nowhere else."""
    from azure.core.exceptions import AzureError
    from azure.mgmt.containerregistry.models import WebhookCreateParameters

    from graphbuild.events import SECRET_HEADER

    try:
        hook = manager.webhooks.begin_create(
            spec.resource_group, spec.registry, name,
            WebhookCreateParameters(location=region, service_uri=url, actions=["push"],
                                    custom_headers={SECRET_HEADER: secret}, status="enabled",
                                    scope=scope),
        ).result()  # fmt: skip
    except AzureError as err:
        raise CommandFailed(f"webhook {name}: {first_line(err)}", transient(err)) from None
    return str(hook.id)
