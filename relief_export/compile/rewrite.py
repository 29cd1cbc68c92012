"""Apply a Decision to the traced graph: smaller layers, folded constants, updated arguments."""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .. import layers
from ..channels import ChannelEdit, SlotGraph
from ..fx_attrs import free_attribute_name
from . import graph as g
from .decide import Decision
from .report import ALIGN_REASON, LayerChange


def rewrite(slots: SlotGraph, decision: Decision) -> tuple[list[LayerChange], int]:
    """Rewrite ``slots.graph_module`` in place; returns per-layer changes and gathered inputs."""
    kept = {node: decision.kept(slots, node) for node in slots.values}
    for edit in slots.edits:
        if edit.kind == "crop":  # the used features' bounding box is what stays
            edit.detail = _bounding_box(edit.source, kept[edit.node])
            kept[edit.node] = _box_features(edit.source, edit.detail)
    changes = [_rewrite_layer(slots, decision, layer, kept)
               for layer in slots.layers.values()]
    dropped = 0
    for edit in slots.edits:
        dropped += _apply_edit(slots, decision, edit, kept)
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


@dataclass(frozen=True)
class _Context:
    """What every edit reads: the interpreter's graph, the decision, kept channels per node."""

    slots: SlotGraph
    decision: Decision
    kept: dict[fx.Node, list[int]]

    def kept_slots(self, ids: list[int]) -> int:
        return sum(self.slots.union.find(slot) in self.decision.reasons for slot in ids)


def _pad_edit(c: _Context, edit: ChannelEdit) -> None:
    zeros_before, zeros_after, pair = edit.detail
    _repad(edit.node, pair, c.kept_slots(zeros_before), c.kept_slots(zeros_after))


def _aten_slice_edit(c: _Context, edit: ChannelEdit) -> None:
    start, stop = _new_range(edit.detail, c.kept[edit.source])  # type: ignore[index]
    edit.node.update_arg(2, start)
    edit.node.update_arg(3, stop)


