"""Named layers and unit kinds a spec refers to by string, so a user adds one with one call.

A spec stays plain data (``attention="se"``): it can be written to JSON and rebuilt from a
checkpoint, and a module defined outside reslab is used by registering its name first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reslab.errors import SpecError, close_matches

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Names to factories for one kind of layer (``what`` names the kind in errors)."""

    def __init__(self, what: str, field: str):
        self.what, self.field = what, field
        self._factories: dict[str, F] = {}

    def register(self, name: str, factory: F | None = None, *, replace: bool = False):
        """``register(name, factory)``, or ``@register(name)`` above a class or function."""
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"{self.what} name {name!r} must be an identifier, like 'my_attn'")

        def add(factory: F) -> F:
            if name in self._factories and not replace and self._factories[name] is not factory:
                raise SpecError(f"a {self.what} named {name!r} is already registered: "
                                "pick another name or pass replace=True")
            self._factories[name] = factory
            return factory

        return add if factory is None else add(factory)

    def get(self, name: str) -> F:
        if name not in self._factories:
            raise SpecError(self.unknown(name))
        return self._factories[name]

    def unknown(self, name: object) -> str:
        close = close_matches(name, self.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return (f"unknown {self.field} {name!r}{hint}: choose one of {', '.join(self.names())}, "
                f"or register it first with reslab.models.register_{self.field}")

    def __contains__(self, name: object) -> bool:
        # a spec read from a file may hold any JSON value here: a list is simply not a name
        return isinstance(name, str) and name in self._factories

    def names(self) -> list[str]:
        return sorted(self._factories)
