"""Bytes that no runtime reads: ``value_info`` entries (types and shapes of initializers,
which their data states, and of intermediate values, which onnxruntime infers again, and
notes the exporter attaches to values; 20-60 bytes each) and all-zero zero points of int32
DequantizeLinear inputs (quantized biases; zero is the default). The zero points of int8
weights stay: onnxruntime fuses QDQ into QLinearConv / QGemm only when they are present."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


class ClearValueInfo(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        kept = {*graph.inputs, *graph.outputs}
        values = [*graph.initializers.values(),
                  *(value for node in graph for value in node.outputs)]
        cleared = [value for value in values if value not in kept
                   and ((value.shape or value.type) is not None or value.metadata_props)]
        for value in cleared:
            value.shape, value.type = None, None
            value.metadata_props.clear()
        return ir.passes.PassResult(model, bool(cleared))


class DropZeroBiasZeroPoints(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        dropped = [node for node in graph if node.op_type == "DequantizeLinear"
                   and len(node.inputs) == 3 and _int32_constant(node.inputs[0])
                   and _all_zero(node.inputs[2])]
        for node in dropped:
            zero_point = node.inputs[2]
            node.resize_inputs(2)
            if zero_point is not None and not zero_point.uses() \
                    and zero_point.name in graph.initializers:
                graph.initializers.pop(str(zero_point.name))
        return ir.passes.PassResult(model, bool(dropped))


def _int32_constant(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None \
        and value.dtype == ir.DataType.INT32


def _all_zero(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None \
        and not np.any(value.const_value.numpy())
