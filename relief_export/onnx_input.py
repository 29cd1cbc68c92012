"""ONNX models in: the standard op subset of CNNs and MLPs converted to a torch.fx module.

The graph is read with onnx_ir; every node becomes the torch call in ``ONNX_OPS`` (layers with
constant weights become ``nn.Module`` layers through ``layers``, so pruning and compaction
read them as in the module route). Nodes whose inputs are all constant (shape arithmetic,
``Constant``) are evaluated once with ``onnx.reference``. ``Shape`` of a tensor reads the
example's shape; a ``Reshape`` that keeps the batch axis first is written with -1 there, so
the module runs at any batch size. A node outside the table is refused, naming it.
The converted module is checked against onnxruntime running the file itself.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import fx, nn

from . import layers
from .errors import ReliefError, VerificationError, first_line
from .fx_attrs import free_attribute_name

EXAMPLE_BATCH = 2
TOLERANCE = 1e-4


def read_onnx(path: Path) -> tuple[fx.GraphModule, list[int], list[str]]:
    """The module computing ``path``'s function, its input shape (batch 1) and notes."""
    try:
        model = ir.load(str(path))
    except Exception as error:
        raise ReliefError(f"{path}: corrupt or unreadable ONNX model ({first_line(error)})"
                          ) from None
    notes = _provenance(path, model)
    graph = model.graph
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    if len(inputs) != 1 or len(graph.outputs) != 1:
        raise ReliefError(f"{path}: ONNX models with one input and one output are supported; "
                          f"this one has {len(inputs)} inputs and {len(graph.outputs)} outputs")
    shape = _input_shape(path, inputs[0])
    module = _Converter(path, graph, inputs[0], shape).convert()
    check_conversion(path, module, shape)
    return module, [1, *shape[1:]], notes


def _provenance(path: Path, model: ir.Model) -> list[str]:
    """A warning when the file was written by relief_export: compacting it again finds
    nothing, and a file rewritten by onnxsim / onnxslim has its sparse decoders folded back
    into dense weights."""
    from .onnx.integrity import WEIGHTS_KEY, weights_sha256

    producer = model.metadata_props.get("producer", "")
    if not producer.startswith("relief_export"):
        return []
    if model.metadata_props.get(WEIGHTS_KEY) != weights_sha256(model):
        return [f"warning: {path} was written by {producer} and rewritten since (onnxsim and "
                "onnxslim fold its sparse decoders back into dense weights); run such tools "
                "before relief-export, never after"]
    return [f"warning: {path} was written by {producer} already; export the model it came "
            "from instead"]


def _input_shape(path: Path, value: ir.Value) -> list[int]:
    if value.dtype != ir.DataType.FLOAT or value.shape is None:
        raise ReliefError(f"{path}: input {value.name!r} must be a float32 tensor of known "
                          f"rank, got {value.type}")
    dims = list(value.shape)
    if not all(isinstance(d, int) for d in dims[1:]):
        raise ReliefError(f"{path}: input {value.name!r} has symbolic dimensions {dims} beyond "
                          "the batch axis; fix them first (e.g. onnxsim "
                          "--overwrite-input-shape)")
    return [dims[0] if isinstance(dims[0], int) else EXAMPLE_BATCH,
            *(int(d) for d in dims[1:])]  # type: ignore[arg-type]


def check_conversion(path: Path, module: nn.Module, shape: list[int], seed: int = 0) -> None:
    """The converted module against onnxruntime on the file, run unoptimised (see
    ``ort.session``): seeded inputs, relative error max |a - b| / max |a| <= 1e-4."""
    from .ort import session

    generator = torch.Generator().manual_seed(seed)
    try:
        runtime = session(str(path), optimize=False)
        name = runtime.get_inputs()[0].name
        inputs = (torch.randn(shape, generator=generator), torch.rand(shape, generator=generator))
        expected_outputs = [runtime.run(None, {name: x.numpy()})[0] for x in inputs]
    except Exception as error:  # onnxruntime's own exception types
        raise ReliefError(f"{path}: onnxruntime cannot run it ({first_line(error)})") from None
    for x, expected in zip(inputs, expected_outputs, strict=True):
        try:
            with torch.no_grad():
                got = module(x).numpy()
        except Exception as failure:
            raise VerificationError(f"{path}: the converted model fails on an input of shape "
                                    f"{shape} ({first_line(failure)}); please report this "
                                    "model") from None
        scale = max(float(np.abs(expected).max()), 1e-12)
        relative = float(np.abs(expected - got).max()) / scale \
            if got.shape == expected.shape else math.inf
        if not relative <= TOLERANCE:
            raise VerificationError(f"{path}: the converted model differs from onnxruntime on "
                                    f"the file (relative error {relative:.2e}); please report "
                                    "this model")


