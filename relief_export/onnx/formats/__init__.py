"""The registry of weight formats: one entry per format (its own module), and the choices
``--weights`` offers. Adding a format is one module and one line in ``FORMATS``."""

from __future__ import annotations

import numpy as np

from .base import Decoder, Encoded, WeightFormat
from .bitmask import Bitmask
from .bsr import Bsr
from .bsr_delta import BsrDelta
from .csr import Csr
from .csr_delta import CsrDelta
from .dense import Dense

__all__ = ["FORMATS", "MODES", "Decoder", "Encoded", "WeightFormat", "decode", "smallest"]

# registry order breaks ties between equally small encodings
FORMATS: dict[str, WeightFormat] = {f.name: f for f in (Dense(), Csr(), CsrDelta(), Bsr(),
                                                       BsrDelta(), Bitmask())}
# --weights MODE -> the formats it may choose from (dense always: when nothing beats it)
MODES: dict[str, tuple[str, ...]] = {
    "auto": tuple(FORMATS), "dense": ("dense",), "csr": ("dense", "csr", "csr_delta"),
    "bsr": ("dense", "bsr", "bsr_delta", "csr", "csr_delta"), "bitmask": ("dense", "bitmask")}


def smallest(values: np.ndarray, names: tuple[str, ...] = tuple(FORMATS)) -> Encoded:
    """The smallest encoding of ``values`` among the applicable formats in ``names``."""
    options = [e for name in names if (e := FORMATS[name].encode(values)) is not None]
    order = list(FORMATS)
    return min(options, key=lambda e: (e.nbytes, order.index(e.format)))


def decode(encoded: Encoded) -> np.ndarray:
    """The numpy decode of any encoded tensor (the oracle the ONNX decoders are tested on)."""
    return FORMATS[encoded.format].decode(encoded)
