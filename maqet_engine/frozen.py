"""A minimal immutable record base for modules on the CLI's fast path.

``dataclasses`` costs about 10 ms of import time (it imports ``inspect``), a sixth of
the budget of ``maqet ls``; records read on every command use this instead.
Subclasses list their fields in ``__slots__`` and are built with keywords.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Frozen:
    __slots__: tuple[str, ...] = ()

    def __init__(self, **values: Any) -> None:
        missing = [f for f in self.__slots__ if f not in values]
        extra = sorted(set(values) - set(self.__slots__))
        if missing or extra:
            raise TypeError(f"{type(self).__name__}: missing {missing}, unexpected {extra}")
        for field in self.__slots__:
            object.__setattr__(self, field, values[field])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _astuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._astuple() == other._astuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"
