"""What `reslab runs` knows of a folder of runs: each run's model, data, progress, accuracies,
training time and state, read from its small files alone (config.json, metrics.jsonl,
results.json; never a checkpoint), and its curves for `reslab runs --compare`.

A run is *running* while another process holds its lock, *finished* once it has results.json,
*interrupted* otherwise, and *damaged* when one of its files cannot be read as reslab wrote it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError
from reslab.paths import expand, is_folder, printable, read_own_file
from reslab.runtime.run_folder import MAX_SMALL_FILE, RunFolder

MAX_RUNS = 500  # folders read by default; the rest are counted, not opened


class Damaged(Exception):
    """A run file that cannot be read as reslab writes it; the message names it."""


@dataclass
class RunInfo:
    name: str
    path: str
    state: str  # finished, interrupted, running, damaged
    started: str | None = None  # ISO 8601, local time
    model: str | None = None
    data: str | None = None
    epochs_done: int | None = None
    epochs_planned: int | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    problem: str | None = None  # what is damaged

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Listing:
    folder: str
    runs: list[RunInfo]
    skipped: list[str] = field(default_factory=list)  # folders that are no reslab run
    not_read: int = 0  # folders over the limit, left unopened

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "runs": [r.to_dict() for r in self.runs],
                "skipped": self.skipped, "not_read": self.not_read}


def is_run(path: Path) -> bool:
    """A folder reslab trained in: a checkpoints/ folder, or a config.json that is reslab's
    (``{"config": {...}}``, not a model folder's) or unreadable beside its other files."""
    run = RunFolder(path)
    try:
        if is_folder(run.checkpoints):
            return True
        if not run.config.is_file():
            return False
        try:
            return isinstance(_json(run.config).get("config"), dict)
        except Damaged:
            return any(p.exists() for p in (run.metrics, run.results, run.lock_path))
    except OSError:  # a folder this user may not look into
        return False


def list_runs(folder: str | os.PathLike, limit: int = MAX_RUNS) -> Listing:
    """The runs in ``folder`` (or ``folder`` alone when it is a run), oldest first. Only the
    ``limit`` most recently changed subfolders are opened."""
    root = expand(folder, "runs")
    if not is_folder(root):
        raise ConfigError(f"{printable(root)} is no folder: give the folder that holds your "
                          "runs (where `reslab train --out` put them)")
    if is_run(root):
        return Listing(str(root), [read_run(root)])
    try:
        folders = [Path(e.path) for e in os.scandir(root)
                   if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError as error:
        raise ConfigError(f"cannot read {printable(root)}: {error.strerror}") from None
    not_read = max(0, len(folders) - limit)
    if not_read:
        folders = sorted(folders, key=_changed, reverse=True)[:limit]
    runs, skipped = [], []
    for path in folders:
        if is_run(path):
            runs.append(read_run(path))
        else:
            skipped.append(path.name)
    runs.sort(key=lambda r: (r.started or "", r.name))
    return Listing(str(root), runs, sorted(skipped), not_read)


def read_run(path: Path) -> RunInfo:
    run = RunFolder(path)
    info = RunInfo(name=path.name, path=str(path), state="interrupted")
    try:
        record = _json(run.config) if os.path.lexists(run.config) else {}
        info.started = _text(record.get("started"))
        config = record.get("config", {})
        if not isinstance(config, dict):
            raise Damaged("config.json holds no reslab config")
        info.model, info.data = _text(config.get("model")), _text(config.get("data"))
        info.epochs_planned = _int(config.get("epochs"))
        history = read_history(run)
        info.epochs_done = len(history)
        vals = [row["val_acc"] for row in history if _number(row.get("val_acc")) is not None]
        info.best_val_acc = max(vals) if vals else None
        info.train_seconds = (sum(_number(row.get("seconds")) or 0.0 for row in history)
                              if history else None)
        if os.path.lexists(run.results):  # present: read, or damaged
            results = _json(run.results)
            info.test_acc = _number(results.get("accuracy"))
            if info.test_acc is None:
                raise Damaged("results.json holds no test accuracy")
            info.best_val_acc = _number(results.get("best_val_acc"), info.best_val_acc)
            info.train_seconds = _number(results.get("train_seconds"), info.train_seconds)
            info.state = "finished"
    except Damaged as problem:
        info.state, info.problem = "damaged", str(problem)
    except OSError as error:
        info.state, info.problem = "damaged", f"cannot be read ({error.strerror or error})"
    if run.held():
        info.state = "running"
    info.started = info.started or _changed_at(run)
    return info


def read_history(run: RunFolder) -> list[dict[str, Any]]:
    """metrics.jsonl's rows, one per finished epoch ([] before the first)."""
    if not os.path.lexists(run.metrics):
        return []
    rows = []
    for number, line in enumerate(_read(run.metrics).splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            raise Damaged(f"metrics.jsonl line {number} is not JSON") from None
        if not isinstance(row, dict) or _int(row.get("epoch")) is None:
            raise Damaged(f"metrics.jsonl line {number} is no epoch's row")
        rows.append(row)
    return rows


def _read(path: Path) -> str:
    """A run's small file, through the one reader of a folder's own files (a FIFO or device
    put in its place is refused unread, not waited on)."""
    try:
        return read_own_file(path, path.name, MAX_SMALL_FILE)
    except ConfigError:
        raise Damaged(f"{path.name} is not a regular file of at most "
                      f"{MAX_SMALL_FILE >> 20} MB, as reslab writes it") from None
    except OSError as error:
        raise Damaged(f"{path.name} cannot be read ({type(error).__name__})") from None


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read(path))
    except (ValueError, RecursionError):
        raise Damaged(f"{path.name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise Damaged(f"{path.name} holds no JSON object")
    return value


def _changed_at(run: RunFolder) -> str | None:
    """For a run from before config.json had ``started``: when its config.json changed."""
    try:
        when = (run.config if run.config.exists() else run.path).stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def _changed(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _number(value: Any, default: float | None = None) -> float | None:
    return float(value) if type(value) in (int, float) else default
