"""Progress events: the library reports through a callback, the CLI decides how to show them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """`kind` is one of: resolved, start, bytes, done, exists, mounted, pushed, info."""

    kind: str
    item: str = ""  # short digest or a name
    current: int = 0
    total: int = 0
    message: str = ""


Callback = Callable[[Event], None]


def ignore(_: Event) -> None:
    pass
