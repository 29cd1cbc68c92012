"""Covered layers end in a Concat of their blocks, and the next covered layer often slices
exactly those blocks back out: let such Slices read the parts themselves.

Slice(Concat(p_1..p_n), [a, b)) on the channel axis, with part k at channels [o_k, o_{k+1})
(o_k = C(p_1) + ... + C(p_{k-1})), is the Concat of each overlapping part's share,
p_k[max(a, o_k) - o_k, min(b, o_{k+1}) - o_k) (the part itself when whole; no Concat for one
share): one copy instead of two, and none where a Slice was exactly a part. A per-channel op that
alone reads a Concat, and whose output is read only by such Slices or further per-channel
ops, first moves onto the parts: f(Concat(p_1..p_n)) = Concat(f(p_1), ..., f(p_n)). Concats
left unread are removed. A Split on the channel axis of such a Concat (or of per-channel ops
of one) is first written as one Slice per output read, so its pieces read the parts too.
Only data movement changes: the function is the same.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from ..sparse.build import Writer
from ..sparse.cover import Block
from ..sparse.layers import constant
from ..sparse.order import PER_CHANNEL_OPS

MAX_SHARES = 16  # a Gather read as more pieces than this stays a Gather


class ReadPartsDirectly(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ShapeInferencePass(strict_mode=False)(model)
        modified = False
        for split in [n for n in model.graph if n.op_type == "Split"]:
            modified |= _split_as_slices(model.graph, split)
        while (node := next((n for n in model.graph if _movable(n)), None)) is not None:
            _move_onto_parts(model.graph, node)
            modified = True
        for node in [n for n in model.graph if n.op_type in ("Slice", "Gather")]:
            modified |= _read_parts(model.graph, node)
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def _channel_concat(value: ir.Value | None) -> ir.Node | None:
    """The Concat on axis 1 that produces ``value``, its parts' channel counts known."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "Concat" or node.attributes.get_int("axis") != 1:
        return None
    if any(_channels(v) is None for v in node.inputs):
        return None
    return node


def _split_as_slices(graph: ir.Graph, node: ir.Node) -> bool:
    """A Split on axis 1 (constant sizes) of a channel Concat, or of per-channel ops of one,
    as one Slice per output read."""
    sizes = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    source = node.inputs[0]
    if node.attributes.get_int("axis", 0) != 1 or sizes is None or source is None or \
            not _from_concat(source) or any(v.is_graph_output() for v in node.outputs):
        return False
    writer = Writer(graph, node, _base(node))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    for index, (output, (low, high)) in enumerate(zip(node.outputs, pairwise(starts),
                                                      strict=True)):
        if output.uses():
            piece = writer.channels(source, Block((), tuple(range(low, high))), starts[-1],
                                    index, 1)
            piece.shape, piece.type = output.shape, output.type
            output.replace_all_uses_with(piece)
    graph.remove(node, safe=True)
    return True


def _from_concat(value: ir.Value) -> bool:
    """``value`` is a channel Concat's output, or per-channel ops' of one."""
    producer = value.producer()
    while producer is not None and producer.op_type in PER_CHANNEL_OPS and \
            producer.inputs[0] is not None:
        value = producer.inputs[0]
        producer = value.producer()
    return _channel_concat(value) is not None


def _channels(value: ir.Value | None) -> int | None:
    shape = value.shape if value is not None else None
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        return None
    return int(shape[1])


def _movable(node: ir.Node) -> bool:
    """A per-channel op, alone reading a channel Concat, read only by channel Slices or
    further per-channel ops."""
    if node.op_type not in PER_CHANNEL_OPS or len(node.outputs) != 1 or \
            any(constant(v) is None for v in node.inputs[1:] if v is not None):
        return False
    concat = _channel_concat(node.inputs[0])
    shape = node.outputs[0].shape
    if concat is None or shape is None or len(shape) < 2 or \
            len(concat.outputs[0].uses()) != 1 or \
            concat.outputs[0].is_graph_output() or node.outputs[0].is_graph_output():
        return False
    offsets = _offsets(concat)
    readers = [use.node for use in node.outputs[0].uses()]
    return bool(readers) and all(r.op_type in PER_CHANNEL_OPS or _shares_read(r, offsets)
                                 is not None for r in readers)


