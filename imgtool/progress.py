"""Progress events: the library reports through a callback, the CLI decides how to show them."""

from __future__ import annotations

from collections.abc import Callable

from imgtool.values import Frozen


class Event(Frozen):
    """`kind` is one of: resolved, start, bytes, done, exists, mounted, pushed, info."""

    __slots__ = ("kind", "item", "current", "total", "message")
    kind: str
    item: str  # short digest or a name
    current: int
    total: int
    message: str

    def __init__(
        self, kind: str, item: str = "", current: int = 0, total: int = 0, message: str = ""
    ) -> None:
        self._init(kind, item, current, total, message)


Callback = Callable[[Event], None]


def ignore(_: Event) -> None:
    pass
