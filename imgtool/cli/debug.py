"""`--debug` (or IMGTOOL_DEBUG=1): what a bug report needs, on stderr.

HTTP exchanges come from urllib3's own DEBUG records (the connection, then the request line
and status of every exchange) and imgtool's loggers. Every record goes through a filter
that drops query strings (upload state, signatures, token requests' account and scope) and
anything that looks like a credential, so that a log can be pasted into an issue.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TextIO

LOGGERS = ("imgtool", "urllib3")

_QUERY = re.compile(r"(?<=[\w/.\-:\]])\?[^\s\"']+")
_SECRETS = (
    re.compile(r"(?i)\b(authorization\s*[:=]\s*)[^\r\n]*"),
    re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)\b((?:password|passwd|token|access_token|refresh_token)\s*[:=]\s*)[^\s&,]+"),
    re.compile(r"(?<=://)([^/@\s:]+:)[^/@\s]+(?=@)"),  # user:password@host
)


def redact(text: str) -> str:
    """`text` with query strings and credentials replaced by "…"."""
    text = _QUERY.sub("?…", text)
    for pattern in _SECRETS:
        text = pattern.sub(r"\1…", text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats a record as usual, then redacts the whole line (arguments included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_http_exchanges(stream: TextIO | None = None) -> logging.Handler:
    """Send DEBUG records of imgtool and urllib3 to stderr, redacted. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter("imgtool debug: %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    return handler


def print_traceback(exc: BaseException) -> None:
    """The traceback (redacted like the log), then what a registry said, if one was asked."""
    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(redact(text))
    details = _registry_details(exc)
    if details:
        sys.stderr.write(redact(details) + "\n")


def _registry_details(exc: BaseException) -> str:
    from imgtool.errors import RegistryError

    if not isinstance(exc, RegistryError) or not exc.method:
        return ""
    codes = ",".join(exc.codes) or "none"
    return f"registry exchange: {exc.method} {exc.url} -> {exc.status} (error codes: {codes})"
