"""The small value syntaxes of instructions and flags: ports, signals, durations, sizes.

Each is checked twice: when the Containerfile is typed (if the value has no variable in it)
and after expansion, when the step runs.
"""

from __future__ import annotations

import re
import signal

_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?", re.I)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_DURATION_NS["h"] = 3600 * 10**9
# docker/go-units' RAMInBytes: one optional space, binary units whatever the spelling (m, mb, MiB)
_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def has_variable(text: str) -> bool:
    """Whether expansion may change `text` (then it is checked only once expanded)."""
    return "$" in text


def valid_port(text: str) -> bool:
    """EXPOSE's PORT[-PORT][/proto]."""
    m = _PORT.fullmatch(text)
    if not m:
        return False
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    return 0 < low <= high <= 65535


def valid_signal(text: str) -> bool:
    """STOPSIGNAL: a number, or a name with or without SIG (RTMIN+n and RTMAX-n too)."""
    if text.isdigit():
        return 0 < int(text) <= 64
    name = text.upper().removeprefix("SIG")
    if re.fullmatch(r"RT(MIN|MAX)([+-]\d+)?", name):
        return True
    return f"SIG{name}" in signal.Signals.__members__


def duration_ns(text: str) -> int:
    """A Go duration as Docker takes them (30s, 1m30s, 1.5h, 250ms) in nanoseconds; a bare
    number is nanoseconds. Raises ValueError."""
    if text.isdigit():
        return int(text)
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    return int(total)


def byte_size(text: str) -> int:
    """A size as Docker and BuildKit read them (go-units' RAMInBytes: `run -m`, a tmpfs
    mount's size): bytes, or a number with a binary unit, 64m, 1.5GiB, 512kb, 2 p. Raises
    ValueError."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size (e.g. 64m)")
    try:  # float() of a huge number is inf, which int() refuses
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    except OverflowError:
        raise ValueError(f"{text!r} is too large") from None
    if size >= 1 << 63:  # go-units' int64; the kernel reads a larger tmpfs size as no limit
        raise ValueError(f"{text!r} is too large")
    return size
