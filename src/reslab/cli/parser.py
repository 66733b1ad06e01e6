"""The parser every reslab command uses: argparse, with its refusals on one line, and the
options of a config dataclass generated from its fields (type, choices, one-line help).

Options generated from a config are left out of the namespace unless given (their default is
``SUPPRESS``): the command then lays them over the preset and config file, so an option on the
command line wins whatever its place on the line.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, NoReturn

from reslab.settings import from_text, without_none

# what other tools call an option, for the "did you mean" of an unknown one: spelling alone
# (difflib) does not lead from --learning-rate to --lr
SYNONYMS = {"--learning-rate": "--lr", "--num-epochs": "--epochs",
            "--n-epochs": "--epochs", "--bs": "--batch-size", "--wd": "--weight-decay",
            "--dataset": "--data", "--arch": "--model", "--output": "--out",
            "--output-dir": "--out", "--out-dir": "--out", "--checkpoint": "--resume"}


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """A wrong type, unknown option or missing argument: one line and exit 2 (not usage)."""
        self.exit(2, f"reslab: error: {' '.join(message.split())} (see: {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        """Arguments no option of this parser takes are refused here, by the (sub)command
        they were given to: its help is the one to read, its options the ones to suggest
        (argparse would hand them up to ``reslab``, which knows neither)."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._closest(extras)}")
        return namespace, extras

    def _closest(self, extras: list[str]) -> str:
        from reslab.errors import close_matches

        options = [o for action in self._actions for o in action.option_strings
                   if o.startswith("--")]
        for extra in extras:
            if not extra.startswith("-"):
                continue
            name = "--" + extra.split("=", 1)[0].lstrip("-").replace("_", "-")
            name = SYNONYMS.get(name, name)
            # --no-x only when the user wrote a --no-: else each flag would come up twice
            candidates = [o for o in options if name.startswith("--no") or
                          not o.startswith("--no-")]
            close = [name] if name in options else close_matches(name, candidates, n=3)
            if close:
                return f" (did you mean {' or '.join(close)}?)"
        return ""


def _from_text(hint: Any):
    """An option's argparse type: its text read as ``settings.from_text`` reads an
    experiment's ``--set`` (a list ``a,b,c`` or ``[a, b, c]``, finite numbers, ``none``)."""
    def parse(text: str) -> Any:
        try:
            return from_text(text, hint)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def add_config_options(parser: argparse.ArgumentParser, cls: type, groups: tuple[str, ...],
                       skip: frozenset[str] = frozenset(), defaults: Any = None) -> None:
    """One option per field of dataclass ``cls``, in argument groups by the field's
    ``metadata["group"]``; booleans as ``--flag``/``--no-flag``. The help shows each field's
    value in ``defaults`` (an instance: what a run gets when the option is not given), or
    else the field's own default."""
    hints = typing.get_type_hints(cls)
    existing = {g.title: g for g in parser._action_groups}
    sections = {g: existing.get(f"{g} options") or parser.add_argument_group(f"{g} options")
                for g in groups}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        hint = hints[field.name]
        kind = without_none(hint)
        default = field.default if defaults is None else getattr(defaults, field.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = field.metadata["help"] + (
            "" if default in (None, ()) or isinstance(default, bool) else f" (default: {shown})")
        flag = "--" + field.name.replace("_", "-")
        options: dict[str, Any] = dict(dest=field.name, default=argparse.SUPPRESS,
                                       help=help_text)
        if kind is bool:
            options |= dict(action=argparse.BooleanOptionalAction,
                            help=f"{field.metadata['help']} (default: "
                                 f"{'on' if default else 'off'})")
        elif typing.get_origin(kind) is typing.Literal:
            options |= dict(choices=typing.get_args(kind), metavar="{" + ",".join(
                typing.get_args(kind)) + "}")
        elif typing.get_origin(kind) is tuple:
            options |= dict(type=_from_text(hint), metavar="A,B,...")
        elif kind in (int, float):
            options |= dict(type=_from_text(hint), metavar="N" if kind is int else "X")
        else:
            options |= dict(type=str, metavar=field.metadata.get("metavar", "TEXT"))
        sections[field.metadata["group"]].add_argument(flag, **options)


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}
