"""The traced graph compaction works on: an unmasked copy, shapes, attributes by name."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import prune

from ..channels.layer_call import (  # noqa: F401 - the compile package's view of layers
    LayerCall,
    arg,
    attribute,
    bound_arguments,
    shape_of,
)
from ..errors import ReliefError, first_line
from ..graph.ops import SIZED_RESHAPE_METHODS, SIZED_RESHAPES  # noqa: F401
from ..graph.trace import quiet_interpreter, root_cause


def unmasked_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with torch.nn.utils.prune masks baked into plain parameters."""
    with torch.no_grad():  # masked attributes become leaves (same values), so they can be copied
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))
    clone = copy.deepcopy(model)
    set_mode(clone, training=False)
    for module in clone.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return clone


def set_mode(model: nn.Module, *, training: bool) -> None:
    """train() / eval(), for graphs fixed to one mode too (torch.export's modules refuse)."""
    with contextlib.suppress(NotImplementedError):
        model.train(training)


def propagate_shapes(graph_module: fx.GraphModule, *examples: torch.Tensor) -> Any:
    """Run once, storing every node's ``tensor_meta``; returns the output."""
    with torch.no_grad(), quiet_interpreter():
        try:
            return ShapeProp(graph_module).propagate(*examples)
        except Exception as error:
            first = first_line(root_cause(error))
            shapes = ", ".join(str(list(x.shape)) for x in examples)
            raise ReliefError(f"example inputs of shape {shapes} do not fit the model: "
                              f"{first}") from None


def set_attribute(graph_module: fx.GraphModule, target: str, value: Any) -> None:
    owner_name, _, leaf = target.rpartition(".")
    owner = graph_module.get_submodule(owner_name) if owner_name else graph_module
    if isinstance(value, torch.Tensor) and leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif isinstance(value, torch.Tensor) and leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        setattr(owner, leaf, value)