def _reshape_edit(c: _Context, edit: ChannelEdit) -> None:
    axis, per_entry = edit.detail  # the axis, and channels per entry of that axis (heads)
    _reshape(edit.node, axis, len(c.kept[edit.node]) // per_entry)


def _cat_edit(c: _Context, edit: ChannelEdit) -> None:
    parts = g.arg(edit.node, 0, "tensors")
    edit.node.update_arg(0, [part for part in parts if c.kept.get(part) != []])


# ChannelEdit.kind -> how the node's arguments follow the channels that stay; returns the
# input features dropped (the crop), else None
_EDITS: dict[str, Callable[[_Context, ChannelEdit], int | None]] = {
    "batchnorm": lambda c, e: _slice_batchnorm(c.slots.graph_module, e.node, c.kept[e.node]),
    "attr": lambda c, e: _slice_attribute(c.slots.graph_module, e.source, e.detail,
                                          c.kept[e.node]),
    "pad": _pad_edit,
    "slice": lambda c, e: _reslice(e.node, e.detail, c.kept[e.source]),  # type: ignore[index]
    "aten_slice": _aten_slice_edit,
    "pick": lambda c, e: _repick(c.slots.graph_module, e, c.kept[e.node],
                                 c.kept[e.source]),  # type: ignore[index]
    "aten_pick": lambda c, e: _repick(c.slots.graph_module, e, c.kept[e.node],
                                      c.kept[e.source]),  # type: ignore[index]
    "reshape": _reshape_edit,
    "split": lambda c, e: _resplit(c.slots, c.decision, e.node, e.detail),
    "cat": _cat_edit,
    "crop": lambda c, e: _crop(c.slots, e.node, e.source, e.detail),
}


def _apply_edit(slots: SlotGraph, decision: Decision, edit: ChannelEdit,
                kept: dict[fx.Node, list[int]]) -> int:
    return _EDITS[edit.kind](_Context(slots, decision, kept), edit) or 0


def _slice_batchnorm(graph_module: fx.GraphModule, node: fx.Node, channels: list[int]) -> None:
    old = graph_module.get_submodule(str(node.target))
    assert isinstance(old, (nn.BatchNorm1d, nn.BatchNorm2d))
    new = type(old)(len(channels), old.eps, old.momentum, old.affine, old.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(old, name) is not None:
                getattr(new, name).copy_(getattr(old, name)[channels])
        if old.num_batches_tracked is not None and new.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(old.num_batches_tracked)
    g.set_attribute(graph_module, str(node.target), new.eval())


def _slice_attribute(graph_module: fx.GraphModule, attr: fx.Node | None, width: int,
                     channels: list[int]) -> None:
    assert attr is not None
    value = g.attribute(graph_module, str(attr.target))
    axis = next(i for i, size in enumerate(value.shape) if size == width)
    sliced = value.index_select(axis, torch.tensor(channels, dtype=torch.long))
    g.set_attribute(graph_module, str(attr.target), sliced.clone())


def _repad(node: fx.Node, pair: int, before: int, after: int) -> None:
    """Set the (before, after) pair of the channel axis (pairs count from the last axis)."""
    pad = list(g.arg(node, 1, "pad"))
    pad[2 * pair], pad[2 * pair + 1] = before, after
    if len(node.args) > 1:
        node.update_arg(1, tuple(pad))
    else:
        node.update_kwarg("pad", tuple(pad))


def _new_range(detail: tuple[int, ...], kept_source: list[int]) -> tuple[int, int]:
    """Where channels start:stop of the source land once only ``kept_source`` remain."""
    start, stop = detail[:2]
    new_start = sum(1 for c in kept_source if c < start)
    return new_start, new_start + sum(1 for c in kept_source if start <= c < stop)


def _reslice(node: fx.Node, detail: tuple[int, int, int], kept_source: list[int]) -> None:
    """``detail``: the channel range and its entry's position in the index tuple."""
    index = g.arg(node, 1)
    entries = list(index) if isinstance(index, tuple) else [index]
    entries[detail[2]] = slice(*_new_range(detail, kept_source))
    node.update_arg(1, tuple(entries) if isinstance(index, tuple) else entries[0])


def _repick(graph_module: fx.GraphModule, edit: ChannelEdit, kept: list[int],
            kept_source: list[int]) -> None:
    """x[:, a:b:s] -> x[:, index] (or aten.slice -> index_select) with the positions, in the
    compacted source, of the picked channels that stay."""
    where, picked = edit.detail
    position = {channel: i for i, channel in enumerate(kept_source)}
    index = torch.tensor([position[picked[j]] for j in kept], dtype=torch.long)
    name = free_attribute_name(graph_module, f"{edit.node.name}_channels")
    graph_module.register_buffer(name, index)
    with graph_module.graph.inserting_before(edit.node):
        index_node = graph_module.graph.get_attr(name)
    node = edit.node
    if edit.kind == "aten_pick":
        node.target = torch.index_select
        node.args, node.kwargs = (node.args[0], where, index_node), {}
        return
    entries = list(node.args[1]) if isinstance(node.args[1], tuple) else [node.args[1]]
    entries[where] = index_node
    node.update_arg(1, tuple(entries))


def _reshape(node: fx.Node, axis: int, features: int) -> None:
    """A view / reshape giving its sizes as numbers: the channel axis' size becomes
    ``features`` (sizes given by -1 or computed in the graph adjust themselves)."""
    if node.op == "call_method":
        if node.target not in g.SIZED_RESHAPE_METHODS:
            return
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            shape = list(sizes[0])
            if isinstance(shape[axis], int) and shape[axis] != -1:
                shape[axis] = features
                node.update_arg(1, tuple(shape))
        elif isinstance(sizes[axis], int) and sizes[axis] != -1:
            node.update_arg(1 + axis, features)
        return
    given: Any = node.args[1] if len(node.args) > 1 else None
    if node.target in g.SIZED_RESHAPES and isinstance(given, (list, tuple)):
        shape = list(given)
        if isinstance(shape[axis], int) and shape[axis] != -1:
            shape[axis] = features
            node.update_arg(1, shape)


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


def _resplit(slots: SlotGraph, decision: Decision, node: fx.Node, bounds: list[int]) -> None:
    """torch.split with the number of kept channels in each part."""
    ids = slots.values[node.args[0]].ids  # type: ignore[index]
    sizes = [sum(slots.union.find(ids[c]) in decision.reasons for c in range(a, b))
             for a, b in itertools.pairwise(bounds)]
    node.target = torch.split
    node.op = "call_function"
    node.args = (node.args[0], sizes, 1)
    node.kwargs = {}


Box = tuple[tuple[int, int], ...]


def _bounding_box(source: fx.Node | None, features: list[int]) -> Box:
    """Per input axis (after the batch), [start, stop) covering every used feature."""
    shape = g.shape_of(source)
    assert shape is not None
    dims = shape[1:]
    if not features:
        return tuple((0, 1) for _ in dims)
    coordinates = torch.tensor(features).unsqueeze(1)
    strides = torch.tensor([int(torch.tensor(dims[i + 1:]).prod()) for i in range(len(dims))])
    positions = (coordinates // strides) % torch.tensor(dims)
    low, high = positions.min(0).values, positions.max(0).values + 1
    return tuple((int(a), int(b)) for a, b in zip(low, high, strict=True))


def _box_features(source, box: Box) -> list[int]:
    """Flat feature indices inside the box, in the order a cropped tensor flattens to."""
    dims = g.shape_of(source)[1:]  # type: ignore[index]
    grid = torch.arange(int(torch.tensor(dims).prod())).view(dims)
    return grid[tuple(slice(a, b) for a, b in box)].flatten().tolist()


def _crop(slots: SlotGraph, node: fx.Node, source: fx.Node | None, box: Box) -> int:
    """Slice the network input to the box before it is flattened; returns features dropped."""
    assert source is not None
    features = len(slots.values[node].ids)
    kept = _box_features(source, box)
    if len(kept) == features:
        return 0
    index = (slice(None), *(slice(a, b) for a, b in box))
    with slots.graph_module.graph.inserting_before(node):
        cropped = slots.graph_module.graph.call_function(operator.getitem, (source, index))
    node.replace_input_with(source, cropped)
    return features - len(kept)
