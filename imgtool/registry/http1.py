"""The head of an HTTP/1.x answer, read strictly: its status line and header lines, as both
plain-HTTP paths (`plainhttp` and `quickhead`) read them; and the connection both open. No
other I/O.

Strict where http.client is lenient: a folded (obsolete) header line, a name with blanks
around it or a status line that is not HTTP/1.0 or 1.1 is `Malformed`. The limits are
http.client's, kept when plainhttp stopped using it.
"""

from __future__ import annotations

import _socket  # the C module: the `socket` wrapper costs ~5 ms of imports and enum building
from collections.abc import Iterator, Mapping

MAX_LINE = 65536  # bytes in one line of a head
MAX_HEADERS = 100  # header lines in one head


def connect(name: bytes, port: int, timeout: float) -> _socket.socket:
    """socket.create_connection on the C module: each address of `name` in turn. The name is
    bytes: getaddrinfo given a str encodes it with the idna codec, whose first use imports
    unicodedata and stringprep (~2 ms); the callers let only ASCII names through."""
    last: OSError = OSError(f"no address for {name!r}")
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as e:
            sock.close()
            last = e
            continue
        return sock
    raise last


class Malformed(ValueError):
    """A head that is not HTTP/1.x's."""


class NotAStatusLine(Malformed):
    """What came first is no status line: no answer at all (on a kept-alive connection, the
    bytes a server sent after an earlier answer, such as a body after a HEAD answer)."""


class Headers(Mapping[str, str]):
    """A response's headers, looked up without regard to case (as requests' are)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            # a header sent more than once (WWW-Authenticate) is one, joined as urllib3 joins it
            first, before = self._items.get(name.lower(), (name, ""))
            self._items[name.lower()] = (first, f"{before}, {value}" if before else value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def status_of(line: str) -> tuple[str, int, str]:
    """The version, code and reason of a status line ("HTTP/1.1 200 OK")."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.0", "HTTP/1.1") or not (decimal(code) and 100 <= int(code) <= 999):
        raise NotAStatusLine(f"not an HTTP status line: {line[:80]!r}")
    return version, int(code), reason.strip()


def header_of(line: str) -> tuple[str, str]:
    """The name and value of a header line."""
    name, sep, value = line.partition(":")
    if not sep or not name or name != name.strip():
        raise Malformed(f"not a header line: {line[:80]!r}")
    return name, value.strip()


def parse_head(lines: list[str]) -> tuple[str, int, str, Headers]:
    """The version, code, reason and headers of a head's lines (without their line ends)."""
    if len(lines) > MAX_HEADERS + 1:
        raise Malformed(f"more than {MAX_HEADERS} header lines")
    version, code, reason = status_of(lines[0])
    return version, code, reason, Headers([header_of(line) for line in lines[1:]])


def decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() takes "²" too, which int() refuses."""
    return text.isascii() and text.isdigit()
