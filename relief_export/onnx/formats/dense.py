"""dense: the values as they are (with float16 values, a Cast restores float32)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .base import Decoder, Encoded


class Dense:
    name = "dense"
    min_opset = 1

    def encode(self, values: np.ndarray) -> Encoded:
        return Encoded(self.name, values.shape, {"values": values})

    def decode(self, encoded: Encoded) -> np.ndarray:
        return encoded.arrays["values"].reshape(encoded.shape)

    def emit(self, decoder: Decoder, encoded: Encoded) -> ir.Value:
        return decoder.constant("values", encoded.arrays["values"])