def _offsets(concat: ir.Node) -> list[int]:
    """Where each part of a channel Concat starts, and its total channel count last."""
    offsets = [0]
    for part in concat.inputs:
        offsets.append(offsets[-1] + (_channels(part) or 0))
    return offsets


def _shares_read(node: ir.Node, offsets: list[int]) -> list[tuple[int, int, int]] | None:
    """The (part, start, end) shares a Slice or Gather of a Concat with ``offsets`` reads,
    or None if it cannot read the parts (not a channel read, a graph output, or more than
    MAX_SHARES shares)."""
    runs = _channel_runs(node) if node.op_type in ("Slice", "Gather") else None
    if runs is None or node.outputs[0].is_graph_output():
        return None
    shares = [share for start, end in runs for share in _shares(offsets, start, end)]
    return shares if 0 < len(shares) <= MAX_SHARES else None


def _move_onto_parts(graph: ir.Graph, node: ir.Node) -> None:
    concat = node.inputs[0].producer() if node.inputs[0] is not None else None
    assert concat is not None
    writer = Writer(graph, node, _base(node))
    attributes = {key: attr.value for key, attr in node.attributes.items()}
    parts = [writer.node(node.op_type, [part, *node.inputs[1:]], attributes, f"part{index}")
             for index, part in enumerate(concat.inputs)]
    joined = writer.node("Concat", parts, {"axis": 1}, "concat")
    result = node.outputs[0]
    assert result.shape is not None
    for part, output in zip(concat.inputs, parts, strict=True):
        dims: list[int | ir.SymbolicDim | None] = list(result.shape)
        dims[1] = _channels(part)
        output.shape, output.type = ir.Shape(dims), result.type
    joined.shape, joined.type = result.shape, result.type
    result.replace_all_uses_with(joined)
    graph.remove(node, safe=True)
    graph.remove(concat, safe=True)


def _read_parts(graph: ir.Graph, node: ir.Node) -> bool:
    concat = _channel_concat(node.inputs[0])
    offsets = _offsets(concat) if concat is not None else []
    shares = _shares_read(node, offsets) if concat is not None else None
    if concat is None or shares is None:
        return False
    writer = Writer(graph, node, _base(node))
    pieces = []
    for index, low, high in shares:  # the part itself, or a Slice of it
        part = concat.inputs[index]
        assert part is not None
        pieces.append(writer.channels(part, Block((), tuple(range(low, high))),
                                      offsets[index + 1] - offsets[index], index, 1))
    replacement = pieces[0] if len(pieces) == 1 else \
        writer.node("Concat", pieces, {"axis": 1}, "parts")
    node.outputs[0].replace_all_uses_with(replacement)
    graph.remove(node, safe=True)
    return True


def _shares(offsets: list[int], start: int, end: int) -> list[tuple[int, int, int]]:
    """(part, first, end) in the part's own channels, for channels [start, end)."""
    return [(k, max(start, low) - low, min(end, high) - low)
            for k, (low, high) in enumerate(pairwise(offsets))
            if max(start, low) < min(end, high)]


def _channel_runs(node: ir.Node) -> list[tuple[int, int]] | None:
    """The channels a Slice (constant bounds on axis 1 alone, step 1) or a Gather (constant
    1-d indices on axis 1) reads, as [start, end) runs in order."""
    if node.op_type == "Gather":
        index = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if node.attributes.get_int("axis", 0) != 1 or index is None or index.ndim != 1 or \
                not index.size or (index < 0).any():
            return None
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        return [(int(run[0]), int(run[-1]) + 1) for run in np.split(index, breaks)]
    values = [constant(v) if v is not None else None for v in node.inputs[1:]]
    if len(values) < 3 or any(v is None or v.size != 1 for v in values):
        return None
    starts, ends, axes, *steps = (int(v.reshape(-1)[0]) for v in values if v is not None)
    if axes != 1 or starts < 0 or ends <= starts or steps[:1] not in ([], [1]):
        return None
    return [(starts, ends)]


def _base(node: ir.Node) -> str:
    return str(node.name or node.outputs[0].name or node.op_type)
