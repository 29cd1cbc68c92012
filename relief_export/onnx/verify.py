"""Does the ONNX model compute what the torch model computes? onnx.checker + onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import VerificationError, first_line
from ..ort import session
from ..table import format_table
from .emit import INPUT


@dataclass(frozen=True)
class Check:
    """One comparison: which inputs, max |error| and max |expected| over the outputs."""

    inputs: str
    max_error: float
    max_output: float

    @property
    def relative(self) -> float:
        return self.max_error / max(self.max_output, 1e-12)


def check_structure(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        first = first_line(error)
        raise VerificationError(f"the exported model fails onnx.checker: {first}") from None


def compare(model_bytes: bytes, reference: nn.Module, batches: dict[str, torch.Tensor],
            tolerance: float) -> list[Check]:
    """Run both on every named batch; raise VerificationError above ``tolerance``."""
    try:
        runner = session(model_bytes)
    except Exception as error:  # onnxruntime's own exception types
        raise VerificationError(f"onnxruntime cannot load the exported model "
                                f"({first_line(error)}); no file written") from None
    checks = []
    reference.eval()
    for label, x in batches.items():
        with torch.no_grad():
            expected = reference(x).numpy()
        try:
            got = runner.run(None, {INPUT: x.numpy()})[0]
        except Exception as error:  # onnxruntime's own exception types
            raise VerificationError(f"onnxruntime cannot run the exported model on {label} "
                                    f"({first_line(error)}); no file written") from None
        if got.shape != expected.shape:
            raise VerificationError(f"ONNX output shape {got.shape} differs from torch "
                                    f"{expected.shape} on {label}")
        checks.append(Check(label, float(np.abs(got - expected).max()),
                            float(np.abs(expected).max())))
    worst = max(c.relative for c in checks)
    if not worst <= tolerance:
        table = format_table(["inputs", "max |error|", "max |output|", "relative"],
                             [[c.inputs, c.max_error, c.max_output, c.relative]
                              for c in checks])
        raise VerificationError(f"onnxruntime disagrees with torch (max relative error "
                                f"{worst:.2e} > {tolerance:.0e}); no file written\n{table}")
    return checks


def seeded_inputs(shape: list[int], samples: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = (samples, *shape[1:])
    return {f"{samples} N(0,1) samples (seed {seed})": torch.randn(size, generator=generator),
            f"{samples} U(0,1) samples (seed {seed})": torch.rand(size, generator=generator),
            "batch of 1": torch.rand((1, *shape[1:]), generator=generator)}


def same_outputs(model_bytes: bytes, reference_bytes: bytes,
                 batches: dict[str, torch.Tensor]) -> None:
    """Both ONNX models give bit-identical outputs in onnxruntime on every batch (an encoding
    that must not change any weight); VerificationError otherwise."""
    runners = [session(model_bytes), session(reference_bytes)]
    for label, x in batches.items():
        got, expected = (r.run(None, {INPUT: x.numpy()})[0] for r in runners)
        if not np.array_equal(got, expected):
            worst = float(np.abs(got - expected).max())
            raise VerificationError(f"the encoded weights change the model's outputs on "
                                    f"{label} (max |error| {worst:.2e}); no file written")
