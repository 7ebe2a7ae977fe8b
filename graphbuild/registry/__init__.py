"""OCI distribution client: resolve tags to digests on any registry, with auth and limits."""

from graphbuild.registry.client import (
    DENIED,
    ERROR,
    MISSING,
    RATE_LIMITED,
    UNREACHABLE,
    Failure,
    Registry,
    Resolved,
)

__all__ = [
    "DENIED", "ERROR", "MISSING", "RATE_LIMITED", "UNREACHABLE", "Failure", "Registry", "Resolved",
]  # fmt: skip
