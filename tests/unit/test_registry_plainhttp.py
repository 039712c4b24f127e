"""The registry client's plain-HTTP transport (imgtool/registry/plainhttp.py), against small
socket servers that misbehave on purpose: connections reused and not, bodies cut short, junk
after a HEAD answer, file bodies sent whole. And a copy from and to a plain-HTTP registry loads
neither requests nor urllib3."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from imgtool.errors import NotFound, RegistryError, RegistryUnavailable, SizeMismatch
from imgtool.registry import plainhttp
from imgtool.registry.client import RegistryClient
from imgtool.registry.options import TransportOptions
from imgtool.registry.plainhttp import Headers, PlainResponse, PlainSession, TransportError
from tests.support.registry import Registry


class Cut(bytes):
    """An answer after which the server closes the connection (a body cut short)."""


Answer = Callable[[bytes], bytes | None]  # request head and body -> raw answer (None: close)


class Server:
    """Answers each request on each connection with the next answer of `answers`; counts the
    connections accepted and keeps what was asked."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while self.answers:
                request = _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                answer = self.answers.pop(0)(request)
                if answer is None:
                    return
                try:
                    conn.sendall(answer)
                    if isinstance(answer, Cut):
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                except OSError:
                    return  # the client went away first (it refused the answer)

    def close(self) -> None:
        self.listener.close()


def _read_request(reader: object) -> bytes | None:
    lines = []
    while True:
        line = reader.readline()  # type: ignore[attr-defined]
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    head = b"".join(lines)
    length = 0
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + reader.read(length)  # type: ignore[attr-defined]


def ok(body: bytes = b"{}", extra: bytes = b"") -> Answer:
    return lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
def serve() -> Iterator[Callable[[list[Answer]], Server]]:
    servers: list[Server] = []

    def start(answers: list[Answer]) -> Server:
        servers.append(Server(answers))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def get(
    session: PlainSession, server: Server, path: str = "/v2/", stream: bool = False
) -> PlainResponse:
    url = f"http://{server.host}{path}"
    return session.request("GET", url, headers={}, data=None, stream=stream, timeout=10)


def test_a_kept_alive_connection_is_reused(serve: Callable[[list[Answer]], Server]) -> None:
    server = serve([ok(b'{"a":1}'), ok(b'{"b":2}')])
    session = PlainSession("test")
    assert get(session, server).json() == {"a": 1}
    assert get(session, server).json() == {"b": 2}
    assert server.connections == 1


def test_headers_any_case_and_repeated_ones_joined() -> None:
    headers = Headers([("WWW-Authenticate", 'Bearer realm="a"'), ("www-authenticate", "Basic")])
    assert headers["www-authenticate"] == 'Bearer realm="a", Basic'
    assert "Www-Authenticate" in headers and "Location" not in headers
    assert list(headers) == ["WWW-Authenticate"]


def test_connection_close_is_honoured(serve: Callable[[list[Answer]], Server]) -> None:
    server = serve([ok(extra=b"Connection: close\r\n"), ok()])
    session = PlainSession("test")
    get(session, server)
    get(session, server)
    assert server.connections == 2


def test_a_body_cut_short_hands_on_what_came_then_fails(
    serve: Callable[[list[Answer]], Server],
) -> None:
    server = serve([lambda _: Cut(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)])
    resp = get(PlainSession("test"), server, "/v2/r/blobs/sha256:0", stream=True)
    got = []
    with pytest.raises(TransportError, match="60 bytes early"):
        for chunk in resp.iter_content(1 << 20):
            got.append(chunk)
    assert b"".join(got) == b"x" * 40


def test_a_body_read_whole_that_is_cut_short_fails(
    serve: Callable[[list[Answer]], Server],
) -> None:
    server = serve([lambda _: Cut(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)])
    with pytest.raises(TransportError):
        get(PlainSession("test"), server)


