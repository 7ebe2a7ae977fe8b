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
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphbuild import refs
from graphbuild.config import AzureSpec
from graphbuild.errors import CommandFailed, ConfigError, GraphbuildError

TASKS_API = "2019-06-01-preview"  # the Tasks API the Azure CLI uses for runs


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


def first_line(err: Exception) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


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


def import_image(manager: Any, spec: AzureSpec, item: Import) -> None:
    """Import one image by digest into the mirror's tag; Force, since the tag moves."""
    from azure.core.exceptions import AzureError
    from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource

    source, target = refs.parse(item.source), refs.parse(item.target)
    parameters = ImportImageParameters(
        source=ImportSource(registry_uri=source.domain,
                            source_image=f"{source.path}@{item.digest}"),
        target_tags=[f"{target.path}:{target.tag}"], mode="Force",
    )  # fmt: skip
    try:
        manager.registries.begin_import_image(spec.resource_group, spec.registry,
                                              parameters).result()  # fmt: skip
    except AzureError as err:
        raise CommandFailed(f"import {item.source}: {first_line(err)}", transient(err)) from None


# ---------------------------------------------------------------- webhooks


def create_webhook(
    manager: Any, spec: AzureSpec, name: str, url: str, secret: str, scope: str = ""
) -> str:
    """A push webhook on the registry that posts to `url` with the shared secret header;
    its resource id. The secret goes to Azure and nowhere else."""
    from azure.core.exceptions import AzureError
    from azure.mgmt.containerregistry.models import WebhookCreateParameters

    from graphbuild.events import SECRET_HEADER

    try:
        location = manager.registries.get(spec.resource_group, spec.registry).location
        hook = manager.webhooks.begin_create(
            spec.resource_group, spec.registry, name,
            WebhookCreateParameters(location=location, service_uri=url, actions=["push"],
                                    custom_headers={SECRET_HEADER: secret}, status="enabled",
                                    scope=scope),
        ).result()  # fmt: skip
    except AzureError as err:
        raise CommandFailed(f"webhook {name}: {first_line(err)}", transient(err)) from None
    return str(hook.id)
