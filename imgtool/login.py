"""`login`: check credentials against a registry, then file them; `logout` forgets them."""

from __future__ import annotations

from imgtool import reference as refs
from imgtool.errors import AuthError, InvalidReference
from imgtool.registry import credentials
from imgtool.registry.client import RegistryClient, TransportOptions


def registry_host(text: str) -> str:
    """`https://host:5000/v2/`, `host:5000`, `docker.io` -> the host as credentials file it."""
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    host = text.split("/", 1)[0]
    if not host or not refs.ANCHORED_DOMAIN.fullmatch(host):
        raise InvalidReference(text, "expected a registry host such as localhost:5000")
    return refs.DEFAULT_DOMAIN if host in ("index.docker.io", refs.DOCKER_HUB_API_HOST) else host


def check(host: str, creds: credentials.Credentials, options: TransportOptions) -> None:
    """Ask the registry whether these credentials are good, as docker login does."""
    api_host = refs.DOCKER_HUB_API_HOST if host == refs.DEFAULT_DOMAIN else host
    client = RegistryClient(api_host, options.replace(credentials=creds))
    client.ping()
    ch = client.challenge
    if ch is None:
        return  # the registry asks for nothing: any credentials pass
    if ch.scheme == "bearer":
        client._fetch_token(ch, (), creds)  # raises AuthError on wrong credentials
        return
    resp = client.request("GET", "/v2/", [], ok=(200, 401))
    if resp.status_code == 401:
        raise AuthError(f"{host}: authentication failed for user {creds.username!r}")


def login(registry: str, username: str, password: str, options: TransportOptions) -> str:
    host = registry_host(registry)
    creds = credentials.Credentials(username, password)
    check(host, creds, options)
    return credentials.store(host, creds)


def logout(registry: str) -> bool:
    return credentials.erase(registry_host(registry))
