"""Azure's clouds: where Entra ID signs in, the audience ACR's Entra ID tokens are for, and
where Azure Resource Manager answers.

A registry in Azure China (`*.azurecr.cn`) or Azure US Government (`*.azurecr.us`) takes
only tokens from its own cloud's Entra ID, for its own cloud's audience; the Azure SDKs
keep these per cloud (azure-identity's AzureAuthorityHosts, the ACR clients' audiences).
docs/azure.md says where each value was checked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str  # as `azure.cloud` names it
    suffix: str  # of its registries' login servers
    authority: str  # Entra ID's host, as azure-identity's AzureAuthorityHosts has it
    acr_audience: str  # what an Entra ID token for ACR's /oauth2/exchange is issued for
    arm: str  # Azure Resource Manager

    @property
    def acr_scope(self) -> str:
        return f"{self.acr_audience}/.default"


PUBLIC = Cloud(
    "public",
    ".azurecr.io",
    "login.microsoftonline.com",
    "https://containerregistry.azure.net",
    "https://management.azure.com",
)
CHINA = Cloud(
    "china",
    ".azurecr.cn",
    "login.chinacloudapi.cn",
    "https://containerregistry.azure.cn",
    "https://management.chinacloudapi.cn",
)
US_GOVERNMENT = Cloud(
    "usgovernment",
    ".azurecr.us",
    "login.microsoftonline.us",
    "https://containerregistry.azure.us",
    "https://management.usgovcloudapi.net",
)
CLOUDS = {cloud.name: cloud for cloud in (PUBLIC, CHINA, US_GOVERNMENT)}
SUFFIXES = tuple(cloud.suffix for cloud in CLOUDS.values())


def of(host: str) -> Cloud | None:
    """The cloud a login server's name says; None for one that says none (a custom domain,
    loopback)."""
    name = host.lower().split(":", 1)[0].rstrip(".")
    return next((cloud for cloud in CLOUDS.values() if name.endswith(cloud.suffix)), None)
