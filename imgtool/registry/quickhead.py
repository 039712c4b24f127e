"""One anonymous manifest HEAD over http.client: what a re-pull of an image already in the
store needs from the registry, without loading requests.

Why not the client (and requests): importing requests and urllib3 costs ~70-100 ms on this
machine (`python -X importtime`), more than the HEAD and all the store work of a re-pull
together; `skopeo inspect` answers in ~35 ms. The README's design section has the figures.

Only the simple, common case is answered here; anything else is None, and the caller asks
the full client, so that auth, retries, redirects, mirrors and proxies stay in one place:
- plain HTTP where the client would try it first (localhost or an insecure registry on an
  explicit port), HTTPS where HTTPS is the only scheme, with the client's TLS context (the
  system's trust store plus certs.d: `options.tls_context`);
- no proxy in the environment (requests would use it);
- an answer of 200 with a well-formed Docker-Content-Digest and a size within the manifest
  limit. A 401 (credentials needed), a redirect, a 404, a 405 or a connection error: None.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
from dataclasses import dataclass

from imgtool import mediatypes as mt
from imgtool.registry.options import (
    MAX_MANIFEST_BYTES,
    USER_AGENT,
    TransportOptions,
    schemes,
    tls_context,
)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")


@dataclass(frozen=True)
class HeadAnswer:
    digest: str
    media_type: str
    size: int


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
    timeout = min(options.timeout, 30.0)
    conn: http.client.HTTPConnection
    if scheme == "http":
        conn = http.client.HTTPConnection(host, timeout=timeout)
    else:
        context = tls_context(host, options)
        conn = http.client.HTTPSConnection(host, timeout=timeout, context=context)
    path = f"/v2/{repository}/manifests/{tag}"
    try:
        conn.request("HEAD", path, headers={"Accept": mt.MANIFEST_ACCEPT, "User-Agent": USER_AGENT})
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException):
        return None  # the client says why, with its retries
    finally:
        conn.close()
    _debug(f"HEAD {scheme}://{host}{path} {resp.status} (quick)")
    return _answer(resp)


def _answer(resp: http.client.HTTPResponse) -> HeadAnswer | None:
    digest = resp.getheader("Docker-Content-Digest") or ""
    length = resp.getheader("Content-Length") or ""
    if resp.status != 200 or not _DIGEST.fullmatch(digest) or not length.isdigit():
        return None
    if int(length) > MAX_MANIFEST_BYTES:
        return None  # the client refuses it with its error
    media_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
    return HeadAnswer(digest, media_type, int(length))


def _debug(message: str) -> None:
    """--debug's log, when it is on: logging is imported only then (it costs a re-pull ~5 ms
    otherwise)."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger("imgtool.registry").debug(message)
