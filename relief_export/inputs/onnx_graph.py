"""ONNX models in: the standard op subset of CNNs, MLPs and token models converted to a
torch.fx module. Inputs may be several, float32 or integer (token ids: drawn below the size of
the table they index), outputs several (the module returns a tuple).

The graph is read with onnx_ir; every node becomes the torch call in ``ONNX_OPS`` (layers with
constant weights become ``nn.Module`` layers through ``layers``, so pruning and compaction
read them as in the module route). Nodes whose inputs are all constant (shape arithmetic,
``Constant``) are evaluated once with ``onnx.reference``. ``Shape`` of a tensor reads the
example's shape; a ``Reshape`` that keeps the batch axis first is written with -1 there, so
the module runs at any batch size. A node outside the table is refused, naming it.
The converted module is checked against onnxruntime running the file itself.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
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


INPUT_DTYPES = {ir.DataType.FLOAT: torch.float32, ir.DataType.INT64: torch.int64,
                ir.DataType.INT32: torch.int32}
INDEX_HIGH = 2  # integer inputs that index no table (masks, segment ids) are drawn from {0, 1}


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, dtype and shape (batch first); integer inputs are drawn
    from [0, high): the smallest table they index, else {0, 1}."""

    name: str
    dtype: torch.dtype
    shape: list[int]
    high: int = INDEX_HIGH

    def draw(self, batch: int, generator: torch.Generator, uniform: bool = False
             ) -> torch.Tensor:
        shape = [batch, *self.shape[1:]]
        if self.dtype.is_floating_point:
            return torch.rand(shape, generator=generator) if uniform else \
                torch.randn(shape, generator=generator)
        return torch.randint(0, self.high, shape, generator=generator, dtype=self.dtype)


def read_onnx_file(path: Path) -> LoadedModel:
    """An ONNX model as a loaded torch model (see ``read_onnx``): one float input gives its
    shape, other inputs (several, integer token ids) give seeded example inputs."""
    module, specs, notes = read_onnx(path)
    if len(specs) == 1 and specs[0].dtype.is_floating_point:
        return LoadedModel(module, path, "onnx", [1, *specs[0].shape[1:]], notes=notes)
    generator = torch.Generator().manual_seed(0)
    examples = tuple(spec.draw(1, generator, uniform=True) for spec in specs)
    return LoadedModel(module, path, "onnx", None, notes=notes, example_inputs=examples)


def read_onnx(path: Path) -> tuple[fx.GraphModule, list[InputSpec], list[str]]:
    """The module computing ``path``'s function (its inputs in the file's order, a tuple when
    the file has several outputs), what its inputs are, and notes."""
    try:
        model = ir.load(str(path))
    except Exception as error:
        raise ReliefError(f"{path}: corrupt or unreadable ONNX model ({first_line(error)})"
                          ) from None
    notes = _provenance(path, model)
    graph = model.graph
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    if not inputs or not graph.outputs:
        raise ReliefError(f"{path}: the graph needs at least one input and one output; this "
                          f"one has {len(inputs)} inputs and {len(graph.outputs)} outputs")
    specs = [_input_spec(path, value) for value in inputs]
    module = Converter(path, graph, inputs, specs).convert()
    check_conversion(path, module, specs)
    return module, specs, notes


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


def _input_spec(path: Path, value: ir.Value) -> InputSpec:
    if value.dtype not in INPUT_DTYPES or value.shape is None:
        raise ReliefError(f"{path}: input {value.name!r} must be a float32, int64 or int32 "
                          f"tensor of known rank, got {value.type}")
    dims = list(value.shape)
    if not dims or not all(isinstance(d, int) for d in dims[1:]):
        raise ReliefError(f"{path}: input {value.name!r} has symbolic dimensions {dims} beyond "
                          "the batch axis (or no batch axis); fix them first (e.g. onnxsim "
                          "--overwrite-input-shape)")
    shape = [dims[0] if isinstance(dims[0], int) else EXAMPLE_BATCH,
             *(int(d) for d in dims[1:])]  # type: ignore[arg-type]
    tables = [int(use.node.inputs[0].shape[int(attr(use.node, "axis", 0))])  # type: ignore
              for use in value.uses() if use.node.op_type == "Gather" and use.idx == 1
              and use.node.inputs[0] is not None and use.node.inputs[0].is_initializer()
              and use.node.inputs[0].shape is not None]
    return InputSpec(str(value.name), INPUT_DTYPES[value.dtype], shape,
                     max(1, min(tables, default=INDEX_HIGH)))


