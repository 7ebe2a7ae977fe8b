"""graphbuild's optional parts: the Azure SDK is the extra `graphbuild[azure]`.

`pip install graphbuild` brings everything but Azure (16 of 41 packages, half the
size, were Azure's). A feature that needs the SDK asks for it before any work
starts, so a missing extra is one line naming it and exit 2, not an ImportError
in the middle of a run.
"""

from __future__ import annotations

import importlib.util

from graphbuild.errors import GraphbuildError

AZURE = "pip install 'graphbuild[azure]'"
_AZURE_MODULES = ("azure.core", "azure.identity", "azure.mgmt.containerregistry")


def require_azure(feature: str) -> None:
    """Raise bad input naming `feature` and the extra when the Azure SDK is not installed.
    Finds the modules without importing them: the SDK costs its time only when used."""
    try:
        missing = any(importlib.util.find_spec(name) is None for name in _AZURE_MODULES)
    except ImportError:  # `azure` itself is missing
        missing = True
    if missing:
        raise GraphbuildError(f"{feature} needs the Azure SDK, an optional part: {AZURE}")