def test_junk_after_a_head_answer_does_not_spoil_the_next_request(
    serve: Callable[[list[Answer]], Server],
) -> None:
    """A server that sends a body after a HEAD answer (the 429 of the tests' fault proxy): the
    connection is given up and the next request is sent afresh, not answered with the junk."""
    junk = b'{"errors":[]}'

    def head_429(_: bytes) -> bytes:
        return b"HTTP/1.1 429 Too Many\r\nContent-Length: %d\r\n\r\n%s" % (len(junk), junk)

    server = serve([head_429, ok(b'{"fine":true}')])
    session = PlainSession("test")
    url = f"http://{server.host}/v2/r/manifests/latest"
    resp = session.request("HEAD", url, headers={}, data=None, stream=False, timeout=10)
    assert resp.status_code == 429
    assert get(session, server).json() == {"fine": True}


def test_junk_that_comes_after_the_idle_check_is_no_answer_and_asked_again(
    serve: Callable[[list[Answer]], Server],
) -> None:
    """The junk after a HEAD answer may arrive only once the connection was taken from the
    pool: then what comes first is no status line, and the request goes again on a new
    connection (as http.client's BadStatusLine did), never reads the junk as its answer."""
    head = b"HTTP/1.1 429 Too Many\r\nContent-Length: 13\r\n\r\n"
    late_junk = b'{"errors":[]}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}'
    server = serve([raw(head), raw(late_junk), ok(b'{"fine":true}')])
    session = PlainSession("test")
    url = f"http://{server.host}/v2/r/manifests/latest"
    resp = session.request("HEAD", url, headers={}, data=None, stream=False, timeout=10)
    assert resp.status_code == 429
    assert get(session, server).json() == {"fine": True}
    assert server.connections == 2


