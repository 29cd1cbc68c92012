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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import fx, nn

from ..errors import ReliefError, VerificationError, first_line
from ..graph.attrs import free_attribute_name
from .loaded import LoadedModel
from .onnx_ops import ONNX_OPS, as_tensor, attr

EXAMPLE_BATCH = 2
TOLERANCE = 1e-4


def read_onnx_file(path: Path) -> LoadedModel:
    """An ONNX model as a loaded torch model (see ``read_onnx``)."""
    module, shape, notes = read_onnx(path)
    return LoadedModel(module, path, "onnx", shape, notes=notes)


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
    module = Converter(path, graph, inputs[0], shape).convert()
    check_conversion(path, module, shape)
    return module, [1, *shape[1:]], notes


def _provenance(path: Path, model: ir.Model) -> list[str]:
    """A warning when the file was written by relief_export: compacting it again finds
    nothing, and a file rewritten by onnxsim / onnxslim has its sparse decoders folded back
    into dense weights."""
    from ..onnx.integrity import WEIGHTS_KEY, weights_sha256

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
    from ..runtime.ort import session

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


class Converter:
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
                self.values[value] = as_tensor(value.const_value.numpy())

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
            start = attr(node, "start", 0)
            end = attr(node, "end", len(shape))
            return [torch.tensor(list(shape)[start:end], dtype=torch.int64)]
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(ir.serde.serialize_node(node))
        feeds = {str(v.name): a.numpy() for v, a in zip(node.inputs, args, strict=True)
                 if v is not None}
        return [as_tensor(np.asarray(out)) for out in evaluator.run(None, feeds)]

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
