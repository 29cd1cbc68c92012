"""csr_delta: nonzeros in row-major order with the uint8 gap to the previous one (position +
1 for the first); a gap over 255 is bridged by escape entries (gap 255, value 0). No row
pointers: positions run across rows. Decoded by CumSum and ScatterND."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .base import Decoder, Encoded, gaps


class CsrDelta:
    name = "csr_delta"
    min_opset = 14

    def encode(self, values: np.ndarray) -> Encoded:
        flat = values.reshape(-1)
        positions = np.flatnonzero(flat)
        steps, owner = gaps(positions, 255)
        stored = np.zeros(len(steps), dtype=values.dtype)
        stored[owner >= 0] = flat[positions]
        return Encoded(self.name, values.shape, {"gaps": steps.astype(np.uint8),
                                                 "values": stored})

    def decode(self, encoded: Encoded) -> np.ndarray:
        a = encoded.arrays
        dense = np.zeros(encoded.size, a["values"].dtype)
        dense[np.cumsum(a["gaps"].astype(np.int64)) - 1] = a["values"]
        return dense.reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        a = encoded.arrays
        if a["values"].size == 0:
            return decoder.all_zero(encoded)
        dense = decoder.scatter([encoded.size], decoder.positions(decoder.constant("gaps",
                                                                                   a["gaps"])),
                                decoder.constant("values", a["values"]))
        return decoder.reshape(dense, encoded.shape)
