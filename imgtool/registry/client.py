"""A client of the distribution API v2 (the OCI distribution spec) for one registry host.

It owns the transport: scheme choice (HTTPS; plain HTTP only for localhost or an insecure
registry), persistent connections per registry (plain HTTP over `plainhttp`, without
loading requests; HTTPS, proxies and token servers over requests), the system's trust store
plus CA and client certificates from certs.d, auth (bearer tokens per scope, refreshed on
401; Basic), retries with backoff on 429/5xx/resets honouring Retry-After, redirects that
never carry the Authorization header to another host, resumable blob downloads (HTTP
Range), and size limits on what is read into memory (manifests, configs).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from urllib.parse import urlencode, urljoin, urlsplit

from imgtool import mediatypes as mt
from imgtool.digest import Digest
from imgtool.errors import (
    AuthError,
    DigestMismatch,
    NotFound,
    RegistryError,
    RegistryUnavailable,
    SizeMismatch,
    SpecError,
    TooManyRequests,
)
from imgtool.registry.auth import Challenge, TokenCache, merge_scopes, parse_challenges
from imgtool.registry.failures import root_cause as _root_cause
from imgtool.registry.failures import speaks_plain_http as _speaks_plain_http
from imgtool.registry.options import (  # re-exported: the names callers have always used
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    USER_AGENT,
    TransportOptions,
)
from imgtool.registry.options import schemes as _schemes_for
from imgtool.registry.plainhttp import PlainSession, RefusedRequest, TransportError, body_length
from imgtool.values import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from typing import Any, BinaryIO, Protocol

    import requests

    from imgtool.registry.credentials import Credentials

    class BlobSink(Protocol):
        @property
        def offset(self) -> int: ...  # bytes it holds (a resumed download asks from there)

        def write(self, data: bytes) -> None: ...

        def restart(self) -> None: ...

    class _Body(Protocol):
        def read(self, amt: int | None = ..., decode_content: bool = ...) -> bytes: ...

    class Response(Protocol):
        """What the client reads of an answer: requests' Response, or plainhttp's."""

        status_code: int
        url: str

        @property
        def reason(self) -> str | None: ...

        @property
        def headers(self) -> Mapping[str, str]: ...

        @property
        def raw(self) -> _Body: ...

        def iter_content(self, chunk_size: int) -> Iterator[bytes]: ...

        def json(self) -> Any: ...

        def close(self) -> None: ...


RETRY_STATUSES = (429, 500, 502, 503, 504)
REDIRECTS = (301, 302, 303, 307, 308)
# A blob's body is handed on up to this much at a time: few Python round trips per byte
# (hashing releases the GIL above 2 KiB). plainhttp hands on what has arrived, so a cut
# download keeps all of it; requests waits for the whole chunk, so up to this much is lost.
CHUNK = 1 << 20
DISCARD_LIMIT = 64 << 10  # error and redirect bodies up to this are read to keep the connection


class ManifestInfo(Value):
    __slots__ = ("digest", "media_type", "size", "raw")
    digest: str
    media_type: str
    size: int
    raw: bytes

    def __init__(self, digest: str, media_type: str, size: int, raw: bytes = b"") -> None:
        self._init(digest, media_type, size, raw)


_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def _plain(url: str) -> bool:
    """Sent over plainhttp: plain HTTP that requests would not send through a proxy."""
    return url.startswith("http://") and not any(os.environ.get(v) for v in _PROXY_VARIABLES)


def _errors(requests_class: str) -> tuple[type[Exception], ...]:
    """plainhttp's error, and requests' `requests_class` once requests is loaded (none of
    requests' errors can be raised before)."""
    loaded = sys.modules.get("requests")
    if loaded is None:
        return (TransportError,)
    return (TransportError, getattr(loaded.exceptions, requests_class))


def _transport_errors() -> tuple[type[Exception], ...]:
    """What a request raises when it got no (whole) answer."""
    return _errors("RequestException")


def _connection_errors() -> tuple[type[Exception], ...]:
    return _errors("ConnectionError")


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading a body raises when the connection fails under it."""
    loaded = sys.modules.get("urllib3")
    return (OSError,) if loaded is None else (OSError, loaded.exceptions.HTTPError)


def _tls_failed(e: BaseException) -> bool:
    loaded = sys.modules.get("requests")
    return loaded is not None and isinstance(e, loaded.exceptions.SSLError)


def _redact(url: str) -> str:
    """Drop query strings: upload URLs and redirect targets carry signatures and state."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _is_registry_answer(resp: Response) -> bool:
    """What a registry answers on /v2/: OK, a challenge, or its API version header."""
    return resp.status_code in (200, 401) or "Docker-Distribution-API-Version" in resp.headers


def _registry_codes(resp: Response) -> tuple[tuple[str, ...], str]:
    try:
        errors = resp.json().get("errors") or []
        codes = tuple(str(e.get("code", "")) for e in errors)
        message = "; ".join(str(e.get("message", "")) for e in errors if e.get("message"))
        return codes, message
    except (ValueError, AttributeError, TypeError, RecursionError):
        return (), ""


def _retry_after(resp: Response, default: float, cap: float) -> float:
    value = resp.headers.get("Retry-After")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # rare: an HTTP date instead of seconds

        parsed = email.utils.parsedate_to_datetime(value)
        seconds = parsed.timestamp() - time.time() if parsed else default
    return max(0.0, min(seconds, cap))


class RegistryClient:
    """Talks to one registry host. Thread-safe: layers are fetched from several threads."""

    def __init__(self, host: str, options: TransportOptions | None = None) -> None:
        self.host = host
        self.options = options or TransportOptions()
        self.plain = PlainSession(USER_AGENT)
        self._session: requests.Session | None = None
        self.verify = not self.options.insecure
        self.base_url = ""
        self.challenge: Challenge | None = None
        self.tokens = TokenCache()
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self._lock = threading.Lock()

    # --- transports --------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """requests' session, for HTTPS, proxies and token servers: loaded on first use."""
        with self._lock:
            if self._session is None:
                from imgtool.registry.httpsession import make_session

                self._session = make_session(self.host, self.options)
            return self._session

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | BinaryIO | None,
        stream: bool,
        redirects: bool = False,
    ) -> Response:
        """One request, no retries: over plainhttp where it can go (see `_plain`), else
        requests. `redirects`: followed (requests does; a plain answer that redirects is
        asked again through requests)."""
        if _plain(url):
            resp = self.plain.request(
                method, url, headers=headers, data=data, stream=stream, timeout=self.options.timeout
            )
            if not (redirects and resp.status_code in REDIRECTS):
                return resp
            _discard(resp)
        return self.session.request(
            method,
            url,
            headers=headers,
            data=data,
            stream=stream,
            allow_redirects=redirects,
            verify=self.verify,
            timeout=self.options.timeout,
        )

    # --- credentials and ping --------------------------------------------------------------

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._creds_loaded:
                if self.options.credentials is not None:
                    self._creds = self.options.credentials
                elif not self.options.anonymous:
                    # the auth files: read only once a registry asks who is there
                    from imgtool.registry.credentials import lookup

                    self._creds = lookup(self.host)
                self._creds_loaded = True
            return self._creds

    def _schemes(self) -> list[str]:
        return _schemes_for(self.host, self.options.insecure)

    def ping(self) -> None:
        """GET /v2/: pick the scheme and learn the auth challenge. Fails fast when nobody
        answers: a registry that is down should say so at once, not after retries."""
        if self.base_url:
            return
        schemes = self._schemes()
        last: Exception | None = None
        not_a_registry: tuple[str, Response] | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                resp = self._ping_with_retries(url)
            except _transport_errors() as e:
                if not _tls_failed(e) or ("http" in schemes and _speaks_plain_http(e)):
                    last = e
                    continue
                raise RegistryUnavailable(
                    f"TLS with {self.host} failed: {_root_cause(e)} (trust its CA in "
                    f"certs.d/{self.host}/ca.crt or the system's store, or use --insecure)",
                    method="GET",
                    url=url,
                ) from None
            if scheme != schemes[-1] and not _is_registry_answer(resp):
                not_a_registry = (url, resp)  # a TLS port refusing plain HTTP, most likely
                continue
            return self._use(scheme, url, resp)
        if not_a_registry is not None:
            url, resp = not_a_registry
            return self._use(urlsplit(url).scheme, url, resp)
        raise RegistryUnavailable(
            f"cannot reach registry {self.host}: {_root_cause(last)}",
            method="GET",
            url=f"https://{self.host}/v2/",
        )

    def _use(self, scheme: str, url: str, resp: Response) -> None:
        """Take the ping's answer: the challenge, or why this is no registry."""
        if resp.status_code == 401:
            self.challenge = _pick_challenge(resp)
        elif resp.status_code in RETRY_STATUSES:
            raise self._error("GET", url, resp)
        elif resp.status_code >= 400:
            codes, msg = _registry_codes(resp)
            raise RegistryError(
                f"{self.host} does not serve the registry API: GET /v2/ gave "
                f"{resp.status_code}{' ' + msg if msg else ''}",
                method="GET",
                url=url,
                status=resp.status_code,
                codes=codes,
            )
        if scheme == "https" and self.options.insecure and self.options.notice:
            self.options.notice(f"the TLS certificate of {self.host} is not verified (insecure)")
        self.base_url = f"{scheme}://{self.host}"

    def _first_without_ping(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        query: dict[str, str] | None,
        stream: bool,
    ) -> Response | None:
        """The first request to a registry asked for plain HTTP first (localhost or insecure,
        on an explicit port), sent without the ping: when the registry answers it as one,
        anonymously, it is the answer and `/v2/` is never asked (a re-pull is one HEAD, as
        skopeo's). Anything else (a challenge, no answer, not a registry) is discarded and
        the ping decides as always."""
        if self.base_url or "://" in path or method not in ("GET", "HEAD"):
            return None
        if self._schemes()[0] != "http":
            return None
        if self.challenge is not None or self.options.credentials is not None:
            return None
        url = f"http://{self.host}{path}"
        if query:
            url += "?" + urlencode(query)
        try:
            resp = self._follow(method, url, dict(headers or {}), None, stream)
        except _transport_errors():
            return None
        if resp.status_code in (200, 404) and "Docker-Distribution-API-Version" in resp.headers:
            self.base_url = f"http://{self.host}"
            return resp
        _discard(resp)
        return None

    def _ping_with_retries(self, url: str) -> Response:
        """A first connection error is raised at once (nobody there: try the next scheme);
        429 and 5xx are retried as any request. Once this scheme has answered, a connection
        error on a retry is transient and retried on it: falling through to the other
        scheme would report that scheme's failure (WRONG_VERSION_NUMBER) instead."""
        delay = self.options.backoff
        answered = False
        for attempt in range(self.options.retries + 1):
            try:
                resp = self._exchange("GET", url, {}, None, False, redirects=True)
            except _connection_errors() as e:
                last_try = attempt == self.options.retries
                if not answered or last_try or _tls_failed(e):
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            answered = True
            if resp.status_code not in RETRY_STATUSES or attempt == self.options.retries:
                return resp
            time.sleep(_retry_after(resp, delay, self.options.max_retry_after))
            delay *= 2
        raise AssertionError("unreachable")

    # --- authorization -----------------------------------------------------------------------

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        ch = self.challenge
        if ch is None:
            return None
        creds = self.credentials
        if ch.scheme == "basic":
            return creds.basic_header() if creds else None
        if ch.scheme != "bearer" or not ch.realm:
            return None
        token = self.tokens.get(ch.realm, ch.service, scopes)
        if token is None:
            token, ttl = self._fetch_token(ch, scopes, creds)
            self.tokens.put(ch.realm, ch.service, scopes, token, ttl)
        return f"Bearer {token}"

    def _fetch_token(
        self, ch: Challenge, scopes: tuple[str, ...], creds: Credentials | None
    ) -> tuple[str, float]:
        params: list[tuple[str, str]] = []
        if ch.service:
            params.append(("service", ch.service))
        params += [("scope", s) for s in scopes]
        headers: dict[str, str] = {}
        if creds and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": ch.service,
                "scope": " ".join(scopes),
                "client_id": "imgtool",
            }
            resp = self._token_request("POST", ch.realm, data=form)
        else:
            if creds:
                params.append(("account", creds.username))
                headers["Authorization"] = creds.basic_header()
            resp = self._token_request("GET", ch.realm, params=params, headers=headers)
        if resp.status_code in (401, 403):
            if creds:
                raise AuthError(
                    f"{self.host}: authentication failed for user {creds.username!r} "
                    f"(wrong username or password?)",
                    method="GET",
                    url=ch.realm,
                    status=resp.status_code,
                )
            raise AuthError(
                f"{self.host}: the registry wants credentials (imgtool login {self.host})",
                method="GET",
                url=ch.realm,
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"{self.host}: token server {_redact(ch.realm)} answered {resp.status_code}",
                method="GET",
                url=ch.realm,
                status=resp.status_code,
            )
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
            ttl = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError):
            token, ttl = None, 0
        if not token:
            raise RegistryError(f"{self.host}: token server {_redact(ch.realm)} sent no token")
        return str(token), ttl

    def _token_request(self, method: str, url: str, **kw: Any) -> requests.Response:
        session = self.session  # forms and query lists: requests' own encoding
        try:
            return session.request(
                method, url, verify=self.verify, timeout=self.options.timeout, **kw
            )
        except _transport_errors() as e:
            raise RegistryUnavailable(
                f"cannot reach the token server {_redact(url)}: {_root_cause(e)}",
                method=method,
                url=url,
            ) from None

    # --- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        scopes: Iterable[str],
        *,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], BinaryIO] | None = None,
        stream: bool = False,
        query: dict[str, str] | None = None,
    ) -> Response:
        """Send with auth, retries and redirects; `path` is relative to the host or absolute
        (upload locations). Raises a RegistryError unless the status is in `ok`."""
        first = self._first_without_ping(method, path, headers, query, stream)
        if first is not None:  # a public plain-HTTP registry: the one round trip asked for
            if first.status_code not in ok:
                raise self._error(method, first.url, first)
            return first
        self.ping()
        url = path if "://" in path else self.base_url + path
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        wanted = merge_scopes(tuple(scopes))
        resp: Response | None = None
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._authorization(wanted)
            if auth:
                hdrs["Authorization"] = auth
            resp = self._send(method, url, hdrs, body, stream)
            if resp.status_code != 401 or attempt == 1:
                break
            # the token expired, or the registry wants more scopes than we asked for
            ch = _pick_challenge(resp)
            if ch is None:
                break
            if self.challenge and self.challenge.scheme == "bearer":
                self.tokens.drop(self.challenge.realm, self.challenge.service, wanted)
            self.challenge = ch
            wanted = merge_scopes(wanted + ch.scopes)
            _discard(resp)
        assert resp is not None
        if resp.status_code not in ok:
            raise self._error(method, url, resp)
        return resp

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Callable[[], BinaryIO] | None,
        stream: bool,
    ) -> Response:
        """One logical request: retried on resets, 429 and 5xx; redirects followed by hand so
        that credentials never travel to another host."""
        # Not urllib3.Retry: it re-sends the same body object, and an upload's stream,
        # consumed by the first try, must be reopened from its callable on each retry and
        # on each 307/308 (which _follow handles by hand for the same reason).
        opts = self.options
        delay = opts.backoff
        for attempt in range(opts.retries + 1):
            last_try = attempt == opts.retries
            try:
                resp = self._follow(method, url, headers, body, stream)
            except _transport_errors() as e:
                if last_try or _tls_failed(e) or isinstance(e, RefusedRequest):
                    raise RegistryUnavailable(
                        f"{method} {_redact(url)} failed: {_root_cause(e)}",
                        method=method,
                        url=_redact(url),
                    ) from None
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status_code in RETRY_STATUSES and not last_try:
                wait = _retry_after(resp, delay, opts.max_retry_after)
                _discard(resp)
                time.sleep(wait)
                delay *= 2
                continue
            return resp
        raise AssertionError("unreachable")

    def _follow(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Callable[[], BinaryIO] | None,
        stream: bool,
    ) -> Response:
        origin = urlsplit(url)[:2]  # scheme and host: https to http must not carry them either
        hdrs = dict(headers)
        for _ in range(10):
            data = body() if callable(body) else body
            try:
                resp = self._exchange(method, url, hdrs, data, stream)
            finally:
                if callable(body) and data is not None:
                    data.close()  # type: ignore[union-attr]
            if resp.status_code not in REDIRECTS or "Location" not in resp.headers:
                return resp
            _discard(resp)
            try:
                url = urljoin(url, resp.headers["Location"])
            except ValueError:  # "http://[::1/": the server's text, no URL
                raise RegistryError(
                    f"{method} {_redact(url)}: redirected to a malformed URL",
                    method=method,
                    url=_redact(url),
                ) from None
            if urlsplit(url)[:2] != origin:
                hdrs.pop("Authorization", None)
            if resp.status_code == 303:
                method, body = "GET", None
        raise RegistryError(f"{method} {_redact(url)}: too many redirects", method=method, url=url)

    def _error(self, method: str, url: str, resp: Response) -> RegistryError:
        codes, message = _registry_codes(resp)
        status = resp.status_code
        where = f"{method} {_redact(url)}"
        detail = message or resp.reason or ""
        kw: dict[str, Any] = {
            "method": method,
            "url": _redact(url),
            "status": status,
            "codes": codes,
        }
        resp.close()
        if status == 401:
            reason, named = self._refusal(method, url, resp)
            return AuthError(f"{self.host}: unauthorized: {reason}", repository=named, **kw)
        if status == 403:
            return AuthError(
                f"{self.host}: access denied to {urlsplit(url).path} ({detail})",
                repository=_repository_of(url),
                **kw,
            )
        if status == 404:
            return NotFound(f"{where}: {status} {detail}".rstrip(), **kw)
        if status == 429:
            limits = ", ".join(
                f"{h.lower()}={resp.headers[h]}"
                for h in ("RateLimit-Limit", "RateLimit-Remaining", "Retry-After")
                if h in resp.headers
            )
            return TooManyRequests(
                f"{self.host} is rate limiting this client (429 Too Many Requests"
                f"{'; ' + limits if limits else ''}); wait, log in, or pull through a mirror",
                **kw,
            )
        return RegistryError(f"{where}: {status} {detail}".rstrip(), **kw)

    def _refusal(self, method: str, url: str, resp: Response) -> tuple[str, str]:
        """Why a 401 stands after a fresh token: the token lacks an action on a repository
        (insufficient_scope), or the credentials themselves were refused; and the repository
        the reason names, if it names one."""
        who = self.credentials
        user = who.username if who and who.username else ""
        login = f"log in first (imgtool login {self.host})"
        ch = _pick_challenge(resp)
        if ch is not None and ch.error == "insufficient_scope":
            holder = f"the token for user {user!r}" if user else "the anonymous token"
            repo = _repository_of(url) or " ".join(ch.scopes)
            reason = f"{holder} lacks {_action_of(method)} access to repository {repo}"
            return f"{reason} (insufficient_scope){'' if user else '; ' + login}", repo
        return (f"user {user!r} was refused" if user else login), ""

    # --- manifests -----------------------------------------------------------------------------

    def head_manifest(self, repository: str, ref: str) -> ManifestInfo | None:
        """The digest and type of a manifest, or None when the registry does not say: HEAD
        without Docker-Content-Digest, or no HEAD at all (405, 501). The caller GETs then."""
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{ref}",
            [f"repository:{repository}:pull"],
            ok=(200, 405, 501),
            headers={"Accept": mt.MANIFEST_ACCEPT},
        )
        if resp.status_code != 200:
            return None
        size = _declared_length(resp)
        if size > MAX_MANIFEST_BYTES:
            raise _too_big(f"manifest {repository}:{ref}", self.host, size, MAX_MANIFEST_BYTES)
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest:
            return None
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestInfo(digest, media_type, size)

    def get_manifest(self, repository: str, ref: str) -> ManifestInfo:
        what = f"manifest {repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"
        resp = self.request(
            "GET",
            f"/v2/{repository}/manifests/{ref}",
            [f"repository:{repository}:pull"],
            headers={"Accept": mt.MANIFEST_ACCEPT},
            stream=True,
        )
        raw = self._read_limited(resp, MAX_MANIFEST_BYTES, what)
        actual = str(Digest.of(raw))
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != actual:
            raise DigestMismatch(what, header, actual, len(raw))
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestInfo(actual, media_type, len(raw), raw)

    def get_config(self, repository: str, digest: str) -> bytes:
        """A config blob into memory, verified, refused past the config size limit."""
        what = f"config {digest}"
        resp = self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            [f"repository:{repository}:pull"],
            stream=True,
        )
        raw = self._read_limited(resp, MAX_CONFIG_BYTES, what)
        actual = str(Digest.of(raw))
        if actual != digest:
            raise DigestMismatch(what, digest, actual, len(raw))
        return raw

    def _read_limited(self, resp: Response, limit: int, what: str) -> bytes:
        """The body of a streamed response, refused once it passes `limit` bytes: never more
        than limit+1 of them are read (a registry could send gigabytes)."""
        try:
            declared = _declared_length(resp)
            if declared > limit:
                raise _too_big(what, self.host, declared, limit)
            data = resp.raw.read(limit + 1, decode_content=True)
            if len(data) < declared:  # the connection ended first
                raise ConnectionError(f"{len(data)} of {declared} bytes came")
        except _read_errors() as e:
            raise RegistryUnavailable(
                f"reading {what} from {self.host} failed: {_root_cause(e)}",
                method="GET",
                url=_redact(resp.url),
            ) from None
        finally:
            resp.close()  # after a whole body the connection is already back in the pool
        if len(data) > limit:
            raise _too_big(what, self.host, None, limit)
        return data

    def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{ref}",
            [f"repository:{repository}:pull,push"],
            ok=(200, 201, 202),
            headers={"Content-Type": media_type},
            body=raw,
        )
        actual = str(Digest.of(raw))
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != actual:
            raise DigestMismatch(f"pushed manifest {repository}:{ref}", actual, header)
        return actual

    # --- blobs ---------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            [f"repository:{repository}:pull"],
            ok=(200, 404),
        )
        return resp.status_code == 200

    def download_blob(
        self,
        repository: str,
        digest: str,
        sink: BlobSink,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into `sink`, resuming with Range after a dropped connection (and
        from whatever an earlier, interrupted run left in the sink)."""
        path = f"/v2/{repository}/blobs/{digest}"
        scopes = [f"repository:{repository}:pull"]
        failures = 0
        while True:
            headers = {"Range": f"bytes={sink.offset}-"} if sink.offset else {}
            resp = self.request(
                "GET", path, scopes, ok=(200, 206, 416), headers=headers, stream=True
            )
            if resp.status_code == 416:  # the partial is complete or bogus: start over
                _discard(resp)
                sink.restart()
                continue
            if resp.status_code == 200 and sink.offset:
                sink.restart()  # the server ignored Range
            try:
                for chunk in resp.iter_content(CHUNK):
                    sink.write(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                return
            except _transport_errors() + _read_errors() as e:
                failures += 1
                if failures > self.options.retries:
                    raise RegistryUnavailable(
                        f"download of {digest} from {self.host} kept failing: {_root_cause(e)}",
                        method="GET",
                        url=self.base_url + path,
                    ) from None
                time.sleep(self.options.backoff * failures)
            finally:
                resp.close()

    def mount_blob(self, repository: str, digest: str, source: str) -> str | None:
        """Cross-repository mount. None when mounted; else the upload location to use."""
        resp = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            [f"repository:{repository}:pull,push", f"repository:{source}:pull"],
            ok=(201, 202),
            query={"mount": digest, "from": source},
        )
        if resp.status_code == 201:
            return None
        return self._location(resp)

    def _location(self, resp: Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.host}: upload answer has no Location header")
        return urljoin(resp.url, loc)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        opener: Callable[[], BinaryIO],
        location: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Monolithic PUT for small blobs, PATCH chunks then PUT for large ones."""
        scopes = [f"repository:{repository}:pull,push"]
        if location is None:
            resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", scopes, ok=(202,))
            location = self._location(resp)
        chunk = self.options.chunk_size
        if size <= chunk:

            def whole() -> BinaryIO:
                f = opener()
                try:
                    held = body_length(f)
                except ValueError:  # no size to check: plainhttp still sends no more than `size`
                    return f
                if held != size:  # a hostile layout's file: longer would smuggle a request
                    f.close()
                    raise SizeMismatch(f"blob {digest}", size, held)
                return f

            self.request(
                "PUT",
                location,
                scopes,
                ok=(201,),
                body=whole,
                query={"digest": digest},
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            if on_bytes:
                on_bytes(size)
            return
        with opener() as f:
            start = 0
            while start < size:
                data = f.read(min(chunk, size - start))
                if not data:  # the source is shorter than its descriptor says
                    raise SizeMismatch(f"blob {digest}", size, start)
                end = start + len(data) - 1
                resp = self.request(
                    "PATCH",
                    location,
                    scopes,
                    ok=(202,),
                    body=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{start}-{end}",
                        "Content-Length": str(len(data)),
                    },
                )
                location = self._location(resp)
                start += len(data)
                if on_bytes:
                    on_bytes(len(data))
        self.request("PUT", location, scopes, ok=(201,), body=b"", query={"digest": digest})


def _pick_challenge(resp: Response) -> Challenge | None:
    challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


def _discard(resp: Response) -> None:
    """Done with a response nobody reads (a retry, a redirect, a 416): a short body is read
    to its end, so that its connection goes back to the pool for the next request instead of
    being closed with it; a long one is dropped, connection and all."""
    try:
        resp.raw.read(DISCARD_LIMIT + 1, decode_content=False)
    except _read_errors() + (AttributeError,):
        pass  # the connection is closed below, as it would have been
    resp.close()


def _declared_length(resp: Response) -> int:
    try:
        return max(0, int(resp.headers.get("Content-Length") or 0))
    except ValueError:
        return 0


def _too_big(what: str, host: str, size: int | None, limit: int) -> SpecError:
    told = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return SpecError(f"{what} from {host} is {told}, over the {limit >> 20} MiB limit")


def _action_of(method: str) -> str:
    """The scope action a request needs (distribution's token auth)."""
    if method in ("GET", "HEAD"):
        return "pull"
    return "delete" if method == "DELETE" else "push"


def _repository_of(url: str) -> str:
    """The repository a distribution API URL is about, or '' for /v2/ itself."""
    path = urlsplit(url).path
    if not path.startswith("/v2/"):
        return ""
    parts = path[len("/v2/") :].split("/")
    for i, part in enumerate(parts):
        if i and part in ("blobs", "manifests", "tags"):
            return "/".join(parts[:i])
    return ""


class ClientPool:
    """One client per host, so that pings, tokens and connections are shared."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._clients: dict[tuple[str, bool], RegistryClient] = {}

    def get(self, host: str, insecure: bool = False) -> RegistryClient:
        key = (host, insecure)
        if key not in self._clients:
            opts = self.options
            if insecure and not opts.insecure:
                opts = opts.replace(insecure=True)
            self._clients[key] = RegistryClient(host, opts)
        return self._clients[key]
