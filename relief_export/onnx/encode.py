"""ONNX pass: replace weight initializers by compact encodings plus decoder subgraphs.

Each decoder is built only from standard ops whose inputs are all initializers (Cast, CumSum,
ScatterND, ScatterElements, BitShift, BitwiseAnd, Gather, ConstantOfShape, Reshape, ...),
never NonZero, so onnxruntime constant-folds it into the dense tensor when the session is
created: the file is small, the run time that of the dense model. Decoder nodes are named
``relief_decode/<tensor>/...``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..compile.formats import Encoded, smallest

WEIGHT_INPUTS = {"Conv": 1, "Gemm": 1, "MatMul": 1}
MODES = {"auto": ("dense", "csr", "delta", "bsr", "bitmask"), "dense": ("dense",),
         "csr": ("dense", "csr", "delta"), "bsr": ("dense", "bsr", "csr", "delta"),
         "bitmask": ("dense", "bitmask")}
PREFIX = "relief_decode/"


@dataclass(frozen=True)
class TensorChoice:
    """How one weight tensor is stored: format, bytes stored vs dense float32, nonzeros."""

    name: str
    format: str
    shape: tuple[int, ...]
    nonzero: int
    stored_bytes: int
    dense_bytes: int


def encode_weights(model: onnx.ModelProto, *, mode: str = "auto", fp16: bool = False,
                   min_elements: int = 64) -> list[TensorChoice]:
    """Rewrite ``model`` in place; returns one choice per weight tensor considered."""
    if mode not in MODES:
        raise ValueError(f"unknown weights mode {mode!r}")
    graph = model.graph
    candidates = _weight_names(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    formats = tuple(f for f in MODES[mode] if f != "bitmask" or opset >= 18)
    choices, nodes, kept = [], [], []
    value_dtype = np.float16 if fp16 else np.float32
    for initializer in graph.initializer:
        array = numpy_helper.to_array(initializer)
        if initializer.name not in candidates or array.dtype != np.float32 or \
                array.size < min_elements:
            kept.append(initializer)
            continue
        encoded = smallest(array, formats, value_dtype)
        if encoded.format == "dense" and not fp16:
            kept.append(initializer)
        else:
            decoder_nodes, stored = _decoder(initializer.name, encoded, value_dtype)
            nodes += decoder_nodes
            kept += stored
        choices.append(TensorChoice(initializer.name, encoded.format, tuple(array.shape),
                                    int(np.count_nonzero(array)), encoded.nbytes, array.nbytes))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return choices


def _weight_names(graph: onnx.GraphProto) -> set[str]:
    return {node.input[WEIGHT_INPUTS[node.op_type]] for node in graph.node
            if node.op_type in WEIGHT_INPUTS and len(node.input) > WEIGHT_INPUTS[node.op_type]}


class _Builder:
    """Collects the nodes and initializers of one decoder."""

    def __init__(self, tensor: str):
        self.tensor = tensor
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        full = f"{self.tensor}__{name}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), full))
        return full

    def op(self, op_type: str, inputs: Iterable[str], output: str | None = None,
           **attributes) -> str:
        self.count += 1
        name = output or f"{PREFIX}{self.tensor}/{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name],
                                           name=f"{PREFIX}{self.tensor}/{op_type}{self.count}",
                                           **attributes))
        return name

    def int64(self, name: str) -> str:
        return self.op("Cast", [name], to=TensorProto.INT64)

    def floats(self, name: str, value_dtype) -> str:
        return name if value_dtype == np.float32 else self.op("Cast", [name],
                                                              to=TensorProto.FLOAT)

    def zeros(self, shape: list[int], dtype=TensorProto.FLOAT) -> str:
        value = helper.make_tensor("value", dtype, [1], [0])
        return self.op("ConstantOfShape", [self.constant(f"shape{self.count}",
                                                         np.array(shape, np.int64))],
                       value=value)

    def positions(self, gaps: str) -> str:
        """cumsum(gaps) - 1 as an [m, 1] int64 index tensor."""
        total = self.op("CumSum", [self.int64(gaps), self.constant("axis", np.array(0))])
        shifted = self.op("Sub", [total, self.constant("one", np.array(1, np.int64))])
        return self.op("Unsqueeze", [shifted, self.constant("axes", np.array([1], np.int64))])


def _decoder(tensor: str, encoded: Encoded, value_dtype) -> tuple[list, list]:
    b = _Builder(tensor)
    shape = list(encoded.shape)
    size = int(np.prod(shape))
    arrays = encoded.arrays
    if encoded.format == "dense":
        b.op("Cast", [b.constant("values", arrays["values"])], output=tensor,
             to=TensorProto.FLOAT)
        return b.nodes, b.initializers
    reshape_to = b.constant("out_shape", np.array(shape, np.int64))
    if encoded.format in ("delta", "csr", "bitmask") and arrays["values"].size == 0:
        b.op("Reshape", [b.zeros([size]), reshape_to], output=tensor)
    elif encoded.format == "delta":
        values = b.floats(b.constant("values", arrays["values"]), value_dtype)
        flat = b.op("ScatterND", [b.zeros([size]), b.positions(b.constant("gaps",
                                                                          arrays["gaps"])),
                                  values])
        b.op("Reshape", [flat, reshape_to], output=tensor)
    elif encoded.format == "bsr":
        blocks = arrays["blocks"]
        values = b.floats(b.constant("blocks", blocks), value_dtype)
        grid = b.zeros([shape[0] * shape[1], blocks.shape[1]])
        filled = b.op("ScatterND", [grid, b.positions(b.constant("gaps", arrays["gaps"])),
                                    values])
        b.op("Reshape", [filled, reshape_to], output=tensor)
    elif encoded.format == "csr":
        _csr_decoder(b, arrays, shape, size, value_dtype, reshape_to)
    elif encoded.format == "bitmask":
        _bitmask_decoder(b, arrays, size, value_dtype, reshape_to)
    return b.nodes, b.initializers


def _csr_decoder(b: _Builder, arrays: dict, shape: list[int], size: int, value_dtype,
                 reshape_to: str) -> None:
    """row of the k-th nonzero = cumsum of ones scattered (added) at the row starts."""
    rows = len(arrays["row_pointers"]) - 1
    nonzero = arrays["values"].size
    columns = size // max(rows, 1)
    starts = b.constant("row_starts", arrays["row_pointers"][1:rows].astype(np.int64))
    ones = b.constant("ones", np.ones(max(rows - 1, 0), np.int64))
    marks = b.op("ScatterElements", [b.zeros([nonzero + 1], TensorProto.INT64), starts, ones],
                 axis=0, reduction="add")
    row_ids = b.op("Slice", [b.op("CumSum", [marks, b.constant("axis", np.array(0))]),
                             b.constant("begin", np.array([0], np.int64)),
                             b.constant("end", np.array([nonzero], np.int64))])
    offsets = b.op("Mul", [row_ids, b.constant("width", np.array(columns, np.int64))])
    flat = b.op("Add", [offsets, b.int64(b.constant("columns", arrays["columns"]))])
    index = b.op("Unsqueeze", [flat, b.constant("axes", np.array([1], np.int64))])
    values = b.floats(b.constant("values", arrays["values"]), value_dtype)
    dense = b.op("ScatterND", [b.zeros([size]), index, values])
    b.op("Reshape", [dense, reshape_to], output=b.tensor)


def _bitmask_decoder(b: _Builder, arrays: dict, size: int, value_dtype,
                     reshape_to: str) -> None:
    """bit i -> mask; the k-th set bit picks values[k] via cumsum(mask) * mask into [0, v]."""
    bits = b.op("Unsqueeze", [b.constant("bits", arrays["bits"]),
                              b.constant("axes", np.array([1], np.int64))])
    shifted = b.op("BitShift", [bits, b.constant("shifts", np.arange(7, -1, -1, dtype=np.uint8))],
                   direction="RIGHT")
    masked = b.op("BitwiseAnd", [shifted, b.constant("one_bit", np.array(1, np.uint8))])
    flat = b.op("Reshape", [masked, b.constant("flat", np.array([-1], np.int64))])
    mask = b.int64(b.op("Slice", [flat, b.constant("begin", np.array([0], np.int64)),
                                  b.constant("end", np.array([size], np.int64))]))
    ranks = b.op("Mul", [b.op("CumSum", [mask, b.constant("axis", np.array(0))]), mask])
    values = b.floats(b.constant("values", arrays["values"]), value_dtype)
    padded = b.op("Concat", [b.constant("zero", np.zeros(1, np.float32)), values], axis=0)
    picked = b.op("Gather", [padded, ranks], axis=0)
    b.op("Reshape", [picked, reshape_to], output=b.tensor)
