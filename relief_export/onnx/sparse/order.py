"""The order of a covered layer's units (the blocks' concatenation) is free when they flow
only through per-channel ops (activations, pooling, dropout, spatial means; on the last axis
only per-element ones) into one layer that alone reads them on that axis: that layer's
weight is permuted along its input channels to match, W'[:, j] = W[:, order[j]] (rows of a
MatMul's [I, O]; after a flatten of [C, *spatial], blocks of S = prod(spatial) columns move
together). A layer left dense may have its units reordered the same way, for the layer that
reads them (``reorder_producer``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .cover import Cover, gathers, grouping_order, in_channel_order
from .layers import LAYER_KINDS, absorbable_weight, constant, known_sizes

PER_CHANNEL_OPS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu",
                   "Selu", "Softplus", "Gelu", "Clip", "MaxPool", "AveragePool",
                   "GlobalAveragePool", "GlobalMaxPool", "Dropout", "Identity"}
# per-element ops a block can apply itself (onnxruntime fuses them into a Conv / Gemm)
ACTIVATIONS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu",
               "Selu", "Softplus", "Gelu", "Clip"}
PER_ELEMENT_OPS = ACTIVATIONS | {"Dropout", "Identity"}


@dataclass(frozen=True)
class Absorber:
    """The layer whose weight absorbs the new order, and the spatial size per channel when a
    Flatten sits between (its weight columns come in blocks of that size)."""

    weight: ir.Value
    block: int
    input_axis: int  # the weight's axis of input channels


def absorber(value: ir.Value, axis: int = 1) -> Absorber | None:
    """Follow ``value`` (channels on ``axis``: 1, or -1 for the last) through per-channel
    ops (each the one reader of the value before it) to a layer that alone reads it on that
    axis, possibly after a flatten of the channels with what follows them (Flatten on axis
    1, or a Reshape to [batch, C * S])."""
    block = 1
    while not value.is_graph_output() and len(value.uses()) == 1:
        reader = next(iter(value.uses())).node
        if reader.inputs[0] is not value:
            return None
        if _per_channel(reader) if axis == 1 else _per_element(reader):
            value = reader.outputs[0]
            continue
        flattened = _flattened_block(reader) if block == 1 and axis == 1 else None
        if flattened is not None:
            block, value = flattened, reader.outputs[0]
            continue
        weight = absorbable_weight(reader, value, axis if block == 1 else 1)
        if weight is None:
            return None
        return Absorber(weight, block, LAYER_KINDS[reader.op_type].input_axis)
    return None


def _per_element(node: ir.Node) -> bool:
    """An op that maps each element on its own, its other inputs constants."""
    return node.op_type in PER_ELEMENT_OPS and \
        all(constant(v) is not None for v in node.inputs[1:] if v is not None)


def _per_channel(node: ir.Node) -> bool:
    """An op that maps each channel (axis 1) on its own, its other inputs constants."""
    if any(constant(v) is None for v in node.inputs[1:] if v is not None):
        return False
    if node.op_type in PER_CHANNEL_OPS:
        return True
    if node.op_type in ("ReduceMean", "ReduceMax"):
        axes = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if axes is None and node.attributes.get("axes") is not None:
            axes = np.array(node.attributes["axes"].value)
        rank = len(node.inputs[0].shape or ()) if node.inputs[0] is not None else 0
        return axes is not None and rank > 2 and \
            not {int(a) % rank for a in axes.reshape(-1)} & {0, 1}
    return False


def _flattened_block(node: ir.Node) -> int | None:
    """S when ``node`` turns [batch, C, *spatial] into [batch, C * S] (S = prod(spatial))."""
    dims = flattened_dims(node)
    return None if dims is None else math.prod(dims[1:])


def flattened_dims(node: ir.Node) -> list[int] | None:
    """[C, *spatial] when ``node`` (a Flatten on axis 1 or a Reshape) turns [batch, C,
    *spatial] into [batch, C * prod(spatial)]."""
    source, result = node.inputs[0], node.outputs[0]
    dims = known_sizes(source.shape, 1) if source is not None else None
    if dims is None or len(dims) < 2 or result.shape is None or len(result.shape) != 2 or \
            result.shape[1] != math.prod(dims):
        return None
    axis = node.attributes.get("axis")
    if (node.op_type == "Flatten" and (axis is None or axis.value == 1)) or \
            node.op_type == "Reshape":
        return dims
    return None


def permute_reader(absorber: Absorber, order: tuple[int, ...]) -> None:
    """W'[:, j] = W[:, order[j]] along the input channels (in blocks of ``absorber.block``)."""
    weight = constant(absorber.weight)
    assert weight is not None
    blocks = np.array(order)[:, None] * absorber.block + np.arange(absorber.block)[None, :]
    permuted = np.take(weight, blocks.reshape(-1), axis=absorber.input_axis)
    absorber.weight.const_value = ir.tensor(np.ascontiguousarray(permuted))


def reorder_for_blocks(node: ir.Node, cover: Cover) -> Cover | None:
    """Where some block of ``cover`` (of layer ``node``) gathers its channels, reorder them
    block by block (``cover.grouping_order``) through the layer that produces them, so that
    the blocks read ranges: ``cover`` in the new channel order, or None when not done."""
    if not gathers(cover):
        return None
    order = grouping_order(cover)
    return in_channel_order(cover, order) if reorder_producer(node, order) else None


def reorder_producer(node: ir.Node, order: tuple[int, ...]) -> bool:
    """Give the input channels of layer ``node`` the order ``order`` (new channel j is old
    channel order[j]) where they are the units of a layer whose weight and bias only it reads,
    flowing to ``node`` alone through per-channel ops: that layer's rows and bias are
    permuted, W_p'[j] = W_p[order[j]], and ``node``'s columns, W'[:, j] = W[:, order[j]].
    Whether it was done."""
    producer = _producer_layer(node.inputs[0])
    if producer is None:
        return False
    kind = LAYER_KINDS[producer.op_type]
    reader = absorber(producer.outputs[0], kind.channel_axis)
    if reader is None or reader.weight is not node.inputs[1] or reader.block != 1:
        return False  # after a flatten, the reader's columns are not the producer's units
    weight, bias = producer.inputs[1], producer.inputs[2] if len(producer.inputs) > 2 else None
    for value in (weight, bias):
        if value is not None and (constant(value) is None or len(value.uses()) != 1 or
                                  value.is_graph_input()):
            return False
    assert weight is not None
    rows = np.array(order)
    stored = constant(weight)
    assert stored is not None
    units = kind.units_first(stored)
    assert len(rows) == units.shape[0], "the reader's channels are the producer's units"
    weight.const_value = ir.tensor(np.ascontiguousarray(kind.stored(units[rows])))
    if bias is not None:
        values = constant(bias)
        assert values is not None
        bias.const_value = ir.tensor(np.ascontiguousarray(values.reshape(-1)[rows]))
    permute_reader(reader, order)
    return True


def _producer_layer(value: ir.Value | None) -> ir.Node | None:
    """The layer of ``LAYER_KINDS`` (with its bias as an input) upstream of ``value`` through
    nodes that each alone read the one before; ``absorber`` then checks that path."""
    for _ in range(8):
        node = value.producer() if value is not None else None
        if node is None or len(node.outputs) != 1:
            return None
        kind = LAYER_KINDS.get(node.op_type)
        if kind is not None:
            return node if kind.bias_input and kind.eligible(node) else None
        value = node.inputs[0] if node.inputs else None
    return None
