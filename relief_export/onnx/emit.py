"""torch module -> ONNX ModelProto: input "input" with a dynamic batch axis, output "output"."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx
import torch
from torch import nn

from ..errors import ReliefError, first_line
from .compat import max_ir_version

INPUT, OUTPUT = "input", "output"


def to_onnx(model: nn.Module, example: torch.Tensor, opset: int = 18) -> onnx.ModelProto:
    """Export with torch.onnx (dynamo exporter); IR version capped for onnxruntime.

    The example is traced at batch 2: torch.export specialises axes of size 1, which would
    fix the batch axis of a model whose other axes are all 1.
    """
    batch = torch.export.Dim("batch", min=1)
    pair = example[:1].expand(2, *example.shape[1:]).contiguous()
    try:
        with _quiet():
            program = torch.onnx.export(model, (pair,), input_names=[INPUT],
                                        output_names=[OUTPUT], opset_version=opset,
                                        dynamic_shapes=({0: batch},), dynamo=True,
                                        verbose=False)
    except Exception as error:
        first = first_line(error)
        raise ReliefError(f"torch.onnx.export failed on {type(model).__name__}: {first}"
                          ) from None
    assert program is not None
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, max_ir_version())
    written = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ReliefError(f"the ONNX exporter cannot write opset {opset} (it wrote "
                          f"{sorted(written)}); choose an opset it supports, e.g. 18")
    if proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value:
        raise ReliefError(f"torch.onnx.export fixed the batch axis of {type(model).__name__}; "
                          "the model's forward must not depend on the batch size")
    return proto


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warnings meant for its developers; keep them out."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo",
                                                    "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace metadata_props entries by key."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
