"""A small token server for the registry's `auth.token`: checks Basic credentials and grants
scopes by a policy, signing RS256 JWTs that the registry trusts. It records every request."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.support import pki

SERVICE = "imgtool-test-registry"
ISSUER = "imgtool-test-issuer"


@dataclass
class TokenRequest:
    account: str | None
    scopes: list[str]
    authorized: bool


@dataclass
class TokenServer:
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    public_prefix: str = "public/"  # anonymous users may pull these
    expired_tokens: int = 0  # the next N tokens are issued already expired (re-auth tests)
    requests: list[TokenRequest] = field(default_factory=list)

    def start(self) -> TokenServer:
        self.key, cert = pki.make_ca("imgtool token signer")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.workdir / "token.crt"
        self.cert_path.write_bytes(pki.cert_pem(cert))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _user(self, handler: BaseHTTPRequestHandler) -> tuple[str | None, bool]:
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None, True
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return user, self.users.get(user) == password

    def _grant(self, user: str | None, scope: str) -> dict | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository":
            return None
        wanted = [a for a in actions.split(",") if a]
        allowed = (
            wanted
            if user
            else [a for a in wanted if a == "pull" and name.startswith(self.public_prefix)]
        )
        return {"type": kind, "name": name, "actions": allowed}

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        query = parse_qsl(urlsplit(h.path).query)
        scopes = [v for k, v in query if k == "scope"]
        user, ok = self._user(h)
        self.requests.append(TokenRequest(user, scopes, ok))
        if not ok:
            h.send_response(401)
            h.send_header("Content-Type", "application/json")
            h.end_headers()
            h.wfile.write(b'{"details":"incorrect username or password"}')
            return
        now = int(time.time())
        exp = now + 300
        if self.expired_tokens > 0:
            self.expired_tokens -= 1
            exp = now - 3600  # well past the registry's leeway
        access = [g for s in scopes if (g := self._grant(user, s)) is not None]
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": exp,
            "nbf": now - 3600 * 2,
            "iat": now - 3600 * 2,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        body = json.dumps(
            {
                "token": pki.sign_jwt(self.key, claims),
                "expires_in": 300,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
