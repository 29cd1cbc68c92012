"""Remove ``Mul`` nodes whose other factor is a constant of ones that does not widen the
product's shape: ``x * 1 = x`` exactly (also for -0, inf and NaN). Such gates are left by
residual masks that kept every channel (``shortcut * shortcut_gate``); under int8 each would
become a QLinearMul with its own requantization."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir


class DropIdentityMul(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        found = [(node, kept) for node in graph if node.op_type == "Mul"
                 and not node.outputs[0].is_graph_output()
                 and (kept := _kept(node)) is not None]
        for node, kept in found:
            ones = next((v for v in node.inputs if v is not kept), None)
            node.outputs[0].replace_all_uses_with(kept)
            graph.remove(node, safe=True)
            if ones is not None and ones.name in graph.initializers and not ones.uses():
                graph.initializers.pop(str(ones.name))
        return ir.passes.PassResult(model, bool(found))


def _kept(node: ir.Node) -> ir.Value | None:
    """The input that ``node`` passes through unchanged, or None."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    for ones, other in (node.inputs, node.inputs[::-1]):
        assert ones is not None and other is not None
        if ones.const_value is None or ones.dtype != other.dtype or other.shape is None:
            continue
        if _no_wider(list(ones.const_value.shape.numpy()), other.shape) and \
                bool(np.all(ones.const_value.numpy() == 1)):
            return other
    return None


def _no_wider(factor: Sequence[int], shape: ir.Shape) -> bool:
    """Broadcasting ``factor`` against ``shape`` gives ``shape``: a rank no larger, and each
    dimension (aligned from the right) 1 or equal to a known one."""
    if len(factor) > len(shape):
        return False
    return all(f == 1 or (isinstance(s, int) and f == s)
               for f, s in zip(reversed(factor), reversed(list(shape)), strict=False))
