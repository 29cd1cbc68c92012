"""Replace weight initializers by their smallest encoding plus a decoder subgraph.

Weights are the initializers read as weights by Conv / Gemm / MatMul, and the int8 weights
of a quantized model read by DequantizeLinear (``WEIGHT_INPUTS``), with at least
``min_elements`` entries. A float32 weight is stored as its values in ``value_dtype``
(float32 or float16), an int8 weight as int8 (symmetric quantization keeps zeros exact), in
the smallest format among ``formats`` that the model's opset allows; a format other than
dense (or float16 values) replaces the initializer by decoder nodes placed at the start of
the graph, all fed by initializers, so onnxruntime folds them when a session is created
(before its QDQ fusions, which then still see constant int8 weights). A tensor with no
nonzero decodes as zeros whatever its format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ..formats import FORMATS, Decoder, Encoded, smallest

# the input index of the weight of each layer op, and of a quantized weight
LAYER_WEIGHT_INPUTS = {"Conv": 1, "Gemm": 1, "MatMul": 1}
WEIGHT_INPUTS = {**LAYER_WEIGHT_INPUTS, "DequantizeLinear": 0}
ENCODED_DTYPES = (np.float32, np.int8)


@dataclass(frozen=True)
class TensorChoice:
    """How one weight tensor is stored: format, bytes stored vs dense (in its own dtype),
    nonzeros."""

    name: str
    format: str
    shape: tuple[int, ...]
    nonzero: int
    stored_bytes: int
    dense_bytes: int


class EncodeWeights(ir.passes.InPlacePass):
    """After a call, ``choices`` lists one TensorChoice per weight considered."""

    def __init__(self, formats: tuple[str, ...], value_dtype: type = np.float32,
                 min_elements: int = 64):
        super().__init__()
        self.formats, self.value_dtype, self.min_elements = formats, value_dtype, min_elements
        self.choices: list[TensorChoice] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 0)
        allowed = tuple(f for f in self.formats if FORMATS[f].min_opset <= opset)
        graph = model.graph
        modified = False
        for value in _weights(graph):
            array = value.const_value.numpy()  # type: ignore[union-attr]
            if array.dtype not in ENCODED_DTYPES or array.size < self.min_elements:
                continue
            stored = self.value_dtype if array.dtype == np.float32 else array.dtype
            encoded = smallest(array.astype(stored), allowed)
            self.choices.append(TensorChoice(str(value.name), encoded.format, array.shape,
                                             int(np.count_nonzero(array)), encoded.nbytes,
                                             array.nbytes))
            if encoded.format != "dense" or encoded.dtype != array.dtype:
                _replace(graph, value, encoded, ir.DataType.from_numpy(array.dtype))
                modified = True
        return ir.passes.PassResult(model, modified)


def _weights(graph: ir.Graph) -> list[ir.Value]:
    names = {value.name for node in graph
             if (index := WEIGHT_INPUTS.get(node.op_type)) is not None
             and len(node.inputs) > index and (value := node.inputs[index]) is not None}
    return [graph.initializers[name] for name in sorted(n for n in names if n is not None)
            if name in graph.initializers
            and graph.initializers[name].const_value is not None]


def _replace(graph: ir.Graph, value: ir.Value, encoded: Encoded, dtype: ir.DataType) -> None:
    name = str(value.name)
    decoder = Decoder(name, ir.DataType.from_numpy(encoded.dtype))
    stored = FORMATS[encoded.format].emit(decoder, encoded)
    if decoder.dtype != dtype:
        stored = decoder.op("Cast", [stored], to=dtype)
    if stored.producer() is None:  # a dense initializer: rename it into place
        stored = decoder.op("Identity", [stored])
    graph.initializers.pop(name)
    value.replace_all_uses_with(stored)
    stored.name = name
    for initializer in decoder.initializers:
        graph.register_initializer(initializer)
    first = next(iter(graph), None)
    if first is None:
        graph.extend(decoder.nodes)
    else:
        graph.insert_before(first, decoder.nodes)


