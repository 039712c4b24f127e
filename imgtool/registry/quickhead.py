"""One anonymous manifest HEAD, written by hand over a socket: what a re-pull of an image
already in the store needs from the registry, without loading requests or http.client.

Why not the client (and requests): importing requests and urllib3 costs ~70-100 ms on this
machine (`python -X importtime`), more than the HEAD and all the store work of a re-pull
together; `skopeo inspect` answers in ~20 ms. The client's plain-HTTP transport (`plainhttp`)
is lighter, but its pool and threading are more than one HEAD needs; ssl (~9 ms) is imported
only for HTTPS. The request is one HEAD and the answer a status line and three headers, read
as plainhttp reads them (`http1`). The README's design section has the figures.

Only the simple, common case is answered here; anything else is None, and the caller asks
the full client, so that auth, retries, redirects, mirrors and proxies stay in one place:
- plain HTTP where the client would try it first (localhost or an insecure registry on an
  explicit port), HTTPS where HTTPS is the only scheme, with the client's TLS context (the
  system's trust store plus certs.d: `options.tls_context`);
- no proxy in the environment (requests would use it);
- an answer of 200 with a well-formed Docker-Content-Digest and a size within the manifest
  limit, its head within 64 KiB. A 401 (credentials needed), a redirect, a 404, a 405, a
  malformed answer or a connection error: None.
"""

from __future__ import annotations

import os
import re
import sys
import time

from imgtool import mediatypes as mt
from imgtool.registry.http1 import Malformed, connect, decimal, parse_head
from imgtool.registry.options import (
    MAX_MANIFEST_BYTES,
    USER_AGENT,
    TransportOptions,
    has_port,
    host_of,
    schemes,
    tls_context,
)
from imgtool.values import Frozen

_DIGEST = r"sha256:[0-9a-f]{64}"
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
MAX_HEAD_BYTES = 64 << 10  # the status line and headers of the answer
_DEFAULT_PORTS = {"http": 80, "https": 443}

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Protocol

    class _Receiver(Protocol):
        def recv(self, size: int, /) -> bytes: ...
        def settimeout(self, value: float | None, /) -> None: ...


class HeadAnswer(Frozen):
    __slots__ = ("digest", "media_type", "size")
    digest: str
    media_type: str
    size: int

    def __init__(self, digest: str, media_type: str, size: int) -> None:
        self._init(digest, media_type, size)


def scheme_for(host: str, options: TransportOptions) -> str | None:
    """The scheme the client would try first, where it would try only that one first
    without a TLS context of its own making; None where the full client should decide."""
    if _proxied():
        return None
    order = schemes(host, options.insecure)
    # https then http (unverified TLS with its notice) is the client's job
    return None if order == ["https", "http"] else order[0]


def _proxied() -> bool:
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS)


def head_manifest(
    host: str, repository: str, tag: str, options: TransportOptions
) -> HeadAnswer | None:
    """The manifest's digest, type and size, or None (see the module's docstring)."""
    scheme = scheme_for(host, options)
    if scheme is None:
        return None
    name, port = _address(host, scheme)
    if name is None:
        return None
    path = f"/v2/{repository}/manifests/{tag}"
    request = (
        f"HEAD {path} HTTP/1.1\r\n"
        f"Host: {host if port != _DEFAULT_PORTS[scheme] else host_of(host)}\r\n"
        f"Accept: {mt.MANIFEST_ACCEPT}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n\r\n"
    )
    # one deadline for the whole exchange: a per-read timeout lets a registry that trickles a
    # byte at a time hold a re-pull for days
    deadline = time.monotonic() + min(options.timeout, 30.0)
    try:
        if scheme == "http":
            head = _exchange_plain(name, port, request.encode(), deadline)
        else:
            head = _exchange_tls(host, name, port, request.encode(), deadline, options)
    except OSError:
        return None  # the client says why, with its retries (ssl.SSLError is an OSError)
    status, headers = _parse(head)
    _debug(f"HEAD {scheme}://{host}{path} {status} (quick)")
    return _answer(status, headers)


def _address(host: str, scheme: str) -> tuple[bytes | None, int]:
    """The host name (for getaddrinfo, ASCII: references allow no other) and the port."""
    name, port = host, _DEFAULT_PORTS[scheme]
    if has_port(host):
        name, _, digits = host.rpartition(":")
        if not decimal(digits) or not 0 < int(digits) < 65536:
            return None, 0
        port = int(digits)
    try:
        return name.strip("[]").encode("ascii"), port
    except UnicodeEncodeError:
        return None, 0


def _left(deadline: float) -> float:
    """Seconds left before `deadline`; TimeoutError (an OSError) when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the registry did not answer in time")
    return left


def _exchange_plain(name: bytes, port: int, request: bytes, deadline: float) -> bytes:
    sock = connect(name, port, _left(deadline))
    try:
        sock.settimeout(_left(deadline))
        sock.sendall(request)
        return _read_head(sock, deadline)
    finally:
        sock.close()


def _exchange_tls(
    host: str, name: bytes, port: int, request: bytes, deadline: float, options: TransportOptions
) -> bytes:
    import socket  # ssl imports it anyway

    context = tls_context(host, options)
    raw = socket.create_connection((name.decode(), port), timeout=_left(deadline))
    with raw, context.wrap_socket(raw, server_hostname=host_of(host).strip("[]")) as sock:
        sock.settimeout(_left(deadline))
        sock.sendall(request)
        return _read_head(sock, deadline)


def _read_head(sock: _Receiver, deadline: float) -> bytes:
    """The answer up to its blank line (a HEAD's answer has no body), at most MAX_HEAD_BYTES,
    before `deadline`."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise OSError("the answer's head is too long")
        sock.settimeout(_left(deadline))
        chunk = sock.recv(MAX_HEAD_BYTES)
        if not chunk:
            raise OSError("the registry closed the connection mid-answer")
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _parse(head: bytes) -> tuple[int, Mapping[str, str]]:
    """The status code (0 when the head is malformed) and the headers, looked up in any case;
    a header given twice has its values joined by ", " (so two digests make none)."""
    try:
        _, code, _, headers = parse_head(head.decode("latin-1").split("\r\n"))
    except Malformed:
        return 0, {}
    return code, headers


def _answer(status: int, headers: Mapping[str, str]) -> HeadAnswer | None:
    digest = headers.get("docker-content-digest", "")
    length = headers.get("content-length", "")
    # 8 digits hold the manifest limit; int() refuses more than 4300 with a ValueError
    if status != 200 or not re.fullmatch(_DIGEST, digest) or not re.fullmatch("[0-9]{1,8}", length):
        return None
    if int(length) > MAX_MANIFEST_BYTES:
        return None  # the client refuses it with its error
    media_type = headers.get("content-type", "").split(";")[0].strip()
    return HeadAnswer(digest, media_type, int(length))


def _debug(message: str) -> None:
    """--debug's log, when it is on: logging is imported only then (it costs a re-pull ~5 ms
    otherwise)."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger("imgtool.registry").debug(message)
