"""A uniform view of the layers in a traced graph (read by the channel interpreter, pruning
and compaction alike).

A layer is a call of an nn.Linear / nn.Conv1d / nn.Conv2d / nn.ConvTranspose1d /
nn.ConvTranspose2d module, or a call of F.linear / F.conv1d / F.conv2d (or their ATen
overloads) whose weight and bias are attributes of the model; all are read and rewritten the
same way. ``LayerCall.weight`` is always [out, in / groups, *kernel]: a transposed
convolution's [in, out, *kernel] weight is seen transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..graph.ops import LAYER_FUNCTIONS


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

    def reads(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [in]: input channels that some unit (of ``rows``, default all) reads with a
        nonzero weight."""
        nonzero = self.weight.ne(0)
        if nonzero.dim() > 2:
            nonzero = nonzero.flatten(2).any(2)
        if rows is not None:
            nonzero = nonzero & rows.view(-1, 1)
        per_in = nonzero.shape[1]
        return nonzero.view(self.groups, -1, per_in).any(1).flatten()

    @property
    def channel_axis(self) -> int:
        """The input axis it reads features from: last for Linear, 1 for convolutions."""
        return -1 if self.kind == "linear" else 1


def attribute(graph_module: fx.GraphModule, target: str) -> Any:
    value: Any = graph_module
    for part in target.split("."):
        value = getattr(value, part)
    return value


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
