"""`graphbuild acr webhook create URL`: have the registry post its pushes to `graphbuild listen`."""

from __future__ import annotations

from urllib.parse import urlsplit

from graphbuild import acr_admin, errors, events, extras
from graphbuild.config import Config, loopback


def create(config: Config, url: str, name: str, scope: str, secret_env: str) -> int:
    extras.require_azure("acr webhook create")
    if config.azure is None:
        raise errors.GraphbuildError(f"{config.file}: azure: the registry to add a webhook to")
    host = urlsplit(url).hostname or ""
    if not (url.startswith("https://") or (url.startswith("http://") and loopback(host))):
        raise errors.GraphbuildError(
            f"{url!r}: the webhook sends its secret with every push: give an https URL"
        )
    secret = events.secret(secret_env)
    with acr_admin.client(config.azure) as manager:
        hook = acr_admin.create_webhook(manager, config.azure, name, url, secret, scope)
    print(f"Webhook {name} on {config.azure.registry} posts pushes"
          f"{f' of {scope}' if scope else ''} to {url}: {hook}")  # fmt: skip
    return errors.OK
