"""Parameters and multiply-adds counted from an ONNX file, after onnxruntime's constant folding:
the one count of ONNX models that export, inspect, bench and the reports all print.

Weight decoders are folded first (onnxruntime, basic level: constant folding only, nothing
hardware-specific), so encoded and dense files count alike. Parameters are the float
initializers and, in a quantized (QDQ) file, the int8 / int32 tensors DequantizeLinear
reads, not the scales and zero points. MACs per sample (batch 1):
Conv: C_out x (C_in / groups) x kh x kw x H_out x W_out; Gemm / MatMul: M x K x N.
File bytes: the .onnx file plus every external data file its tensors point to.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

from ..errors import ReliefError, first_line


@dataclass(frozen=True)
class GraphStats:
    """Input signature (batch axis excluded; ``fixed_batch`` when the file fixes it),
    parameters, nonzeros and MACs per sample."""

    input_name: str
    input_shape: tuple[int, ...]
    input_type: int
    parameters: int
    nonzero: int
    macs: int
    fixed_batch: int | None = None
    precision: str = "fp32"
    file_bytes: int = 0
    inputs: int = 1
    input_dims: tuple[str | int, ...] = ()  # the first input's axes as the file states them


def graph_stats(path: Path) -> GraphStats:
    """The counts of the file at ``path`` (external data included)."""
    try:
        original = onnx.load(path)  # external data, if any, is read from beside the file
    except Exception as error:
        first = first_line(error)
        raise ReliefError(f"{path}: not a readable ONNX file ({first})") from None
    stats = model_stats(original, str(path))
    return replace(stats, file_bytes=onnx_file_bytes(path))


def onnx_file_bytes(path: Path) -> int:
    """Bytes on disk: the file and the external data files it names (each counted once)."""
    model = onnx.load(path, load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer
                 for entry in tensor.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / location).stat().st_size
                                     for location in locations
                                     if (path.parent / location).is_file())


def model_stats(original: onnx.ModelProto, where: str) -> GraphStats:
    """The counts of a loaded model (``where`` names it in errors); file_bytes is its
    serialised size."""
    folded = _folded(original, where)
    inputs, fixed_batch = _signature(where, folded)
    first = inputs[0].type.tensor_type
    try:
        model = shape_inference.infer_shapes(_with_batch_one(folded))
    except Exception as error:
        raise ReliefError(f"{where}: ONNX shape inference fails ({first_line(error)})") from None
    graph = model.graph
    shapes = _value_shapes(model)
    macs = sum(_macs(node, shapes) for node in graph.node)
    weights = _parameters(graph)
    quantized = any(node.op_type == "QuantizeLinear" for node in graph.node)
    dims = tuple(d.dim_value for d in first.shape.dim)
    return GraphStats(inputs[0].name, dims[1:], first.elem_type,
                      sum(int(w.size) for w in weights),
                      sum(int(np.count_nonzero(w)) for w in weights), macs, fixed_batch,
                      "int8" if quantized else "fp32", original.ByteSize(), len(inputs),
                      tuple(d.dim_param or d.dim_value for d in first.shape.dim))


def _parameters(graph: onnx.GraphProto) -> list[np.ndarray]:
    quantization = {name for node in graph.node
                    if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                    for name in node.input[1:]}
    quantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer
              if i.name not in quantization}
    return [array for name, array in arrays.items()
            if np.issubdtype(array.dtype, np.floating) or name in quantized]


def _signature(path: str, model: onnx.ModelProto
               ) -> tuple[list[onnx.ValueInfoProto], int | None]:
    """The inputs (initializers excluded) and the batch size if the first one fixes it."""
    weights = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if not inputs or not model.graph.output:
        raise ReliefError(f"{path}: the model needs at least one input and one output (found "
                          f"{len(inputs)} inputs, {len(model.graph.output)} outputs)")
    if any(not i.type.tensor_type.shape.dim for i in inputs):
        raise ReliefError(f"{path}: every input needs a batch axis")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs, dims[0].dim_value or None


# input type -> the timing batch: U(0, 1) floats, or token id 0 (valid for any vocabulary)
TIMING_FEEDS: dict[int, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    onnx.TensorProto.FLOAT: lambda rng, shape: rng.random(shape, dtype=np.float32),
    onnx.TensorProto.INT64: lambda rng, shape: np.zeros(shape, np.int64),
    onnx.TensorProto.INT32: lambda rng, shape: np.zeros(shape, np.int32),
}


def timing_batch(stats: GraphStats, batch: int, rng: np.random.Generator) -> np.ndarray:
    return TIMING_FEEDS[stats.input_type](rng, (batch, *stats.input_shape))


def timing_problem(path: Path | str, stats: GraphStats) -> str | None:
    """Why bench cannot feed the model batches, or None: it needs one float32 (or integer
    token id) input whose axes after the batch have fixed sizes."""
    if stats.inputs != 1:
        return (f"{path}: bench needs models with one input and at least one output (found "
                f"{stats.inputs} inputs)")
    if stats.input_type not in TIMING_FEEDS:
        return (f"{path}: input {stats.input_name!r} must be a float32, int64 or int32 tensor "
                "with a batch axis")
    if any(size < 1 for size in stats.input_shape):
        return (f"{path}: input {stats.input_name!r} has no fixed size on some sample axis "
                f"({list(stats.input_dims)}); bench needs them")
    return None


def _folded(original: onnx.ModelProto, path: str) -> onnx.ModelProto:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "folded.onnx"
        options.optimized_model_filepath = str(target)
        try:
            ort.InferenceSession(original.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
        except Exception as error:
            first = first_line(error)
            raise ReliefError(f"{path}: onnxruntime cannot load it ({first})") from None
        return onnx.load(target)


def _with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    return model


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value for d in dims)
    for initializer in model.graph.initializer:
        shapes[initializer.name] = tuple(initializer.dims)
    return shapes


def _macs(node: onnx.NodeProto, shapes: dict) -> int:
    if node.op_type == "Conv" and node.input[1] in shapes and node.output[0] in shapes:
        weight = shapes[node.input[1]]
        out = shapes[node.output[0]]
        return int(np.prod(weight)) * int(np.prod(out[2:])) if len(out) > 2 else 0
    if node.op_type in ("Gemm", "MatMul") and node.input[1] in shapes \
            and node.input[0] in shapes:
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        rows = int(np.prod(a[:-1])) if len(a) > 1 else 1
        return rows * int(np.prod(b))
    return 0
