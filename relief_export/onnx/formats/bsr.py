"""bsr: scipy.sparse block CSR of a conv weight [O, I, kh, kw] seen as [O, I * kh * kw] with
blocks of one kernel slice (1 x kh*kw, NNrelief's unit of pruning): the nonzero slices, their
input channel in the narrowest unsigned type, row pointers per output channel."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from scipy import sparse

from .base import Decoder, Encoded, narrowest_unsigned, row_ids, scipy_ready


class Bsr:
    name = "bsr"
    min_opset = 16

    def encode(self, values: np.ndarray) -> Encoded | None:
        if values.ndim != 4 or values.shape[2] * values.shape[3] < 2:
            return None
        outs, ins = values.shape[:2]
        block = values.shape[2] * values.shape[3]
        matrix = sparse.bsr_array(scipy_ready(values.reshape(outs, ins * block)),
                                  blocksize=(1, block))
        matrix.sort_indices()
        return Encoded(self.name, values.shape, {
            "values": matrix.data.reshape(-1, block).astype(values.dtype),
            "columns": matrix.indices.astype(narrowest_unsigned(max(ins - 1, 0))),
            "row_pointers": matrix.indptr.astype(narrowest_unsigned(int(matrix.indptr[-1])))})

    def decode(self, encoded: Encoded) -> np.ndarray:
        a = encoded.arrays
        outs, ins = encoded.shape[:2]
        grid = np.zeros((outs * ins, encoded.size // (outs * ins)), a["values"].dtype)
        grid[row_ids(a["row_pointers"]) * ins + a["columns"].astype(np.int64)] = a["values"]
        return grid.reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        a = encoded.arrays
        stored = len(a["values"])
        if stored == 0:
            return decoder.all_zero(encoded)
        outs, ins = encoded.shape[:2]
        rows = decoder.rows(a["row_pointers"].astype(np.int64), stored)
        flat = decoder.op("Add", [decoder.op("Mul", [rows, decoder.index(ins)]),
                                  decoder.int64(decoder.constant("columns", a["columns"]))])
        grid = decoder.scatter([outs * ins, a["values"].shape[1]], decoder.column(flat),
                               decoder.constant("values", a["values"]))
        return decoder.reshape(grid, encoded.shape)
