"""The re-pull's hand-written HEAD (registry/quickhead.py) against a server on 127.0.0.1 that
answers exactly the bytes given: a well-formed answer is read, anything else is None (the full
client then asks, and says why)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from imgtool.registry import quickhead
from imgtool.registry.options import TransportOptions

DIGEST = "sha256:" + "ab" * 32
OK = (
    "HTTP/1.1 200 OK\r\n"
    f"Docker-Content-Digest: {DIGEST}\r\n"
    "Content-Type: application/vnd.oci.image.manifest.v1+json; charset=utf-8\r\n"
    "Content-Length: 1234\r\n\r\n"
).encode()


class Server:
    """Answers each connection with the next of `answers`; keeps what it was asked."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.answers: list[bytes] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                self.requests.append(data)
                conn.sendall(self.answers.pop(0))

    def head(self, answer: bytes) -> quickhead.HeadAnswer | None:
        self.answers.append(answer)
        return quickhead.head_manifest(self.host, "team/app", "1.0", TransportOptions())


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.sock.close()


def test_a_well_formed_answer(server: Server) -> None:
    got = server.head(OK)
    assert got == quickhead.HeadAnswer(DIGEST, "application/vnd.oci.image.manifest.v1+json", 1234)
    request = server.requests[-1].decode()
    assert request.startswith("HEAD /v2/team/app/manifests/1.0 HTTP/1.1\r\n")
    assert f"Host: {server.host}\r\n" in request
    assert "Accept: " in request and "User-Agent: imgtool/" in request


@pytest.mark.parametrize(
    "answer",
    [
        OK.replace(b"200 OK", b"401 Unauthorized"),
        OK.replace(b"HTTP/1.1", b"HTTX/1.1"),
        OK.replace(b"200", b"2\xb20"),  # "²" is a digit to str.isdigit()
        OK.replace(b"1234", b"12\xb2"),
        OK.replace(b"Content-Length: 1234\r\n", b""),
        OK.replace(b"Content-Length: 1234", b"Content-Length: 99999999"),  # over the limit
        OK.replace(b"\r\n\r\n", f"\r\nDocker-Content-Digest: sha256:{'cd' * 32}\r\n\r\n".encode()),
        OK[:40],  # the connection closed mid-answer
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * (quickhead.MAX_HEAD_BYTES + 10),  # a head without end
        OK.replace(b"1234", b"1" * 5000),  # int() refuses over 4300 digits: no traceback
        OK.replace(b"200 OK", b"2000 OK"),
        OK.replace(b"200 OK", b"200x"),
        OK.replace(b"HTTP/1.1", b"HTTP/1.999"),
        OK.replace(b"Docker-Content-Digest:", b"Docker-Content-Digest :"),
        OK.replace(b"\r\nContent-Type", b"\r\n Content-Type"),  # a folded line
    ],
)
def test_anything_else_is_none(server: Server, answer: bytes) -> None:
    assert server.head(answer) is None


class _Trickle:
    """A registry that sends one byte of its answer per read, each within the read timeout."""

    def __init__(self) -> None:
        self.left = OK

    def settimeout(self, value: float | None) -> None:
        assert value is not None and value > 0

    def recv(self, size: int) -> bytes:
        byte, self.left = self.left[:1], self.left[1:]
        return byte


def test_the_answer_has_one_deadline_not_one_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1000))  # one second passes per look at the clock
    monkeypatch.setattr(quickhead.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(TimeoutError):
        quickhead._read_head(_Trickle(), deadline=30.0)
