"""A layer reading a flattened tensor ([batch, C, *spatial] -> [batch, C S]) whose weight is
zero outside a box of that grid (an image border no unit reads: compaction cannot remove a
network input's pixels, nor a channel's unread positions) reads the box alone: a Slice of the
box before a Flatten of its own, and the weight's columns of the box. The box is, per axis,
the range from the first to the last index some unit reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .build import Writer
from .layers import LAYER_KINDS, constant
from .order import flattened_dims

CROP_SHARE = 0.9  # crop only a box of at most this share of the columns


@dataclass(frozen=True)
class Crop:
    """The box ``starts``..``ends`` (exclusive) of the grid ``dims`` = [C, *spatial]."""

    dims: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @property
    def columns(self) -> np.ndarray:
        """The flat (row-major) indices of the box's entries, in order."""
        grid = np.arange(int(np.prod(self.dims))).reshape(self.dims)
        return grid[tuple(slice(a, b) for a, b in zip(self.starts, self.ends, strict=True))
                    ].reshape(-1)

    def describe(self) -> str:
        box = ", ".join(f"{a}:{b}" for a, b in zip(self.starts, self.ends, strict=True))
        return f"{self.columns.size} of {int(np.prod(self.dims))} inputs: [{box}] of " \
               f"{list(self.dims)}"


def read_box(read: np.ndarray, dims: list[int]) -> Crop | None:
    """The bounding box of the True entries of ``read`` (flat, over the grid ``dims``), if it
    holds at most CROP_SHARE of the grid."""
    grid = read.reshape(dims)
    if not grid.any():
        return None
    bounds = [np.flatnonzero(grid.any(tuple(a for a in range(grid.ndim) if a != axis)))
              for axis in range(grid.ndim)]
    crop = Crop(tuple(dims), tuple(int(b[0]) for b in bounds),
                tuple(int(b[-1]) + 1 for b in bounds))
    return crop if crop.columns.size <= CROP_SHARE * read.size else None


def crop_unread_border(graph: ir.Graph, node: ir.Node) -> Crop | None:
    """Make the layer ``node`` (a 2-d weight of ``LAYER_KINDS`` that alone reads it) read only
    the box of its flattened input that it uses; the Crop made, or None."""
    kind = LAYER_KINDS[node.op_type]
    x, stored_value = node.inputs[0], node.inputs[1]
    stored = constant(stored_value)
    flatten = x.producer() if x is not None else None
    dims = flattened_dims(flatten) if flatten is not None else None
    if dims is None or stored is None or stored.ndim != 2 or stored_value is None or \
            len(stored_value.uses()) != 1:
        return None
    assert x is not None and flatten is not None
    weight = kind.units_first(stored)
    crop = read_box(np.asarray(weight.any(0)), dims)
    if crop is None:
        return None
    writer = Writer(graph, flatten, f"{node.name or 'layer'}_crop".strip("/"))
    bounds = [writer.initializer(part, np.array(values, np.int64))
              for part, values in (("starts", crop.starts), ("ends", crop.ends),
                                   ("axes", range(1, len(dims) + 1)))]
    box = writer.node("Slice", [flatten.inputs[0], *bounds], {}, "box")
    box.shape, box.type = ir.Shape([x.shape[0] if x.shape else None, *(
        b - a for a, b in zip(crop.starts, crop.ends, strict=True))]), x.type
    flat = writer.node("Flatten", [box], {"axis": 1}, "flatten")
    flat.shape, flat.type = ir.Shape([box.shape[0], crop.columns.size]), x.type
    node.replace_input_with(0, flat)
    node.replace_input_with(1, writer.initializer(
        "weight", np.ascontiguousarray(kind.stored(weight[:, crop.columns]))))
    unread = [stored_value]
    if not x.uses() and not x.is_graph_output():
        unread += [v for v in flatten.inputs[1:] if v is not None]  # a Reshape's shape
        graph.remove(flatten, safe=True)
    for value in unread:
        if not value.uses() and value.name in graph.initializers:
            graph.initializers.pop(str(value.name))
    return crop
