"""Fold an eval-mode BatchNorm into the Linear / Conv2d module right before it.

y = (W x + b - mean) * s + beta with s = gamma / sqrt(var + eps) becomes W' = W * s (per
output unit), b' = (b - mean) * s + beta (torch.nn.utils.fusion, computed in float64).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils import fusion

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
    """torch.nn.utils.fusion in float64, the result cast back to the layer's dtype."""
    assert batchnorm.running_var is not None and batchnorm.running_mean is not None
    mean, var = batchnorm.running_mean.double(), batchnorm.running_var.double()
    gamma = batchnorm.weight.detach().double() if batchnorm.affine else torch.ones_like(mean)
    beta = batchnorm.bias.detach().double() if batchnorm.affine else torch.zeros_like(mean)
    bias = layer.bias.detach().double() if layer.bias is not None else None
    fuse = fusion.fuse_linear_bn_weights if isinstance(layer, nn.Linear) \
        else fusion.fuse_conv_bn_weights
    weight, fused_bias = fuse(layer.weight.detach().double(), bias, mean, var, batchnorm.eps,
                              gamma, beta)
    fused = copy.deepcopy(layer)
    dtype = layer.weight.dtype
    fused.weight = nn.Parameter(weight.detach().to(dtype))
    fused.bias = nn.Parameter(fused_bias.detach().to(dtype))
    return fused.eval()
