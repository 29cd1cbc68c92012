"""Run a sparse layer as a few dense blocks where that measures faster.

For each Conv / Gemm with a constant weight (``sparse.layers.LAYER_KINDS``), the connection
mask is covered by dense blocks under a reordering of units and channels
(``sparse.cover.find_cover``). Block g reads its input channels C_g (the input itself when
C_g is every channel in order, a Slice when it is a contiguous range, else a Gather on axis 1)
and computes its units R_g with the same op on W[R_g][:, C_g] and b[R_g]; the blocks' outputs
are concatenated on axis 1, so the result holds the units in the order R_1, R_2, ...
That order is free when the units flow only through per-channel ops (activations, pooling,
dropout) into one layer that alone reads them: that layer's weight columns are permuted to
match (W'[:, j] = W[:, order[j]]; after a Flatten, blocks of the spatial size). Otherwise a
Gather restores the order.

The layer keeps its dense form unless the cover, timed in onnxruntime as a model of its own
(``sparse.timing``), is faster by ``MARGIN`` at every measured batch size and thread count.
Every choice is recorded in ``choices``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from ..sparse.cover import Cover, find_cover
from ..sparse.layers import LAYER_KINDS, absorbable_weight, connection_mask, constant
from ..sparse.timing import Setting, Timer, single_layer_model

MARGIN = 0.97  # the cover must take at most this fraction of the dense layer's time
PER_CHANNEL_OPS = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu",
                   "Selu", "Softplus", "Gelu", "Clip", "MaxPool", "AveragePool",
                   "GlobalAveragePool", "GlobalMaxPool", "Dropout", "Identity"}


@dataclass
class LayerCompute:
    """What sparse compute saw and chose for one layer; MACs per sample."""

    name: str
    op: str
    shape: list[int]
    macs_compacted: int
    macs_cover: int
    macs_nonzero: int
    blocks: int
    reorder: str  # how the units' order is restored: "absorbed", "gather" or "none"
    ms_dense: dict[str, float] = field(default_factory=dict)
    ms_cover: dict[str, float] = field(default_factory=dict)
    chosen: str = "dense"
    why: str = ""


class SparseCompute(ir.passes.InPlacePass):
    """``settings``: the (batch, threads) pairs timed; ``force`` ("cover") skips the timing
    and applies every cover that saves multiply-adds (for tests and experiments)."""

    def __init__(self, settings: tuple[Setting, ...] = (Setting(1, 1), Setting(64, 1)),
                 max_blocks: int = 16, force: str | None = None):
        super().__init__()
        self.timer = Timer(settings)
        self.max_blocks, self.force = max_blocks, force
        self.choices: list[LayerCompute] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 18)
        modified = False
        for node in list(graph):
            if node.op_type in LAYER_KINDS and node.graph is graph:
                modified |= self._layer(graph, node, opset)
        return ir.passes.PassResult(model, modified)

    def _layer(self, graph: ir.Graph, node: ir.Node, opset: int) -> bool:
        weight = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        bias = constant(bias_value)
        shape = _static_shape(node.inputs[0])
        if weight is None or weight.dtype != np.float32 or shape is None or \
                not LAYER_KINDS[node.op_type].eligible(node) or \
                (bias_value is not None and bias is None):
            return False
        cover = find_cover(connection_mask(weight), self.max_blocks)
        positions = _positions(node)
        taps = int(np.prod(weight.shape[2:], dtype=np.int64))
        absorber = _absorber(node.outputs[0])
        record = LayerCompute(str(node.name), node.op_type, list(weight.shape),
                              int(weight.size) * positions, cover.macs * taps * positions,
                              int(np.count_nonzero(weight)) * positions, len(cover.blocks),
                              "absorbed" if absorber is not None else "gather")
        self.choices.append(record)
        identity_order = cover.output_order == tuple(range(weight.shape[0]))
        if identity_order:
            record.reorder = "none"
        if cover.fraction >= 1.0 or len(cover.blocks) == 1:
            record.why = "no cover with fewer multiply-adds"
            return False
        restore = absorber is None and not identity_order
        if not self._faster(record, node, weight, bias, cover, shape, opset, restore):
            return False
        output = _write_cover(graph, node, weight, bias, cover, restore)
        if absorber is not None and not identity_order:
            _permute_reader(absorber, cover.output_order)
        _replace(node.outputs[0], output)
        graph.remove(node, safe=True)
        record.chosen = "cover"
        return True

    def _faster(self, record: LayerCompute, node: ir.Node, weight: np.ndarray,
                bias: np.ndarray | None, cover: Cover, shape: list[int], opset: int,
                restore: bool) -> bool:
        if self.force == "cover":
            record.why = "forced"
            return True
        attributes = LAYER_KINDS[node.op_type].attributes(node)

        def dense(graph: ir.Graph, x: ir.Value) -> ir.Value:
            return _layer_node(graph, node.op_type, x, weight, bias, attributes, None)

        def covered(graph: ir.Graph, x: ir.Value) -> ir.Value:
            return _cover_nodes(graph, node.op_type, x, weight, bias, attributes, cover,
                                restore, None)

        sizes = [(len(b.rows), len(b.cols), _is_range(b.cols, weight.shape[1]))
                 for b in cover.blocks]
        key = f"{node.op_type}|{sorted(attributes.items())}|{shape}|{list(weight.shape)}"
        dense_ms, cover_ms = self.timer.times(
            [(key, single_layer_model(dense, shape, opset)),
             (f"{key}|{sizes}|{restore}", single_layer_model(covered, shape, opset))], shape)
        record.ms_dense = {_label(s): round(ms, 4) for s, ms in dense_ms.items()}
        record.ms_cover = {_label(s): round(ms, 4) for s, ms in cover_ms.items()}
        slower = [s for s in dense_ms if cover_ms[s] > MARGIN * dense_ms[s]]
        if slower:
            record.why = "dense measured faster at " + ", ".join(_label(s) for s in slower)
            return False
        record.why = "cover measured faster at every setting"
        return True


def _label(setting: Setting) -> str:
    return f"batch {setting.batch}, {setting.threads} thread(s)"


def _known(shape: ir.Shape | None, start: int) -> list[int] | None:
    """The sizes of ``shape`` from axis ``start`` on, when every one is a known integer."""
    if shape is None or len(shape) < start:
        return None
    dims = list(shape)[start:]
    sizes = [d for d in dims if isinstance(d, int)]
    return sizes if len(sizes) == len(dims) else None


def _static_shape(value: ir.Value | None) -> list[int] | None:
    """The value's shape with the batch axis 1 and every other axis known."""
    rest = _known(value.shape, 1) if value is not None and value.shape is not None and \
        len(value.shape) >= 2 else None
    return None if rest is None else [1, *rest]


