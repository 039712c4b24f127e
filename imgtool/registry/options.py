"""What a registry connection is made of, without the HTTP library: the transport options,
the limits on what is read into memory, the TLS context (the system's trust store plus
certs.d), and which hosts may speak plain HTTP. Kept apart from `client` (and requests) so
that a re-pull's one HEAD (`quickhead`) can use the same trust rules without loading it.
"""

from __future__ import annotations

import os

from imgtool import __version__
from imgtool.errors import ConfigError
from imgtool.registry.config import LOCAL_HOSTS
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from pathlib import Path  # at run time only where TLS needs certs.d (~5 ms with urllib.parse)

    from imgtool.registry.credentials import Credentials

USER_AGENT = f"imgtool/{__version__}"
# containers/image's limits (internal/iolimits): a manifest or a config is read into memory
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20


class TransportOptions(Frozen):
    __slots__ = (
        "insecure",
        "cert_dir",
        "retries",
        "backoff",
        "max_retry_after",
        "timeout",
        "chunk_size",
        "credentials",
        "anonymous",
        "notice",
    )
    insecure: bool
    cert_dir: Path | None
    retries: int
    backoff: float
    max_retry_after: float
    timeout: float
    chunk_size: int
    credentials: Credentials | None
    anonymous: bool
    notice: Callable[[str], None] | None

    def __init__(
        self,
        insecure: bool = False,  # plain HTTP allowed and certificates not verified
        cert_dir: Path | None = None,  # replaces the certs.d lookup, as skopeo's --cert-dir
        retries: int = 4,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        timeout: float = 60.0,
        chunk_size: int = 32 << 20,  # blobs above this are uploaded in chunks of this size
        credentials: Credentials | None = None,  # overrides the auth files
        anonymous: bool = False,
        notice: Callable[[str], None] | None = None,  # told once per registry: unverified TLS
    ) -> None:
        self._init(
            insecure,
            cert_dir,
            retries,
            backoff,
            max_retry_after,
            timeout,
            chunk_size,
            credentials,
            anonymous,
            notice,
        )


def host_of(host: str) -> str:
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


def is_local(host: str) -> bool:
    return host_of(host) in LOCAL_HOSTS or host in LOCAL_HOSTS


def has_port(host: str) -> bool:
    return not host.endswith("]") and ":" in host.rsplit("]", 1)[-1]


def schemes(host: str, insecure: bool) -> list[str]:
    """The schemes to try, in order: HTTPS; plain HTTP too for localhost and insecure
    registries. On an explicit port, which speaks one or the other, plain is asked first: a
    TLS port refuses a plain request at once, and a plain registry then never needs a TLS
    context. (The client and the lean re-pull HEAD both follow this one rule.)"""
    if not (insecure or is_local(host)):
        return ["https"]
    if has_port(host):
        return ["http", "https"]
    return ["https", "http"]


def certs_dirs(host: str, cert_dir: Path | None) -> list[Path]:
    from pathlib import Path

    if cert_dir is not None:
        return [cert_dir]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    bases = [
        config_home / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    ]
    return [b / host for b in bases]


def _certs_d(host: str, cert_dir: Path | None) -> tuple[list[Path], tuple[str, str] | None]:
    """Extra CAs (*.crt) and a client certificate (*.cert with its *.key) for a host, from
    the first certs.d directory that has any (containers-certs.d(5))."""
    for d in certs_dirs(host, cert_dir):
        if not d.is_dir():
            continue
        cas = sorted(d.glob("*.crt"))
        client = None
        for cert in sorted(d.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.exists():
                client = (str(cert), str(key))
        if cas or client:
            return cas, client
    return [], None


def tls_context(host: str, opts: TransportOptions) -> ssl.SSLContext:
    """The TLS context for one registry: the operating system's trust store (OpenSSL's default
    paths, so SSL_CERT_FILE, SSL_CERT_DIR and what update-ca-certificates installed) plus the
    host's certs.d CAs, as skopeo and podman trust; no verification at all when insecure."""
    import ssl  # here: a plain-HTTP registry never needs it (~9 ms)

    cas, client = _certs_d(host, opts.cert_dir)
    if opts.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
        if _no_system_trust_store():
            _load_certifi(ctx)
    for ca in cas:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"{ca}: not a usable CA certificate ({_ssl_reason(e)})") from None
    if client:
        try:
            ctx.load_cert_chain(*client)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"{client[0]}: not a usable client certificate and key ({_ssl_reason(e)})"
            ) from None
    return ctx


def _ssl_reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e)


def _no_system_trust_store() -> bool:
    import ssl

    paths = ssl.get_default_verify_paths()  # None where the file or directory does not exist
    return paths.cafile is None and paths.capath is None


def _load_certifi(ctx: ssl.SSLContext) -> None:
    """A system without any CA store (a bare container) still reaches public registries."""
    try:
        import certifi  # requests' bundle: only where the system has none
    except ImportError:
        return
    ctx.load_verify_locations(cafile=certifi.where())
