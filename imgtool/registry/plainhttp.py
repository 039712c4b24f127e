"""Plain-HTTP exchanges for the registry client, over sockets: without requests, and without
http.client.

Why: a plain-HTTP registry (localhost, or one named insecure) needs nothing that requests adds
(TLS, proxies, cookies, content decoding), and importing requests with urllib3,
charset_normalizer and idna costs more than a whole `copy` of a small image moves (see
docs/design.md, "Start-up"). http.client is not needed either: it parses headers with the
email package and imports ssl, where the heads a registry sends are a status line and a few
headers (`http1`); without them a copy whose blobs are all there took 115 ms instead of 164
(benchmarks/startup.py, alternating, a loaded machine). HTTPS, a proxied request and the token
server stay with requests; the client decides per request (`client._plain`). Auth, retries,
redirects and error reports stay in the client: this module only sends one request and hands
back its answer.

What it keeps from requests and http.client: connections are pooled and reused (keep-alive),
a pooled connection the server has closed is not reused, a body is sent with its
Content-Length and never past it, a body cut short is an error (`TransportError`), never a
quiet EOF; an answer's body is framed by its Content-Length, by the chunked transfer coding or
by the connection's end; http.client's limits on a head (`http1`) and its refusal of control
characters in a request's target and headers (they would split the request). A file body
goes out with sendfile(2): no copy through Python.
"""

from __future__ import annotations

import _socket
import errno
import io
import json
import os
import select
import threading
from urllib.parse import urlsplit

