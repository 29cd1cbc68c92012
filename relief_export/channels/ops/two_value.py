"""Binary arithmetic: x + y, x * y and x / c (c constant). Two values whose channels meet on
one axis unite their slots (a residual add ties the channels it sums); a value and a constant
(a scalar, or one varying only along the channel axis) keep the value's slots and fold the
constant into each channel's state. A residual add whose branch has many dead units may
instead stay a *partial add*, placing the branch's live channels by an index_select.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from ...graph import ops
from ...graph.attrs import attribute_node
from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import NO_UNITS, ChannelEdit, PartialAdd, Slots, Unit
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder

# A partial add (zeros, concat, index_select, then an add onnxruntime can no longer fuse into
# the convolution) costs about as much as this many multiply-adds per output element: on
# ResNet-56 (onnxruntime, batch 64) 21 partial adds cut 11% of the MACs yet ran 5.5% slower.
PARTIAL_ADD_COST = 256.0


@rule(functions=ops.ADD_FUNCTIONS, methods=("add", "add_"))
def add(b: Builder, node: fx.Node) -> Slots | None:
    return _binary(b, node, "add")


@rule(functions=ops.MUL_FUNCTIONS, methods=("mul", "mul_"))
def mul(b: Builder, node: fx.Node) -> Slots | None:
    return _binary(b, node, "mul")


@rule(functions=ops.DIV_FUNCTIONS, methods=("div", "div_"))
def div(b: Builder, node: fx.Node) -> Slots | None:
    """x / c for a constant c (a scalar or per channel, nowhere zero): x * (1 / c)."""
    left, right = lc.arg(node, 0, "input"), lc.arg(node, 1, "other")
    data = b.of(left)
    if data is None or b.constant(left) is not None or lc.arg(node, 2, "rounding_mode"):
        return None
    return _affine(b, node, data, left, right, "div")


def _binary(b: Builder, node: fx.Node, kind: str) -> Slots | None:
    """x + y or x * y: two values whose channels meet on one axis (broadcasting aligns from
    the last axis) unite their slots; a value and a constant (scalar or varying only along
    the value's channel axis) keep the value's slots."""
    left, right = lc.arg(node, 0, "input"), lc.arg(node, 1, "other")
    lhs, rhs = b.of(left), b.of(right)
    if b.constant(right) is not None:  # a model constant, even one given slots
        rhs = None
    elif b.constant(left) is not None:
        lhs = None
    out_shape = shape_of(node)
    if out_shape is None:
        return None
    if lhs is None or rhs is None:
        data, data_node, other = (lhs, left, right) if lhs is not None else (rhs, right, left)
        return None if data is None else _affine(b, node, data, data_node, other, kind)
    left_shape, right_shape = shape_of(left), shape_of(right)
    if left_shape is None or right_shape is None:
        return None
    if len(left_shape) - lhs.axis != len(right_shape) - rhs.axis:  # one may be kept whole
        lhs = b.on_axis(left, len(left_shape) - len(right_shape) + rhs.axis) or lhs
        rhs = b.on_axis(right, len(right_shape) - len(left_shape) + lhs.axis) or rhs
    if lhs.width != rhs.width or len(left_shape) - lhs.axis != len(right_shape) - rhs.axis:
        return None
    if kind == "add" and left_shape == right_shape:
        partial = _partial_add(b, node, left, right, lhs, rhs)
        if partial is not None:
            return partial
    for x, y in zip(lhs.ids, rhs.ids, strict=True):
        b.s.union.union(x, y)
    axis = len(out_shape) - (len(left_shape) - lhs.axis)
    units = _united(lhs, rhs)
    if kind == "add":
        return Slots(lhs.ids, lhs.live | rhs.live, lhs.value + rhs.value, units, axis)
    zero = (~lhs.live & (lhs.value == 0)) | (~rhs.live & (rhs.value == 0))
    return Slots(lhs.ids, (lhs.live | rhs.live) & ~zero, lhs.value * rhs.value, units, axis)


def _partial_add(b: Builder, node: fx.Node, left: Any, right: Any, lhs: Slots, rhs: Slots
                 ) -> Slots | None:
    """Keep the branch's groups apart when its dead units would cost more as zero rows
    (their MACs) than placing the live ones by an index_select (``partial_add_cost`` per
    output element)."""
    for branch, branch_slots, stream_slots in ((left, lhs, rhs), (right, rhs, lhs)):
        layer_node = _branch_layer(b, branch)
        if layer_node is None or branch_slots.axis != 1:
            continue
        layer = b.s.layers[layer_node]
        dead = int((~branch_slots.live).sum())
        per_unit = layer.weight[0].numel()
        if dead == 0 or dead * per_unit <= b.partial_add_cost * branch_slots.width:
            continue
        b.s.partial_adds.append(PartialAdd(node, branch, layer_node))
        b.s.notes.append(f"{node.name}: partial add; {layer.name} drops its {dead} "
                         f"constant units instead of keeping zero rows "
                         f"({dead * per_unit} weights per position)")
        return Slots(stream_slots.ids, branch_slots.live | stream_slots.live,
                     branch_slots.value + stream_slots.value,
                     _united(branch_slots, stream_slots), stream_slots.axis)
    return None


def _branch_layer(b: Builder, node: Any) -> fx.Node | None:
    """The layer behind ``node`` through BatchNorm / identity, every step used only once."""
    current = node
    while isinstance(current, fx.Node) and len(current.users) == 1:
        if current in b.s.layers:
            layer = b.s.layers[current]
            return current if layer.groups == 1 and layer.kind != "conv_transpose" \
                else None
        module = b.modules.get(str(current.target)) if current.op == "call_module" \
            else None
        if not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, *ops.IDENTITY_MODULES)) \
                or b.shared(current):
            return None
        current = current.args[0]
    return None


def _affine(b: Builder, node: fx.Node, data: Slots, data_node: Any, other: Any, kind: str
            ) -> Slots | None:
    """data + c, data * c or data / c for a constant c folded into each channel's state."""
    if kind != "div" and lc.arg(node, 2, "alpha", 1) != 1:
        return None
    constant = b.constant(other)
    out_shape, data_shape = shape_of(node), shape_of(data_node)
    if constant is None or out_shape is None or data_shape is None or \
            len(out_shape) != len(data_shape) or (kind == "div" and (constant == 0).any()):
        return None
    if kind == "div":
        constant, kind = 1 / constant, "mul"
    per_channel = _per_channel(constant, shape_of(other) or tuple(constant.shape),
                               out_shape, data.axis, data.width)
    if per_channel is None:
        return None
    attr = attribute_node(other)
    if attr is not None and constant.numel() > 1:
        b.s.edits.append(ChannelEdit(node, "attr", attr, data.width))
    if kind == "add":
        return data.with_state(data.live.clone(), data.value + per_channel)
    return data.with_state(data.live & (per_channel != 0), data.value * per_channel)


def _united(a: Slots, b: Slots) -> list[frozenset[Unit]]:
    """Per channel, the units of both operands (a zero operand channel carries none)."""
    a_matters, b_matters = a.matters.tolist(), b.matters.tolist()
    return [(x if ka else NO_UNITS) | (y if kb else NO_UNITS)
            for x, y, ka, kb in zip(a.units, b.units, a_matters, b_matters, strict=True)]


def _per_channel(constant: torch.Tensor, shape: tuple[int, ...], out_shape: tuple[int, ...],
                 axis: int, width: int) -> torch.Tensor | None:
    """[C] values of a constant broadcast against a value whose channels lie on ``axis``, when
    it varies along that axis only (or is a scalar), else None."""
    if constant.numel() == 1:
        return constant.reshape(1).expand(width)
    offset = len(out_shape) - len(shape)
    if offset < 0 or any(size != 1 and offset + i != axis for i, size in enumerate(shape)):
        return None
    return constant.reshape(width) if constant.numel() == width else None
