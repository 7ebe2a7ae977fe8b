"""`graphbuild acr webhook create URL`: have the registry post its pushes to `graphbuild listen`."""

from __future__ import annotations

from urllib.parse import urlsplit

from graphbuild import acr_admin, errors, events, extras
from graphbuild.config import Config, loopback


def create(config: Config, url: str, name: str, scope: str, secret_env: str) -> int:
    """One webhook in each region the registry has a replica in, since a webhook hears only
    the pushes that land on its own region's; says which regions got none."""
    extras.require_azure("acr webhook create")
    if config.azure is None:
        raise errors.GraphbuildError(f"{config.file}: azure: the registry to add a webhook to")
    host = urlsplit(url).hostname or ""
    if not (url.startswith("https://") or (url.startswith("http://") and loopback(host))):
        raise errors.GraphbuildError(
            f"{url!r}: the webhook sends its secret with every push: give an https URL"
        )
    acr_admin.check_webhook(name, scope)
    secret = events.secret(secret_env)
    what = f"pushes of {scope}" if scope else "every push"
    missed: list[tuple[str, errors.CommandFailed]] = []
    with acr_admin.client(config.azure) as manager:
        regions = acr_admin.regions(manager, config.azure)
        for region in regions:
            hook = acr_admin.webhook_name(name, region, regions[0])
            try:
                made = acr_admin.create_webhook(manager, config.azure, hook, url, secret, scope,
                                                region)  # fmt: skip
            except errors.CommandFailed as err:
                missed.append((region, err))
                continue
            print(f"Webhook {hook} ({region}) on {config.azure.registry} posts {what} "
                  f"to {url}: {made}")  # fmt: skip
    if missed:
        raise errors.CommandFailed(
            f"pushes landing in {', '.join(region for region, _ in missed)} notify nothing: "
            + "; ".join(str(err) for _, err in missed)
        )
    if len(regions) > 1:
        print(f"{config.azure.registry} has {len(regions)} replicas: one webhook in each")
    return errors.OK
