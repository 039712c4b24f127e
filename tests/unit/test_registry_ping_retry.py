"""A registry that answered plain HTTP keeps being asked over plain HTTP after a transient
connection error (the flaky rate-limit fault tests: a 429, then one reset connection)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from imgtool.registry.client import RegistryClient
from imgtool.registry.options import TransportOptions

TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
REGISTRY_OK = (
    b"HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\n"
    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
)


def _serve(listener: socket.socket, answers: list[bytes | None]) -> None:
    """One answer per connection, in order; None resets the connection unanswered."""
    for answer in answers:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            if answer is None:
                # SO_LINGER 0: close sends RST, the client sees a reset connection
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                continue
            conn.sendall(answer)


@pytest.fixture
def flaky_registry() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answers: list[bytes | None] = [TOO_MANY, None, REGISTRY_OK, REGISTRY_OK]
    thread = threading.Thread(target=_serve, args=(listener, answers), daemon=True)
    thread.start()
    yield f"127.0.0.1:{port}"
    listener.close()


def test_reset_after_429_retries_plain_http(flaky_registry: str) -> None:
    client = RegistryClient(flaky_registry, TransportOptions(retries=3, backoff=0.01))
    client.ping()
    assert client.base_url == f"http://{flaky_registry}"
