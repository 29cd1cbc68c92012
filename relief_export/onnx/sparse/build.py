"""Writing a layer's dense or covered form into an ``onnx_ir`` graph.

Block g: its input channels C_g (the input itself when C_g is every channel in order, a Slice
of a contiguous range, else a Gather on the layer's channel axis; one Split for all blocks
when they read ranges that do not overlap), the layer's op on
W[R_g][:, C_g] and b[R_g] (weights units first; a MatMul's bias is an Add), then the
activation that followed the layer (applied per block, so onnxruntime fuses it into each
block as it did into the layer); the blocks' outputs are concatenated on the channel axis,
and ``restore`` adds the Gather that puts the units back in their order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from .cover import Block, Cover
from .layers import LAYER_KINDS


@dataclass(frozen=True)
class Activation:
    """A per-element op read from the graph: its type, attributes and constant inputs."""

    op: str
    attributes: dict[str, Any]
    constants: tuple[ir.Value | None, ...]


@dataclass
class Writer:
    """Adds nodes to ``graph`` before ``before`` (at the end when None), names from ``name``."""

    graph: ir.Graph
    before: ir.Node | None
    name: str

    def free_name(self, base: str) -> str:
        taken = set(self.graph.initializers) | {str(v.name) for v in self.graph.inputs} | \
            {str(v.name) for n in self.graph for v in n.outputs} | \
            {str(n.name) for n in self.graph}
        name, index = base, 0
        while name in taken:
            index += 1
            name = f"{base}_{index}"
        return name

    def initializer(self, suffix: str, array: np.ndarray) -> ir.Value:
        value = ir.Value(name=self.free_name(f"{self.name}_{suffix}"),
                         shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(np.ascontiguousarray(array)))
        self.graph.register_initializer(value)
        return value

    def node(self, op: str, inputs: Sequence[ir.Value | None], attributes: dict[str, Any],
             suffix: str) -> ir.Value:
        return self.nodes(op, inputs, attributes, suffix, 1)[0]

    def nodes(self, op: str, inputs: Sequence[ir.Value | None], attributes: dict[str, Any],
              suffix: str, outputs: int) -> Sequence[ir.Value]:
        """A node of ``outputs`` outputs; its outputs."""
        node = ir.node(op, inputs, attributes, num_outputs=outputs,
                       name=self.free_name(f"{self.name}_{suffix}"))
        if self.before is None:
            self.graph.append(node)
        else:
            self.graph.insert_before(self.before, node)
        return node.outputs

    def layer(self, op: str, x: ir.Value, weight: np.ndarray, bias: np.ndarray | None,
              attributes: dict[str, Any], activation: Activation | None, suffix: str
              ) -> ir.Value:
        """The layer ``op`` on x (``weight`` units first, [O, I, ...]), its bias, then the
        activation."""
        kind = LAYER_KINDS[op]
        inputs = [x, self.initializer(f"{suffix}_weight", kind.stored(weight))]
        if bias is not None and kind.bias_input:
            inputs.append(self.initializer(f"{suffix}_bias", bias))
        y = self.node(op, inputs, attributes, suffix)
        if bias is not None and not kind.bias_input:
            y = self.node("Add", [y, self.initializer(f"{suffix}_bias", bias)], {},
                          f"{suffix}_add")
        if activation is None:
            return y
        constants = [self.local(v, f"{suffix}_{activation.op.lower()}_{i}")
                     for i, v in enumerate(activation.constants)]
        return self.node(activation.op, [y, *constants], activation.attributes,
                         f"{suffix}_{activation.op.lower()}")

    def local(self, value: ir.Value | None, suffix: str) -> ir.Value | None:
        """``value`` if this graph has it (an initializer or a node's output), else an
        initializer of its constant (a candidate model holds only the layer's nodes)."""
        if value is None:
            return None
        producer = value.producer()
        if (producer is not None and producer.graph is self.graph) or \
                self.graph.initializers.get(str(value.name)) is value:
            return value
        assert value.const_value is not None, f"{value.name} is not a constant"
        return self.initializer(suffix, value.const_value.numpy())

    def covered(self, op: str, x: ir.Value, weight: np.ndarray, bias: np.ndarray | None,
                attributes: dict[str, Any], activation: Activation | None, cover: Cover,
                restore: bool) -> ir.Value:
        axis = LAYER_KINDS[op].channel_axis
        inputs = self.block_inputs(x, cover.blocks, weight.shape[1], axis)
        outputs = [self.layer(op, inputs[g], weight[np.array(block.rows)][:, np.array(block.cols)],
                              None if bias is None else bias[np.array(block.rows)],
                              attributes, activation, f"block{g}")
                   for g, block in enumerate(cover.blocks)]
        joined = self.node("Concat", list(outputs), {"axis": axis}, "concat")
        if not restore:
            return joined
        inverse = np.argsort(np.array(cover.output_order)).astype(np.int64)
        return self.node("Gather", [joined, self.initializer("order", inverse)],
                         {"axis": axis}, "order")

    def block_inputs(self, x: ir.Value, blocks: Sequence[Block], width: int, axis: int
                     ) -> list[ir.Value]:
        """Each block's input channels: one Split where two or more blocks read ranges that
        do not overlap (the channels between them are split off unread), else ``channels``
        per block."""
        ranges = [(b.cols[0], b.cols[-1] + 1) for b in blocks]
        distinct = sorted(set(ranges))
        if len(blocks) < 2 or any(channel_access(b.cols, width) != "range" for b in blocks) or \
                any(a[1] > b[0] for a, b in itertools.pairwise(distinct)):
            return [self.channels(x, b, width, g, axis) for g, b in enumerate(blocks)]
        cuts = sorted({0, width, *(edge for r in distinct for edge in r)})
        pieces = self.nodes("Split", [x, self.initializer("split", np.diff(cuts))],
                            {"axis": axis}, "split", len(cuts) - 1)
        return [pieces[cuts.index(start)] for start, _ in ranges]

    def channels(self, x: ir.Value, block: Block, width: int, g: int, axis: int) -> ir.Value:
        """x's channels ``block.cols`` on ``axis``: x itself, a Slice of a range, or a
        Gather."""
        cols = block.cols
        kind = channel_access(cols, width)
        if kind == "all":
            return x
        if kind == "range":
            bounds = [self.initializer(f"block{g}_{part}", np.array([value], np.int64))
                      for part, value in (("start", cols[0]), ("end", cols[-1] + 1),
                                          ("axis", axis))]
            return self.node("Slice", [x, *bounds], {}, f"block{g}_in")
        index = self.initializer(f"block{g}_channels", np.array(cols, np.int64))
        return self.node("Gather", [x, index], {"axis": axis}, f"block{g}_in")


def channel_access(cols: tuple[int, ...], width: int) -> str:
    """How a block reads its channels: "all" (in order), "range" (a Slice) or "gather"."""
    if cols == tuple(range(width)):
        return "all"
    return "range" if cols == tuple(range(cols[0], cols[-1] + 1)) else "gather"
