"""Telling "the package mirror cannot be reached" from a build that is broken.

A test that needs the network may skip when apt (or pip, curl...) could not resolve or connect
to its server; any other failure, even one whose output mentions apt, is the build's and fails.
"""

from __future__ import annotations

import re

# what apt, glibc's resolver and curl print when name resolution or the connection fails
_UNREACHABLE = re.compile(
    r"Temporary failure resolving"
    r"|Could not resolve( host)?\b"
    r"|Name or service not known"
    r"|Could not connect to"
    r"|Unable to connect to"
    r"|Network is unreachable"
    r"|No route to host"
    r"|Connection refused"
    r"|Connection timed out"
    r"|Failed to connect to"
)


def unreachable_reason(stderr: str) -> str | None:
    """The line saying the server could not be reached, or None when the failure is another."""
    for line in stderr.splitlines():
        if _UNREACHABLE.search(line):
            return line.strip()
    return None
