"""bitmask: one bit per entry (numpy.packbits order, most significant bit first) and the
nonzeros. Decoded by BitShift / BitwiseAnd into a mask; the k-th set bit picks values[k]
through Gather at cumsum(mask) * mask from [0, values...]."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .base import Decoder, Encoded


class Bitmask:
    name = "bitmask"
    min_opset = 18  # BitwiseAnd

    def encode(self, values: np.ndarray) -> Encoded:
        flat = values.reshape(-1)
        return Encoded(self.name, values.shape, {"bits": np.packbits(flat != 0),
                                                 "values": flat[flat != 0]})

    def decode(self, encoded: Encoded) -> np.ndarray:
        a = encoded.arrays
        dense = np.zeros(encoded.size, a["values"].dtype)
        dense[np.unpackbits(a["bits"])[:encoded.size].astype(bool)] = a["values"]
        return dense.reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        a = encoded.arrays
        if a["values"].size == 0:
            return decoder.all_zero(encoded)
        bits = decoder.column(decoder.constant("bits", a["bits"]))
        shifted = decoder.op("BitShift", [bits, decoder.constant(
            "shifts", np.arange(7, -1, -1, dtype=np.uint8))], direction="RIGHT")
        masked = decoder.op("BitwiseAnd", [shifted, decoder.constant("one", np.uint8(1))])
        flat = decoder.op("Reshape", [masked, decoder.index([-1])])
        mask = decoder.int64(decoder.op("Slice", [flat, decoder.index([0]),
                                                  decoder.index([encoded.size])]))
        ranks = decoder.op("Mul", [decoder.op("CumSum", [mask, decoder.index(0)]), mask])
        padded = decoder.op("Concat", [decoder.constant("zero", np.zeros(1, a["values"].dtype)),
                                       decoder.constant("values", a["values"])], axis=0)
        return decoder.reshape(decoder.op("Gather", [padded, ranks], axis=0), encoded.shape)
