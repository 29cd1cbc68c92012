"""What every weight format provides, and the decoder-building helpers they share.

A format encodes one tensor (float32, float16 or int8 values) into a few numpy arrays,
decodes them back in numpy (the tests' oracle), and emits an ONNX decoder subgraph on an
``onnx_ir`` tape whose every input is an initializer, so that onnxruntime constant-folds it
when a session is created (never NonZero, which it does not fold).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx_ir as ir
from numpy.typing import ArrayLike

PREFIX = "relief_decode/"


@dataclass(frozen=True)
class Encoded:
    """An encoded tensor: its format, original shape and the arrays that store it."""

    format: str
    shape: tuple[int, ...]
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the stored values (every format keeps them under "values")."""
        return self.arrays["values"].dtype


class WeightFormat(Protocol):
    """One entry of the registry (``formats/__init__.py``)."""

    name: str
    min_opset: int

    def encode(self, values: np.ndarray) -> Encoded | None:
        """The arrays that store ``values`` exactly, or None when the format does not apply."""

    def decode(self, encoded: Encoded) -> np.ndarray:
        """The dense tensor (in the stored values' dtype), in numpy."""

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        """The dense tensor, as ONNX nodes on ``decoder``."""


def narrowest_unsigned(maximum: int) -> type[np.unsignedinteger]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if maximum <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def as_matrix(values: np.ndarray) -> np.ndarray:
    """Rows = first axis (output units), columns = the rest; a vector is one row."""
    return values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)


def scipy_ready(values: np.ndarray) -> np.ndarray:
    """scipy.sparse has no float16: build the structure from the exact float32 copy."""
    return values.astype(np.float32) if values.dtype == np.float16 else values


def gaps(positions: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between increasing positions (the first: position + 1), split into steps of at
    most ``limit``. Returns the gaps and, per gap, the index of the entry it ends on (-1 for
    the escape steps, which store a zero where there is one already)."""
    steps = np.diff(np.concatenate([[-1], positions]))
    pieces = np.maximum(1, -(-steps // limit))  # ceil(step / limit)
    out = np.full(int(pieces.sum()), limit, dtype=np.int64)
    owner = np.full(len(out), -1, dtype=np.int64)
    ends = np.cumsum(pieces) - 1
    out[ends] = steps - (pieces - 1) * limit
    owner[ends] = np.arange(len(steps))
    return out, owner


def row_ids(row_pointers: np.ndarray) -> np.ndarray:
    """The row of every stored entry, from CSR row pointers."""
    counts = np.diff(row_pointers.astype(np.int64)).astype(np.int64)
    return np.repeat(np.arange(len(counts)), counts)


class Decoder:
    """Builds one tensor's decoder: initializers named ``TENSOR__name``, nodes named
    ``relief_decode/TENSOR/OpN``; ``nodes`` and ``initializers`` are what it made."""

    def __init__(self, tensor: str, dtype: ir.DataType):
        self.tensor, self.dtype = tensor, dtype
        self.tape = ir.tape.Tape()
        self.count = 0

    @property
    def nodes(self) -> list[ir.Node]:
        return list(self.tape.nodes)

    @property
    def initializers(self) -> list[ir.Value]:
        return list(self.tape.initializers)

    def constant(self, name: str, array: ArrayLike) -> ir.Value:
        self.count += 1
        full = f"{self.tensor}__{name}{self.count}"
        stored = np.array(array, order="C")  # ascontiguousarray would make 0-d arrays 1-d
        return self.tape.initializer(ir.tensor(stored, name=full), full)

    def op(self, op_type: str, inputs: list[ir.Value], **attributes: object) -> ir.Value:
        self.count += 1
        return self.tape.op(op_type, inputs, attributes or None,  # type: ignore[arg-type]
                            name=f"{PREFIX}{self.tensor}/{op_type}{self.count}")

    def int64(self, value: ir.Value) -> ir.Value:
        return self.op("Cast", [value], to=ir.DataType.INT64)

    def index(self, array: ArrayLike) -> ir.Value:
        return self.constant("index", np.asarray(array, np.int64))

    def zeros(self, shape: list[int], dtype: ir.DataType | None = None) -> ir.Value:
        value = ir.tensor(np.zeros(1, (dtype or self.dtype).numpy()))
        return self.op("ConstantOfShape", [self.index(shape)], value=value)

    def column(self, flat: ir.Value) -> ir.Value:
        """[m] -> [m, 1], the index layout ScatterND wants."""
        return self.op("Unsqueeze", [flat, self.index([1])])

    def positions(self, stored_gaps: ir.Value) -> ir.Value:
        """cumsum(gaps) - 1 as an [m, 1] int64 index tensor."""
        total = self.op("CumSum", [self.int64(stored_gaps), self.index(0)])
        return self.column(self.op("Sub", [total, self.index(1)]))

    def rows(self, row_pointers: np.ndarray, stored: int) -> ir.Value:
        """The row of each of ``stored`` entries: the cumulative sum of ones scattered (added)
        at the row starts."""
        count = len(row_pointers) - 1
        starts = self.index(row_pointers[1:count])
        ones = self.index(np.ones(max(count - 1, 0)))
        marks = self.op("ScatterElements", [self.zeros([stored + 1], ir.DataType.INT64),
                                            starts, ones], axis=0, reduction="add")
        summed = self.op("CumSum", [marks, self.index(0)])
        return self.op("Slice", [summed, self.index([0]), self.index([stored])])

    def scatter(self, shape: list[int], index: ir.Value, updates: ir.Value) -> ir.Value:
        """zeros(shape) with ``updates`` written at ``index``."""
        return self.op("ScatterND", [self.zeros(shape), index, updates])

    def all_zero(self, encoded: Encoded) -> ir.Value:
        """The decoder of a tensor with nothing stored."""
        return self.reshape(self.zeros([encoded.size]), encoded.shape)

    def reshape(self, value: ir.Value, shape: tuple[int, ...]) -> ir.Value:
        return self.op("Reshape", [value, self.index(list(shape))])
