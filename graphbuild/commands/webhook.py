"""`graphbuild acr webhook create URL`: have the registry post its pushes to `graphbuild listen`."""

from __future__ import annotations

import os

from graphbuild import acr, errors
from graphbuild.config import Config


def create(config: Config, url: str, name: str, scope: str, secret_env: str) -> int:
    if config.azure is None:
        raise errors.GraphbuildError(f"{config.file}: azure: the registry to add a webhook to")
    if not url.startswith(("https://", "http://")):
        raise errors.GraphbuildError(f"{url!r}: the webhook needs an http(s) URL to post to")
    secret = os.environ.get(secret_env, "")
    if not secret:
        raise errors.GraphbuildError(f"${secret_env} is empty: set the secret `listen` checks")
    with acr.client(config.azure) as manager:
        hook = acr.create_webhook(manager, config.azure, name, url, secret, scope)
    print(f"Webhook {name} on {config.azure.registry} posts pushes"
          f"{f' of {scope}' if scope else ''} to {url}: {hook}")  # fmt: skip
    return errors.OK