def check_conversion(path: Path, module: nn.Module, specs: list[InputSpec],
                     seed: int = 0) -> None:
    """The converted module against onnxruntime on the file, run unoptimised (see
    ``ort.session``): two seeded draws of the inputs, every output within relative error
    max |a - b| / max |a| <= 1e-4."""
    from ..runtime.ort import session

    generator = torch.Generator().manual_seed(seed)
    draws = [[spec.draw(spec.shape[0], generator, uniform) for spec in specs]
             for uniform in (False, True)]
    try:
        runtime = session(str(path), optimize=False)
        names = [i.name for i in runtime.get_inputs()]
        expected_outputs = [runtime.run(None, {n: x.numpy() for n, x in zip(names, xs,
                                                                            strict=True)})
                            for xs in draws]
    except Exception as error:  # onnxruntime's own exception types
        raise ReliefError(f"{path}: onnxruntime cannot run it ({first_line(error)})") from None
    for xs, expected in zip(draws, expected_outputs, strict=True):
        shapes = ", ".join(str(list(x.shape)) for x in xs)
        try:
            with torch.no_grad():
                got = module(*xs)
        except Exception as failure:
            raise VerificationError(f"{path}: the converted model fails on inputs of shape "
                                    f"{shapes} ({first_line(failure)}); please report this "
                                    "model") from None
        got = list(got) if isinstance(got, tuple) else [got]
        for index, (want, have) in enumerate(zip(expected, got, strict=True)):
            have = have.numpy()
            scale = max(float(np.abs(want).max()), 1e-12)
            relative = float(np.abs(want - have).max()) / scale \
                if have.shape == want.shape else math.inf
            if not relative <= TOLERANCE:
                raise VerificationError(f"{path}: the converted model differs from "
                                        f"onnxruntime on the file (output {index}, relative "
                                        f"error {relative:.2e}); please report this model")


class Converter:
    """ONNX nodes -> fx nodes, with every value's example tensor alongside."""

    def __init__(self, path: Path, graph: ir.Graph, inputs: list[ir.Value],
                 specs: list[InputSpec]) -> None:
        self.path, self.onnx_graph = path, graph
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.batch = specs[0].shape[0]
        self.values: dict[ir.Value, Any] = {}  # fx.Node, or torch.Tensor for constants
        self.examples: dict[fx.Node, torch.Tensor] = {}
        generator = torch.Generator().manual_seed(0)
        names = [_placeholder_name(spec.name, i, len(specs)) for i, spec in enumerate(specs)]
        names = [n if names.count(n) == 1 else f"input_{i}" for i, n in enumerate(names)]
        for name, value, spec in zip(names, inputs, specs, strict=True):
            node = self.graph.placeholder(name)
            self.values[value] = node
            self.examples[node] = spec.draw(self.batch, generator)
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
        outputs = [self.value(value) for value in self.onnx_graph.outputs]
        for value, output in zip(self.onnx_graph.outputs, outputs, strict=True):
            if not isinstance(output, fx.Node):
                raise ReliefError(f"{self.path}: output {value.name!r} does not depend on "
                                  "the inputs")
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
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


def _placeholder_name(name: str, index: int, count: int) -> str:
    """``input`` for a single input, else the file's name as an identifier."""
    if count == 1:
        return "input"
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned.isidentifier() and not keyword.iskeyword(cleaned) \
        else f"input_{index}"