class _Converter:
    """ONNX nodes -> fx nodes, with every value's example tensor alongside."""

    def __init__(self, path: Path, graph: ir.Graph, input_value: ir.Value,
                 shape: list[int]) -> None:
        self.path, self.onnx_graph = path, graph
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.batch = shape[0]
        self.values: dict[ir.Value, Any] = {}  # fx.Node, or torch.Tensor for constants
        self.examples: dict[fx.Node, torch.Tensor] = {}
        node = self.graph.placeholder("input")
        self.values[input_value] = node
        self.examples[node] = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        for value in graph.initializers.values():
            if value.const_value is not None:
                self.values[value] = _tensor(value.const_value.numpy())

    def convert(self) -> fx.GraphModule:
        for node in self.onnx_graph:
            try:
                outputs = self._node(node)
            except ReliefError as error:
                raise ReliefError(f"{self.path}: node {node.name!r} ({node.op_type}): "
                                  f"{error}") from None
            except Exception as error:
                raise ReliefError(f"{self.path}: cannot convert node {node.name!r} "
                                  f"({node.op_type}): {first_line(error)}") from None
            for value, result in zip(node.outputs, outputs, strict=False):
                self.values[value] = result
        output = self.value(self.onnx_graph.outputs[0])
        if not isinstance(output, fx.Node):
            raise ReliefError(f"{self.path}: the output does not depend on the input")
        self.graph.output(output)
        return fx.GraphModule(self.root, self.graph, "OnnxModel")

    def _node(self, node: ir.Node) -> list[Any]:
        if node.domain not in ("", "ai.onnx"):
            raise ReliefError(f"operator domain {node.domain!r} is not supported")
        args = [self.values.get(v) if v is not None else None for v in node.inputs]
        if node.op_type in ("Constant", "Shape") or all(
                a is None or isinstance(a, torch.Tensor) for a in args):
            return self._fold(node, args)
        if node.op_type not in ONNX_OPS:
            raise ReliefError(f"operator {node.op_type} is not supported (supported: "
                              f"{', '.join(sorted(ONNX_OPS))})")
        return [ONNX_OPS[node.op_type](self, node, args)]

    def _fold(self, node: ir.Node, args: list[Any]) -> list[Any]:
        """Constant nodes and shape arithmetic, evaluated by onnx.reference."""
        if node.op_type == "Shape":
            source = args[0]
            shape = source.shape if isinstance(source, torch.Tensor) else \
                self.examples[source].shape
            start = _attr(node, "start", 0)
            end = _attr(node, "end", len(shape))
            return [torch.tensor(list(shape)[start:end], dtype=torch.int64)]
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(ir.serde.serialize_node(node))
        feeds = {str(v.name): a.numpy() for v, a in zip(node.inputs, args, strict=True)
                 if v is not None}
        return [_tensor(np.asarray(out)) for out in evaluator.run(None, feeds)]

    def value(self, value: ir.Value) -> Any:
        return self.values[value]

    def constant(self, tensor: torch.Tensor) -> fx.Node:
        name = free_attribute_name(self.root, "constant")
        self.root.register_buffer(name, tensor.float() if tensor.is_floating_point()
                                  else tensor)
        node = self.graph.get_attr(name)
        self.examples[node] = getattr(self.root, name)
        return node

    def node(self, argument: Any) -> fx.Node:
        return self.constant(argument) if isinstance(argument, torch.Tensor) else argument

    def call(self, target: Callable, *args: Any, **kwargs: Any) -> fx.Node:
        """A call_function node, its example computed now."""
        node = self.graph.call_function(target, tuple(args), kwargs)
        self.examples[node] = target(*fx.node.map_arg(args, self.examples.__getitem__),
                                     **fx.node.map_arg(kwargs, self.examples.__getitem__))
        return node

    def layer(self, name: str, module: nn.Module, argument: fx.Node) -> fx.Node:
        name = free_attribute_name(self.root, name)
        self.root.add_module(name, module.eval())
        node = self.graph.call_module(name, (argument,))
        with torch.no_grad():
            self.examples[node] = module(self.examples[argument])
        return node


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def _attr(node: ir.Node, name: str, default: Any) -> Any:
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


