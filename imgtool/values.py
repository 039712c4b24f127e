"""Value classes without the dataclasses module: fields, equality, hashing, repr and pickling.

`import dataclasses` costs `imgtool run` ~10 ms (it imports inspect, which imports ast, dis and
tokenize), and each decorated class a few hundred microseconds more to generate its methods:
together a fifth of a container's start. The values on the paths of run, pull, images and the
CLI derive from these two bases instead.

A subclass names its fields in `__slots__` (and annotates them, for type checkers) and writes a
typed `__init__` whose parameters are those fields in the same order, which sets them with
`_init` (pickling and `replace` call it so); equality, hashing and repr follow the fields in
that order, as a dataclass's do.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any, Self


class Value:
    """A mutable value: equal to another of its class with equal fields; unhashable, as a
    dataclass with eq and without frozen."""

    __slots__: tuple[str, ...] = ()

    def _init(self, *values: object) -> None:
        """Set the fields, in __slots__ order (for a Frozen value, the one way past its
        __setattr__)."""
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (shallow, unlike dataclasses.asdict): for JSON and `Cls(**d)`."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return type(self), self._values()

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (dataclasses.replace): made by __init__, so checked again."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__qualname__} has no field {sorted(unknown)[0]!r}")
        return type(self)(*(changes.get(n, getattr(self, n)) for n in self.__slots__))


class Frozen(Value):
    """An immutable value: its fields are set once, by `_init`, and hashable by its fields (a
    field that is not hashable, such as a dict, makes hashing fail, as a frozen dataclass's)."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())
