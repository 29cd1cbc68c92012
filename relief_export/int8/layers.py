"""Which weighted layers to run in int8, by measurement: each layer alone, at the batch and
thread count given, as fp32 and as its QDQ-quantized form (input quantized, output
dequantized), plus the cost of a quantize -> dequantize pair on its input and output.

A layer stays int8 when ``int8 < fp32 + qdq(input) + qdq(output)``: the single-layer int8
model carries a quantize and a dequantize that a chain of int8 layers does not, while a fp32
layer between int8 ones needs a dequantize before and a quantize after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..bench.latency import time_interleaved
from ..onnx.quantize import layer_nodes, quantize
from ..runtime.ort import session

REPEATS = 7


@dataclass(frozen=True)
class LayerChoice:
    """One weighted layer: medians in milliseconds and the choice they give."""

    name: str
    op: str
    fp32_ms: float
    int8_ms: float
    transition_ms: float

    @property
    def int8(self) -> bool:
        return self.int8_ms < self.fp32_ms + self.transition_ms


def choose_layers(model: onnx.ModelProto, batch: int, threads: int = 1,
                  progress: Callable[[str], None] | None = None) -> list[LayerChoice]:
    """One LayerChoice per layer of the fp32 ``model`` (single input)."""
    shaped = _shapes(model, batch)
    initializers = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    choices = []
    nodes = layer_nodes(model)
    for index, node in enumerate(nodes):
        if progress is not None:
            progress(f"timing layer {index + 1}/{len(nodes)} ({node.name}) in fp32 and int8")
        source, result = node.input[0], node.output[0]
        if source not in shaped or result not in shaped:
            continue
        layer = _single_node(model, node, initializers, shaped)
        feed = rng.standard_normal(shaped[source], dtype=np.float32)
        out_feed = rng.standard_normal(shaped[result], dtype=np.float32)
        runners = {"fp32": layer, "int8": quantize(layer, feed),
                   "qdq in": _quantize_dequantize(shaped[source], model)}
        medians = _medians(runners, feed, threads)
        medians |= _medians({"qdq out": _quantize_dequantize(shaped[result], model)},
                            out_feed, threads)
        choices.append(LayerChoice(node.name, node.op_type, medians["fp32"], medians["int8"],
                                   medians["qdq in"] + medians["qdq out"]))
    return choices


def _medians(models: dict[str, onnx.ModelProto], feed: np.ndarray, threads: int
             ) -> dict[str, float]:
    """Median milliseconds per run of each model, timed interleaved."""
    runners = {key: session(m.SerializeToString(), threads) for key, m in models.items()}
    times = time_interleaved(runners, feed, warmup=2, repeats=REPEATS)
    return {key: 1e3 * float(np.median(samples)) for key, samples in times.items()}


def _shapes(model: onnx.ModelProto, batch: int) -> dict[str, list[int]]:
    """Every value's static shape with the batch axis set to ``batch``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in [*fixed.graph.input, *fixed.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    del fixed.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _single_node(model: onnx.ModelProto, node: onnx.NodeProto,
                 initializers: dict[str, TensorProto], shapes: dict[str, list[int]]
                 ) -> onnx.ModelProto:
    source, result = node.input[0], node.output[0]
    weights = [initializers[name] for name in node.input[1:] if name in initializers]
    graph = helper.make_graph(
        [node], node.name or node.op_type,
        [_dynamic_batch(source, shapes[source])], [_dynamic_batch(result, shapes[result])],
        weights)
    return _like(model, graph)


def _quantize_dequantize(shape: list[int], model: onnx.ModelProto) -> onnx.ModelProto:
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05])
    zero = helper.make_tensor("zero", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])]
    graph = helper.make_graph(
        nodes, "qdq", [_dynamic_batch("x", shape)], [_dynamic_batch("y", shape)],
        [scale, zero])
    return _like(model, graph)


def _dynamic_batch(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape[1:]])


def _like(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    made = helper.make_model(graph, opset_imports=list(model.opset_import))
    made.ir_version = model.ir_version
    return made
