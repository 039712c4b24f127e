"""Why a request failed, told from the exception types in its chain, never from message text:
urllib3 and requests wrap the socket's or TLS layer's error, and only the innermost one says
what happened."""

from __future__ import annotations

import _socket  # the C module: the `socket` wrapper costs ~5 ms (selectors, enums)
import errno
import sys
from collections.abc import Iterator

# What OpenSSL reports when a TLS hello reaches a server speaking plain HTTP.
PLAIN_HTTP_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"}
)
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "Connection refused",
    errno.ECONNRESET: "Connection reset by peer",
    errno.EHOSTUNREACH: "No route to host",
    errno.ETIMEDOUT: "timed out",
}
_GAI_REASONS = {
    _socket.EAI_NONAME: "Name or service not known",
    _socket.EAI_AGAIN: "Temporary failure in name resolution",
}
_CHAIN_LIMIT = 32  # wrappers are a handful deep; a bound instead of trusting the chain


def causes(e: BaseException) -> Iterator[BaseException]:
    """The exception and every one it wraps, outermost first: __cause__, __context__,
    urllib3's .reason and requests' wrapped first argument. Iterative, cycle-safe."""
    pending: list[BaseException] = [e]
    seen: set[int] = set()
    while pending and len(seen) < _CHAIN_LIMIT:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        wrapped = current.args[0] if current.args else None
        for inner in (current.__cause__, current.__context__, reason, wrapped):
            if isinstance(inner, BaseException):
                pending.append(inner)


def speaks_plain_http(e: BaseException) -> bool:
    """True when a TLS handshake failed because the other end answered in plain HTTP."""
    ssl = sys.modules.get("ssl")  # not loaded: no TLS was tried (plain HTTP goes without)
    return ssl is not None and any(
        isinstance(c, ssl.SSLError) and c.reason in PLAIN_HTTP_TLS_REASONS for c in causes(e)
    )


def _reason_of(e: BaseException) -> str | None:
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, _socket.gaierror):
        return _GAI_REASONS.get(e.errno or 0, "name resolution failed")
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[e.errno]
    return None


def root_cause(e: BaseException | None) -> str:
    """The innermost reason, without urllib3's noise: 'Connection refused', 'timed out'."""
    if e is None:
        return "no answer"
    chain = list(causes(e))
    for cause in chain:
        reason = _reason_of(cause)
        if reason is not None:
            return reason
    # Asked last: urllib3's NewConnectionError subclasses its TimeoutError, so a refused
    # connection would otherwise read as a timeout.
    urllib3 = sys.modules.get("urllib3")  # loaded with requests; plain HTTP goes without
    if urllib3 is not None and any(isinstance(c, urllib3.exceptions.TimeoutError) for c in chain):
        return "timed out"
    innermost = chain[-1]
    text = str(innermost)
    return text.splitlines()[0][:200] if text else type(innermost).__name__
