"""How the graph's arguments follow the channels that stay: one function per kind of
``ChannelEdit`` (recorded by the channel rules), in the table ``EDITS``; and the crop of the
network input to the bounding box of the features some weight reads."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..channels import ChannelEdit, SlotGraph
from ..graph.attrs import free_attribute_name
from . import graph as g
from .decide import Decision


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
EDITS: dict[str, Callable[[_Context, ChannelEdit], int | None]] = {
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


def apply_edit(slots: SlotGraph, decision: Decision, edit: ChannelEdit,
               kept: dict[fx.Node, list[int]]) -> int:
    return EDITS[edit.kind](_Context(slots, decision, kept), edit) or 0


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


def bounding_box(source: fx.Node | None, features: list[int]) -> Box:
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


def box_features(source, box: Box) -> list[int]:
    """Flat feature indices inside the box, in the order a cropped tensor flattens to."""
    dims = g.shape_of(source)[1:]  # type: ignore[index]
    grid = torch.arange(int(torch.tensor(dims).prod())).view(dims)
    return grid[tuple(slice(a, b) for a, b in box)].flatten().tolist()


def _crop(slots: SlotGraph, node: fx.Node, source: fx.Node | None, box: Box) -> int:
    """Slice the network input to the box before it is flattened; returns features dropped."""
    assert source is not None
    features = len(slots.values[node].ids)
    kept = box_features(source, box)
    if len(kept) == features:
        return 0
    index = (slice(None), *(slice(a, b) for a, b in box))
    with slots.graph_module.graph.inserting_before(node):
        cropped = slots.graph_module.graph.call_function(operator.getitem, (source, index))
    node.replace_input_with(source, cropped)
    return features - len(kept)
