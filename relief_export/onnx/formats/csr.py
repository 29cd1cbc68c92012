"""csr: scipy.sparse CSR of the [rows, rest] matrix: nonzeros, column indices in the
narrowest unsigned type, row pointers. Decoded by row ids (``Decoder.rows``) and ScatterND."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from scipy import sparse

from .base import Decoder, Encoded, as_matrix, narrowest_unsigned, row_ids, scipy_ready


class Csr:
    name = "csr"
    min_opset = 16  # ScatterElements with reduction="add"

    def encode(self, values: np.ndarray) -> Encoded:
        matrix = sparse.csr_array(scipy_ready(as_matrix(values)))
        matrix.sort_indices()
        columns = as_matrix(values).shape[1]
        return Encoded(self.name, values.shape, {
            "values": matrix.data.astype(values.dtype),
            "columns": matrix.indices.astype(narrowest_unsigned(max(columns - 1, 0))),
            "row_pointers": matrix.indptr.astype(narrowest_unsigned(int(matrix.indptr[-1])))})

    def decode(self, encoded: Encoded) -> np.ndarray:
        a = encoded.arrays
        rows = len(a["row_pointers"]) - 1
        dense = np.zeros((rows, encoded.size // max(rows, 1)), a["values"].dtype)
        dense[row_ids(a["row_pointers"]), a["columns"].astype(np.int64)] = a["values"]
        return dense.reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        a = encoded.arrays
        stored = a["values"].size
        if stored == 0:
            return decoder.all_zero(encoded)
        width = encoded.size // (len(a["row_pointers"]) - 1)
        rows = decoder.rows(a["row_pointers"].astype(np.int64), stored)
        flat = decoder.op("Add", [decoder.op("Mul", [rows, decoder.index(width)]),
                                  decoder.int64(decoder.constant("columns", a["columns"]))])
        dense = decoder.scatter([encoded.size], decoder.column(flat),
                                decoder.constant("values", a["values"]))
        return decoder.reshape(dense, encoded.shape)
