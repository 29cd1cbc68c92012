"""Does the ONNX model compute what the torch model computes? onnx.checker + onnxruntime."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.utils._pytree as pytree
from torch import nn

from ..errors import VerificationError, first_line
from ..runtime.ort import session
from ..runtime.seeded import random_like
from ..table import format_table

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Check:
    """One comparison: which inputs and output, max |error| and max |expected|."""

    inputs: str
    max_error: float
    max_output: float
    output: str = "output"

    @property
    def relative(self) -> float:
        return self.max_error / max(self.max_output, 1e-12)


def check_structure(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        first = first_line(error)
        raise VerificationError(f"the exported model fails onnx.checker: {first}") from None


def as_inputs(batch: torch.Tensor | Inputs) -> Inputs:
    return (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)


def _run(runner: Any, batch: Inputs, label: str) -> list[np.ndarray]:
    names = [value.name for value in runner.get_inputs()]
    if len(names) != len(batch):
        raise VerificationError(f"the ONNX model takes {len(names)} inputs, {label} has "
                                f"{len(batch)}")
    try:
        return runner.run(None, {n: x.numpy() for n, x in zip(names, batch, strict=True)})
    except Exception as error:  # onnxruntime's own exception types
        raise VerificationError(f"onnxruntime cannot run the exported model on {label} "
                                f"({first_line(error)}); no file written") from None


def compare(model_bytes: bytes, reference: nn.Module,
            batches: Mapping[str, torch.Tensor | Inputs], tolerance: float) -> list[Check]:
    """Run both on every named batch, every output (flattened as torch.utils._pytree does);
    raise VerificationError above ``tolerance``, with a table per input batch and output."""
    try:
        runner = session(model_bytes)
    except Exception as error:  # onnxruntime's own exception types
        raise VerificationError(f"onnxruntime cannot load the exported model "
                                f"({first_line(error)}); no file written") from None
    names = [value.name for value in runner.get_outputs()]
    checks = []
    with contextlib.suppress(NotImplementedError):
        reference.eval()
    for label, batch in batches.items():
        inputs = as_inputs(batch)
        with torch.no_grad():
            expected = [t.numpy() for t in pytree.tree_leaves(reference(*inputs))
                        if isinstance(t, torch.Tensor)]
        got = _run(runner, inputs, label)
        if len(got) != len(expected):
            raise VerificationError(f"the ONNX model has {len(got)} outputs, torch "
                                    f"{len(expected)}")
        for name, a, b in zip(names, got, expected, strict=True):
            if a.shape != b.shape:
                raise VerificationError(f"ONNX output {name} has shape {a.shape}, torch "
                                        f"{b.shape}, on {label}")
            worst_error = float(np.abs(a.astype(np.float64) - b).max()) if b.size else 0.0
            checks.append(Check(label, worst_error, float(np.abs(b).max()) if b.size else 0.0,
                                name))
    worst = max(c.relative for c in checks)
    if not worst <= tolerance:
        table = format_table(["inputs", "output", "max |error|", "max |output|", "relative"],
                             [[c.inputs, c.output, c.max_error, c.max_output, c.relative]
                              for c in checks])
        raise VerificationError(f"onnxruntime disagrees with torch (max relative error "
                                f"{worst:.2e} > {tolerance:.0e}); no file written\n{table}")
    return checks


def seeded_inputs(examples: list[int] | Sequence[torch.Tensor], samples: int = 8,
                  seed: int = 0) -> dict[str, Inputs]:
    """Seeded batches shaped like ``examples`` (or one float input of shape ``examples``):
    float inputs N(0,1) and U(0,1); integer inputs (token ids) uniform over the examples'
    range."""
    if all(isinstance(size, int) for size in examples):
        examples = [torch.zeros([int(size) for size in examples])]
    tensors = [x for x in examples if isinstance(x, torch.Tensor)]
    generator = torch.Generator().manual_seed(seed)

    def draw(batch: int, kind: str) -> Inputs:
        return tuple(random_like(x, batch, generator, kind) for x in tensors)

    return {f"{samples} N(0,1) samples (seed {seed})": draw(samples, "normal"),
            f"{samples} U(0,1) samples (seed {seed})": draw(samples, "uniform"),
            "batch of 1": draw(1, "uniform")}


def same_outputs(model_bytes: bytes, reference_bytes: bytes,
                 batches: Mapping[str, torch.Tensor | Inputs]) -> None:
    """Both ONNX models give bit-identical outputs in onnxruntime on every batch (an encoding
    that must not change any weight); VerificationError otherwise."""
    runners = [session(model_bytes), session(reference_bytes)]
    for label, batch in batches.items():
        got, expected = (_run(r, as_inputs(batch), label) for r in runners)
        for a, b in zip(got, expected, strict=True):
            if not np.array_equal(a, b):
                worst = float(np.abs(a - b).max())
                raise VerificationError(f"the encoded weights change the model's outputs on "
                                        f"{label} (max |error| {worst:.2e}); no file written")
