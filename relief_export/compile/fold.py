"""Fold an eval-mode BatchNorm into the Linear / Conv2d module right before it.

y = (W x + b - mean) * s + beta with s = gamma / sqrt(var + eps) becomes W' = W * s (per
output unit), b' = (b - mean) * s + beta.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from . import graph as g


def fold_batchnorms(graph_module: fx.GraphModule) -> list[str]:
    """Fold every foldable BatchNorm in place; returns the names of those folded."""
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    folded = []
    for node in list(graph_module.graph.nodes):
        layer_node = node.args[0] if node.args else None
        if not _foldable(node, layer_node, modules, calls):
            continue
        assert isinstance(layer_node, fx.Node)
        layer = modules[str(layer_node.target)]
        batchnorm = modules[str(node.target)]
        assert isinstance(layer, (nn.Linear, nn.Conv2d))
        assert isinstance(batchnorm, (nn.BatchNorm1d, nn.BatchNorm2d))
        g.set_attribute(graph_module, str(layer_node.target), _fused(layer, batchnorm))
        node.replace_all_uses_with(layer_node)
        graph_module.graph.erase_node(node)
        folded.append(str(node.target))
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()
    return folded


def _foldable(node: fx.Node, layer_node, modules: dict[str, nn.Module],
              calls: dict[str, int]) -> bool:
    if node.op != "call_module" or not isinstance(layer_node, fx.Node) or \
            layer_node.op != "call_module" or len(layer_node.users) != 1:
        return False
    batchnorm, layer = modules[str(node.target)], modules[str(layer_node.target)]
    return isinstance(batchnorm, (nn.BatchNorm1d, nn.BatchNorm2d)) and \
        batchnorm.track_running_stats and batchnorm.running_var is not None and \
        isinstance(layer, (nn.Linear, nn.Conv2d)) and calls[str(layer_node.target)] == 1 and \
        calls[str(node.target)] == 1


def _fused(layer: nn.Linear | nn.Conv2d, batchnorm: nn.BatchNorm1d | nn.BatchNorm2d
           ) -> nn.Module:
    assert batchnorm.running_var is not None and batchnorm.running_mean is not None
    scale = torch.rsqrt(batchnorm.running_var.double() + batchnorm.eps)
    if batchnorm.affine:
        scale = scale * batchnorm.weight.detach().double()
    shift = batchnorm.bias.detach().double() if batchnorm.affine else torch.zeros_like(scale)
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    weight = layer.weight.detach().double() * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
    fused: nn.Linear | nn.Conv2d
    if isinstance(layer, nn.Linear):
        fused = nn.Linear(layer.in_features, layer.out_features)
    else:
        fused = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,  # type: ignore[arg-type]
                          layer.stride, layer.padding, layer.dilation, layer.groups, True)  # type: ignore[arg-type]
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_((bias - batchnorm.running_mean.double()) * scale + shift)  # type: ignore[union-attr]
    return fused.eval()
