"""A checkpoint's network deepened (``reslab grow``): ``reslab.models.grow`` applied to the
network a checkpoint holds, written as a new checkpoint. Model surgery on a file, so it sits
above the runtime's checkpoint reader, not in ``models/``."""

from __future__ import annotations

import os
from pathlib import Path

from reslab.errors import ConfigError, ReslabError
from reslab.models import ResNet, grow
from reslab.paths import check_output, printable
from reslab.runtime.checkpoint import (
    check_spec_parameters,
    open_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from reslab.runtime.run_folder import run_files


def _check_grown_fits(spec, stage: int, blocks: int, source: Path) -> None:
    """The grown network, its copy and the file written from it, against the memory this
    machine has: before a unit is added (surgery checks the stage and the unit count)."""
    if not (isinstance(stage, int) and isinstance(blocks, int) and 1 <= stage <= len(spec.depths)
            and blocks >= 1):
        return  # surgery refuses these, naming them
    depths = list(spec.depths)
    depths[stage - 1] += blocks
    try:
        grown = spec.replace(depths=tuple(depths))
    except ReslabError:
        return  # past the unit limit: surgery names it
    check_spec_parameters(grown, f"growing {printable(source)} by {blocks} units",
                                 "lower --blocks", copies=3)


def grow_checkpoint(checkpoint: str | os.PathLike, stage: int, blocks: int,
                    out: str | os.PathLike, shortcut: bool = True) -> tuple[Path, ResNet]:
    """``grow`` a checkpoint's network and write the result as a weights-only checkpoint
    whose metadata is the old one with the new spec (``reslab grow``)."""
    source = resolve_checkpoint(checkpoint)
    out = check_output(out, "--out", suffix=".safetensors", inputs=run_files(source))
    checkpoint_ = open_checkpoint(source)
    if not isinstance(checkpoint_.skeleton, ResNet):
        raise ConfigError(f"{printable(checkpoint)} holds a "
                          f"{type(checkpoint_.skeleton).__name__}, not a ResNet")
    _check_grown_fits(checkpoint_.skeleton.spec, stage, blocks, source)
    model, meta = checkpoint_.load()
    if shortcut == model.spec.is_plain:
        kind = "residual" if shortcut else "plain"
        other = "plain" if shortcut else "residual"
        raise ConfigError(
            f"cannot add {kind} units to a {other} network in a checkpoint: the result is no "
            f"ResNetSpec, so it could not be rebuilt from the file; use "
            f"reslab.models.grow(model, ..., shortcut={shortcut}) in Python")
    grown = grow(model, stage, blocks, shortcut)
    save_checkpoint(out, grown.state_dict(), meta.replace(spec=grown.spec.to_dict()))
    return out, grown
