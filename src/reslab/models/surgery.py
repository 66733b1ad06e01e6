"""Model surgery: deepening a built network by new units, made and initialised as ``build``
makes and initialises them (``build_unit``, ``init_weights``)."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.limits import MAX_UNITS
from reslab.models.blocks import zero_init_last
from reslab.models.build import ResNet, build_unit, init_weights
from reslab.models.spec import Ordering, Shortcut

log = logging.getLogger(__name__)


def grow(model: ResNet, stage: int, blocks: int, shortcut: bool = True,
         identity: bool = True) -> ResNet:
    """A deeper copy of ``model`` with ``blocks`` new units at the end of stage ``stage``
    (1-based); every existing weight and buffer is kept and ``model`` is left as it was.
    (``blocks`` counts units, as ``reslab grow --blocks`` does; the names are kept for callers.)

    With ``shortcut`` the new units are residual and each branch's last BN (or conv, in the
    pre-activation orderings) is zeroed, so each unit computes x -> x and the deeper network,
    in eval mode, exactly the function of ``model``. (Under the ``bn_after_add`` ordering the
    BN after the addition transforms the shortcut too, so there it is only close.) Without,
    they are plain units initialised as ``build`` initialises: the function changes.
    ``identity=False`` keeps the new residual units as ``build`` initialises them too
    (AutoGrow's random-init growth): the function changes from the first step.

    A residual network with plain units (or the reverse) is no ResNetSpec, so such a grown
    model has ``spec = None``; otherwise its spec is the old one with the stage deepened.
    """
    if not isinstance(model, ResNet):
        raise ConfigError(f"grow needs a reslab ResNet, got {type(model).__name__}")
    spec = model.spec
    if not 1 <= stage <= len(spec.depths):
        raise ConfigError(f"stage must be between 1 and {len(spec.depths)} (the network's "
                          f"stages), got {stage}")
    if not 1 <= blocks <= MAX_UNITS - sum(spec.depths):
        raise ConfigError(f"blocks must be from 1 to {MAX_UNITS - sum(spec.depths)} (at most "
                          f"{MAX_UNITS:,} units in a network), got {blocks}")
    if shortcut and spec.ordering is Ordering.BN_AFTER_ADD:
        log.warning("bn_after_add: the BN after each addition also normalises the shortcut, "
                    "so the new units are not exactly the identity")
    kind = Shortcut.NONE if not shortcut else (
        Shortcut.PROJECTION if spec.is_plain else spec.shortcut)  # identity-shaped: identity
    width = spec.widths[stage - 1]
    reference = next(model.parameters())
    # the same memory format as the rest, or the next layers may take another (inexact) path
    channels_last = _channels_last(model)
    grown = copy.deepcopy(model)
    for _ in range(blocks):
        # the spec's own unit kind, norm, attention...; no stochastic depth in the new ones
        unit_spec = spec.replace(shortcut=kind, drop_path_rate=0.0, avg_down=False)
        unit = build_unit(unit_spec, width * spec.expansion, width)
        init_weights(unit)  # as build() initialises a network
        if shortcut and identity:
            zero_init_last(unit)
        unit.to(device=reference.device, dtype=reference.dtype)
        if channels_last:
            unit.to(memory_format=torch.channels_last)
        grown.stage_units()[stage - 1].append(unit)
    depths = tuple(d + blocks * (i == stage - 1) for i, d in enumerate(spec.depths))
    grown.spec = spec.replace(depths=depths) if shortcut != spec.is_plain else None
    grown.train(model.training)
    return grown


def _channels_last(model: nn.Module) -> bool:
    # a 1-channel or 1x1 kernel is contiguous in both formats, so look at a 3x3 conv
    weight = next((p for p in model.parameters()
                   if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1), None)
    return weight is not None and not weight.is_contiguous() and weight.is_contiguous(
        memory_format=torch.channels_last)
