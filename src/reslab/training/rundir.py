"""A run directory: the paths of what a training run leaves behind, its files written whole,
and the lock that keeps it its own.

runs/<name>/
  config.json          resolved config, versions, machine
  metrics.jsonl        one line per epoch
  curves.png           loss and accuracy (training and validation) against epoch
  tensorboard/         event files
  checkpoints/         last.safetensors, best.safetensors
  results.json         final test accuracy, per-class accuracy
  confusion.png        test confusion matrix
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import platform
import stat
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError
from reslab.io import atomic_write_text
from reslab.paths import RUN_FORMAT, printable, read_own_file


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

MAX_SMALL_FILE = 16 << 20  # config.json, results.json, metrics.jsonl: a few KB to a few MB


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_file = None
        self._tensorboard = None

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    curves = property(lambda self: self.path / "curves.png")
    results = property(lambda self: self.path / "results.json")
    confusion = property(lambda self: self.path / "confusion.png")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.safetensors")
    best = property(lambda self: self.path / "checkpoints" / "best.safetensors")

    def lock(self) -> RunDir:
        """Hold the directory for this process; a second run in it is refused, not interleaved.
        The OS releases the lock when the process dies, even by SIGKILL."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = open_lock(self.path / ".lock")
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
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> RunDir:
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
            started = json.loads(read_own_file(self.config, "config.json",
                                               MAX_SMALL_FILE)).get("started")
            if isinstance(started, str):
                return started
        return datetime.now().astimezone().isoformat(timespec="seconds")

    def held(self) -> bool:
        """Whether another process holds the run's lock (a run going on), tried with a shared
        lock released at once; a missing ``.lock`` file is not created."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY | os.O_NONBLOCK)
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

    def tensorboard(self):
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))
        return self._tensorboard


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


def versions() -> dict[str, str]:
    import numpy
    import torch

    from reslab import __version__

    return {"reslab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def machine() -> dict[str, Any]:
    import torch  # here, not at the top: `reslab runs` lists runs without loading torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
