"""Apply a Decision to the traced graph: smaller layers, folded constants, updated arguments."""

from __future__ import annotations

import operator
from collections import Counter

import torch
from torch import fx, nn

from ..channels import SlotGraph
from ..graph import layers
from . import graph as g
from .decide import Decision
from .edits import apply_edit, bounding_box, box_features
from .report import ALIGN_REASON, LayerChange


def rewrite(slots: SlotGraph, decision: Decision) -> tuple[list[LayerChange], int]:
    """Rewrite ``slots.graph_module`` in place; returns per-layer changes and gathered inputs."""
    kept = {node: decision.kept(slots, node) for node in slots.values}
    for edit in slots.edits:
        if edit.kind == "crop":  # the used features' bounding box is what stays
            edit.detail = bounding_box(edit.source, kept[edit.node])
            kept[edit.node] = box_features(edit.source, edit.detail)
    changes = [_rewrite_layer(slots, decision, layer, kept)
               for layer in slots.layers.values()]
    dropped = 0
    for edit in slots.edits:
        dropped += apply_edit(slots, decision, edit, kept)
    for partial in slots.partial_adds:
        _place_branch(slots, partial, kept)
    graph_module = slots.graph_module
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()
    return changes, dropped


def _rewrite_layer(slots: SlotGraph, decision: Decision, layer: g.LayerCall,
                   kept: dict[fx.Node, list[int]]) -> LayerChange:
    source_node = layer.node.args[0]
    assert isinstance(source_node, fx.Node)
    source = slots.values[source_node]
    rows, columns = kept[layer.node], kept[source_node]
    foldable = _foldable(layer, source, columns)
    weight = layer.weight.clone()
    bias = _folded_bias(layer, source, foldable)
    if layer.groups == 1:
        weight[:, foldable] = 0  # their effect now lives in the bias
        if layer.node in decision.representative:
            _merge_border_constants(weight, source, decision.representative[layer.node])
        new_weight, groups = weight[rows][:, columns], 1
    else:  # whole groups go (see the interpreter): the kept rows are whole groups
        new_weight, groups = weight[rows], len(rows) // (layer.out_units // layer.groups)
    new_bias = bias[rows] if bias is not None else None
    if rows:  # a layer left with no unit goes with its part of a concatenation
        _install(slots.graph_module, layer, new_weight.clone(), new_bias, groups)
    return _change(slots, decision, layer, rows, new_weight, new_bias)


def _merge_border_constants(weight: torch.Tensor, source, representative: int) -> None:
    """W[:, rep] += sum_c (v_c / v_rep) W[:, c] over the other nonzero constant inputs c."""
    others = ~source.live & (source.value != 0)
    others[representative] = False
    if not others.any():
        return
    ratios = (source.value[others] / source.value[representative]).to(weight.dtype)
    shape = (1, -1, *([1] * (weight.dim() - 2)))
    weight[:, representative] += (weight[:, others] * ratios.view(shape)).sum(1)
    weight[:, others] = 0


def _foldable(layer: g.LayerCall, source, columns: list[int]) -> torch.Tensor:
    """Input channels, constant over the whole map as this layer sees it, whose effect goes into
    the bias. Kept ones only when the layer has a bias anyway (never add one for them)."""
    constant = ~source.live
    uniform = constant & (source.value == 0) if layer.padded else constant
    removed = torch.ones_like(uniform)
    removed[columns] = False
    needs_bias = bool((uniform & removed & (source.value != 0)).any())
    if layer.bias is None and not needs_bias:
        return uniform & (removed | (source.value == 0))
    return uniform


def _folded_bias(layer: g.LayerCall, source, foldable: torch.Tensor) -> torch.Tensor | None:
    """b_j + sum over foldable constant inputs i of W_ji v_i (taps summed); None if no bias."""
    constant = foldable & (source.value != 0)
    bias = layer.bias.double().clone() if layer.bias is not None else None
    if not constant.any() or layer.groups != 1:
        return bias.to(layer.weight.dtype) if bias is not None else None
    weight = layer.weight.double()
    if weight.dim() > 2:
        weight = weight.flatten(2).sum(2)
    shift = weight[:, constant] @ source.value[constant]
    total = shift if bias is None else bias + shift
    return total.to(layer.weight.dtype)