def _conv(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    weight = _constant(args, 1, "the weight")
    assert weight is not None
    rank = weight.dim() - 2
    if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ReliefError("auto_pad SAME_* is not supported; export with explicit pads")
    pads = list(_attr(node, "pads", [0] * 2 * rank))
    x = args[0]
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = c.call(F.pad, x, _torch_pads(pads))
        pads = [0] * 2 * rank
    module = layers.conv(weight, _constant(args, 2, "the bias"),
                         stride=list(_attr(node, "strides", [1] * rank)),
                         padding=pads[:half], dilation=list(_attr(node, "dilations",
                                                                  [1] * rank)),
                         groups=int(_attr(node, "group", 1)))
    return c.layer(node.name or "conv", module, x)


def _torch_pads(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] -> F.pad's [b_last, e_last, ..., b1, e1]."""
    half = len(pads) // 2
    result = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
    while len(result) > 2 and result[-2:] == [0, 0]:
        result = result[:-2]
    return result


def _gemm(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if _attr(node, "transA", 0):
        raise ReliefError("transA=1 is not supported")
    weight = _constant(args, 1, "B")
    assert weight is not None
    weight = weight if _attr(node, "transB", 0) else weight.t()
    bias = _constant(args, 2, "C")
    if bias is not None:
        bias = (bias * float(_attr(node, "beta", 1.0))).expand(weight.shape[0])
    module = layers.linear(weight * float(_attr(node, "alpha", 1.0)), bias)
    return c.layer(node.name or "gemm", module, args[0])


def _matmul(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if isinstance(args[1], torch.Tensor) and args[1].dim() == 2:
        return c.layer(node.name or "matmul", layers.linear(args[1].float().t(), None),
                       args[0])
    return c.call(torch.matmul, c.node(args[0]), c.node(args[1]))


def _add(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
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


def _fits_bias(c: _Converter, x: fx.Node, other: torch.Tensor, node: ir.Node) -> bool:
    layer = getattr(c.root, str(x.target))
    first = node.inputs[0]
    matmul_output = first if first is not None and c.values.get(first) is x \
        else node.inputs[1]
    return isinstance(layer, nn.Linear) and layer.bias is None and \
        other.numel() == layer.out_features and other.dim() >= 1 and \
        other.shape[-1] == layer.out_features and matmul_output is not None and \
        len(matmul_output.uses()) == 1


def _binary(target: Callable) -> Callable[[_Converter, ir.Node, list[Any]], fx.Node]:
    return lambda c, node, args: c.call(target, c.node(args[0]), c.node(args[1]))


def _unary(target: Callable, **fixed: Any) -> Callable[[_Converter, ir.Node, list[Any]], fx.Node]:
    return lambda c, node, args: c.call(target, args[0], **fixed)


def _batch_norm(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    scale, shift, mean, var = (_constant(args, i, "BatchNorm statistics") for i in (1, 2, 3, 4))
    assert mean is not None and var is not None
    module = layers.batch_norm(scale, shift, mean, var, float(_attr(node, "epsilon", 1e-5)),
                               c.examples[args[0]].dim())
    return c.layer(node.name or "batch_norm", module, args[0])


def _pool(kind: str) -> Callable[[_Converter, ir.Node, list[Any]], fx.Node]:
    def convert(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
        kernel = list(_attr(node, "kernel_shape", []))
        if len(kernel) != 2:
            raise ReliefError("only 2-d pooling is supported")
        padding = _symmetric(list(_attr(node, "pads", [0] * 4)), "pooling")
        stride = list(_attr(node, "strides", [1, 1]))
        ceil = bool(_attr(node, "ceil_mode", 0))
        if kind == "max":
            module: nn.Module = nn.MaxPool2d(tuple(kernel), tuple(stride), tuple(padding),
                                             tuple(_attr(node, "dilations", [1, 1])),
                                             ceil_mode=ceil)
        else:
            module = nn.AvgPool2d((kernel[0], kernel[1]), (stride[0], stride[1]),
                                  (padding[0], padding[1]), ceil_mode=ceil,
                                  count_include_pad=bool(_attr(node, "count_include_pad", 0)))
        return c.layer(node.name or f"{kind}_pool", module, args[0])
    return convert


def _clip(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    low, high = (_constant(args, i, "Clip bounds") for i in (1, 2))
    low_value = float(low) if low is not None else -math.inf
    high_value = float(high) if high is not None else math.inf
    if (low_value, high_value) == (0.0, 6.0):
        return c.call(F.relu6, args[0])
    if low_value == 0.0 and high_value == math.inf:
        return c.call(F.relu, args[0])
    return c.call(F.hardtanh, args[0], low_value, high_value)


def _flatten(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    axis = int(_attr(node, "axis", 1))
    if axis != 1:
        raise ReliefError(f"Flatten axis {axis} is not supported (axis 1 is)")
    return c.call(torch.flatten, args[0], 1)


def _reshape(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
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


def _concat(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return c.call(torch.cat, [c.node(a) for a in args], int(_attr(node, "axis", 0)))


def _pad(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    if _attr(node, "mode", "constant") != "constant":
        raise ReliefError("only constant padding is supported")
    pads = _constant(args, 1, "pads")
    assert pads is not None
    value = _constant(args, 2, "the pad value")
    fill = {"value": float(value)} if value is not None and float(value) != 0.0 else {}
    return c.call(F.pad, args[0], _torch_pads([int(p) for p in pads.tolist()]), **fill)


def _reduce(target: Callable) -> Callable[[_Converter, ir.Node, list[Any]], fx.Node]:
    """Reduce* over ``axes`` (an input since opset 18, an attribute before; none: all)."""
    def convert(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
        axes = _constant(args, 1, "axes")
        dims = axes.tolist() if axes is not None else list(_attr(node, "axes", []))
        dims = dims or list(range(c.examples[args[0]].dim()))
        return c.call(target, args[0], dims, keepdim=bool(_attr(node, "keepdims", 1)))
    return convert


def _transpose(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    rank = c.examples[args[0]].dim()
    perm = list(_attr(node, "perm", list(reversed(range(rank)))))
    return c.call(torch.permute, args[0], perm)


def _unsqueeze(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    axes = _constant(args, 1, "axes")
    result = args[0]
    for axis in sorted(axes.tolist() if axes is not None else _attr(node, "axes", [])):
        result = c.call(torch.unsqueeze, result, int(axis))
    return result


def _squeeze(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    axes = _constant(args, 1, "axes")
    listed = axes.tolist() if axes is not None else list(_attr(node, "axes", []))
    rank = c.examples[args[0]].dim()
    dims = [a % rank for a in listed] or [i for i, size in
                                          enumerate(c.examples[args[0]].shape) if size == 1]
    return c.call(torch.squeeze, args[0], tuple(dims))


def _softmax(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return c.call(F.softmax, args[0], int(_attr(node, "axis", -1)))


def _slice(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
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


def _identity(c: _Converter, node: ir.Node, args: list[Any]) -> fx.Node:
    return args[0]


# ONNX op -> converter(converter, node, input values) -> the fx node of its (first) output
ONNX_OPS: dict[str, Callable[[_Converter, ir.Node, list[Any]], fx.Node]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Add": _add, "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "HardSwish": _unary(F.hardswish), "Clip": _clip,
    "LeakyRelu": lambda c, n, a: c.call(F.leaky_relu, a[0], float(_attr(n, "alpha", 0.01))),
    "Gelu": lambda c, n, a: c.call(F.gelu, a[0], approximate="tanh"
                                   if _attr(n, "approximate", "none") == "tanh" else "none"),
    "MaxPool": _pool("max"), "AveragePool": _pool("average"),
    "GlobalAveragePool": lambda c, n, a: c.layer(n.name or "pool", nn.AdaptiveAvgPool2d(1),
                                                 a[0]),
    "GlobalMaxPool": lambda c, n, a: c.layer(n.name or "pool", nn.AdaptiveMaxPool2d(1), a[0]),
    "Flatten": _flatten, "Reshape": _reshape, "Concat": _concat, "Pad": _pad,
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax), "Slice": _slice, "Transpose": _transpose,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Softmax": _softmax,
    "Identity": _identity, "Dropout": _identity,
}
