"""Operations that move the channel axis without touching values: expand, transpose, permute
and views (view / reshape / flatten / (un)squeeze), including a view that splits channels
into attention heads and the view that merges them back."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from ...graph import ops
from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import ChannelEdit, Slots
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder


@rule(functions=ops.EXPAND_FUNCTIONS, methods=("expand", "expand_as"))
def expand(b: Builder, node: fx.Node) -> Slots | None:
    """expand / expand_as / broadcast_to: the channel axis (counted from the end) stays."""
    source_node = lc.arg(node, 0, "input")
    source, before, after = b.of(source_node), shape_of(source_node), shape_of(node)
    if source is None or before is None or after is None:
        return None
    axis = len(after) - len(before) + source.axis
    return source.moved(axis) if after[axis] == source.width else None


@rule(functions=(torch.flip, ops.aten.flip.default), methods=("flip",))
def flip(b: Builder, node: fx.Node) -> Slots | None:
    """flip(x, dims) of axes other than the channel axis reverses positions, not channels:
    the slots (and a constant channel's value) stay; flipping the channel axis is not
    modelled."""
    source_node = lc.arg(node, 0, "input")
    source, shape = b.of(source_node), shape_of(source_node)
    dims: list[Any] = list(node.args[1:]) if node.op == "call_method" \
        else list(lc.arg(node, 1, "dims") or ())
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = list(dims[0])
    if source is None or shape is None or not dims or \
            not all(isinstance(d, int) for d in dims):
        return None
    return None if source.axis in {d % len(shape) for d in dims} else source


@rule(functions=ops.TRANSPOSE_FUNCTIONS, methods=("transpose",), heads=True)
def transpose(b: Builder, node: fx.Node) -> Slots | None:
    source = b.of(lc.arg(node, 0, "input"))
    shape = shape_of(lc.arg(node, 0, "input"))
    first, second = lc.arg(node, 1, "dim0"), lc.arg(node, 2, "dim1")
    if source is None or shape is None or not isinstance(first, int) or \
            not isinstance(second, int):
        return None
    swap = {first % len(shape): second % len(shape), second % len(shape): first % len(shape)}
    inner = None if source.inner_axis is None else swap.get(source.inner_axis,
                                                            source.inner_axis)
    return source.moved(swap.get(source.axis, source.axis), inner)


@rule(functions=ops.PERMUTE_FUNCTIONS, methods=("permute",), heads=True)
def permute(b: Builder, node: fx.Node) -> Slots | None:
    source = b.of(lc.arg(node, 0, "input"))
    shape = shape_of(lc.arg(node, 0, "input"))
    order: list[Any] = list(node.args[1:]) if node.op == "call_method" \
        else list(lc.arg(node, 1, "dims") or ())
    if len(order) == 1 and isinstance(order[0], (list, tuple)):
        order = list(order[0])
    if source is None or shape is None or not all(isinstance(d, int) for d in order):
        return None
    order = [d % len(shape) for d in order]
    inner = None if source.inner_axis is None else order.index(source.inner_axis)
    return source.moved(order.index(source.axis), inner)


@rule(functions=ops.RESHAPE_FUNCTIONS | ops.UNSQUEEZE_FUNCTIONS,
      methods=(*ops.RESHAPE_METHODS, "unsqueeze", "squeeze"), modules=(nn.Flatten,),
      heads=True)
def reshape(b: Builder, node: fx.Node) -> Slots | None:
    """view / reshape / flatten / (un)squeeze: the channel axis survives when the sizes
    before it multiply to the same count; flattening it with everything after it repeats
    each channel's slot over its block of features."""
    source_node = lc.arg(node, 0, "input")
    source = b.of(source_node)
    before, after = shape_of(source_node), shape_of(node)
    if source is None or before is None or after is None:
        return None
    if source.inner_axis is not None:
        return _reshape_heads(b, node, source_node, source, before, after)
    split = _split_into_heads(before, after, source.axis)
    if split is not None:
        head_axis, head_size = split
        b.s.edits.append(ChannelEdit(node, "reshape", source_node, (head_axis,
                                                                    head_size)))
        return source.in_heads(head_axis, head_axis + 1, head_size)
    placed = _channel_after_reshape(before, after, source.axis)
    if placed is None:
        return None
    axis, block = placed
    if block == 1:
        b.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
        return source.moved(axis)
    if isinstance(source_node, fx.Node) and source_node.op == "placeholder" and axis == 1 \
            and source.axis == 1:
        features = b.fresh(after[1])
        b.s.edits.append(ChannelEdit(node, "crop", source_node))
        b.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
        return features
    b.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
    return source.repeat(block, axis)


def _reshape_heads(b: Builder, node: fx.Node, source_node: Any, source: Slots,
                   before: tuple[int, ...], after: tuple[int, ...]) -> Slots | None:
    """A view of head-split channels: the same shape (heads stay where they are), or heads
    and their features, adjacent and in that order, merged back into one axis."""
    assert source.inner_axis is not None
    if before == after:
        b.s.edits.append(ChannelEdit(node, "reshape", source_node,
                                     (source.axis, source.head_size)))
        return source
    if source.inner_axis != source.axis + 1:
        return None
    merged = (*before[:source.axis], source.width, *before[source.inner_axis + 1:])
    if tuple(after) != merged:
        return None
    b.s.edits.append(ChannelEdit(node, "reshape", source_node, (source.axis, 1)))
    return source.moved(source.axis)


def _split_into_heads(before: tuple[int, ...], after: tuple[int, ...], axis: int
                      ) -> tuple[int, int] | None:
    """(head axis, head size) when the view splits the channel axis into two adjacent axes,
    heads first, leaving every other axis as it was."""
    if len(after) != len(before) + 1 or tuple(after[:axis]) != tuple(before[:axis]) or \
            tuple(after[axis + 2:]) != tuple(before[axis + 1:]):
        return None
    heads, head_size = after[axis], after[axis + 1]
    if heads * head_size != before[axis] or heads < 2 or head_size < 2:
        return None
    return axis, head_size


def _channel_after_reshape(before: tuple[int, ...], after: tuple[int, ...], axis: int
                           ) -> tuple[int, int] | None:
    """(axis, block) of the channels once ``before`` is viewed as ``after``: an axis of the
    same size with equal products on both sides (block 1), or the last axis holding the
    channel and everything after it (block = product of the axes after the channel)."""
    lead, trail = math.prod(before[:axis]), math.prod(before[axis + 1:])
    count = 1
    for position, size in enumerate(after):
        if count == lead:
            rest = math.prod(after[position + 1:])
            if size == before[axis] and rest == trail:
                return position, 1
            if size == before[axis] * trail and rest == 1 and trail > 1:
                return position, trail
        count *= size
    return None
