"""Operations that keep channels apart and map each one on its own: identities (dropout,
contiguous, clones), elementwise functions (activations; a constant channel c becomes f(c)),
and inference BatchNorm (y = x * s + t with s = gamma / sqrt(var + eps), t = beta - mean * s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from ...graph import ops
from .. import layer_call as lc
from ..structures import ChannelEdit, Slots
from ..table import rule

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..builder import Builder


@rule(functions=ops.IDENTITY_FUNCTIONS, methods=ops.IDENTITY_METHODS,
      modules=ops.IDENTITY_MODULES, heads=True)
def identity(b: Builder, node: fx.Node) -> Slots | None:
    return b.of(node.args[0])


@rule(functions=ops.ELEMENTWISE_FUNCTIONS, methods=ops.ELEMENTWISE_METHODS,
      modules=ops.ELEMENTWISE_MODULES, heads=True)
def elementwise(b: Builder, node: fx.Node) -> Slots | None:
    source = b.of(node.args[0])
    if source is None:
        return None
    function = _callable(b, node)
    constants = function(source.value.float().view(1, -1)).double().view(-1)
    return source.with_state(source.live.clone(), constants)


def _callable(b: Builder, node: fx.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    if node.op == "call_module":
        module = b.modules[str(node.target)]
        return lambda x: module(x.clone())
    if node.op == "call_method":
        return lambda x: getattr(x.clone(), str(node.target))(*node.args[1:], **node.kwargs)
    return lambda x: node.target(x.clone(), *node.args[1:], **node.kwargs)  # type: ignore[operator]


@rule(modules=(nn.BatchNorm1d, nn.BatchNorm2d))
def batchnorm(b: Builder, node: fx.Node) -> Slots | None:
    source = b.on_axis(node.args[0], 1)
    module = b.modules[str(node.target)]
    assert isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
    if source is None or not module.track_running_stats or \
            module.running_var is None:
        return None
    scale = (module.weight.detach().double() if module.affine else
             torch.ones(source.width, dtype=torch.float64)) / \
        torch.sqrt(module.running_var.double() + module.eps)
    mean = module.running_mean
    assert mean is not None
    shift = (module.bias.detach().double() if module.affine else 0.0) - mean.double() * scale
    live = source.live & (scale != 0)
    value = torch.where(source.live, shift, source.value * scale + shift)
    b.s.edits.append(ChannelEdit(node, "batchnorm", lc.arg(node, 0)))
    return source.with_state(live, value)
