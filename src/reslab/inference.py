"""A trained model made fast for inference: batch norm folded into the convolutions before it,
channels_last memory, bf16 where the hardware computes it quickly, no autograd."""

from __future__ import annotations

import copy
import warnings
from contextlib import suppress

import torch
from torch import nn
from torch.fx.proxy import TraceError

with warnings.catch_warnings():  # importing it defines TorchScript helpers, now deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.fx.experimental.optimization import fuse

from reslab.runtime.device import autocast, resolve_device, resolve_precision


class InferenceModel(nn.Module):
    """``InferenceModel(model)(images)`` gives ``model.eval()(images)`` as fp32 logits, faster.

    ``precision``: ``auto`` (bf16 on CPUs with bf16 kernels and on CUDA, else fp32), ``fp32``
    or ``bf16``. ``bf16_weights``: in bf16, store the weights in bf16 once, rather than let
    autocast convert them at every call. ``compile``: ``torch.compile`` the network with weights
    frozen as constants (Inductor's ``freezing``: convolutions fused with what follows them,
    weights pre-packed for oneDNN); the first call compiles, for seconds, and the same network
    then answers faster on CPU (resnet50: 1.4x at batch 1) (``python -m benchmarks inference``).
    It needs a C++ compiler on CPU. The model given is left as it is (a copy is fused).
    """

    def __init__(self, model: nn.Module, precision: str = "auto", device: str = "auto",
                 fuse_bn: bool = True, channels_last: bool = True, bf16_weights: bool = True,
                 compile: bool = False):
        super().__init__()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        net = copy.deepcopy(model).eval().to(self.device)
        if fuse_bn:
            # torch.fx folds each eval-mode BatchNorm into the conv that feeds it; a model fx
            # cannot trace runs unfused
            with suppress(TraceError):
                net = fuse(net)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        self.dtype = None  # autocast
        if self.precision == "bf16" and bf16_weights:
            self.dtype = torch.bfloat16
            self.net = self.net.to(self.dtype)
        self.fused = fuse_bn and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                         for m in self.net.modules())
        self.compiled = compile
        if compile:
            self.net = torch.compile(self.net)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            # compiling happens at a call (the first, or a new input shape); Inductor reads
            # this setting then (torch.compile's options= does not carry it)
            import torch._inductor.config

            with torch._inductor.config.patch(freezing=True):
                return self._forward(images)
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, memory_format=self.memory_format)
        if self.dtype is not None:
            return self.net(images.to(self.dtype)).float()
        with autocast(self.device, self.precision):
            return self.net(images).float()
