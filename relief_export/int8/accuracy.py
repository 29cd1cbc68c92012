"""int8 is checked by what it decides, not by a tolerance on raw outputs: top-1 agreement
with the fp32 model, and test accuracy of both when labels exist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ReliefError, first_line
from ..runtime.ort import session

BATCH = 256


def predictions(model: bytes, samples: np.ndarray) -> np.ndarray:
    """argmax over the last axis of the first output, per sample (onnxruntime)."""
    try:
        runner = session(model)
        name = runner.get_inputs()[0].name
        outputs = [runner.run(None, {name: samples[i:i + BATCH]})[0]
                   for i in range(0, len(samples), BATCH)]
    except Exception as error:  # onnxruntime's own exception types
        raise ReliefError(f"onnxruntime cannot run the int8 model ({first_line(error)})"
                          ) from None
    return np.concatenate(outputs).reshape(len(samples), -1).argmax(axis=1)


@dataclass(frozen=True)
class Agreement:
    """top-1 agreement = mean(argmax int8 == argmax fp32); accuracies in [0, 1]."""

    samples: int
    agreement: float
    fp32_accuracy: float | None = None
    int8_accuracy: float | None = None


def agreement(fp32: bytes, int8: bytes, samples: np.ndarray,
              labels: np.ndarray | None = None) -> Agreement:
    reference, quantized = predictions(fp32, samples), predictions(int8, samples)
    if labels is None:
        return Agreement(len(samples), float(np.mean(reference == quantized)))
    return Agreement(len(samples), float(np.mean(reference == quantized)),
                     float(np.mean(reference == labels)), float(np.mean(quantized == labels)))
