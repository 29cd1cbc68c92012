"""torch module -> ONNX (an ``onnx_ir`` model, as torch's exporter builds it). One input is
named "input", one output "output"; several are named after the forward's parameters
(``input_ids``, ``attention_mask``) and ``output_0``, ``output_1``, ... in the order
torch.utils._pytree flattens the outputs (tuples, dicts, Hugging Face ``ModelOutput``).
Every input's batch axis is dynamic."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import onnx_ir as ir
import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from ..errors import ReliefError, first_line
from ..quiet import quiet_libraries

INPUT, OUTPUT = "input", "output"


def input_names(model: nn.Module, count: int) -> list[str]:
    """The ONNX input names for ``count`` inputs of ``model``."""
    if count == 1:
        return [INPUT]
    if isinstance(model, fx.GraphModule):
        names = [str(n.target) for n in model.graph.nodes if n.op == "placeholder"]
    else:
        names = list(inspect.signature(model.forward).parameters)
    names = names[:count]
    if len(names) < count or len(set(names)) < count:
        names = [f"input_{i}" for i in range(count)]
    return names


def output_names(count: int) -> list[str]:
    return [OUTPUT] if count == 1 else [f"output_{i}" for i in range(count)]


def to_onnx(model: nn.Module, examples: torch.Tensor | Sequence[torch.Tensor],
            opset: int = 18) -> ir.Model:
    """Export with torch.onnx (dynamo exporter), checking the opset and the batch axes.

    The examples (one tensor or one per input) are traced at batch 2: torch.export
    specialises axes of size 1, which would fix the batch axis of a model whose other axes
    are all 1.
    """
    batch = torch.export.Dim("batch", min=1)
    inputs = (examples,) if isinstance(examples, torch.Tensor) else tuple(examples)
    pairs = tuple(x[:1].expand(2, *x.shape[1:]).contiguous() for x in inputs)
    with torch.no_grad():
        outputs = len(pytree.tree_leaves(model(*pairs)))
    try:
        with quiet_libraries(stdout=True):
            program = torch.onnx.export(model, pairs,
                                        input_names=input_names(model, len(pairs)),
                                        output_names=output_names(outputs),
                                        opset_version=opset,
                                        dynamic_shapes=tuple({0: batch} for _ in pairs),
                                        dynamo=True, verbose=False)
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
    for value in exported.graph.inputs:
        shape = value.shape
        if shape is None or isinstance(shape[0], int):
            raise ReliefError(f"torch.onnx.export fixed the batch axis of "
                              f"{type(model).__name__}; the model's forward must not depend "
                              "on the batch size")
    return exported