def test_a_file_body_goes_whole_with_its_length(
    serve: Callable[[list[Answer]], Server], tmp_path: Path
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 5000)
    server = serve([lambda _: b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    with open(blob, "rb") as f:
        f.seek(1000)  # what is left of it is the body
        resp = PlainSession("test").request(
            "PUT", f"http://{server.host}/up", headers={}, data=f, stream=False, timeout=10
        )
    assert resp.status_code == 201
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % (len(blob.read_bytes()) - 1000) in head
    assert body == blob.read_bytes()[1000:]


def put(session: PlainSession, host: str, body: BinaryIO, length: int) -> PlainResponse:
    """A PUT of a file body, `length` bytes of it by its Content-Length."""
    headers = {"Content-Length": str(length)}
    return session.request(
        "PUT", f"http://{host}/up", headers=headers, data=body, stream=False, timeout=10
    )


def test_a_file_longer_than_its_length_sends_only_the_length(
    serve: Callable[[list[Answer]], Server], tmp_path: Path
) -> None:
    """A hostile layout's blob file longer than its descriptor: what is past the length must
    not reach the connection, where the server would read it as the next request (with the
    user's credentials in the request imgtool sends after it)."""
    blob = tmp_path / "blob"
    blob.write_bytes(b"A" * 10 + b"DELETE /v2/x/manifests/y HTTP/1.1\r\nX-S: ")
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    server = serve([lambda _: created, ok()])
    session = PlainSession("test")
    with open(blob, "rb") as f:
        assert put(session, server.host, f, 10).status_code == 201
    assert get(session, server).status_code == 200
    assert [r.split(b" ", 1)[0] for r in server.requests] == [b"PUT", b"GET"]
    assert server.requests[0].endswith(b"\r\n\r\n" + b"A" * 10)
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    other = serve([lambda _: None])
    with open(short, "rb") as f, pytest.raises(ValueError, match="3 bytes, not 10"):
        put(PlainSession("test"), other.host, f, 10)


def test_a_file_body_waits_out_a_full_send_buffer(tmp_path: Path) -> None:
    """sendfile(2) on a socket with a timeout stops whenever the send buffer is full: the
    rest goes once the peer reads, and the file is left after what was sent."""
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * (16 << 10))  # 4 MiB: many times a socket buffer
    sender, receiver = socket.socketpair()
    got = bytearray()

    def read_all() -> None:
        while data := receiver.recv(1 << 16):
            got.extend(data)

    reader = threading.Thread(target=read_all)
    reader.start()
    with sender, receiver, open(blob, "rb") as f:
        sender.settimeout(30)
        f.seek(7)
        assert plainhttp._sendfile(sender, f, (4 << 20) - 8) == (4 << 20) - 8
        assert f.tell() == (4 << 20) - 1
        sender.shutdown(socket.SHUT_WR)
        reader.join()
    assert bytes(got) == blob.read_bytes()[7:-1]


def test_a_file_body_nobody_reads_times_out(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * (16 << 20))
    sender, receiver = socket.socketpair()
    with sender, receiver, open(blob, "rb") as f:
        sender.settimeout(0.2)
        with pytest.raises(TimeoutError):
            plainhttp._sendfile(sender, f, 16 << 20)


def test_a_body_from_a_pipe_is_sent_in_blocks(serve: Callable[[list[Answer]], Server]) -> None:
    """A file sendfile(2) cannot read (a pipe) is read and sent instead."""
    server = serve([lambda _: b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    r, w = os.pipe()
    os.write(w, b"through a pipe")
    os.close(w)
    with open(r, "rb") as f:
        assert put(PlainSession("test"), server.host, f, 14).status_code == 201
    assert server.requests[0].endswith(b"\r\n\r\nthrough a pipe")


def raw(answer: bytes) -> Answer:
    return lambda _: answer


def test_a_chunked_body_is_read_to_its_last_chunk_and_trailers(
    serve: Callable[[list[Answer]], Server],
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = serve([raw(chunked), raw(chunked), ok(b'{"next":1}')])
    session = PlainSession("test")
    assert get(session, server).read() == b"hello, world"
    resp = get(session, server, stream=True)
    assert b"".join(resp.iter_content(3)) == b"hello, world"
    resp.close()
    assert get(session, server).json() == {"next": 1}
    assert server.connections == 1  # the connection was kept: the whole body was read


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nx" % (b"f" * 16),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n Folded: line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: %s\r\n\r\n" % (b"a" * 70000),
        b"HTTP/1.1 200 OK\r\n%s\r\n" % (b"X: y\r\n" * 101),
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
    ids=[
        "chunk-size-not-hex",
        "chunk-longer-than-its-size",
        "chunk-size-too-long",
        "cut-in-a-chunk",
        "transfer-coding-not-chunked",
        "two-content-lengths",
        "negative-content-length",
        "folded-header",
        "header-line-over-64k",
        "over-100-headers",
        "not-http-1",
        "not-http",
    ],
)
def test_a_malformed_answer_is_a_transport_error(
    serve: Callable[[list[Answer]], Server], answer: bytes
) -> None:
    server = serve([raw(Cut(answer))])
    with pytest.raises(TransportError):
        get(PlainSession("test"), server)


def test_a_body_without_length_ends_with_the_connection(
    serve: Callable[[list[Answer]], Server],
) -> None:
    server = serve([raw(Cut(b'HTTP/1.0 200 OK\r\n\r\n{"to": "the end"}')), ok()])
    session = PlainSession("test")
    assert get(session, server).json() == {"to": "the end"}
    assert get(session, server).status_code == 200
    assert server.connections == 2


def test_continue_answers_are_skipped(serve: Callable[[list[Answer]], Server]) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    server = serve([raw(answer)])
    resp = get(PlainSession("test"), server)
    assert (resp.status_code, resp.json()) == (200, {})


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/v2/x HTTP/1.1\r\nX-Smuggled: 1\r\n\r\nGET /", {}),
        ("/v2/x\x00", {}),
        ("/v2/\u00e9", {}),
        ("/v2/x", {"Authorization": "Bearer t\r\nX-Smuggled: 1"}),
        ("/v2/x", {"Bad Name": "v"}),
    ],
)
def test_a_request_that_would_split_is_never_sent(
    serve: Callable[[list[Answer]], Server], url: str, headers: dict[str, str]
) -> None:
    """A redirect's Location or a token server's token is the server's text: a line end or
    a control character in it must not reach the connection."""
    server = serve([ok()])
    with pytest.raises(TransportError, match="refused to send"):
        PlainSession("test").request(
            "GET", f"http://{server.host}{url}", headers=headers, data=None, stream=False, timeout=5
        )
    assert server.requests == []


@pytest.mark.parametrize("netloc", ["user:pw@127.0.0.1:1", "127.0.0.1\x0b:1", "h\u00e9st:1"])
def test_a_host_that_is_no_host_is_refused(netloc: str) -> None:
    with pytest.raises(TransportError, match="not a host"):
        PlainSession("test").request(
            "GET", f"http://{netloc}/v2/", headers={}, data=None, stream=False, timeout=5
        )


def test_an_answer_read_whole_is_bounded(serve: Callable[[list[Answer]], Server]) -> None:
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 << 20) + b"x" * (4 << 20)
    server = serve([lambda _: Cut(huge)])
    with pytest.raises(TransportError):
        get(PlainSession("test"), server)


