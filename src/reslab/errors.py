"""Errors a user can cause. Each message names the input at fault and how to fix it.

The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug.
"""


class ReslabError(Exception):
    """Base class: a problem in the user's input, not in reslab."""


class SpecError(ReslabError, ValueError):
    """A ResNetSpec (or an override of one) that describes no valid network."""


class UnknownNameError(ReslabError, LookupError):
    """A model, preset, dataset or experiment name that does not exist."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class InputShapeError(ReslabError, ValueError):
    """An input the network cannot take: wrong channel count, or too small for its strides."""


class WeightsError(ReslabError, ValueError):
    """A weights or checkpoint file that cannot be loaded into the model asked for."""


class DataError(ReslabError):
    """A data set that is missing, corrupt, or fails verification."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data set's files are nowhere reslab looks and cannot be downloaded."""


class CorruptDataError(DataError, ValueError):
    """A data file that exists but is malformed (bad magic, truncated, wrong counts...)."""


class ChecksumError(DataError, ValueError):
    """A data file whose SHA-256 differs from the published one."""


class ConfigError(ReslabError, ValueError):
    """A training or experiment setting out of range, of the wrong type, or in conflict."""


class TrainingError(ReslabError):
    """A run that cannot go on: the loss diverged, or its directory cannot be written."""


class MissingDependencyError(ReslabError, ImportError):
    """An optional extra that a command needs is not installed; the message names it."""


class Interrupted(ReslabError):
    """A run stopped by SIGINT or SIGTERM, its state saved; the message says how to go on."""


def close_matches(name: object, known, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The names of ``known`` closest to ``name``, as difflib finds them but ignoring case
    (``RESNET50`` is one letter-case away from ``resnet50``, not six letters)."""
    import difflib

    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(str(k).lower(), str(k))
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[c] for c in close]


def check_fields(cls, names, error: type[ReslabError], label: str) -> None:
    """Refuse any of ``names`` that is not a field of dataclass ``cls``, naming the closest."""
    import dataclasses

    known = sorted(f.name for f in dataclasses.fields(cls))
    for name in names:
        if name not in known:
            close = close_matches(name, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise error(f"{label} {name!r}{hint}")
