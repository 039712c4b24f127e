"""Plain-HTTP exchanges for the registry client over http.client, without requests.

Why: a plain-HTTP registry (localhost, or one named insecure) needs nothing that requests adds
over http.client (TLS, proxies, cookies, content decoding), and importing requests with
urllib3, charset_normalizer and idna costs more than a whole `copy` of a small image moves
(see docs/design.md, "the registry client's two transports", for the figures). HTTPS, a
proxied request and the token server stay with requests; the client decides per request
(`RegistryClient._session_for`). Auth, retries, redirects and error reports stay in the
client: this module only sends one request and hands back its answer.

What it keeps from requests: connections are pooled and reused (keep-alive), a pooled
connection the server has closed is not reused, a body is sent with its Content-Length, and a
body cut short is an error (`TransportError`), never a quiet EOF. A file body goes out with
sendfile(2): no copy through Python.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import select
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import urlsplit

SEND_BLOCK = 1 << 20  # what a body without a file descriptor is sent in
# An answer read whole (ping, upload and error answers, all well under a KiB from a registry)
# is refused past this: a hostile server could send an endless body.
MAX_WHOLE = 1 << 20
# what a reused connection fails with when the server closed it before answering
_STALE = (http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


class TransportError(ConnectionError):
    """No whole answer: refused, reset or timed out, or a body that ended early."""


class BodyLengthError(ValueError):
    """A request body that is not as long as its Content-Length says."""


class Headers(Mapping[str, str]):
    """A response's headers, looked up without regard to case (as requests' are)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            # a header sent more than once (WWW-Authenticate) is one, joined as urllib3 joins it
            first, before = self._items.get(name.lower(), (name, ""))
            self._items[name.lower()] = (first, f"{before}, {value}" if before else value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


class PlainResponse:
    """An answer, shaped as the part of requests.Response the client reads: a streamed body
    is read with `raw.read` or `iter_content`, then `close()` gives the connection back."""

    def __init__(
        self, session: PlainSession, conn: http.client.HTTPConnection, url: str, stream: bool
    ) -> None:
        self._session = session
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = conn.getresponse()
        self.url = url
        parts = urlsplit(url)
        self._shown = f"{parts.netloc}{parts.path}"  # no query: upload URLs carry state
        self.status_code = self._resp.status
        self.reason = self._resp.reason
        self.headers = Headers(self._resp.getheaders())
        self._body: io.BytesIO | None = None  # a body read whole (not streamed)
        if not stream:
            self._body = io.BytesIO(self._whole())
            self.close()

    @property
    def raw(self) -> PlainResponse:
        return self

    def read(self, amt: int | None = None, decode_content: bool = False) -> bytes:
        """Up to `amt` bytes (None: all that is left); fewer only where the body ends.
        `decode_content` is there for requests' sake: no encoding is ever asked for."""
        if self._body is not None:
            return self._body.read(amt)
        return self._take(lambda: self._resp.read(amt), amt)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body as it arrives, up to `chunk_size` at a time (one receive each): a
        download cut short has handed on all that came before the cut."""
        if self._body is not None:
            yield from iter(lambda: self.read(chunk_size), b"")
            return
        while data := self._take(lambda: self._resp.read1(chunk_size), chunk_size):
            yield data
        self._resp.read(0)  # read1 leaves a finished response open: done with it

    def _take(self, reader: Callable[[], bytes], amt: int | None) -> bytes:
        left = self._resp.length  # None: chunked, or delimited by the connection's end
        try:
            data = reader()
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(f"reading the answer from {self._shown} failed: {e!r}") from e
        if not data and left and amt != 0:
            raise TransportError(f"the answer from {self._shown} ended {left} bytes early")
        return data

    def _whole(self) -> bytes:
        """The rest of the body, refused past MAX_WHOLE; one cut short fails (`_take`)."""
        data = b""
        while len(data) <= MAX_WHOLE and (more := self.read(MAX_WHOLE + 1 - len(data))):
            data += more
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
        if self._resp.isclosed() and not self._resp.will_close:
            self._session.release(conn)
        else:
            conn.close()


class PlainSession:
    """Pooled http.client connections to one or more hosts, sending one request at a time
    per connection; thread-safe."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
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
        conn, reused = self._connection(parts.netloc, timeout)
        try:
            try:
                self._send(conn, method, target, headers, data)
                return PlainResponse(self, conn, url, stream)
            except _STALE:
                if not reused or not (data is None or isinstance(data, bytes)):
                    raise
                # A kept-alive connection the server had given up on (or left junk on, such
                # as a body after a HEAD answer) before any answer came: once more, afresh.
                conn.close()
                conn, _ = self._connection(parts.netloc, timeout, pooled=False)
                self._send(conn, method, target, headers, data)
                return PlainResponse(self, conn, url, stream)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(f"{method} {parts.netloc}{parts.path} failed: {e!r}") from e
        except BaseException:
            conn.close()
            raise

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(f"{conn.host}:{conn.port}", []).append(conn)

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _connection(
        self, netloc: str, timeout: float, pooled: bool = True
    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `netloc` the server has not closed, or a new one; and
        whether it was idle (reused)."""
        fresh = http.client.HTTPConnection(netloc, timeout=timeout)  # parses host and port
        key = f"{fresh.host}:{fresh.port}"
        while pooled:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if not _dropped(conn):
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        return fresh, False

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        data: bytes | BinaryIO | None,
    ) -> None:
        names = {k.lower(): v for k, v in headers.items()}
        declared = names.get("content-length")
        length = int(declared) if declared is not None else body_length(data)
        conn.putrequest(method, target, skip_accept_encoding=True)
        if "user-agent" not in names:
            conn.putheader("User-Agent", self.user_agent)
        for name, value in headers.items():
            conn.putheader(name, value)
        if declared is None and (data is not None or method in ("PUT", "POST")):
            conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if data is None or isinstance(data, bytes):
            sent = len(data or b"")
            if data and sent == length:
                conn.send(data)
        elif _has_fileno(data):
            assert conn.sock is not None  # endheaders() connected it
            # never past the length announced: what follows would be read as the next request
            sent = conn.sock.sendfile(data, offset=data.tell(), count=length) if length else 0
        else:
            sent = 0
            while sent < length and (block := data.read(min(SEND_BLOCK, length - sent))):
                conn.send(block)
                sent += len(block)
        if sent != length:
            where = target.split("?")[0]
            raise BodyLengthError(f"{method} {where}: a body of {sent} bytes, not {length}")


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


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (or sent
    what nobody asked for): either way it cannot carry the next request."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