def test_a_refused_connection_reads_as_refused(serve: Callable[[list[Answer]], Server]) -> None:
    server = serve([])
    server.close()
    client = RegistryClient(server.host, TransportOptions(retries=0))
    with pytest.raises(RegistryUnavailable, match="Connection refused"):
        client.ping()


def modules_of_a_copy(registry: Registry, busybox: Path, out: Path, direction: str) -> set[str]:
    """sys.modules after `imgtool copy` of busybox from (pull) or to (push) the registry, as
    the console script runs it: the CLI's lean path."""
    if direction == "pull":
        argv = [f"docker://{registry.host}/library/busybox:latest", f"oci:{out}:latest"]
    else:
        argv = [f"oci:{busybox}:latest", f"docker://{registry.host}/plain/bb:1"]
    code = (
        "import json, sys\n"
        f"sys.argv = ['imgtool', 'copy', '-q', *{argv!r}]\n"
        "from imgtool.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_copy_over_plain_http_loads_no_requests(
    plain_registry: Registry, images: dict[str, Path], tmp_path: Path, direction: str
) -> None:
    """The point of plainhttp: a copy with a plain-HTTP registry never imports requests."""
    modules = modules_of_a_copy(plain_registry, images["busybox"], tmp_path / "out", direction)
    assert not modules & {"requests", "urllib3"}
    # nor http.client (with the email package) and ssl: plainhttp speaks HTTP/1.1 itself
    assert not modules & {"http.client", "email.parser", "ssl"}


# What a copy of a small image between a plain-HTTP registry and a layout has no use for, and
# what each would add to its start: dataclasses (with inspect, ast, dis, tokenize) ~10 ms and
# ~0.3 ms per class; typing ~4 ms; the socket wrapper ~5 ms (plainhttp uses _socket); the idna
# codec (unicodedata, stringprep) ~2 ms, which getaddrinfo loads for a host given as a str;
# gzip (compression) and queue (transports.pipe) ~1 ms each; the auth files' reader (with
# base64), which only a registry asking who is there needs.
NOT_ON_THE_COPY_PATH = {
    "typing",
    "inspect",
    "ast",
    "gzip",
    "imgtool.compression",
    "queue",
    "imgtool.transports.pipe",
    "base64",
    "imgtool.registry.credentials",
    "encodings.idna",
    "unicodedata",
    "socket",
    "dataclasses",
}


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_a_copy_loads_nothing_it_has_no_use_for(
    plain_registry: Registry, images: dict[str, Path], tmp_path: Path, direction: str
) -> None:
    modules = modules_of_a_copy(plain_registry, images["busybox"], tmp_path / "out", direction)
    assert not modules & NOT_ON_THE_COPY_PATH
    if (
        direction == "push"
    ):  # a push hashes no blob (the registry checks them), and manifests are small
        assert "hashlib" not in modules  # OpenSSL, ~4 ms