def _install(graph_module: fx.GraphModule, layer: g.LayerCall, weight: torch.Tensor,
             bias: torch.Tensor | None, groups: int) -> None:
    if layer.module is not None:
        g.set_attribute(graph_module, str(layer.node.target),
                        _new_module(layer, weight, bias, groups))
        return
    arguments = g.bound_arguments(layer.node)
    g.set_attribute(graph_module, str(arguments["weight"].target), weight)
    if bias is not None:
        if arguments.get("bias") is not None:
            g.set_attribute(graph_module, str(arguments["bias"].target), bias)
        else:
            name = f"{layer.node.name}_folded_bias"
            graph_module.register_buffer(name, bias)
            with graph_module.graph.inserting_before(layer.node):
                attr = graph_module.graph.get_attr(name)
            layer.node.update_arg(2, attr) if len(layer.node.args) > 2 \
                else layer.node.update_kwarg("bias", attr)
    if groups != layer.groups:
        if len(layer.node.args) > 6:
            layer.node.update_arg(6, groups)
        else:
            layer.node.update_kwarg("groups", groups)


def _new_module(layer: g.LayerCall, weight: torch.Tensor, bias: torch.Tensor | None,
                groups: int) -> nn.Module:
    if layer.kind == "linear":
        return layers.linear(weight, bias).eval()
    if layer.kind == "conv_transpose":
        assert isinstance(layer.module, (nn.ConvTranspose1d, nn.ConvTranspose2d))
        return layers.conv_transpose(weight.transpose(0, 1), bias, stride=layer.stride,
                                     padding=layer.padding,
                                     output_padding=tuple(layer.module.output_padding),
                                     dilation=layer.dilation).eval()
    return layers.conv(weight, bias, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, groups=groups).eval()


def _change(slots: SlotGraph, decision: Decision, layer: g.LayerCall, rows: list[int],
            new_weight: torch.Tensor, bias: torch.Tensor | None) -> LayerChange:
    output = slots.values[layer.node]
    gone = torch.ones(layer.out_units, dtype=torch.bool)
    gone[rows] = False
    positions = _positions(layer.node)
    old_params = layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)
    new_params = new_weight.numel() + (bias.numel() if bias is not None else 0)
    reasons = Counter(decision.reasons[slots.union.find(output.ids[j])]
                      for j in rows if not output.live[j])
    return LayerChange(
        name=layer.name, shape_before=list(layer.weight.shape),
        shape_after=list(new_weight.shape),
        removed_unread=int((gone & output.live).sum()),
        removed_zero=int((gone & ~output.live & (output.value == 0)).sum()),
        removed_constant_folded=int((gone & ~output.live & (output.value != 0)).sum()),
        params_before=old_params, params_after=new_params,
        macs_before=layer.weight.numel() * positions, macs_after=new_weight.numel() * positions,
        kept_constant=sum(reasons.values()),
        kept_to_align=sum(n for why, n in reasons.items() if why.startswith(ALIGN_REASON)),
        kept_reasons=[f"kept {count} constant unit(s): {why}" for why, count in reasons.items()])


def _positions(node: fx.Node) -> int:
    shape = g.shape_of(node)
    if shape is None or len(shape) <= 2:
        return 1
    count = 1
    for size in shape[2:]:
        count *= size
    return count


def _place_branch(slots: SlotGraph, partial, kept: dict[fx.Node, list[int]]) -> None:
    """stream + index_select(cat(branch, 0), placement) + constants of removed branch units."""
    graph_module, node = slots.graph_module, partial.node
    out_channels, branch_channels = kept[node], kept[partial.branch]
    branch = slots.values[partial.branch]
    position = {c: i for i, c in enumerate(branch_channels)}
    placement = [position.get(c, len(branch_channels)) for c in out_channels]
    constants = torch.tensor([0.0 if c in position or branch.live[c] else
                              float(branch.value[c]) for c in out_channels])
    if branch_channels == out_channels and not constants.any():
        return
    stream = next(a for a in node.args[:2] if isinstance(a, fx.Node) and a is not partial.branch)
    rank = len(g.shape_of(node) or (0, 0))
    graph = graph_module.graph
    name = f"{node.name}_placement"
    graph_module.register_buffer(name, torch.tensor(placement, dtype=torch.long))
    with graph.inserting_before(node):
        zero = graph.call_function(torch.zeros_like, (graph.call_function(
            operator.getitem, (stream, (slice(None), slice(0, 1)))),))
        joined = graph.call_function(torch.cat, ([partial.branch, zero], 1))
        placed = graph.call_function(torch.index_select, (joined, 1, graph.get_attr(name)))
    node.replace_input_with(partial.branch, placed)
    if constants.any():
        shift_name = f"{node.name}_constants"
        graph_module.register_buffer(shift_name,
                                     constants.view(1, -1, *([1] * (rank - 2))).float())
        with graph.inserting_after(node):
            shift = graph.get_attr(shift_name)
        with graph.inserting_after(shift):
            shifted = graph.call_function(operator.add, (node, shift))
        node.replace_all_uses_with(shifted, delete_user_cb=lambda user: user is not shifted)
