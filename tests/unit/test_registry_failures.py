"""Request failures classified by exception type along the wrapped chain, not by text."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
import requests

from imgtool.registry.failures import root_cause, speaks_plain_http


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _plain_http_port() -> int:
    """A server answering one connection in plain HTTP, whatever it was sent."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    return int(listener.getsockname()[1])


def test_refused_connection_through_requests() -> None:
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{_closed_port()}/v2/", timeout=5)
    assert root_cause(info.value) == "Connection refused"
    assert not speaks_plain_http(info.value)


def test_tls_hello_to_plain_http_server() -> None:
    with pytest.raises(requests.exceptions.SSLError) as info:
        requests.get(f"https://127.0.0.1:{_plain_http_port()}/v2/", timeout=5)
    assert speaks_plain_http(info.value)


def test_message_text_alone_classifies_nothing() -> None:
    lookalike = RuntimeError("proxy said: wrong version number; Connection refused")
    assert not speaks_plain_http(lookalike)
    assert root_cause(lookalike) == "proxy said: wrong version number; Connection refused"


def test_chained_causes_by_type() -> None:
    def chained(inner: BaseException) -> BaseException:
        try:
            raise RuntimeError("wrapper") from inner
        except RuntimeError as outer:
            return outer

    assert root_cause(chained(ConnectionResetError(104, "x"))) == "Connection reset by peer"
    assert root_cause(chained(socket.gaierror(socket.EAI_NONAME, "x"))) == (
        "Name or service not known"
    )
    assert root_cause(chained(TimeoutError())) == "timed out"
    cert = ssl.SSLCertVerificationError(1, "x")
    cert.verify_message = "unable to get local issuer certificate"
    assert root_cause(chained(cert)) == (
        "certificate verify failed: unable to get local issuer certificate"
    )
    assert root_cause(None) == "no answer"


def test_a_cycle_in_the_chain_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert root_cause(a) == "b"
