"""Talking to registries: configuration, credentials, auth and the distribution API client.

The client (and requests with it) is imported only when asked for: commands that only read
registries.conf, such as resolving a short name for the store, stay quick to start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ClientPool", "RegistryClient", "TransportOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from imgtool.registry import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