from imgtool.registry.http1 import (
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    Malformed,
    NotAStatusLine,
    connect,
    decimal,
    parse_head,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any, BinaryIO

__all__ = [
    "BodyLengthError",
    "Headers",
    "PlainResponse",
    "PlainSession",
    "RefusedRequest",
    "TransportError",
]

SEND_BLOCK = 1 << 20  # what a body without a file descriptor is sent in
SMALL_BODY = 64 << 10  # a body up to this goes in one send with its head
# An answer read whole (ping, upload and error answers, all well under a KiB from a registry)
# is refused past this: a hostile server could send an endless body.
MAX_WHOLE = 1 << 20
HEAD_BLOCK = 64 << 10  # what a head is received in; the body's first bytes may come with it
MAX_CHUNK_DIGITS = 15  # hex digits of one chunk's size: under 2**60 bytes
MAX_CONTINUES = 8  # "100 Continue" answers skipped before the answer itself


class TransportError(ConnectionError):
    """No whole answer: refused, reset or timed out, or a body that ended early."""


class RefusedRequest(TransportError):
    """A request that would not be one request on the wire (see `_head`): never sent, and
    no use asking again."""


class BodyLengthError(ValueError):
    """A request body that is not as long as its Content-Length says."""


class _NoAnswer(TransportError):
    """No answer: the connection ended before a byte of it came, or what came first is no
    status line. On a kept-alive connection the server had closed it before the request
    (http.client's RemoteDisconnected), or had left bytes on it after an earlier answer
    (its BadStatusLine)."""


# what a reused connection fails with when the server closed it before answering
_STALE = (_NoAnswer, ConnectionResetError, BrokenPipeError)


def _sendfile(sock: _socket.socket, data: BinaryIO, count: int) -> int | None:
    """Up to `count` bytes of the file from its position with sendfile(2), waiting out a full
    send buffer within the socket's timeout, as socket.sendfile does: the bytes sent (the file
    left after them), or None when the file cannot be sent so (not a regular file)."""
    try:
        offset = data.tell()
    except OSError:  # a pipe has no position
        return None
    out = select.poll()
    out.register(sock.fileno(), select.POLLOUT)
    timeout = sock.gettimeout()
    wait = None if timeout is None else timeout * 1000
    sent = 0
    try:
        while sent < count:
            try:
                n = os.sendfile(sock.fileno(), data.fileno(), offset + sent, count - sent)
            except BlockingIOError:
                if not out.poll(wait):
                    raise TimeoutError("timed out") from None
                continue
            except OSError as e:
                if sent or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                return None
            if not n:
                break  # the file ended first
            sent += n
    finally:
        data.seek(offset + sent)
    return sent


def _send_blocks(sock: _socket.socket, data: BinaryIO, count: int) -> int:
    """Up to `count` bytes of a file-like body read and sent a block at a time; the bytes sent."""
    sent = 0
    while sent < count and (block := data.read(min(SEND_BLOCK, count - sent))):
        sock.sendall(block)
        sent += len(block)
    return sent


class _Connection:
    """A socket to one host and port, and what was received on it and not yet read."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.key = f"{host}:{port}"
        self.sock = connect(host.encode("ascii"), port, timeout)
        try:
            # a head and a small body go in separate sends: Nagle would hold the second
            self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.buffer = b""  # received: buffer[at:] not yet read (one slice per read, not a copy
        self.at = 0  # of all that is left: many small chunks would copy it each time)

    @property
    def pending(self) -> int:
        return len(self.buffer) - self.at

    def receive(self, size: int) -> bytes:
        """Up to `size` bytes: what is pending, else one receive (b"": the server closed)."""
        if self.pending:
            data = self.buffer[self.at : self.at + size]
            self.at += len(data)
            return data
        return self.sock.recv(size)

    def line(self, first: bool = False) -> str:
        """One line of a head, without its line end; at most MAX_LINE bytes. The connection
        ending before it is `_NoAnswer` for an answer's `first` line, else a TransportError."""
        start = self.at
        while (end := self.buffer.find(b"\n", start)) < 0:
            if self.pending > MAX_LINE:
                raise TransportError(f"a line of the answer is over {MAX_LINE} bytes")
            more = self.sock.recv(HEAD_BLOCK)
            if not more:
                if first and not self.pending:
                    raise _NoAnswer("the server closed the connection without an answer")
                raise TransportError("the connection closed in the middle of a line")
            start = self.pending
            self.buffer, self.at = self.buffer[self.at :] + more, 0
        if end - self.at > MAX_LINE:
            raise TransportError(f"a line of the answer is over {MAX_LINE} bytes")
        line, self.at = self.buffer[self.at : end], end + 1
        return line.removesuffix(b"\r").decode("latin-1")

    def head(self) -> list[str]:
        """The lines of an answer's head, up to its blank line."""
        lines = [self.line(first=True)]
        while line := self.line():
            if len(lines) > MAX_HEADERS:
                raise TransportError(f"the answer has more than {MAX_HEADERS} header lines")
            lines.append(line)
        return lines

    def dropped(self) -> bool:
        """An idle connection with something to read has been closed by the server (or sent
        what nobody asked for): either way it cannot carry the next request."""
        if self.pending:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.sock.close()


class PlainResponse:
    """An answer, shaped as the part of requests.Response the client reads: a streamed body
    is read with `raw.read` or `iter_content`, then `close()` gives the connection back."""

    def __init__(
        self, session: PlainSession, conn: _Connection, method: str, url: str, stream: bool
    ) -> None:
        self._session = session
        self._conn: _Connection | None = conn
        self.url = url
        parts = urlsplit(url)
        self._shown = f"{parts.netloc}{parts.path}"  # no query: upload URLs carry state
        version, self.status_code, self.reason, self.headers = self._read_head(conn)
        self._left: int | None = None  # Content-Length left; None: chunked or to the end
        self._chunked = False
        self._chunk_left = 0
        self._after_chunk = False  # a chunk's data was read, its line end not yet
        self._done = False
        self._will_close = version == "HTTP/1.0" or "close" in _tokens(
            self.headers.get("Connection", "")
        )
        self._frame(method)
        self._body: io.BytesIO | None = None  # a body read whole (not streamed)
        if not stream:
            self._body = io.BytesIO(self._whole())
            self.close()

    def _read_head(self, conn: _Connection) -> tuple[str, int, str, Headers]:
        for _ in range(MAX_CONTINUES + 1):
            try:
                version, code, reason, headers = parse_head(conn.head())
            except NotAStatusLine as e:
                raise _NoAnswer(f"no answer from {self._shown}: {e}") from None
            except Malformed as e:
                raise TransportError(f"the answer from {self._shown} is not HTTP: {e}") from None
            if code >= 200:
                return version, code, reason, headers
            if code == 101:  # nobody asked to switch: what follows is no HTTP/1.1 answer
                raise TransportError(f"{self._shown} answered {code} {reason}".rstrip())
        raise TransportError(f"{self._shown} answered only interim (1xx) answers")

    def _frame(self, method: str) -> None:
        """Where the body ends: RFC 9112 section 6.3, as http.client reads it, and stricter
        where a hostile server could make two answers of one (or one of two)."""
        coding = self.headers.get("Transfer-Encoding")
        length = self.headers.get("Content-Length")
        if method == "HEAD" or self.status_code in (204, 304) or self.status_code < 200:
            self._left, self._done = 0, True
        elif coding is not None:
            if coding.strip().lower() != "chunked":
                raise TransportError(f"{self._shown} sent a body coded {coding!r}")
            self._chunked = True
            self._will_close |= length is not None  # both: a smuggling attempt, or a broken proxy
        elif length is not None:
            if not (decimal(length) and len(length) <= 18):
                raise TransportError(f"{self._shown} sent Content-Length {length[:40]!r}")
            self._left = int(length)
            self._done = self._left == 0
        else:
            self._will_close = True  # the body ends with the connection

    @property
    def raw(self) -> PlainResponse:
        return self

    def read(self, amt: int | None = None, decode_content: bool = False) -> bytes:
        """Up to `amt` bytes (None: all that is left); fewer only where the body ends.
        `decode_content` is there for requests' sake: no encoding is ever asked for."""
        if self._body is not None:
            return self._body.read(amt)
        if amt is None:
            return b"".join(iter(lambda: self._read1(SEND_BLOCK), b""))
        got = bytearray()  # not a list: a million one-byte chunks would take 100 MiB
        while len(got) < amt and (data := self._read1(amt - len(got))):
            got += data
        return bytes(got)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body as it arrives, up to `chunk_size` at a time (one receive each): a
        download cut short has handed on all that came before the cut."""
        if self._body is not None:
            yield from iter(lambda: self.read(chunk_size), b"")
            return
        while data := self._read1(chunk_size):
            yield data

    def _read1(self, amt: int) -> bytes:
        """Up to `amt` bytes of the body, one receive at most; b"" at its end."""
        if self._done or amt <= 0:
            return b""
        try:
            if self._chunked:
                return self._read_chunked(amt)
            return self._read_plain(amt)
        except TransportError:
            raise
        except OSError as e:
            raise TransportError(f"reading the answer from {self._shown} failed: {e!r}") from e

    def _read_plain(self, amt: int) -> bytes:
        assert self._conn is not None
        left = self._left
        data = self._conn.receive(amt if left is None else min(amt, left))
        if left is None:
            self._done = not data
            return data
        if not data:
            raise TransportError(f"the answer from {self._shown} ended {left} bytes early")
        self._left = left - len(data)
        self._done = self._left == 0
        return data

    def _read_chunked(self, amt: int) -> bytes:
        assert self._conn is not None
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:  # the last chunk: trailers, then the blank line
                for _ in range(MAX_HEADERS + 1):
                    if not self._conn.line():
                        self._done = True
                        return b""
                raise TransportError(f"{self._shown} sent more than {MAX_HEADERS} trailers")
        data = self._conn.receive(min(amt, self._chunk_left))
        if not data:
            raise TransportError(f"the answer from {self._shown} ended in the middle of a chunk")
        self._chunk_left -= len(data)
        self._after_chunk = self._chunk_left == 0
        return data

    def _next_chunk_size(self) -> int:
        assert self._conn is not None
        if self._after_chunk and self._conn.line():
            raise TransportError(f"{self._shown} sent a chunk longer than its size")
        self._after_chunk = False
        size = self._conn.line().partition(";")[0].strip()  # extensions are ignored
        if not size or len(size) > MAX_CHUNK_DIGITS or size.strip("0123456789abcdefABCDEF"):
            raise TransportError(f"{self._shown} sent a chunk size of {size[:40]!r}")
        return int(size, 16)

    def _whole(self) -> bytes:
        """The rest of the body, refused past MAX_WHOLE; one cut short fails (`_read1`)."""
        data = self.read(MAX_WHOLE + 1)
        if len(data) > MAX_WHOLE:
            raise TransportError(f"the answer from {self._shown} is over {MAX_WHOLE} bytes")
        return data

    def json(self) -> Any:
        """The body as JSON: ValueError when it is not, or is too long to be an answer."""
        try:
            return json.loads(self._whole())
        except TransportError as e:
            raise ValueError(str(e)) from None

    def close(self) -> None:
        """Back to the pool when the whole body was read and the server keeps the
        connection open; closed otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and not self._will_close:
            self._session.release(conn)
        else:
            conn.close()


class PlainSession:
    """Pooled connections to one or more hosts, sending one request at a time per
    connection; thread-safe."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self._idle: dict[str, list[_Connection]] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        data: bytes | BinaryIO | None,
        stream: bool,
        timeout: float,
    ) -> PlainResponse:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"not a plain-HTTP URL: {url}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn: _Connection | None = None
        try:
            host, port = _address(parts.netloc)
            head, length = self._head(method, target, parts.netloc, headers, data)
            conn, reused = self._connection(host, port, timeout)
            try:
                self._send(conn, method, target, head, length, data)
                return PlainResponse(self, conn, method, url, stream)
            except _STALE:
                if not reused or not (data is None or isinstance(data, bytes)):
                    raise
                # A kept-alive connection the server had given up on (or left junk on, such
                # as a body after a HEAD answer) before any answer came: once more, afresh.
                conn.close()
                conn, _ = self._connection(host, port, timeout, pooled=False)
                self._send(conn, method, target, head, length, data)
                return PlainResponse(self, conn, method, url, stream)
        except RefusedRequest:
            raise
        except OSError as e:
            if conn is not None:
                conn.close()
            raise TransportError(f"{method} {parts.netloc}{parts.path} failed: {e!r}") from e
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def release(self, conn: _Connection) -> None:
        with self._lock:
            self._idle.setdefault(conn.key, []).append(conn)

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _connection(
        self, host: str, port: int, timeout: float, pooled: bool = True
    ) -> tuple[_Connection, bool]:
        """An idle connection to host:port the server has not closed, or a new one; and
        whether it was idle (reused)."""
        while pooled:
            with self._lock:
                idle = self._idle.get(f"{host}:{port}")
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if not conn.dropped():
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        return _Connection(host, port, timeout), False

    def _head(
        self,
        method: str,
        target: str,
        netloc: str,
        headers: Mapping[str, str],
        data: bytes | BinaryIO | None,
    ) -> tuple[bytes, int]:
        """The request line and headers, and the body's length. Checked as http.client checks
        them: a control character or blank in the target, or a line end in a header, would
        split the request in two (a redirect's Location or a token is the server's text)."""
        if not method.isalpha() or not _printable(target) or " " in target:
            raise RefusedRequest(f"refused to send {method} {target[:80]!r}: control characters")
        names = {k.lower(): v for k, v in headers.items()}
        declared = names.get("content-length")
        length = int(declared) if declared is not None else body_length(data)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
        if "user-agent" not in names:
            lines.append(f"User-Agent: {self.user_agent}")
        for name, value in headers.items():
            if not name.isascii() or not name.replace("-", "").isalnum() or not _printable(value):
                raise RefusedRequest(f"refused to send header {name[:40]!r}: not a header")
            lines.append(f"{name}: {value}")
        if declared is None and (data is not None or method in ("PUT", "POST")):
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii"), length

    def _send(
        self,
        conn: _Connection,
        method: str,
        target: str,
        head: bytes,
        length: int,
        data: bytes | BinaryIO | None,
    ) -> None:
        if data is None or isinstance(data, bytes):
            sent = len(data or b"")
            if data and sent == length and sent <= SMALL_BODY:
                conn.sock.sendall(head + data)  # one packet
            else:
                conn.sock.sendall(head)
                if data and sent == length:
                    conn.sock.sendall(data)  # not joined: a copy of a chunk of megabytes
        else:
            conn.sock.sendall(head)
            # never past the length announced: what follows would be read as the next request
            by_file = _sendfile(conn.sock, data, length) if _has_fileno(data) else None
            sent = _send_blocks(conn.sock, data, length) if by_file is None else by_file
        if sent != length:
            where = target.split("?")[0]
            raise BodyLengthError(f"{method} {where}: a body of {sent} bytes, not {length}")


def _address(netloc: str) -> tuple[str, int]:
    """Host and port of a URL's netloc; a user name or a bad port is refused."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port or 80
    except ValueError:
        raise RefusedRequest(f"bad port in {netloc!r}") from None
    if not parts.hostname or "@" in netloc or " " in netloc or not _printable(netloc):
        raise RefusedRequest(f"not a host to connect to: {netloc!r}")
    return parts.hostname, port


def _printable(text: str) -> bool:
    """ASCII without control characters (a CR or LF would end the line)."""
    return text.isascii() and text.isprintable()


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def _has_fileno(data: BinaryIO) -> bool:
    try:
        data.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True


def body_length(data: bytes | BinaryIO | None) -> int:
    """What is left to send: as requests' super_len, from len() or the file's size."""
    if data is None:
        return 0
    if isinstance(data, bytes):
        return len(data)
    if hasattr(data, "__len__"):
        return len(data)
    if _has_fileno(data):
        return max(0, os.fstat(data.fileno()).st_size - data.tell())
    raise ValueError("a request body of unknown length")
