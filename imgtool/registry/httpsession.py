"""requests' Session as the registry client uses it for HTTPS, proxies and token servers: the
registry's own TLS context (the system's trust store plus certs.d) instead of certifi's
bundle. Loaded only when a request needs it (plain HTTP goes over `plainhttp`)."""

from __future__ import annotations

import ssl
import threading
import warnings
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

from imgtool.registry.options import USER_AGENT, TransportOptions, tls_context


class _Transport(requests.adapters.HTTPAdapter):
    """requests' adapter with the registry's own TLS context instead of certifi's bundle. The
    context is made on the first HTTPS connection, so a plain-HTTP registry never pays for
    one, and it carries the CAs and the client certificate: nothing is loaded per connection."""

    def __init__(self, host: str, options: TransportOptions) -> None:
        self._host = host
        self._options = options
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()
        super().__init__(pool_connections=4, pool_maxsize=16)

    def context(self) -> ssl.SSLContext:
        with self._context_lock:
            if self._context is None:
                self._context = tls_context(self._host, self._options)
            return self._context

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:  # (host parameters, pool keyword arguments): TypedDicts of types-requests
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify)
        if host_params["scheme"] == "https":
            pool_kwargs = {"cert_reqs": pool_kwargs["cert_reqs"], "ssl_context": self.context()}
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # the context holds trust and client certificate; requests would add certifi's bundle
        https = url.lower().startswith("https")
        conn.cert_reqs = "CERT_REQUIRED" if https and verify else "CERT_NONE"
        conn.ca_certs = conn.ca_cert_dir = None


def make_session(host: str, options: TransportOptions) -> requests.Session:
    session = requests.Session()
    adapter = _Transport(host, options)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    if options.insecure:
        # urllib3 warns on every request; the client's notice says it once
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    return session