def test_an_upload_whose_source_runs_short_is_refused(plain_registry: Registry) -> None:
    """A chunked upload of a blob whose file is shorter than its descriptor (a hostile OCI
    layout) stops with the sizes, instead of sending empty chunks for ever."""
    client = RegistryClient(plain_registry.host, TransportOptions(chunk_size=16))
    with pytest.raises(SizeMismatch, match="expected 100 bytes, got 48"):
        client.upload_blob("short/blob", "sha256:" + "0" * 64, 100, lambda: io.BytesIO(b"x" * 48))


def test_https_and_proxied_requests_are_left_to_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgtool.registry import client

    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert client._plain("http://127.0.0.1:5000/v2/")
    assert not client._plain("https://127.0.0.1:5000/v2/")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert not client._plain("http://127.0.0.1:5000/v2/")


def test_every_interim_answer_is_skipped_not_taken_for_the_answer(
    serve: Callable[[list[Answer]], Server],
) -> None:
    """A 103 Early Hints (a CDN in front of a registry sends them) is no more the answer than
    a 100 is: taken for it, the real answer would wait on the pooled connection and be read
    as the answer to the next request."""
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    )
    server = serve([raw(answer), ok(b'{"next":1}')])
    session = PlainSession("test")
    resp = get(session, server)
    assert (resp.status_code, resp.json()) == (200, {})
    assert get(session, server).json() == {"next": 1}
    assert server.connections == 1


def test_a_switch_nobody_asked_for_is_a_transport_error(
    serve: Callable[[list[Answer]], Server],
) -> None:
    server = serve([raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")])
    with pytest.raises(TransportError, match="101"):
        get(PlainSession("test"), server)


API = b"Docker-Distribution-API-Version: registry/2.0\r\n"


def test_a_request_refused_before_sending_is_not_asked_again(
    serve: Callable[[list[Answer]], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line end in a header (a hostile token server's token) is refused on every try
    alike: asking again, with backoff, only delays the one-line error."""
    server = serve([ok(extra=API)])
    slept: list[float] = []
    monkeypatch.setattr("imgtool.registry.client.time.sleep", slept.append)
    client = RegistryClient(server.host, TransportOptions(retries=4))
    client.ping()
    with pytest.raises(RegistryUnavailable, match="refused to send header"):
        client.request("GET", "/v2/r/manifests/t", [], headers={"X-Token": "t\r\nX-Smuggled: 1"})
    assert slept == []


def test_an_error_body_nested_past_the_stack_is_still_one_error(
    serve: Callable[[list[Answer]], Server],
) -> None:
    nested = b"[" * 100_000
    not_found = b"HTTP/1.1 404 NF\r\nContent-Length: %d\r\n\r\n%s" % (len(nested), nested)
    server = serve([ok(extra=API), raw(not_found)])
    client = RegistryClient(server.host, TransportOptions(retries=0))
    client.ping()
    with pytest.raises(NotFound):
        client.request("GET", "/v2/r/blobs/sha256:0", [])


def test_a_redirect_to_no_url_is_a_registry_error(serve: Callable[[list[Answer]], Server]) -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://[::1/x\r\nContent-Length: 0\r\n\r\n"
    server = serve([ok(extra=API), raw(moved)])
    client = RegistryClient(server.host, TransportOptions(retries=0))
    client.ping()
    with pytest.raises(RegistryError, match="malformed URL"):
        client.request("GET", "/v2/r/manifests/t", [])
