"""Standard layers built from constant weights.

Graphs that come from files (torch.export archives, ONNX models) compute their layers as
calls on constant tensors (``aten.conv2d(x, W, b, ...)``, ONNX ``Conv(x, W, b)``). Pruning and
compaction read layers as ``nn.Module`` calls, so both readers turn such calls into the
modules below; each layer kind is taught here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ReliefError

_CONVS: dict[int, Any] = {1: nn.Conv1d, 2: nn.Conv2d}
_TRANSPOSED_CONVS: dict[int, Any] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def conv(weight: torch.Tensor, bias: torch.Tensor | None, *, stride: Sequence[int],
         padding: Sequence[int], dilation: Sequence[int], groups: int) -> nn.Module:
    """nn.Conv1d / nn.Conv2d holding ``weight`` [out, in / groups, *kernel] and ``bias``;
    ``padding`` is symmetric, one entry per spatial axis."""
    spatial = weight.dim() - 2
    if spatial not in _CONVS:
        raise ReliefError(f"a {spatial}-d convolution is not supported (1-d and 2-d are)")
    layer: Any = _CONVS[spatial](weight.shape[1] * groups, weight.shape[0],
                            tuple(weight.shape[2:]), stride=tuple(stride),
                            padding=tuple(padding), dilation=tuple(dilation), groups=groups,
                            bias=bias is not None)
    _fill(layer, weight, bias)
    return layer


def conv_transpose(weight: torch.Tensor, bias: torch.Tensor | None, *, stride: Sequence[int],
                   padding: Sequence[int], output_padding: Sequence[int],
                   dilation: Sequence[int]) -> nn.Module:
    """nn.ConvTranspose1d / 2d (one group) holding ``weight`` [in, out, *kernel] and ``bias``."""
    spatial = weight.dim() - 2
    if spatial not in _TRANSPOSED_CONVS:
        raise ReliefError(f"a {spatial}-d transposed convolution is not supported")
    layer: Any = _TRANSPOSED_CONVS[spatial](
        weight.shape[0], weight.shape[1], tuple(weight.shape[2:]), stride=tuple(stride),
        padding=tuple(padding), output_padding=tuple(output_padding),
        dilation=tuple(dilation), bias=bias is not None)
    _fill(layer, weight, bias)
    return layer


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """y = x W^T + b with ``weight`` [out, in]."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    _fill(layer, weight, bias)
    return layer


def batch_norm(scale: torch.Tensor | None, shift: torch.Tensor | None, mean: torch.Tensor,
               var: torch.Tensor, eps: float, input_rank: int) -> nn.Module:
    """Inference BatchNorm: y = (x - mean) / sqrt(var + eps) * scale + shift."""
    if input_rank not in _BATCH_NORMS:
        raise ReliefError(f"BatchNorm on a rank-{input_rank} tensor is not supported")
    layer: Any = _BATCH_NORMS[input_rank](mean.numel(), eps=float(eps),
                                     affine=scale is not None or shift is not None)
    with torch.no_grad():
        layer.running_mean.copy_(mean.reshape(-1))
        layer.running_var.copy_(var.reshape(-1))
        if layer.affine:
            layer.weight.fill_(1.0) if scale is None else layer.weight.copy_(scale.reshape(-1))
            layer.bias.fill_(0.0) if shift is None else layer.bias.copy_(shift.reshape(-1))
    return layer.eval()


def _fill(layer: Any, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.reshape(-1))
