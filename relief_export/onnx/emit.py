"""torch module -> ONNX (an ``onnx_ir`` model, as torch's exporter builds it): input "input"
with a dynamic batch axis, output "output"."""

from __future__ import annotations

import onnx_ir as ir
import torch
from torch import nn

from ..errors import ReliefError, first_line
from ..quiet import quiet_libraries

INPUT, OUTPUT = "input", "output"


def to_onnx(model: nn.Module, example: torch.Tensor, opset: int = 18) -> ir.Model:
    """Export with torch.onnx (dynamo exporter), checking the opset and the batch axis.

    The example is traced at batch 2: torch.export specialises axes of size 1, which would
    fix the batch axis of a model whose other axes are all 1.
    """
    batch = torch.export.Dim("batch", min=1)
    pair = example[:1].expand(2, *example.shape[1:]).contiguous()
    try:
        with quiet_libraries(stdout=True):
            program = torch.onnx.export(model, (pair,), input_names=[INPUT],
                                        output_names=[OUTPUT], opset_version=opset,
                                        dynamic_shapes=({0: batch},), dynamo=True,
                                        verbose=False)
    except Exception as error:
        first = first_line(error)
        raise ReliefError(f"torch.onnx.export failed on {type(model).__name__}: {first}"
                          ) from None
    assert program is not None
    exported = program.model
    written = exported.opset_imports.get("", exported.opset_imports.get("ai.onnx"))
    if written != opset:
        raise ReliefError(f"the ONNX exporter cannot write opset {opset} (it wrote "
                          f"{written}); choose an opset it supports, e.g. 18")
    shape = exported.graph.inputs[0].shape
    if shape is None or isinstance(shape[0], int):
        raise ReliefError(f"torch.onnx.export fixed the batch axis of {type(model).__name__}; "
                          "the model's forward must not depend on the batch size")
    return exported
