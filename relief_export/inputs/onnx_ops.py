"""The ONNX op table: each supported op, converted to its torch call (layers with constant
weights become ``nn.Module`` layers through ``graph.layers``). To read a new ONNX op, add its
converter here and one entry to ``ONNX_OPS``."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ReliefError
from ..graph import layers

if TYPE_CHECKING:
    from .onnx_graph import Converter


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor owning a copy of the array."""
    return torch.from_numpy(np.array(array, copy=True))


def attr(node: ir.Node, name: str, default: Any) -> Any:
    """The node's attribute ``name``, or ``default``."""
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _constant(args: list[Any], index: int, what: str) -> torch.Tensor | None:
    if index >= len(args) or args[index] is None:
        return None
    if not isinstance(args[index], torch.Tensor):
        raise ReliefError(f"{what} must be a constant")
    return args[index].float() if args[index].is_floating_point() else args[index]


def _symmetric(pads: list[int], what: str) -> list[int]:
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        raise ReliefError(f"asymmetric {what} padding {pads} is not supported")
    return pads[:half]


def _conv(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    weight = _constant(args, 1, "the weight")
    assert weight is not None
    rank = weight.dim() - 2
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ReliefError("auto_pad SAME_* is not supported; export with explicit pads")
    pads = list(attr(node, "pads", [0] * 2 * rank))
    x = args[0]
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = c.call(F.pad, x, _torch_pads(pads))
        pads = [0] * 2 * rank
    module = layers.conv(weight, _constant(args, 2, "the bias"),
                         stride=list(attr(node, "strides", [1] * rank)),
                         padding=pads[:half], dilation=list(attr(node, "dilations",
                                                                 [1] * rank)),
                         groups=int(attr(node, "group", 1)))
    return c.layer(node.name or "conv", module, x)


def _torch_pads(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] -> F.pad's [b_last, e_last, ..., b1, e1]."""
    half = len(pads) // 2
    result = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
    while len(result) > 2 and result[-2:] == [0, 0]:
        result = result[:-2]
    return result


def _gemm(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if attr(node, "transA", 0):
        raise ReliefError("transA=1 is not supported")
    weight = _constant(args, 1, "B")
    assert weight is not None
    weight = weight if attr(node, "transB", 0) else weight.t()
    bias = _constant(args, 2, "C")
    if bias is not None:
        bias = (bias * float(attr(node, "beta", 1.0))).expand(weight.shape[0])
    module = layers.linear(weight * float(attr(node, "alpha", 1.0)), bias)
    return c.layer(node.name or "gemm", module, args[0])


def _matmul(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if isinstance(args[1], torch.Tensor) and args[1].dim() == 2:
        return c.layer(node.name or "matmul", layers.linear(args[1].float().t(), None),
                       args[0])
    return c.call(torch.matmul, c.node(args[0]), c.node(args[1]))


def _add(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """x + y; a constant [out] added to a bias-free Linear read by nothing else is its bias."""
    for x, other in ((args[0], args[1]), (args[1], args[0])):
        if isinstance(other, torch.Tensor) and isinstance(x, fx.Node) and \
                x.op == "call_module" and not x.users and _fits_bias(c, x, other, node):
            layer = getattr(c.root, str(x.target))
            module = layers.linear(layer.weight.detach(), other.float().reshape(-1))
            setattr(c.root, str(x.target), module)
            c.examples[x] = c.examples[x] + other.float()
            return x
    return c.call(operator.add, c.node(args[0]), c.node(args[1]))


def _fits_bias(c: Converter, x: fx.Node, other: torch.Tensor, node: ir.Node) -> bool:
    layer = getattr(c.root, str(x.target))
    first = node.inputs[0]
    matmul_output = first if first is not None and c.values.get(first) is x \
        else node.inputs[1]
    return isinstance(layer, nn.Linear) and layer.bias is None and \
        other.numel() == layer.out_features and other.dim() >= 1 and \
        other.shape[-1] == layer.out_features and matmul_output is not None and \
        len(matmul_output.uses()) == 1


def _binary(target: Callable) -> Callable[[Converter, ir.Node, list[Any]], fx.Node]:
    return lambda c, node, args: c.call(target, c.node(args[0]), c.node(args[1]))


def _variadic(target: Callable) -> Callable[[Converter, ir.Node, list[Any]], fx.Node]:
    """Max / Min of any number of inputs, pairwise left to right."""
    def convert(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
        result = c.node(args[0])
        for other in args[1:]:
            result = c.call(target, result, c.node(other))
        return result
    return convert


def _unary(target: Callable, **fixed: Any) -> Callable[[Converter, ir.Node, list[Any]], fx.Node]:
    return lambda c, node, args: c.call(target, args[0], **fixed)


def _batch_norm(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    scale, shift, mean, var = (_constant(args, i, "BatchNorm statistics") for i in (1, 2, 3, 4))
    assert mean is not None and var is not None
    module = layers.batch_norm(scale, shift, mean, var, float(attr(node, "epsilon", 1e-5)),
                               c.examples[args[0]].dim())
    return c.layer(node.name or "batch_norm", module, args[0])


def _pool(kind: str) -> Callable[[Converter, ir.Node, list[Any]], fx.Node]:
    def convert(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
        kernel = list(attr(node, "kernel_shape", []))
        if len(kernel) != 2:
            raise ReliefError("only 2-d pooling is supported")
        padding = _symmetric(list(attr(node, "pads", [0] * 4)), "pooling")
        stride = list(attr(node, "strides", [1, 1]))
        ceil = bool(attr(node, "ceil_mode", 0))
        if kind == "max":
            module: nn.Module = nn.MaxPool2d(tuple(kernel), tuple(stride), tuple(padding),
                                             tuple(attr(node, "dilations", [1, 1])),
                                             ceil_mode=ceil)
        else:
            module = nn.AvgPool2d((kernel[0], kernel[1]), (stride[0], stride[1]),
                                  (padding[0], padding[1]), ceil_mode=ceil,
                                  count_include_pad=bool(attr(node, "count_include_pad", 0)))
        return c.layer(node.name or f"{kind}_pool", module, args[0])
    return convert


def _clip(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    low, high = (_constant(args, i, "Clip bounds") for i in (1, 2))
    low_value = float(low) if low is not None else -math.inf
    high_value = float(high) if high is not None else math.inf
    if (low_value, high_value) == (0.0, 6.0):
        return c.call(F.relu6, args[0])
    if low_value == 0.0 and high_value == math.inf:
        return c.call(F.relu, args[0])
    return c.call(F.hardtanh, args[0], low_value, high_value)


def _flatten(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """[d0, ..., dn] -> [d0 * ... * d(axis-1), d(axis) * ... * dn]; the first size is left
    to the batch (-1), so axis 0 (which would fix it) is refused."""
    shape = c.examples[args[0]].shape
    axis = int(attr(node, "axis", 1))
    axis += len(shape) if axis < 0 else 0  # -rank..rank; rank gives [d0 * ... * dn, 1]
    if axis == 0:
        raise ReliefError("Flatten axis 0 folds the batch axis away; it is not supported")
    if axis == 1:
        return c.call(torch.flatten, args[0], 1)
    return c.call(torch.reshape, args[0], (-1, math.prod(shape[axis:])))


def _reshape(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    shape = _constant(args, 1, "the target shape")
    assert shape is not None
    source = c.examples[args[0]]
    target = list(source.reshape([s if s != 0 else source.shape[i]
                                  for i, s in enumerate(shape.tolist())]).shape)
    if target[0] != source.shape[0]:
        raise ReliefError(f"a reshape to {target} mixes the batch axis; not supported")
    if target[1:] == [math.prod(source.shape[1:])]:
        return c.call(torch.flatten, args[0], 1)
    return c.call(torch.reshape, args[0], (-1, *target[1:]))


def _concat(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return c.call(torch.cat, [c.node(a) for a in args], int(attr(node, "axis", 0)))


def _pad(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if attr(node, "mode", "constant") != "constant":
        raise ReliefError("only constant padding is supported")
    pads = _constant(args, 1, "pads")
    assert pads is not None
    value = _constant(args, 2, "the pad value")
    fill = {"value": float(value)} if value is not None and float(value) != 0.0 else {}
    return c.call(F.pad, args[0], _torch_pads([int(p) for p in pads.tolist()]), **fill)


def _reduce(target: Callable) -> Callable[[Converter, ir.Node, list[Any]], fx.Node]:
    """Reduce* over ``axes`` (an input since opset 18, an attribute before; none: all)."""
    def convert(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
        axes = _constant(args, 1, "axes")
        dims = axes.tolist() if axes is not None else list(attr(node, "axes", []))
        dims = dims or list(range(c.examples[args[0]].dim()))
        return c.call(target, args[0], dims, keepdim=bool(attr(node, "keepdims", 1)))
    return convert


def _transpose(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    rank = c.examples[args[0]].dim()
    perm = list(attr(node, "perm", list(reversed(range(rank)))))
    return c.call(torch.permute, args[0], perm)


def _unsqueeze(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    axes = _constant(args, 1, "axes")
    result = args[0]
    for axis in sorted(axes.tolist() if axes is not None else attr(node, "axes", [])):
        result = c.call(torch.unsqueeze, result, int(axis))
    return result


def _squeeze(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    axes = _constant(args, 1, "axes")
    listed = axes.tolist() if axes is not None else list(attr(node, "axes", []))
    rank = c.examples[args[0]].dim()
    dims = [a % rank for a in listed] or [i for i, size in
                                          enumerate(c.examples[args[0]].shape) if size == 1]
    return c.call(torch.squeeze, args[0], tuple(dims))


def _softmax(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return c.call(F.softmax, args[0], int(attr(node, "axis", -1)))


def _slice(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """x[..., start:end:step, ...] per listed axis (ends past the size mean "to the end")."""
    starts, ends, axes, steps = (_constant(args, i, "Slice bounds") for i in (1, 2, 3, 4))
    assert starts is not None and ends is not None
    rank = c.examples[args[0]].dim()
    axes_list = axes.tolist() if axes is not None else list(range(len(starts)))
    steps_list = steps.tolist() if steps is not None else [1] * len(axes_list)
    index: list[slice] = [slice(None)] * rank
    for axis, start, end, step in zip(axes_list, starts.tolist(), ends.tolist(), steps_list,
                                      strict=True):
        size = c.examples[args[0]].shape[axis]
        index[axis % rank] = slice(start if start != 0 else None,
                                   end if -size <= end < size else None,
                                   step if step != 1 else None)
    if index[0] != slice(None):
        raise ReliefError("slicing the batch axis is not supported")
    return c.call(operator.getitem, args[0], tuple(index))


def _identity(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return args[0]


def _gather(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """A constant table indexed on axis 0 is an embedding layer; a constant index picks
    along an axis of a tensor (``x[:, 0]``: select; a list: index_select)."""
    data, indices, axis = args[0], args[1], int(attr(node, "axis", 0))
    if isinstance(data, torch.Tensor) and axis == 0 and data.dim() == 2:
        return c.layer(node.name or "embedding", nn.Embedding.from_pretrained(
            data.float(), freeze=False), indices)
    if isinstance(indices, torch.Tensor) and indices.dim() <= 1:
        rank = c.examples[data].dim()
        if axis % rank == 0:
            raise ReliefError("gathering along the batch axis is not supported")
        if indices.dim() == 0:
            return c.call(torch.select, data, axis, int(indices))
        size = c.examples[data].shape[axis]  # ONNX counts negative indices from the end
        return c.call(torch.index_select, data, axis, c.node(indices.long() % size))
    raise ReliefError("only a constant 2-d table (an embedding) or a constant index is "
                      "supported")


# ONNX TensorProto data types a Cast may name -> torch
CAST_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool,
               10: torch.float16, 11: torch.float64}


def _cast(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    to = int(attr(node, "to", 1))
    if to not in CAST_DTYPES:
        raise ReliefError(f"Cast to ONNX data type {to} is not supported")
    return c.call(_to, args[0], CAST_DTYPES[to])


def _to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as ``dtype`` (ONNX Cast)."""
    return x.to(dtype)


def _layer_norm(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """LayerNormalization over the axes from ``axis`` on: an nn.LayerNorm layer."""
    shape = list(c.examples[args[0]].shape)
    axis = int(attr(node, "axis", -1)) % len(shape)
    scale, bias = _constant(args, 1, "LayerNormalization scale"), _constant(args, 2, "bias")
    module = nn.LayerNorm(shape[axis:], eps=float(attr(node, "epsilon", 1e-5)),
                          bias=bias is not None)
    with torch.no_grad():
        assert scale is not None
        module.weight.copy_(scale.float().expand(shape[axis:]))
        if bias is not None:
            module.bias.copy_(bias.float().expand(shape[axis:]))
    return c.layer(node.name or "layer_norm", module, args[0])


def _expand(c: Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    """x broadcast to ``shape`` (ONNX's two-way broadcast: ones keep x's size)."""
    shape = _constant(args, 1, "Expand shape")
    assert shape is not None
    target = torch.broadcast_shapes(c.examples[args[0]].shape, tuple(shape.tolist()))
    own = c.examples[args[0]].shape
    sizes = [-1 if i == 0 and own[0] == size else size for i, size in enumerate(target)]
    return c.call(torch.Tensor.expand, args[0], sizes)


# ONNX op -> converter(converter, node, input values) -> the fx node of its (first) output
ONNX_OPS: dict[str, Callable[[Converter, ir.Node, list[Any]], fx.Node]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Add": _add, "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "HardSwish": _unary(F.hardswish), "Clip": _clip,
    "LeakyRelu": lambda c, n, a: c.call(F.leaky_relu, a[0], float(attr(n, "alpha", 0.01))),
    "Gelu": lambda c, n, a: c.call(F.gelu, a[0], approximate="tanh"
                                   if attr(n, "approximate", "none") == "tanh" else "none"),
    "MaxPool": _pool("max"), "AveragePool": _pool("average"),
    "GlobalAveragePool": lambda c, n, a: c.layer(n.name or "pool", nn.AdaptiveAvgPool2d(1),
                                                 a[0]),
    "GlobalMaxPool": lambda c, n, a: c.layer(n.name or "pool", nn.AdaptiveMaxPool2d(1), a[0]),
    "Flatten": _flatten, "Reshape": _reshape, "Concat": _concat, "Pad": _pad,
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax), "Slice": _slice, "Transpose": _transpose,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Softmax": _softmax,
    "Identity": _identity, "Dropout": _identity,
    "Gather": _gather, "Cast": _cast, "LayerNormalization": _layer_norm, "Expand": _expand,
    "Erf": _unary(torch.erf), "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg),
    "Exp": _unary(torch.exp), "Not": _unary(torch.logical_not),
    "Pow": _binary(torch.pow), "Equal": _binary(torch.eq),
    "Where": lambda c, n, a: c.call(torch.where, *(c.node(x) for x in a)),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum),
}
