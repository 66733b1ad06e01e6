"""``reslab.train``: a run from a config — new, started from weights, or resumed — built and
checked before any work, then trained by ``loop.fit``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.data import Dataset, load_dataset
from reslab.errors import ConfigError, WeightsError
from reslab.models import create_model
from reslab.paths import expand, printable
from reslab.runtime.checkpoint import Checkpoint, blueprint, load_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.run_folder import RunFolder
from reslab.settings import normalised, problems
from reslab.tables import count
from reslab.training.config import TrainConfig, checked, preset, preset_notes
from reslab.training.finetune import classifier, freeze, start_from_weights
from reslab.training.loop import EpochHook, FitResult, fit

log = logging.getLogger(__name__)

# what --resume lets change: how the run is watched and where it computes, and its length
RESUMABLE_CHANGES = frozenset({"quiet", "threads", "checkpoint_every", "device", "epochs",
                               "max_steps"})


def train(
    config: TrainConfig | None = None,
    *,
    preset_name: str | None = None,
    resume: str | Path | None = None,
    on_epoch_end: EpochHook | None = None,
    progress: bool = True,
    **options: Any,
) -> FitResult:
    """Train a zoo model on a data set: ``reslab.train(preset_name="d2l", epochs=2)``.

    ``options`` are TrainConfig fields; they win over the preset (default ``fast``) or the
    ``config`` given. ``resume``: a run directory (or a checkpoint in it) to continue, with its
    own config; only ``RESUMABLE_CHANGES`` may be given then, and more ``epochs`` extend it.
    ``progress=False`` (or ``quiet=True``) shows nothing while it trains.
    ``on_epoch_end(row, model)``: called after each epoch (see ``fit``).
    """
    if not progress:
        options["quiet"] = True
    if resume is not None:
        if config is not None or preset_name is not None:
            raise ConfigError("a resumed run keeps its own config: give options, not a config "
                              "or preset")
        return _resume(expand(resume, "--resume"), options, on_epoch_end)
    model_given = "model" in options or (config is not None
                                         and config.model != TrainConfig.model)
    notes: list[str] = []
    from_preset = config is None
    if config is None:
        config = preset(preset_name or "fast", **options)
    elif options:
        config = config.replace(**options)
    config = check_before_data(config)
    if from_preset:
        notes += preset_notes(preset_name or "fast", config, options)
    data = _load_data(config)
    torch.manual_seed(config.seed)  # the initial weights follow the seed (torch's own is random)
    if config.init_from is not None:
        if config.whiten_stem:  # the weights bring their own first convolution
            config = config.replace(whiten_stem=False)
            notes.append("whiten_stem: off, the first convolution comes from the weights")
        start = start_from_weights(config, data, model_given)
        model, data, config = start.model, start.data, start.config
        notes += start.notes
    else:
        model = create_model(config.model, num_classes=len(data.classes),
                             in_channels=data.image_shape[0])
        if config.init == "xavier":
            log.info("init: Xavier-uniform conv and linear weights (D2L's train_ch6)")
            xavier_init(model)
        elif config.init == "dirac":
            log.info("init: dirac, each convolution's first filters pass their input through")
            dirac_init(model)
    notes += _freeze(model, config)
    return fit(model, data, config, on_epoch_end=on_epoch_end, head=classifier(model),
               notes=notes)


def check_before_data(config: TrainConfig) -> TrainConfig:
    """What a new run can refuse before it reads any data (``--print-config`` checks it too):
    its fields, and the model's name (a checkpoint given to --init-from brings its own). The
    config as checked (``config.checked``)."""
    from reslab.models.zoo import check_model_name

    config = checked(config)
    check_model_name(config.model)
    return config


def _resume(path: Path, options: dict[str, Any], on_epoch_end) -> FitResult:
    run = _run_of(path)
    checkpoint = load_checkpoint(run.last)  # read once, checked before the data's minutes
    meta = checkpoint.meta
    saved = _saved_config(meta, run.last)
    saved.replace(**options)  # an unknown option is refused here, with a suggestion
    refused = [f"{k} (saved {getattr(saved, k)!r}, given {v!r})" for k, v in options.items()
               if k not in RESUMABLE_CHANGES and getattr(saved, k) != _as_saved(v)]
    if refused:
        raise ConfigError(f"--resume continues {run.path} as it was set up; these cannot "
                          f"change: {', '.join(refused)}. Start a new run instead (--init-from "
                          f"{run.last} keeps the weights)")
    config = checked(saved.replace(**options))
    _check_length(config, meta, run)
    _check_identity(meta.data_identity, run.last)  # before the data's minutes
    data = _load_data(config)
    if config.init_from is not None:  # the run was normalised as the weights were
        data = dataclasses.replace(data, mean=meta.mean, std=meta.std)
    _check_same_data(meta.data_identity, data.identity, run.path)
    model = _model_of(checkpoint, run.last)
    notes = _freeze(model, config)
    return fit(model, data, config, run_dir=run.path, resume=True, on_epoch_end=on_epoch_end,
               head=classifier(model), notes=notes)


def _run_of(path: Path) -> RunFolder:
    """The run a --resume path names: its directory, or any checkpoint inside it."""
    run = (RunFolder.holding(path) if path.is_file() else None) or RunFolder(path)
    if not run.path.is_dir():
        raise ConfigError(f"--resume {path}: no such run directory")
    if not run.last.is_file():
        raise ConfigError(f"nothing to resume in {run.path}: it has no checkpoints/"
                          f"{run.last.name} (a run stopped before its first checkpoint starts "
                          "again from the beginning)")
    return run


def _saved_config(meta: CheckpointMeta, path: Path) -> TrainConfig:
    saved = meta.config
    if not isinstance(saved, dict):
        raise WeightsError(f"{path} holds no run config, so it cannot be resumed; start a new "
                           f"run from its weights with --init-from {path}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := sorted(set(saved) - names):
        raise WeightsError(f"{path}: its config has field(s) {', '.join(unknown)} that this "
                           "reslab does not know (written by a newer version?); resume it with "
                           "that version")
    config = normalised(TrainConfig(**{k: _as_saved(v) for k, v in saved.items()}))
    if found := problems(config):
        raise WeightsError(f"{path}: its config is damaged or was edited ({found[0]})")
    return config


def _as_saved(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _check_length(config: TrainConfig, meta: CheckpointMeta, run: RunFolder) -> None:
    """Refuse a length that leaves nothing to train, before any file of the run is touched:
    shorter than what is done, or no longer than a run that finished (results.json written;
    without it the run ends its last epoch or its test now)."""
    done, steps = meta.epoch or 0, meta.step or 0
    if config.epochs < done:
        raise ConfigError(f"--epochs {config.epochs} is fewer than the {count(done, 'epoch')} "
                          f"{printable(run.last)} has already trained; a run can be extended, "
                          "not shortened")
    if not run.results.is_file():
        return
    if config.max_steps is not None and steps >= config.max_steps:
        raise ConfigError(f"{printable(run.path)} already finished its "
                          f"{count(steps, 'step')} (--max-steps {config.max_steps}); "
                          f"`--max-steps N` (N > {steps}) extends it")
    if done >= config.epochs:
        raise ConfigError(f"{printable(run.path)} already finished its {count(done, 'epoch')}; "
                          f"`--epochs M` (M > {done}) extends it")


def _check_identity(saved: Any, path: Path) -> None:
    """The data identity a checkpoint holds is as fit writes it (see Dataset.identity)."""
    def names(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(c, str) for c in v)

    def sizes(v: Any) -> bool:
        return isinstance(v, dict) and all(type(n) is int for n in v.values())

    fields = {"name": lambda v: isinstance(v, str), "classes": names, "sizes": sizes,
              "fingerprint": lambda v: isinstance(v, dict | str)}
    if saved is None:  # a run from before data identities were recorded
        return
    bad = next((k for k, fits in fields.items() if not isinstance(saved, dict)
                or k in saved and not fits(saved[k])), None)
    if bad is not None:
        shown = printable(repr(saved.get(bad) if isinstance(saved, dict) else saved))
        raise WeightsError(f"{printable(path)}: its data identity ({bad}: {shown[:60]}) is not "
                           "one a run writes; the file is damaged or was edited, so it cannot be "
                           f"resumed (start from its weights with --init-from {printable(path)})")


def _check_same_data(saved: dict[str, Any] | None, now: dict[str, Any], run: Path) -> None:
    if saved is None:  # a run from before data identities were recorded
        return
    changes = []
    if saved.get("classes") != now["classes"]:
        changes.append(f"classes {saved.get('classes')} -> {now['classes']}")
    for split, size in now["sizes"].items():
        before = (saved.get("sizes") or {}).get(split)
        if before != size:
            changes.append(f"{split} {before} -> {size} images")
    if not changes and saved.get("fingerprint") != now["fingerprint"]:
        changes.append("same sizes, different content")
    if changes:
        raise ConfigError(f"the data of {run} changed since the run started ({'; '.join(changes)})"
                          ": resuming would mix two data sets; start a new run (--init-from "
                          "keeps the weights)")


def _model_of(checkpoint: Checkpoint, path: Path) -> nn.Module:
    """The architecture the run trains (a grown spec included), from its checkpoint, checked
    and bounded as every checkpoint is (``blueprint``) before anything is built."""
    return blueprint(path, checkpoint.meta, checkpoint.weights).build()


def _load_data(config: TrainConfig) -> Dataset:
    return load_dataset(config.data, config.data_dir, val_size=config.val_size, seed=config.seed,
                        image_size=config.image_size, channels=config.channels)


def _freeze(model: nn.Module, config: TrainConfig) -> list[str]:
    frozen = freeze(model, config.freeze, config.freeze_until)
    return [f"frozen: {', '.join(frozen)} (weights and BN statistics)"] if frozen else []


def dirac_init(model: nn.Module) -> None:
    """airbench's identity init: each ungrouped convolution's first min(out, in) filters
    pass the matching input channel through (``nn.init.dirac_``); the rest keep their
    random init, so a deep stack starts near the identity and still breaks symmetry."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                nn.init.dirac_(m.weight[:min(m.out_channels, m.in_channels)])


def xavier_init(model: nn.Module) -> None:
    """D2L's ``init_weights``: Xavier-uniform weights of every Linear and Conv2d."""
    torch.manual_seed(0)  # the init is part of the recipe, so make it the same every run
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
