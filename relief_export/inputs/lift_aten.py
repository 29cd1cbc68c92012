"""ATen layer calls of a torch.export graph lifted back to ``nn.Module`` layers.

A ``.pt2`` program calls ``aten.conv2d(x, W, b, ...)`` on constant tensors, and a model saved
with live ``torch.nn.utils.prune`` hooks computes ``W = weight_orig * weight_mask`` inside the
graph. Both are rewritten here, so that pruning and compaction see the same layers as in the
module route: constant weight expressions are evaluated (``CONSTANT_OPS``), and every call in
``ATEN_LAYERS`` whose weights are constant becomes a call of the layer built by ``layers``.
Calls whose weights are computed from the input stay as they are.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..graph import layers
from ..graph.attrs import free_attribute_name

aten = torch.ops.aten
# ops evaluated when every tensor argument is constant: the prune-hook product and its casts
CONSTANT_OPS = {aten.mul.Tensor, aten.to.dtype, aten._to_copy.default, aten.detach.default,
                aten.clone.default}
# ops with no effect on values that are dropped once their argument is folded
CHECK_OPS = {aten._assert_tensor_metadata.default}


def _conv(a: list[Any]) -> nn.Module:
    # conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1)
    stride, padding, dilation, groups = a[3:7]
    rank = a[1].dim() - 2
    return layers.conv(a[1], a[2], stride=_per_axis(stride, rank),
                       padding=_per_axis(padding, rank), dilation=_per_axis(dilation, rank),
                       groups=int(groups))


def _per_axis(value: Any, rank: int) -> list[int]:
    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    return values * rank if len(values) == 1 else values


def _batch_norm(a: list[Any]) -> nn.Module:
    # batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn_enabled)
    return layers.batch_norm(a[1], a[2], a[3], a[4], a[7], a[0].dim())


def _batch_norm_no_training(a: list[Any]) -> nn.Module:
    # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps) -> (y, _, _)
    return layers.batch_norm(a[1], a[2], a[3], a[4], a[6], a[0].dim())


# op -> (index of the arguments that must be constant, builder, whether it returns a tuple)
ATEN_LAYERS: dict[Any, tuple[tuple[int, ...], Callable[[list[Any]], nn.Module], bool]] = {
    aten.conv2d.default: ((1, 2), _conv, False),
    aten.conv1d.default: ((1, 2), _conv, False),
    aten.linear.default: ((1, 2), lambda a: layers.linear(a[1], a[2]), False),
    aten.batch_norm.default: ((1, 2, 3, 4), _batch_norm, False),
    aten._native_batch_norm_legit_no_training.default: ((1, 2, 3, 4),
                                                         _batch_norm_no_training, True),
}


def lift_layers(graph_module: fx.GraphModule, owner: nn.Module | None = None) -> int:
    """Rewrite ``graph_module`` in place as described above; returns how many layers.

    With ``owner`` (the model the program was exported from), a call whose weight is one of
    ``owner``'s layers, with the same kind and settings, calls that very module (at its own
    name) instead of a copy: pruning then sees and masks the model's own layers."""
    graph = graph_module.graph
    constants: dict[fx.Node, torch.Tensor] = {}
    lifted = 0
    for node in list(graph.nodes):
        if node.op == "get_attr":
            value = _attribute(graph_module, str(node.target))
            if isinstance(value, torch.Tensor):
                constants[node] = value
        elif node.op == "call_function" and node.target in CONSTANT_OPS:
            value = _evaluate(node, constants)
            if value is not None:
                constants[node] = value
        elif node.op == "call_function" and node.target in ATEN_LAYERS:
            lifted += _lift(graph_module, node, constants, owner)
    for node in reversed(list(graph.nodes)):
        if _removable(node, constants):
            graph.erase_node(node)
    graph.lint()
    _drop_unread_tensors(graph_module)
    graph_module.recompile()
    return lifted


def _removable(node: fx.Node, constants: dict[fx.Node, torch.Tensor]) -> bool:
    """A check on constants, or a constant no node reads any more."""
    if node.op == "call_function" and node.target in CHECK_OPS:
        return all(a in constants for a in node.args if isinstance(a, fx.Node))
    return not node.users and node.op in ("call_function", "get_attr") and \
        (node in constants or node.target in CONSTANT_OPS)


