"""bsr_delta: for conv weights [O, I, kh, kw] whose sparsity is whole kernel slices: the
nonzero slices [n, kh * kw] and their positions in the O x I grid as gaps (uint8, or wider
when a gap exceeds 255)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .base import Decoder, Encoded, narrowest_unsigned


class BsrDelta:
    name = "bsr_delta"
    min_opset = 14

    def encode(self, values: np.ndarray) -> Encoded | None:
        if values.ndim != 4:
            return None
        grid = values.reshape(values.shape[0] * values.shape[1], -1)
        blocks = np.flatnonzero((grid != 0).any(1))
        steps = np.diff(np.concatenate([[-1], blocks]))
        dtype = narrowest_unsigned(int(steps.max()) if steps.size else 0)
        return Encoded(self.name, values.shape, {"gaps": steps.astype(dtype),
                                                 "values": grid[blocks]})

    def decode(self, encoded: Encoded) -> np.ndarray:
        a = encoded.arrays
        cells = encoded.shape[0] * encoded.shape[1]
        grid = np.zeros((cells, encoded.size // cells), a["values"].dtype)
        grid[np.cumsum(a["gaps"].astype(np.int64)) - 1] = a["values"]
        return grid.reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        a = encoded.arrays
        if len(a["values"]) == 0:
            return decoder.all_zero(encoded)
        grid = decoder.scatter([encoded.shape[0] * encoded.shape[1], a["values"].shape[1]],
                               decoder.positions(decoder.constant("gaps", a["gaps"])),
                               decoder.constant("values", a["values"]))
        return decoder.reshape(grid, encoded.shape)
