"""A fault-injecting HTTP proxy in front of a real registry (plain HTTP upstream).

It forwards every request and can: corrupt blob bodies, answer 429 or 503 a number of times,
drop the connection part-way through a blob, throttle blobs, ask for Basic auth itself, and
redirect blob downloads to a second server on another host (127.0.0.2) that records whether
the Authorization header followed. Every request is recorded.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "te",
    "upgrade",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FaultProxy:
    upstream: str  # host:port of the real registry
    corrupt_blobs: bool = False
    status_faults: int = 0  # the next N requests get `fault_status`
    fault_status: int = 429
    fault_headers: dict[str, str] = field(default_factory=dict)
    drop_blobs_after: int | None = None  # bytes of a blob body sent before the connection drops
    drops: int = 0  # how many blob responses (longer than the cut) to drop
    blob_rate: int | None = None  # bytes per second for blob bodies
    basic_auth: tuple[str, str] | None = None
    redirect_blobs: bool = False
    seen: list[Seen] = field(default_factory=list)
    redirected: list[Seen] = field(default_factory=list)

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        class BlobHost(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.redirected.append(Seen("GET", self.path, dict(self.headers)))
                status, headers, body = proxy._upstream("GET", self.path, {}, b"")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.blobhost = ThreadingHTTPServer(("127.0.0.2", 0), BlobHost)
        self.blobhost_addr = f"127.0.0.2:{self.blobhost.server_address[1]}"
        for srv in (self.httpd, self.blobhost):
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for srv in (self.httpd, self.blobhost):
            srv.shutdown()
            srv.server_close()

    def _upstream(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        conn.close()
        return resp.status, out, data

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
        self.seen.append(Seen(h.command, h.path, dict(h.headers)))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if self.basic_auth and h.path.startswith("/v2/"):
            import base64

            want = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if h.headers.get("Authorization") != want:
                return self._reply(h, 401, [("WWW-Authenticate", 'Basic realm="proxy"')], b"")
        if self.status_faults > 0:
            self.status_faults -= 1
            return self._reply(
                h,
                self.fault_status,
                list(self.fault_headers.items()),
                b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
            )
        is_blob = h.command == "GET" and "/blobs/sha256:" in h.path
        if is_blob and self.redirect_blobs:
            path = urlsplit(h.path).path
            return self._reply(h, 307, [("Location", f"http://{self.blobhost_addr}{path}")], b"")
        headers.pop("Host", None)
        headers["Host"] = self.upstream
        status, out, data = self._upstream(h.command, h.path, headers, body)
        out = [(k, v.replace(f"http://{self.upstream}", f"http://{self.host}")) for k, v in out]
        if is_blob and status in (200, 206):
            if self.corrupt_blobs and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if (
                self.drops > 0
                and self.drop_blobs_after is not None
                and (len(data) > self.drop_blobs_after)
            ):
                self.drops -= 1
                return self._reply(h, status, out, data, cut=self.drop_blobs_after)
            if self.blob_rate:
                return self._reply(h, status, out, data, rate=self.blob_rate)
        self._reply(h, status, out, data, head=h.command == "HEAD")

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        cut: int | None = None,
        rate: int | None = None,
        head: bool = False,
    ) -> None:
        h.send_response(status)
        has_length = False
        for k, v in headers:
            if k.lower() == "content-length":
                has_length = True
                if head:
                    h.send_header(k, v)
                    continue
                v = str(len(body))
            h.send_header(k, v)
        if not has_length and not head:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            import socket

            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if rate:
            step = max(rate // 20, 1)
            for i in range(0, len(body), step):
                try:
                    h.wfile.write(body[i : i + step])
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(step / rate)
            return
        h.wfile.write(body)