def _positions(node: ir.Node) -> int:
    """Output positions per sample (1 for a Gemm, or where unknown)."""
    spatial = _known(node.outputs[0].shape, 2)
    return math.prod(spatial) if spatial else 1


def _is_range(cols: tuple[int, ...], width: int) -> str:
    if cols == tuple(range(width)):
        return "all"
    return "range" if cols == tuple(range(cols[0], cols[-1] + 1)) else "gather"


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=_free_name(graph, name), shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(np.ascontiguousarray(array)))
    graph.register_initializer(value)
    return value


def _free_name(graph: ir.Graph, base: str) -> str:
    taken = set(graph.initializers) | {str(v.name) for n in graph for v in n.outputs} | \
        {str(v.name) for v in graph.inputs}
    name, index = base, 0
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    return name


def _layer_node(graph: ir.Graph, op: str, x: ir.Value, weight: np.ndarray,
                bias: np.ndarray | None, attributes: dict[str, Any], before: ir.Node | None,
                name: str = "layer") -> ir.Value:
    inputs = [x, _initializer(graph, f"{name}_weight", weight)]
    if bias is not None:
        inputs.append(_initializer(graph, f"{name}_bias", bias))
    return _add(graph, ir.node(op, inputs, attributes, name=_free_name(graph, name)), before)


def _add(graph: ir.Graph, node: ir.Node, before: ir.Node | None) -> ir.Value:
    if before is None:
        graph.append(node)
    else:
        graph.insert_before(before, node)
    return node.outputs[0]


def _cover_nodes(graph: ir.Graph, op: str, x: ir.Value, weight: np.ndarray,
                 bias: np.ndarray | None, attributes: dict[str, Any], cover: Cover,
                 restore: bool, before: ir.Node | None, name: str = "block") -> ir.Value:
    """The blocks, their Concat and (with ``restore``) the Gather back to the units' order."""
    outputs = []
    for g, block in enumerate(cover.blocks):
        rows, cols = np.array(block.rows), np.array(block.cols)
        source = _channels(graph, x, block.cols, weight.shape[1], before, f"{name}{g}")
        outputs.append(_layer_node(graph, op, source, weight[rows][:, cols],
                                   None if bias is None else bias[rows], attributes, before,
                                   f"{name}{g}"))
    joined = _add(graph, ir.node("Concat", outputs, {"axis": 1},
                                 name=_free_name(graph, f"{name}_concat")), before)
    if not restore:
        return joined
    inverse = np.argsort(np.array(cover.output_order)).astype(np.int64)
    index = _initializer(graph, f"{name}_order", inverse)
    return _add(graph, ir.node("Gather", [joined, index], {"axis": 1},
                               name=_free_name(graph, f"{name}_order")), before)


