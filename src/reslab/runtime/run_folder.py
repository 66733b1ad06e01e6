"""A run folder: the one place that names what a training run leaves behind, writes its small
files whole, holds the lock that keeps it its own and recognises it by its marker.

runs/<name>/
  config.json          resolved config, versions, machine; "format": "reslab-run/1" marks it
  metrics.jsonl        one line per epoch
  curves.png           loss and accuracy (training and validation) against epoch
  tensorboard/         event files
  checkpoints/         last.safetensors, best.safetensors
  results.json         final test accuracy, per-class accuracy
  confusion.png        test confusion matrix
  .lock                held by the process training in it

Below training, so that evaluation, prediction, export and the runs listing read runs the way
training writes them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import stat
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError
from reslab.io import atomic_write_text
from reslab.paths import _expanded, _inside, _same, expand, is_folder, printable, read_own_file
from reslab.runtime.host import machine, versions

RUN_FORMAT = "reslab-run/1"  # the "format" of a run folder's config.json: reslab made it
MAX_SMALL_FILE = 16 << 20  # config.json, results.json, metrics.jsonl: a few KB to a few MB
_RUN_CONFIG_LIMIT = 1 << 20  # bytes: a run's config.json is a page


def strict_json(value: Any, **kw) -> str:
    """JSON that every reader takes: a non-finite float (a NaN validation loss) is null, as
    JSON has no NaN or Infinity (Python's json.dumps would write them bare)."""
    return json.dumps(_finite_or_null(value), allow_nan=False, **kw)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


class RunFolder:
    # each file's name, spelled here only
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    CURVES = "curves.png"
    RESULTS = "results.json"
    CONFUSION = "confusion.png"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"
    LAST = "last.safetensors"
    BEST = "best.safetensors"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_file = None

    config = property(lambda self: self.path / RunFolder.CONFIG)
    metrics = property(lambda self: self.path / RunFolder.METRICS)
    curves = property(lambda self: self.path / RunFolder.CURVES)
    results = property(lambda self: self.path / RunFolder.RESULTS)
    confusion = property(lambda self: self.path / RunFolder.CONFUSION)
    tensorboard = property(lambda self: self.path / RunFolder.TENSORBOARD)
    checkpoints = property(lambda self: self.path / RunFolder.CHECKPOINTS)
    last = property(lambda self: self.checkpoints / RunFolder.LAST)
    best = property(lambda self: self.checkpoints / RunFolder.BEST)
    lock_path = property(lambda self: self.path / RunFolder.LOCK)

    @classmethod
    def holding(cls, checkpoint: str | os.PathLike) -> RunFolder | None:
        """The run whose checkpoints/ folder ``checkpoint`` sits in, by its place alone
        (nothing is read); None for a file elsewhere."""
        checkpoint = Path(checkpoint)
        if checkpoint.parent.name != cls.CHECKPOINTS:
            return None
        return cls(checkpoint.parent.parent)

    def lock(self) -> RunFolder:
        """Hold the directory for this process; a second run in it is refused, not interleaved.
        The OS releases the lock when the process dies, even by SIGKILL."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = open_lock(self.lock_path)
        except OSError as error:
            raise ConfigError(f"cannot use run directory {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise ConfigError(
                f"run directory {self.path} is in use by another reslab process; "
                "wait for it, or choose another --out"
            ) from None
        self._remove_partial_files()
        return self

    def _remove_partial_files(self) -> None:
        # A process killed while writing leaves its temporary file (.NAME.XXXX.part, see
        # reslab.io); the finished files are intact, and with the lock held no writer is live.
        for partial in [*self.path.glob(".*.part"), *self.checkpoints.glob(".*.part")]:
            with suppress(OSError):
                partial.unlink()

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> RunFolder:
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.unlock()

    def write_config(self, config: dict[str, Any]) -> None:
        """The resolved config, versions and machine; ``started`` (local time, ISO 8601) is
        kept from the config.json a resumed or extended run already has."""
        record = {"format": RUN_FORMAT, "config": config, "started": self._started(),
                  "versions": versions(), "machine": machine()}
        atomic_write_text(self.config, strict_json(record, indent=2) + "\n")

    def _started(self) -> str:
        with suppress(OSError, ValueError, AttributeError, ConfigError):
            started = json.loads(read_own_file(self.config, self.CONFIG,
                                               MAX_SMALL_FILE)).get("started")
            if isinstance(started, str):
                return started
        return datetime.now().astimezone().isoformat(timespec="seconds")

    def held(self) -> bool:
        """Whether another process holds the run's lock (a run going on), tried with a shared
        lock released at once; a missing ``.lock`` file is not created."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing releases the shared lock, if it was taken
        return False

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the whole file from the history the checkpoint carries, so a run resumed
        after a crash never shows an epoch twice."""
        atomic_write_text(self.metrics, "".join(strict_json(row) + "\n" for row in history))

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results, strict_json(results, indent=2) + "\n")


def run_path(out: str | None, model: str) -> Path:
    """The folder a run trains into: ``out`` as given, else a new one named after the model
    and the time under ./runs."""
    if out:
        return Path(out).expanduser()
    return Path("runs") / f"{model}-{datetime.now():%Y%m%d-%H%M%S}"


def is_reslab_run(folder: Path) -> bool:
    """Whether ``folder`` is a run reslab made: its config.json (a regular file, not a link)
    is reslab's own, with the format marker or, for runs from before the marker, the record's
    three sections (config, versions with reslab's, machine)."""
    path = RunFolder(folder).config
    try:
        if path.is_symlink():
            return False
        record = json.loads(read_own_file(path, RunFolder.CONFIG, _RUN_CONFIG_LIMIT))
    except (OSError, ValueError, RecursionError, ConfigError):
        return False
    if not isinstance(record, dict):
        return False
    if record.get("format") == RUN_FORMAT:
        return True
    versions = record.get("versions")
    return (isinstance(record.get("config"), dict) and isinstance(versions, dict)
            and "reslab" in versions and isinstance(record.get("machine"), dict))


def check_run_folder(path: str | os.PathLike, option: str,
                     inputs: Iterable[str | os.PathLike]) -> Path:
    """A folder an option asks to fill with a run: new, empty, or one of reslab's own runs
    (which the run's lock then guards); refused when it holds anything else (a model folder's
    config.json, a project's checkpoints/), is a file, is one of ``inputs`` or inside one (a
    run in an image folder's class folder would become training images)."""
    out = expand(path, option)
    for given in inputs:
        source = _expanded(given)
        if _same(out, source) or (is_folder(source) and _inside(out / "x", source)):
            raise ConfigError(f"{option} {printable(out)} is inside {printable(source)}, an "
                              "input of this run: choose a folder elsewhere")
    if os.path.lexists(out) and not is_folder(out):
        raise ConfigError(f"{option} {printable(out)} is a file, not a folder: choose another "
                          f"{option}")
    if is_folder(out):
        entries = sorted({p.name for p in out.iterdir()} - {RunFolder.LOCK})
        if entries and not is_reslab_run(out):
            shown = ", ".join(printable(e) for e in entries[:3]) + (", ..." if len(entries) > 3
                                                                     else "")
            raise ConfigError(f"{option} {printable(out)} holds files reslab did not write "
                              f"({shown}) and no reslab run: choose a new or empty folder")
    return out


def run_files(checkpoint: str | os.PathLike) -> list[Path]:
    """What an output must not replace when a command reads ``checkpoint``: the file itself
    and, when it sits in a run's ``checkpoints/`` folder, everything of that run."""
    checkpoint = Path(checkpoint)
    run = RunFolder.holding(checkpoint)
    if run is None or not run.config.is_file():
        return [checkpoint]
    return [checkpoint, *run.path.iterdir()]


def open_lock(path: Path):
    """The lock file, opened (created if missing) without following a link: a ``.lock``
    planted as a link would make locking create or truncate its target. A link, or anything
    but a regular file, is refused (ConfigError) and left as it is."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise ConfigError(f"{printable(path)} is a symbolic link, not reslab's lock file: "
                          "remove it, or choose another folder") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{printable(path)} is not a regular file (a pipe, device or "
                          "socket), so it cannot be reslab's lock file: remove it, or choose "
                          "another folder")
    return os.fdopen(fd, "a+")
