"""One way to declare a setting, one way to read it from text, one way to check it.

A settings class (``TrainConfig``, an experiment's ``Settings``) is a dataclass whose fields
are made by ``setting``: the field's type is its annotation (a ``Literal`` lists its
choices), and the rest — default, range or choices, help, option group — is the field's
metadata. ``from_text`` reads a value of that type from text the same way for the command
line and an experiment's ``--set``; ``problems`` lists what is wrong with a whole settings
object, each problem one line naming the setting and what it takes, and changes nothing.
Entry points (``reslab train``, ``reslab.train``, ``fit``, an experiment's ``resolve``) call
``normalised`` then ``problems`` once, before any work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal

MAX_INT = 2**63 - 1  # what torch and numpy hold in an int64; beyond, their maths overflows


def setting(default: Any, help: str, group: str | None = None, metavar: str | None = None, *,
            low: float | None = None, high: float | None = None, open_low: bool = False,
            open_high: bool = False, choices: typing.Sequence[Any] = ()) -> Any:
    """A settings field: its default, its line of help, the group of command-line options it
    belongs to and what its value is called there (``metavar``).

    ``low``/``high`` bound a number (or each number of a list), closed unless ``open_low`` /
    ``open_high``; without ``low``, an integer must be >= 1 and a number > 0. ``choices``
    lists the values a field (or each item of a list) may take; a ``Literal`` annotation
    lists them itself. A list whose default is not empty must not be empty."""
    meta = {"help": help, "group": group, "metavar": metavar or "TEXT", "low": low,
            "high": high, "open_low": open_low, "open_high": open_high,
            "choices": tuple(choices)}
    if isinstance(default, list | tuple):  # a mutable default needs a factory
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --- reading text --------------------------------------------------------------------------

def from_text(text: str, hint: Any) -> Any:
    """``text`` as a value of type ``hint``: a number, ``true``/``false``, ``none`` for an
    optional setting, a list written ``a,b,c`` or as JSON ``[a, b, c]``; a string or a choice
    as it is (``problems`` checks it). Raises ValueError saying what was expected."""
    optional, hint = _optional(hint)
    kind, item = _kind(hint)
    if optional and kind is not str and text.strip().lower() in ("none", "null"):
        return None
    if kind is tuple:
        return _list_from_text(text, item)
    if kind is bool:
        value = {"true": True, "yes": True, "1": True, "false": False, "no": False,
                 "0": False}.get(text.strip().lower())
        if value is None:
            raise ValueError(f"not true or false: {text!r}")
        return value
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {text!r}")
        return value
    return text


def _list_from_text(text: str, item: Any) -> tuple:
    items = {int: "integers", float: "numbers", bool: "true or false values"}.get(item, "names")
    wrong = ValueError(f"not a list of {items}: {text!r} (write a,b,c)")
    text = text.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except (ValueError, RecursionError):
            raise wrong from None
        if not isinstance(values, list):
            raise wrong
    else:
        values = [v for v in text.split(",") if v.strip()]
    try:  # a JSON item that is not text is kept as it is, for problems() to check
        return tuple(from_text(v.strip(), item) if isinstance(v, str) else v for v in values)
    except ValueError:
        raise wrong from None


def parsed(value: Any, hint: Any) -> Any:
    """``value`` as ``from_text`` reads it where it is text that parses; anything else as it
    is, for ``problems`` to refuse naming what was given."""
    if not isinstance(value, str) or _kind(_optional(hint)[1])[0] is str:
        return value
    try:
        return from_text(value, hint)
    except ValueError:
        return value


def normalised(settings: Any) -> Any:
    """A copy with each list field a tuple: a Python list, or text (``stem,layer1`` in a
    config file) as the command line reads it. Other values are left for ``problems``."""
    hints = typing.get_type_hints(type(settings))
    changes = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if _kind(_optional(hints[f.name])[1])[0] is tuple:
            if isinstance(value, list):
                changes[f.name] = tuple(value)
            elif isinstance(value, str):
                changes[f.name] = parsed(value, hints[f.name])
    return dataclasses.replace(settings, **changes) if changes else settings


# --- checking ------------------------------------------------------------------------------

def problems(settings: Any) -> list[str]:
    """What is wrong with ``settings``, one line each, in field order: a value not of its
    field's type, not finite, out of its range or choices, or beyond an int64; then, when
    every field is right, the class's own rules across fields (a ``rules()`` method returning
    lines). Changes nothing and reads no file: checks of paths and data belong to the entry
    point."""
    hints = typing.get_type_hints(type(settings))
    found = [p for f in dataclasses.fields(settings)
             if (p := field_problem(f.name, hints[f.name], f, getattr(settings, f.name)))]
    if not found and hasattr(settings, "rules"):
        found = list(settings.rules())
    return found


def field_problem(name: str, hint: Any, field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with ``value`` for the field, or None."""
    optional, hint = _optional(hint)
    if value is None and optional:
        return None
    meta = _meta(field, hint)
    kind, item = _kind(hint)
    if kind is tuple:
        items = value if isinstance(value, tuple) else ()
        ok = isinstance(value, tuple) and all(_fits(item, meta, v) for v in items) and (
            bool(value) or not _default_of(field))
    else:
        items = (value,)
        ok = _fits(kind, meta, value)
    if not ok:
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be a finite number, got {shown(value)}"
        return f"{name} must be {describe(hint, field)}, got {shown(value)}"
    if any(is_int(v) and not -MAX_INT <= v <= MAX_INT for v in items):
        return f"{name} must be below 2**63, got {shown(value)}"
    return None