def _channels(graph: ir.Graph, x: ir.Value, cols: tuple[int, ...], width: int,
              before: ir.Node | None, name: str) -> ir.Value:
    """x's channels ``cols`` on axis 1: x itself, a Slice of a range, or a Gather."""
    kind = _is_range(cols, width)
    if kind == "all":
        return x
    if kind == "range":
        inputs = [x, _initializer(graph, f"{name}_start", np.array([cols[0]], np.int64)),
                  _initializer(graph, f"{name}_end", np.array([cols[-1] + 1], np.int64)),
                  _initializer(graph, f"{name}_axis", np.array([1], np.int64))]
        return _add(graph, ir.node("Slice", inputs, name=_free_name(graph, f"{name}_in")),
                    before)
    index = _initializer(graph, f"{name}_channels", np.array(cols, np.int64))
    return _add(graph, ir.node("Gather", [x, index], {"axis": 1},
                               name=_free_name(graph, f"{name}_in")), before)


def _write_cover(graph: ir.Graph, node: ir.Node, weight: np.ndarray, bias: np.ndarray | None,
                 cover: Cover, restore: bool) -> ir.Value:
    attributes = LAYER_KINDS[node.op_type].attributes(node)
    x = node.inputs[0]
    assert x is not None
    return _cover_nodes(graph, node.op_type, x, weight, bias, attributes, cover, restore,
                        node, str(node.name or "layer").replace("/", "_").strip("_"))


@dataclass(frozen=True)
class _Absorber:
    """The layer whose weight absorbs the new order, and the spatial size per channel when a
    Flatten sits between (its weight columns come in blocks of that size)."""

    weight: ir.Value
    block: int


def _absorber(value: ir.Value) -> _Absorber | None:
    """Follow ``value`` through per-channel ops (each the one reader of the value before it)
    to a layer that alone reads it, possibly after a flatten of the channels with what
    follows them (Flatten on axis 1, or a Reshape to [batch, C * S])."""
    block = 1
    while not value.is_graph_output() and len(value.uses()) == 1:
        reader = next(iter(value.uses())).node
        if reader.inputs[0] is not value:
            return None
        if _per_channel(reader):
            value = reader.outputs[0]
            continue
        flattened = _flattened_block(reader) if block == 1 else None
        if flattened is not None:
            block, value = flattened, reader.outputs[0]
            continue
        weight = absorbable_weight(reader, value)
        if weight is None or (block > 1 and reader.op_type != "Gemm"):
            return None
        return _Absorber(weight, block)
    return None


def _per_channel(node: ir.Node) -> bool:
    """An op that maps each channel (axis 1) on its own, its other inputs constants."""
    if any(constant(v) is None for v in node.inputs[1:] if v is not None):
        return False
    if node.op_type in PER_CHANNEL_OPS:
        return True
    if node.op_type in ("ReduceMean", "ReduceMax"):
        axes = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if axes is None and node.attributes.get("axes") is not None:
            axes = np.array(node.attributes["axes"].value)
        rank = len(node.inputs[0].shape or ()) if node.inputs[0] is not None else 0
        return axes is not None and rank > 2 and \
            not {int(a) % rank for a in axes.reshape(-1)} & {0, 1}
    return False


def _flattened_block(node: ir.Node) -> int | None:
    """S when ``node`` turns [batch, C, *spatial] into [batch, C * S] (S = prod(spatial))."""
    source, result = node.inputs[0], node.outputs[0]
    dims = _known(source.shape, 1) if source is not None else None
    if dims is None or len(dims) < 2 or result.shape is None or len(result.shape) != 2 or \
            result.shape[1] != math.prod(dims):
        return None
    axis = node.attributes.get("axis")
    if node.op_type == "Flatten" and (axis is None or axis.value == 1):
        return math.prod(dims[1:])
    if node.op_type == "Reshape":
        return math.prod(dims[1:])
    return None


def _permute_reader(absorber: _Absorber, order: tuple[int, ...]) -> None:
    """W'[:, j] = W[:, order[j]] (in blocks of ``absorber.block`` columns)."""
    weight = constant(absorber.weight)
    assert weight is not None
    blocks = np.array(order)[:, None] * absorber.block + np.arange(absorber.block)[None, :]
    permuted = np.take(weight, blocks.reshape(-1), axis=1)
    absorber.weight.const_value = ir.tensor(np.ascontiguousarray(permuted))


def _replace(old: ir.Value, new: ir.Value) -> None:
    """Every use of ``old`` reads ``new``; a graph output keeps its name, shape and type."""
    was_output, name, shape, kind = old.is_graph_output(), old.name, old.shape, old.type
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = f"{name}_replaced"
        new.name, new.shape, new.type = name, shape, kind
