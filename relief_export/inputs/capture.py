"""Capturing a model as a torch.fx graph that pruning and compaction read.

Module-level torch.fx tracing is tried first: its graph names the model's own modules, so
reports read like the model's code. When fx cannot trace the forward (data-dependent Python,
``int(proxy)``, introspection, as in most Hugging Face models) the model is captured with
torch.export instead, with a dynamic batch axis; its ATen graph is made functional
(``add_`` -> ``add``, ``dropout_`` dropped in eval) and its layer calls lifted back to modules
(``lift_aten``). torch.export archives (``.pt2``) go through the same ``program_module``.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import torch
from torch import fx, nn

from ..errors import ReliefError, first_line
from ..graph.trace import trace
from ..quiet import quiet_libraries
from .lift_aten import lift_layers

_BATCH_SIZED = {torch.ops.aten.view.default, torch.ops.aten.reshape.default,
                torch.ops.aten._unsafe_view.default, torch.ops.aten.expand.default}
CAPTURED_BY = "relief_export.captured_by"  # graph_module.meta key: "torch.fx" / "torch.export"
EXPORT_HINT = ("export it with torch.export yourself (torch.export.export(model, "
               "example_inputs)), save it with torch.export.save and pass the .pt2")


def capture(model: nn.Module, examples: Sequence[torch.Tensor], purpose: str, *,
            share: bool = False) -> fx.GraphModule:
    """A graph of ``model``: fx's calls the model's own modules; an exported one calls copies,
    or, with ``share``, the model's own layers wherever they match (pruning masks them)."""
    try:
        graph_module = trace(model, purpose)
        # a graph rebuilt from an exported program keeps saying so
        earlier = model.meta.get(CAPTURED_BY) if isinstance(model, fx.GraphModule) else None
        graph_module.meta[CAPTURED_BY] = earlier or "torch.fx"
        return graph_module
    except ReliefError as fx_error:
        fx_reason = str(fx_error)
    try:
        program = export_program(model, examples)
    except Exception as error:
        raise ReliefError(f"{fx_reason}; torch.export failed too ({first_line(error)}); "
                          f"{EXPORT_HINT}") from None
    return program_module(program, str(type(model).__name__), model if share else None)


def export_program(model: nn.Module, examples: Sequence[torch.Tensor]
                   ) -> torch.export.ExportedProgram:
    """torch.export with the batch axis of every input dynamic where the model allows it."""
    dynamic = tuple({0: torch.export.Dim.AUTO} if example.dim() else None
                    for example in examples)
    with quiet_libraries():
        return torch.export.export(model, tuple(examples), dynamic_shapes=dynamic,
                                   strict=False)


def program_module(program: torch.export.ExportedProgram, source: str,
                   owner: nn.Module | None = None) -> fx.GraphModule:
    """The program as a runnable graph module: functional ATen, no shape guard, layers lifted,
    batch sizes written into views freed, train() / eval() accepted (the graph is fixed to the
    mode it was captured in)."""
    try:
        with quiet_libraries():
            program = program.run_decompositions({})
            module = program.module()
    except Exception as error:
        raise ReliefError(f"{source}: cannot rebuild a module from the exported program "
                          f"({first_line(error)})") from None
    if not isinstance(module, fx.GraphModule):
        raise ReliefError(f"{source}: the exported program did not give a graph module")
    _drop_shape_guards(module)
    _free_batch_sizes(module)
    lift_layers(module, owner)
    module.meta[CAPTURED_BY] = "torch.export"
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(lambda self: self, module)  # type: ignore[method-assign]
    return module


def _drop_shape_guards(module: fx.GraphModule) -> None:
    """Remove the input-shape guard of an unlifted program, so that any batch size the graph
    itself supports runs (the ONNX export has a dynamic batch axis)."""
    for node in list(module.graph.nodes):
        if node.op == "call_module" and str(node.target) == "_guards_fn" and not node.users:
            module.graph.erase_node(node)
    module.recompile()


def _free_batch_sizes(module: fx.GraphModule) -> None:
    """A program captured with a fixed batch writes it into sizes (``x.view(x.size(0), -1)``
    becomes ``view(x, [2, -1])``, ``cls.expand(x.size(0), -1, -1)`` becomes
    ``expand(cls, [2, -1, -1])``): where such a size list starts with the inputs' batch size
    and the result's first axis is the batch, the size is read from the first input at run
    time instead (models that build tensors of the batch size otherwise keep it fixed, and
    are refused where they are used with another)."""
    placeholders = [node for node in module.graph.nodes if node.op == "placeholder"
                    and isinstance(node.meta.get("val"), torch.Tensor)
                    and node.meta["val"].dim() > 0]
    sizes = [placeholder.meta["val"].shape[0] for placeholder in placeholders]
    if not sizes or not all(type(size) is int for size in sizes) or len(set(sizes)) != 1:
        return  # a dynamic batch axis (SymInt) needs nothing
    batch = sizes[0]
    size_node = None
    for node in list(module.graph.nodes):
        if node.target not in _BATCH_SIZED or len(node.args) < 2:
            continue
        result = node.meta.get("val")
        sizes = list(node.args[1])
        if not sizes or sizes[0] != batch or not isinstance(result, torch.Tensor) or \
                result.dim() == 0 or result.shape[0] != batch:
            continue
        if size_node is None:
            with module.graph.inserting_after(placeholders[-1]):
                size_node = module.graph.call_function(torch.ops.aten.sym_size.int,
                                                       (placeholders[0], 0))
        node.update_arg(1, [size_node, *sizes[1:]])
    module.recompile()
