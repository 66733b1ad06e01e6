"""Convolutions on maps smaller than their kernel, trained as one matrix product.

A 3x3 convolution over a 1x1 map only ever multiplies its centre tap (the other eight see
padding), and over a 2x2 map each output sees 4 of the 9 taps; oneDNN still computes all
nine, and its backward pass is slow on such maps. ImageNet-shaped nets on small images end
in these maps: ``d2l_resnet18`` on 28x28 Fashion-MNIST runs its last two stages at 2x2 and
1x1. There the convolution is written exactly as a dense matrix: output position o and input
position i are joined by tap ``i - o * stride + padding`` when that tap exists, by zero when
it does not. Same function, same parameters and gradients, 2.25x fewer multiplies at 2x2 and
9x fewer at 1x1, in one well-shaped GEMM (``python -m benchmarks training --cases d2l-28``).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import fx, nn


def conv_forward(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; in training, a Conv2d over a map of at most half as many positions as its
    kernel has taps runs as a dense matrix product instead (forward hooks of ``conv`` do not
    fire then). Evaluation, export and torch.fx tracing always see the layer itself."""
    if not (isinstance(conv, nn.Conv2d) and conv.training and not isinstance(x, fx.Proxy)
            and x.dim() == 4 and _dense_applies(conv, *x.shape[-2:])):
        return conv(x)
    batch, cin, h, w = x.shape
    cout = conv.weight.shape[0]
    # torch.compile traces the selection into its graph, where the cache has no use
    selection = _tap_selection.__wrapped__ if torch.compiler.is_compiling() else _tap_selection
    select, (ho, wo), (rows, cols) = selection(
        h, w, conv.kernel_size, conv.stride, conv.padding, conv.weight.device, conv.weight.dtype)
    # dense[o, i] = weight[:, :, tap(o, i)], or 0: a product with a 0/1 selection matrix
    # (a gather's backward, a scatter, is several times slower), over the rectangle of taps
    # that meet the map at all (at 1x1, the centre one), as (cout, pair, cin). The taps are
    # read in the weight's own memory order, so its gradient comes back in its layout: a
    # transposed one costs a copy in AccumulateGrad and another in torch's fused SGD (which
    # copies every gradient that is not NCHW-contiguous), 16 ms each at 512x512x3x3
    weight = conv.weight
    if weight.is_contiguous():
        dense = (weight[:, :, rows, cols].reshape(cout, cin, -1) @ select.T).transpose(1, 2)
    else:  # channels_last: (cout, kh, kw, cin) in memory
        dense = select @ weight.permute(0, 2, 3, 1)[:, rows, cols].reshape(cout, -1, cin)
    dense = dense.reshape(cout, ho * wo, h * w, cin).transpose(0, 1)
    dense = dense.reshape(ho * wo * cout, h * w * cin)  # a view where the output is 1x1
    bias = None if conv.bias is None else conv.bias.repeat(ho * wo)
    # channels-last order (position-major, channel-minor) on both sides
    y = F.linear(x.permute(0, 2, 3, 1).reshape(batch, h * w * cin), dense, bias)
    return y.view(batch, ho, wo, cout).permute(0, 3, 1, 2)


def _dense_applies(conv: nn.Conv2d, h: int, w: int) -> bool:
    """A small enough map, in a convolution the selection handles (one whose output would
    be empty is left to nn.Conv2d to refuse; padding as wide as the kernel, where an output
    may meet no tap at all, to nn.Conv2d to compute)."""
    kh, kw = conv.kernel_size
    if not (conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and 2 * h * w <= kh * kw):
        return False
    sides = zip((h, w), conv.padding, conv.kernel_size, strict=True)
    return all(size + 2 * p >= k and p < k for size, p, k in sides)


@cache
def _tap_selection(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], device: torch.device, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, tuple[int, int], tuple[slice, slice]]:
    """(out positions x in positions, taps) 0/1 matrix: which tap joins each pair, if any;
    the output's size; the rows and columns of the kernel that any pair uses."""
    per_dim = []
    for size, k, s, p in zip((h, w), kernel, stride, padding, strict=True):
        out = (size + 2 * p - k) // s + 1
        low, high = max(0, p - (out - 1) * s), min(k, size + p)  # the taps a pair can use
        tap = torch.arange(size)[None, :] - torch.arange(out)[:, None] * s + p  # out, in
        # no data-dependent shapes, so torch.compile traces it into the graph unbroken
        per_dim.append((tap[..., None] == torch.arange(low, high), out, slice(low, high)))
    (sh, ho, rows), (sw, wo, cols) = per_dim  # (out, in, taps used) per dimension
    select = sh[:, None, :, None, :, None] * sw[None, :, None, :, None, :]  # ho wo h w kh kw
    return select.reshape(ho * wo * h * w, -1).to(device, dtype), (ho, wo), (rows, cols)
