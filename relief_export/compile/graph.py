"""The traced graph compaction works on, and a uniform view of its layers.

A layer is a call of an nn.Linear / nn.Conv1d / nn.Conv2d / nn.ConvTranspose1d /
nn.ConvTranspose2d module, or a call of F.linear / F.conv1d / F.conv2d (or their ATen
overloads) whose weight and bias are attributes of the model; all are read and rewritten the
same way. ``LayerCall.weight`` is always [out, in / groups, *kernel]: a transposed
convolution's [in, out, *kernel] weight is seen transposed.
"""

from __future__ import annotations

import contextlib
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
    EXPAND_FUNCTIONS,
    GROUP_NORM_FUNCTIONS,
    IDENTITY_FUNCTIONS,
    IDENTITY_METHODS,
    IDENTITY_MODULES,
    LAYER_FUNCTIONS,
    LAYER_NORM_FUNCTIONS,
    MEAN_FUNCTIONS,
    MUL_FUNCTIONS,
    PAD_FUNCTIONS,
    PERMUTE_FUNCTIONS,
    POOL_FUNCTIONS,
    POOL_MODULES,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    SHAPE_QUERIES,
    SIZED_RESHAPE_METHODS,
    SIZED_RESHAPES,
    SPLIT_FUNCTIONS,
    TRANSPOSE_FUNCTIONS,
    UNSQUEEZE_FUNCTIONS,
    aten,
)
from ..fx_trace import quiet_interpreter, root_cause


@dataclass
class LayerCall:
    """One Linear / convolution application in the graph."""

    node: fx.Node
    kind: str  # "linear", "conv" or "conv_transpose"
    weight: torch.Tensor  # [out, in / groups, *kernel]
    bias: torch.Tensor | None
    module: nn.Module | None = None  # set for call_module layers
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    @property
    def name(self) -> str:
        return str(self.node.target) if self.module is not None else self.node.name

    @property
    def out_units(self) -> int:
        return int(self.weight.shape[0])

    @property
    def padded(self) -> bool:
        """Whether a constant input map gives a non-uniform output (zero borders; a transposed
        convolution's overlapping taps count as borders too)."""
        return self.kind == "conv_transpose" or any(p > 0 for p in self.padding)

    @property
    def channel_axis(self) -> int:
        """The input axis it reads features from: last for Linear, 1 for convolutions."""
        return -1 if self.kind == "linear" else 1


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


_CONV_MODULES = (nn.Conv1d, nn.Conv2d)
_TRANSPOSED_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d)


def layer_call(node: fx.Node, graph_module: fx.GraphModule,
               modules: dict[str, nn.Module]) -> LayerCall | None:
    """The layer a node applies, or None when it is not a layer application."""
    if node.op == "call_module":
        return _module_layer(node, modules[str(node.target)])
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
    spatial = weight_value.dim() - 2
    return LayerCall(node, kind, weight_value, bias_value, None,
                     _tuple(arguments.get("stride", 1), spatial), _tuple(padding, spatial),
                     _tuple(arguments.get("dilation", 1), spatial),
                     int(arguments.get("groups", 1)))


def _module_layer(node: fx.Node, module: nn.Module) -> LayerCall | None:
    if isinstance(module, nn.Linear):
        return LayerCall(node, "linear", module.weight.detach(), _detach(module.bias), module)
    if isinstance(module, (*_CONV_MODULES, *_TRANSPOSED_MODULES)) and \
            isinstance(module.padding, tuple) and module.padding_mode == "zeros":
        transposed = isinstance(module, _TRANSPOSED_MODULES)
        if transposed and module.groups != 1:
            return None
        weight = module.weight.detach()
        return LayerCall(node, "conv_transpose" if transposed else "conv",
                         weight.transpose(0, 1) if transposed else weight,
                         _detach(module.bias), module, tuple(module.stride),
                         tuple(module.padding), tuple(module.dilation), module.groups)
    return None


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


def _tuple(value: Any, length: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * length
    return tuple(int(v) for v in value)


def shape_of(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