def _drop_unread_tensors(graph_module: fx.GraphModule) -> None:
    """Parameters and buffers no node reads any more (the lifted layers hold copies)."""
    read = {str(n.target) for n in graph_module.graph.nodes if n.op == "get_attr"}
    called = {str(n.target) for n in graph_module.graph.nodes if n.op == "call_module"}
    for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]:
        owner, _, attribute = name.rpartition(".")
        if name not in read and owner not in called and not any(
                name.startswith(c + ".") for c in called):
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attribute)


def _attribute(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


def _evaluate(node: fx.Node, constants: dict[fx.Node, torch.Tensor]) -> torch.Tensor | None:
    if not all(a in constants for a in node.all_input_nodes):
        return None
    args = fx.node.map_arg(node.args, lambda n: constants[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: constants[n])
    with torch.no_grad():
        value = node.target(*args, **kwargs)  # type: ignore[operator]
    return value.detach() if isinstance(value, torch.Tensor) else None


def _owner_path(node: fx.Node) -> str | None:
    """The model's own name for the layer, where its weight says it:
    ``encoder.layer.0.attention.self.query.weight`` -> ``encoder.layer.0.attention.self.query``."""
    weight = node.args[1] if len(node.args) > 1 else None
    while isinstance(weight, fx.Node) and weight.op != "get_attr" and weight.args:
        weight = weight.args[0]  # through the prune hooks' weight_orig * weight_mask
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
        return None
    path = str(weight.target)
    for suffix in (".weight_orig", ".weight_mask", ".weight"):
        path = path.removesuffix(suffix)
    return path


_SETTINGS = ("in_features", "out_features", "in_channels", "out_channels", "kernel_size",
             "stride", "padding", "dilation", "groups", "padding_mode", "num_features", "eps",
             "affine", "track_running_stats")


def _own_layer(owner: nn.Module | None, path: str | None, built: nn.Module) -> nn.Module | None:
    """``owner``'s module at ``path`` when it computes what ``built`` computes."""
    if owner is None or path is None:
        return None
    try:
        own = owner.get_submodule(path)
    except AttributeError:
        return None
    same = type(own) is type(built) and all(
        getattr(own, key, None) == getattr(built, key, None) for key in _SETTINGS) and \
        (getattr(own, "bias", None) is None) == (getattr(built, "bias", None) is None)
    return own if same else None


def _lift(graph_module: fx.GraphModule, node: fx.Node,
          constants: dict[fx.Node, torch.Tensor], owner: nn.Module | None) -> int:
    needed, build, returns_tuple = ATEN_LAYERS[node.target]
    args = list(node.args)
    if node.kwargs or not all(i >= len(args) or args[i] is None or args[i] in constants
                              for i in needed):
        return 0
    example = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if not isinstance(example, torch.Tensor):
        return 0
    values = [constants.get(a, a) if isinstance(a, fx.Node) else a for a in args]
    values[0] = example
    schema = node.target._schema.arguments  # type: ignore[union-attr]
    values += [argument.default_value if argument.has_default_value() else None
               for argument in schema[len(values):]]  # omitted trailing arguments
    layer = build(values)
    path = _owner_path(node)
    own = _own_layer(owner, path, layer)
    if own is not None and path is not None and graph_module.add_submodule(path, own):
        name = path
    else:
        name = free_attribute_name(graph_module, path or f"lifted_{node.name}")
        graph_module.add_module(name, layer)
    with graph_module.graph.inserting_before(node):
        call = graph_module.graph.call_module(name, (node.args[0],))
    call.meta = dict(node.meta)
    if returns_tuple:
        for user in list(node.users):
            if user.target is operator.getitem and user.args[1] == 0:
                user.replace_all_uses_with(call)
                graph_module.graph.erase_node(user)
        if node.users:  # the batch statistics are read: leave the call as it was
            graph_module.graph.erase_node(call)
            return 0
    else:
        node.replace_all_uses_with(call)
    graph_module.graph.erase_node(node)
    return 1
