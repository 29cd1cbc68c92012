"""The traced graph compaction works on, and a uniform view of its Linear / Conv2d layers.

A layer is either a call of an nn.Linear / nn.Conv2d module or a call of F.linear / F.conv2d
whose weight and bias are attributes of the model; both are read and rewritten the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import prune

from ..errors import ReliefError, first_line
from ..fx_ops import (  # noqa: F401 - re-exported for the compile package
    ADD_FUNCTIONS,
    AVERAGE_POOL_FUNCTIONS,
    CAT_FUNCTIONS,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    ELEMENTWISE_MODULES,
    IDENTITY_FUNCTIONS,
    IDENTITY_METHODS,
    IDENTITY_MODULES,
    LAYER_FUNCTIONS,
    MEAN_FUNCTIONS,
    MUL_FUNCTIONS,
    PAD_FUNCTIONS,
    POOL_FUNCTIONS,
    POOL_MODULES,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    SIZED_RESHAPES,
    SPLIT_FUNCTIONS,
    aten,
)
from ..fx_trace import quiet_interpreter, root_cause


@dataclass
class LayerCall:
    """One Linear / Conv2d application in the graph."""

    node: fx.Node
    kind: str  # "linear" or "conv"
    weight: torch.Tensor
    bias: torch.Tensor | None
    module: nn.Module | None = None  # set for call_module layers
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def name(self) -> str:
        return str(self.node.target) if self.module is not None else self.node.name

    @property
    def out_units(self) -> int:
        return int(self.weight.shape[0])

    @property
    def padded(self) -> bool:
        return any(p > 0 for p in self.padding)


def unmasked_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with torch.nn.utils.prune masks baked into plain parameters."""
    with torch.no_grad():  # masked attributes become leaves (same values), so they can be copied
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return clone


def propagate_shapes(graph_module: fx.GraphModule, example: torch.Tensor) -> torch.Tensor:
    """Run once, storing every node's ``tensor_meta``; returns the output."""
    with torch.no_grad(), quiet_interpreter():
        try:
            return ShapeProp(graph_module).propagate(example)
        except Exception as error:
            first = first_line(root_cause(error))
            raise ReliefError(f"example inputs of shape {list(example.shape)} do not fit "
                              f"the model: {first}") from None


def attribute(graph_module: fx.GraphModule, target: str) -> Any:
    value: Any = graph_module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def set_attribute(graph_module: fx.GraphModule, target: str, value: Any) -> None:
    owner_name, _, leaf = target.rpartition(".")
    owner = graph_module.get_submodule(owner_name) if owner_name else graph_module
    if isinstance(value, torch.Tensor) and leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif isinstance(value, torch.Tensor) and leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        setattr(owner, leaf, value)


def layer_call(node: fx.Node, graph_module: fx.GraphModule,
               modules: dict[str, nn.Module]) -> LayerCall | None:
    """The layer a node applies, or None when it is not a Linear / Conv2d application."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.Linear):
            return LayerCall(node, "linear", module.weight.detach(), _detach(module.bias), module)
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, tuple) and \
                module.padding_mode == "zeros":
            return LayerCall(node, "conv", module.weight.detach(), _detach(module.bias), module,
                             _pair(module.stride), _pair(module.padding),
                             _pair(module.dilation), module.groups)
        return None
    if node.op != "call_function" or node.target not in LAYER_FUNCTIONS:
        return None
    kind = LAYER_FUNCTIONS[node.target]
    arguments = bound_arguments(node)
    weight: Any = arguments.get("weight")
    bias: Any = arguments.get("bias")
    if not _is_attr(weight) or not (bias is None or _is_attr(bias)):
        return None
    weight_value = attribute(graph_module, str(weight.target)).detach()
    bias_value = attribute(graph_module, str(bias.target)).detach() if bias is not None else None
    if kind == "linear":
        return LayerCall(node, kind, weight_value, bias_value)
    padding = arguments.get("padding", 0)
    if isinstance(padding, str):
        return None
    return LayerCall(node, kind, weight_value, bias_value, None,
                     _pair(arguments.get("stride", 1)), _pair(padding),
                     _pair(arguments.get("dilation", 1)), int(arguments.get("groups", 1)))


def arg(node: fx.Node, index: int, keyword: str | None = None, default: Any = None) -> Any:
    """A call argument by position or keyword (typed loosely: fx arguments are anything)."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(keyword, default) if keyword is not None else default


def bound_arguments(node: fx.Node) -> dict[str, Any]:
    names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
    bound = dict(zip(names, node.args, strict=False))
    bound.update(node.kwargs)
    return bound


def _is_attr(value: Any) -> bool:
    return isinstance(value, fx.Node) and value.op == "get_attr"


def _detach(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def shape_of(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