def describe(hint: Any, field: dataclasses.Field) -> str:
    """What a field takes, as its refusal says it: ``a positive integer``, ``a number in
    [0, 1)``, ``one of sgd, adamw``, ``a non-empty list of integers >= 0``..."""
    hint = _optional(hint)[1]
    meta = _meta(field, hint)
    kind, item = _kind(hint)
    if kind is tuple:
        each = _describe(item, meta)
        return f"a {'non-empty ' if _default_of(field) else ''}list of {_plural(each)}"
    return _describe(kind, meta)


def _describe(kind: Any, meta: dict[str, Any]) -> str:
    if choices := meta.get("choices"):
        if kind in (int, float):  # a few numbers: "1 or 3"
            return " or ".join(map(str, choices))
        return "one of " + ", ".join(map(str, choices))
    if kind is bool:
        return "true or false"
    if kind not in (int, float):
        return "a string"
    noun = "an integer" if kind is int else "a number"
    low, high = meta.get("low"), meta.get("high")
    open_low, open_high = meta.get("open_low"), meta.get("open_high")
    if high is None:
        if low is None or (kind is int and low == 1 and not open_low):
            return f"a positive {noun.split()[-1]}"
        return f"{noun} {'>' if open_low else '>='} {_number(low)}"
    if low is None:  # the default bound: >= 1 for an integer, > 0 for a number
        low, open_low = (1, False) if kind is int else (0, True)
    if kind is int and not open_low and not open_high:
        return f"{noun} from {_number(low)} to {_number(high)}"
    return (f"{noun} in {'(' if open_low else '['}{_number(low)}, {_number(high)}"
            f"{')' if open_high else ']'}")


def _plural(each: str) -> str:
    if each == "a string":
        return "names"
    if each.startswith("one of"):
        return f"names ({each})"
    words = each.split(" ")[1:]  # without its article
    return " ".join(w + "s" if w in ("integer", "number") else w for w in words)


def _fits(kind: Any, meta: dict[str, Any], value: Any) -> bool:
    choices = meta.get("choices") or ()
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        if not (is_int(value) if kind is int else _is_num(value) and math.isfinite(value)):
            return False
        if choices:
            return value in choices
        low, high = meta.get("low"), meta.get("high")
        if low is None:
            low, open_low = (1, False) if kind is int else (0, True)
        else:
            open_low = meta.get("open_low")
        return ((value > low if open_low else value >= low) and (
            high is None or (value < high if meta.get("open_high") else value <= high)))
    if kind is not str:
        return True  # a type no setting has yet: nothing to check it against
    return isinstance(value, str) and "\0" not in value and (not choices or value in choices)


def _meta(field: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """The field's metadata, with a ``Literal``'s values (or its list items') as choices."""
    meta = dict(field.metadata)
    kind, item = _kind(hint)
    literal = item if kind is tuple else hint
    if typing.get_origin(literal) is Literal:
        meta["choices"] = typing.get_args(literal)
    return meta


def _default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _optional(hint: Any) -> tuple[bool, Any]:
    """Whether ``hint`` admits None, and the type it has otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return len(args) < len(typing.get_args(hint)), args[0]
    return False, hint


def without_none(hint: Any) -> Any:
    """The type an optional setting has when it is not None (``int`` of ``int | None``)."""
    return _optional(hint)[1]


def _kind(hint: Any) -> tuple[Any, Any]:
    """The kind of value (int, float, bool, str, tuple) and, for a tuple, its items' type; a
    ``Literal`` is a kind of str."""
    if typing.get_origin(hint) is tuple:
        return tuple, typing.get_args(hint)[0]
    if typing.get_origin(hint) is Literal:
        return str, None
    return hint, None


def _number(value: float) -> str:
    return "2**63" if value == 2**63 else str(value)


def shown(value: Any) -> str:
    from reslab.paths import printable

    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v
