"""Talking to registries: configuration, credentials, auth and the distribution API client."""

from imgtool.registry.client import ClientPool, RegistryClient, TransportOptions

__all__ = ["ClientPool", "RegistryClient", "TransportOptions"]
