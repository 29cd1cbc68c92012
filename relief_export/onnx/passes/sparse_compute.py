"""Run a sparse layer as a few dense blocks where that measures faster.

For each Conv / Gemm with a constant weight (``sparse.layers.LAYER_KINDS``), the connection
mask is covered by dense blocks under a reordering of units and channels
(``sparse.cover.find_cover``) and written as standard ops (``sparse.build``): per block a
Slice or Gather of its channels, the layer's op on its weights, and the activation that
followed the layer; a Concat of the blocks. The units' new order is absorbed by the next
layer's weight where that layer alone reads them (``sparse.order``), else a Gather restores
it. Where a later block slices exactly some blocks back out of that Concat, it reads them
directly (``read_parts``).

Before that, a layer that reads a flattened tensor through a box of it alone reads the box
(``sparse.crop``). A layer keeps its dense form unless a cover, timed in onnxruntime as a
model of its own with the activation that follows it (``sparse.timing``), takes at most
``MARGIN`` of the dense time at some measured batch size and thread count and at most ``TIE``
at every one; of those, the smallest geometric mean of the time ratios wins. A fp32 Conv's
candidates are timed in context (``timing.in_context``): a cover then takes the dense
layer's time less what it saved there. Every choice is recorded in ``choices``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from ..sparse.build import Activation, Writer, channel_access
from ..sparse.cover import Cover, coarser_covers, find_cover, one_block, ranged
from ..sparse.crop import crop_unread_border
from ..sparse.layers import LAYER_KINDS, connection_mask, constant, known_sizes
from ..sparse.order import ACTIVATIONS, absorber, permute_reader, reorder_for_blocks
from ..sparse.timing import (
    IN_CONTEXT,
    Setting,
    Timer,
    in_context,
    saved_in_context,
    single_layer_model,
)
from .read_parts import ReadPartsDirectly

MARGIN = 0.97  # a cover must take at most this fraction of the dense layer's time somewhere
TIE = 1.0  # and at most this fraction at every setting
Quantizer = Callable[[onnx.ModelProto, np.ndarray], onnx.ModelProto]  # (model, samples)
CALIBRATION_SAMPLES = 8  # random inputs that set a quantized candidate's ranges


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
    weight: str = ""  # the weight initializer's name (the module's parameter, from torch)
    macs_dense: int | None = None  # before compaction, where the caller knows it
    ms_dense: dict[str, float] = field(default_factory=dict)
    ms_cover: dict[str, float] = field(default_factory=dict)  # the fastest cover's
    ms_candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # every cover's
    chosen: str = "dense"
    why: str = ""
    crop: str = ""  # the box of a flattened input the layer reads alone (sparse.crop)
    macs_cropped: int | None = None  # the dense layer's after that crop


@dataclass
class _Layer:
    """One layer as the pass reads it."""

    node: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    shape: list[int]  # the input's, batch 1
    activation: ir.Node | None  # a per-element op that alone reads the layer's output
    bias_add: ir.Node | None = None  # a MatMul's bias

    @property
    def output(self) -> ir.Value:
        return (self.activation or self.bias_add or self.node).outputs[0]

    @property
    def nodes(self) -> list[ir.Node]:
        """The nodes the covered form replaces, last first."""
        return [n for n in (self.activation, self.bias_add, self.node) if n is not None]

    def applied(self) -> Activation | None:
        if self.activation is None:
            return None
        a = self.activation
        return Activation(a.op_type, {k: v.value for k, v in a.attributes.items()},
                          tuple(a.inputs[1:]))


class SparseCompute(ir.passes.InPlacePass):
    """``settings``: the (batch, threads) pairs timed; ``force="cover"`` skips the timing and
    applies every cover with fewer multiply-adds (for tests and experiments); ``progress``
    hears one line per layer; ``cache_file``: times kept across exports (timing_cache);
    ``int8``: (a name, the quantizer) when the file will be int8: the candidates are timed
    as that quantizer makes them (the name tells their times apart in the cache)."""

    def __init__(self, settings: tuple[Setting, ...] = (Setting(1, 1), Setting(64, 1)),
                 max_blocks: int = 16, force: str | None = None,
                 progress: Callable[[str], None] | None = None,
                 cache_file: Path | None = None,
                 int8: tuple[str, Quantizer] | None = None):
        super().__init__()
        self.precision = int8[0] if int8 is not None else "fp32"
        self.quantizer: Quantizer | None = int8[1] if int8 is not None else None
        self.timer = Timer(settings, cache_file)
        self.max_blocks, self.force = max_blocks, force
        self.progress = progress or (lambda _: None)
        self.choices: list[LayerCompute] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 18)
        nodes = [node for node in graph if node.op_type in LAYER_KINDS]
        modified = False
        for index, node in enumerate(nodes):
            # read when reached: an earlier cover may have permuted this layer's weight
            layer = _read(node) if node.graph is graph else None
            if layer is not None:
                self.progress(f"sparse compute: layer {index + 1}/{len(nodes)} "
                              f"({node.name}): cover search and timing")
                modified |= self._layer(graph, layer, opset)
        if modified:
            ReadPartsDirectly()(model)
        self.timer.save()
        return ir.passes.PassResult(model, modified)

    def _layer(self, graph: ir.Graph, layer: _Layer, opset: int) -> bool:
        """Crop the layer's unread border, then cover it if that measures faster; whether
        the graph changed."""
        compacted = int(layer.weight.size) * _positions(layer.node)
        weight_name = str(getattr(layer.node.inputs[1], "name", ""))
        crop = crop_unread_border(graph, layer.node)
        if crop is not None:
            cropped = _read(layer.node)
            assert cropped is not None
            layer = cropped
        mask = connection_mask(layer.weight)
        finest = find_cover(mask, self.max_blocks)
        ranges = reorder_for_blocks(layer.node, finest)
        if ranges is not None:  # its input channels reordered: the blocks now read ranges
            reordered = _read(layer.node)
            assert reordered is not None
            layer, mask, finest = reordered, connection_mask(reordered.weight), ranges
        kind = LAYER_KINDS[layer.node.op_type]
        reader = absorber(layer.output, kind.channel_axis)
        record = self._record(layer, finest, reader is not None)
        record.macs_compacted, record.weight = compacted, weight_name
        if crop is not None:
            record.crop = crop.describe()
            record.macs_cropped = int(layer.weight.size) * _positions(layer.node)
        self.choices.append(record)
        if finest.fraction >= 1.0:
            record.why = "no cover with fewer multiply-adds"
            return crop is not None
        covers = _candidates(finest, one_block(mask))
        if self.force != "cover":
            covers = _worth_timing(covers)
            if not covers:
                record.why = "no cover the cost model puts below the dense layer"
                return crop is not None
        if reader is None and _meets_residual(layer.output):
            covers = [(label, c) for label, c in covers if _identity(c)]
            if not covers:
                record.why = ("its output meets a residual add, which onnxruntime fuses into "
                              "the dense layer")
                return crop is not None
        cover = self._fastest(record, layer, covers, opset, reader is None)
        if cover is None:
            return crop is not None
        self._describe(record, layer, cover, reader is not None)
        restore = reader is None and not _identity(cover)
        writer = Writer(graph, layer.node, str(layer.node.name or "layer").strip("/"))
        x = layer.node.inputs[0]
        assert x is not None
        output = writer.covered(layer.node.op_type, x, layer.weight, layer.bias,
                                kind.attributes(layer.node), layer.applied(), cover, restore)
        if reader is not None and not _identity(cover):
            permute_reader(reader, cover.output_order)
        _replace(layer.output, output)
        unread = [v for old in layer.nodes for v in old.inputs[1:] if v is not None]
        for old in layer.nodes:
            graph.remove(old, safe=True)
        for value in unread:  # the layer's own weights, now in its blocks
            if not value.uses() and value.name in graph.initializers:
                graph.initializers.pop(str(value.name))
        record.chosen = "cover"
        return True

    def _record(self, layer: _Layer, cover: Cover, absorbed: bool) -> LayerCompute:
        positions = _positions(layer.node)
        record = LayerCompute(str(layer.node.name), layer.node.op_type, list(layer.weight.shape),
                              int(layer.weight.size) * positions, 0,
                              int(np.count_nonzero(layer.weight)) * positions, 0, "",
                              str(getattr(layer.node.inputs[1], "name", "")))
        self._describe(record, layer, cover, absorbed)
        return record

    @staticmethod
    def _describe(record: LayerCompute, layer: _Layer, cover: Cover, absorbed: bool) -> None:
        """The MACs, blocks and reorder of ``cover`` into ``record``."""
        taps = math.prod(layer.weight.shape[2:])
        record.macs_cover = cover.macs * taps * _positions(layer.node)
        record.blocks = len(cover.blocks)
        record.reorder = "none" if _identity(cover) else "absorbed" if absorbed else "gather"

    def _fastest(self, record: LayerCompute, layer: _Layer, covers: list[tuple[str, Cover]],
                 opset: int, may_restore: bool) -> Cover | None:
        """The cover of the smallest worst-case time ratio to the dense layer over the
        settings, if that ratio is at most MARGIN (``force="cover"``: the finest)."""
        if self.force == "cover":
            record.why = "forced"
            return covers[0][1]
        op = layer.node.op_type
        attributes = LAYER_KINDS[op].attributes(layer.node)

        def dense(graph: ir.Graph, x: ir.Value) -> ir.Value:
            return Writer(graph, None, "dense").layer(op, x, layer.weight, layer.bias,
                                                      attributes, layer.applied(), "layer")

        def covered(cover: Cover, restore: bool) -> Callable[[ir.Graph, ir.Value], ir.Value]:
            return lambda graph, x: Writer(graph, None, "cover").covered(
                op, x, layer.weight, layer.bias, attributes, layer.applied(), cover, restore)

        after = layer.activation.op_type if layer.activation is not None else ""
        key = f"{self.precision}|{op}|{sorted(attributes.items())}|{layer.shape}|" \
              f"{list(layer.weight.shape)}|bias {layer.bias is not None}|{after}"
        context = self.quantizer is None and op == "Conv" and len(layer.shape) == 4
        units, channels = layer.weight.shape[:2]

        def timed_as(build: Callable[[ir.Graph, ir.Value], ir.Value]) -> Callable[[], ir.Model]:
            return self._candidate(in_context(build, channels, units) if context else build,
                                   layer.shape, opset)

        suffix = f"|{IN_CONTEXT}" * context
        candidates = [(key, self._candidate(dense, layer.shape, opset))] + \
            [(key + suffix, timed_as(dense))] * context
        for _, cover in covers:
            sizes = [(len(b.rows), len(b.cols), channel_access(b.cols, channels))
                     for b in cover.blocks]
            restore = may_restore and not _identity(cover)
            candidates.append((f"{key}|{sizes}|{restore}{suffix}",
                               timed_as(covered(cover, restore))))
        dense_ms, *timed = self.timer.times(candidates, layer.shape)
        cover_ms = [saved_in_context(dense_ms, timed[0], ms) for ms in timed[1:]] \
            if context else timed
        ratios = [[ms[s] / dense_ms[s] for s in dense_ms] for ms in cover_ms]
        best = min(range(len(covers)), key=lambda i: (not _gains(ratios[i]),
                                                      _geometric_mean(ratios[i])))
        record.ms_dense = {s.label: round(ms, 4) for s, ms in dense_ms.items()}
        record.ms_cover = {s.label: round(ms, 4) for s, ms in cover_ms[best].items()}
        record.ms_candidates = {label: {s.label: round(v, 4) for s, v in ms.items()}
                                for (label, _), ms in zip(covers, cover_ms, strict=True)}
        label, cover = covers[best]
        self._describe(record, layer, cover, not may_restore)
        if not _gains(ratios[best]):
            record.why = f"no cover measured faster ({self.precision}) than dense at some " \
                         f"setting and not slower at any"
            return None
        faster = [s.label for s, r in zip(dense_ms, ratios[best], strict=True) if r <= MARGIN]
        record.why = (f"cover of {label} measured fastest ({self.precision}): faster than "
                      f"dense at {', '.join(faster)}, not slower at any setting")
        return cover

    def _candidate(self, build: Callable[[ir.Graph, ir.Value], ir.Value],
                   shape: list[int], opset: int) -> Callable[[], ir.Model]:
        """The candidate model, built (and in int8 quantized) only if it must be timed."""
        def make() -> ir.Model:
            model = single_layer_model(build, shape, opset)
            if self.quantizer is None:
                return model
            samples = np.random.default_rng(0).standard_normal(
                [CALIBRATION_SAMPLES, *shape[1:]]).astype(np.float32)
            return ir.serde.deserialize_model(self.quantizer(ir.to_proto(model), samples))
        return make


def _read(node: ir.Node) -> _Layer | None:
    """The layer at ``node`` if it is one sparse compute can rewrite."""
    kind = LAYER_KINDS.get(node.op_type)
    if kind is None or not kind.eligible(node) or len(node.inputs) < 2:
        return None
    stored = constant(node.inputs[1])
    source = node.inputs[0]
    rest = known_sizes(source.shape, 1) if source is not None else None
    if stored is None or stored.dtype != np.float32 or not rest:
        return None
    weight = kind.units_first(stored)
    bias_add = None if kind.bias_input else _bias_add(node.outputs[0], weight.shape[0])
    bias_value = node.inputs[2] if len(node.inputs) > 2 else \
        bias_add.inputs[1] if bias_add is not None else None
    bias = constant(bias_value)
    if bias_value is not None and bias is None:
        return None
    after = (bias_add or node).outputs[0]
    return _Layer(node, weight, None if bias is None else bias.reshape(-1), [1, *rest],
                  _activation_after(after), bias_add)


def _bias_add(value: ir.Value, units: int) -> ir.Node | None:
    """The Add that alone reads ``value`` and adds a constant vector of ``units`` on its
    last axis (value + b)."""
    if value.is_graph_output() or len(value.uses()) != 1:
        return None
    reader = next(iter(value.uses())).node
    if reader.op_type != "Add" or len(reader.inputs) != 2 or reader.inputs[0] is not value:
        return None
    bias = constant(reader.inputs[1])
    if bias is None or bias.dtype != np.float32 or bias.shape[-1:] != (units,) or \
            bias.size != units or (value.shape is not None and bias.ndim > len(value.shape)):
        return None
    return reader


def _activation_after(value: ir.Value) -> ir.Node | None:
    if value.is_graph_output() or len(value.uses()) != 1:
        return None
    reader = next(iter(value.uses())).node
    if reader.op_type not in ACTIVATIONS or reader.inputs[0] is not value or \
            any(constant(v) is None for v in reader.inputs[1:] if v is not None):
        return None
    return reader


def _meets_residual(value: ir.Value) -> bool:
    """A reader adds another computed value to ``value`` (a residual stream)."""
    return any(use.node.op_type in ("Add", "Sum") and any(
        v is not value and v is not None and constant(v) is None for v in use.node.inputs)
        for use in value.uses())



def _gains(ratios: list[float]) -> bool:
    """Time ratios (cover / dense, one per setting) of a cover worth taking: at most MARGIN
    at some setting, at most TIE at every one."""
    return min(ratios) <= MARGIN and max(ratios) <= TIE


def _geometric_mean(ratios: list[float]) -> float:
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def _candidates(finest: Cover, whole: Cover) -> list[tuple[str, Cover]]:
    """The covers to time, by label: the finest, its coarser merges and one block, each also
    ranged (its Gathers made Slices) where it gathers; those with fewer multiply-adds than
    the layer."""
    covers = [c for c in [finest, *coarser_covers(finest), whole]
              if c is whole or len(c.blocks) > 1]
    labelled = [(_blocks(c), c) for c in covers]
    labelled += [(f"{_blocks(c)} (ranges)", r) for c in covers if (r := ranged(c)) is not None]
    return [(label, c) for label, c in labelled if c.fraction < 1.0]


def _worth_timing(covers: list[tuple[str, Cover]]) -> list[tuple[str, Cover]]:
    """The covers the cost model puts below the dense layer (``Cover.cost`` < 1): a ranged
    cover spanning nearly every channel is not."""
    return [(label, c) for label, c in covers if c.cost < 1.0]


def _blocks(cover: Cover) -> str:
    return "1 block" if len(cover.blocks) == 1 else f"{len(cover.blocks)} blocks"


def _identity(cover: Cover) -> bool:
    return cover.output_order == tuple(range(len(cover.output_order)))


def _positions(node: ir.Node) -> int:
    """Output positions per sample: the output's sizes but the batch and the channel axis
    (1 for a Gemm, or where unknown)."""
    sizes = known_sizes(node.outputs[0].shape, 1)  # without the batch axis
    if not sizes:
        return 1
    axis = LAYER_KINDS[node.op_type].channel_axis
    del sizes[axis - 1 if axis > 0 else axis]
    return math.prod(sizes)


def _replace(old: ir.Value, new: ir.Value) -> None:
    """Every use of ``old`` reads ``new``, which takes its shape and type (later layers read
    them) and, for a graph output, its name."""
    was_output, name = old.is_graph_output(), old.name
    new.shape, new.type = old.shape, old.type
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = f"{name}_replaced"
        new.name = name
