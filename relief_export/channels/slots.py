"""The channel interpreter: one pass over a shape-propagated graph, one table of operations.

Every channel (feature) of every tensor value is a *slot*; each value records which axis holds
its channels (1 for convolutions, the last for Linear on [batch, tokens, features]), and
transposes, permutes, views and indexing move it. Operations that keep channels apart
(BatchNorm, activations, pooling, dropout, per-channel gates, flatten blocks, cat, channel
slices) pass slot ids through; an add unites the slots it sums; channel padding makes new zero
slots. A *group* (a union-find root) is kept or removed as a whole.

Two abstract values run over the same table, per channel:
- for compaction, the slot id and the state below;
- for pruning, the *units* (layer name, output index) whose signal the channel carries: layers
  start new units, an add or a product takes the union, moves carry them. A unit is *read*
  when a layer reads a channel carrying it with a nonzero weight, when it reaches the output,
  or when something the table keeps whole (an unknown operation, a LayerNorm over channels)
  consumes it; channels that are constant zero carry nothing.

States, per value and channel: live, or constant with a known value (0 = zero). A Linear / Conv
unit is constant when no nonzero weight reads a live channel (for padded convs, also no
nonzero constant channel, whose border contribution is not uniform); its value is
b_j + sum_i W_ji v_i (taps summed for convs).

A group is kept when a slot in it is pinned (model input or output, an operation we do not
model, a grouped convolution) or when a kept unit reads, with a nonzero weight, a slot that is
live, or constant but not foldable (read by a padded conv). Kept units are those whose output
group is kept; the decision repeats until nothing changes.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .. import fx_ops as ops
from ..fx_attrs import attribute_node, attribute_value
from . import layer_call as lc

Unit = tuple[str, int]
NO_UNITS: frozenset[Unit] = frozenset()

# A partial add (zeros, concat, index_select, then an add onnxruntime can no longer fuse into
# the convolution) costs about as much as this many multiply-adds per output element: on
# ResNet-56 (onnxruntime, batch 64) 21 partial adds cut 11% of the MACs yet ran 5.5% slower.
PARTIAL_ADD_COST = 256.0


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, count: int = 1) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return list(range(start, start + count))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Slots:
    """Per channel of one value: slot id, liveness, the constant value (where not live) and the
    units carried; ``axis`` is the value's channel axis."""

    ids: list[int]
    live: torch.Tensor  # bool [C]
    value: torch.Tensor  # float64 [C], meaningful where not live
    units: list[frozenset[Unit]]
    axis: int = 1
    # channels split into heads (attention): ``axis`` indexes heads and ``inner_axis`` the
    # ``head_size`` features of each head; channel c = head * head_size + feature
    inner_axis: int | None = None
    head_size: int = 1

    @property
    def width(self) -> int:
        return len(self.ids)

    @property
    def matters(self) -> torch.Tensor:
        """Bool [C]: channels that are not constant zero."""
        return self.live | (self.value != 0)

    def with_state(self, live: torch.Tensor, value: torch.Tensor) -> Slots:
        return Slots(self.ids, live, value, self.units, self.axis, self.inner_axis,
                     self.head_size)

    def moved(self, axis: int, inner_axis: int | None = None) -> Slots:
        return Slots(self.ids, self.live, self.value, self.units, axis, inner_axis,
                     self.head_size if inner_axis is not None else 1)

    def in_heads(self, head_axis: int, inner_axis: int, head_size: int) -> Slots:
        return Slots(self.ids, self.live, self.value, self.units, head_axis, inner_axis,
                     head_size)

    @property
    def heads(self) -> int:
        return self.width // self.head_size

    def pick(self, channels: list[int]) -> Slots:
        return Slots([self.ids[c] for c in channels], self.live[channels],
                     self.value[channels], [self.units[c] for c in channels], self.axis)

    def repeat(self, block: int, axis: int) -> Slots:
        """Each channel ``block`` times in a row (a flatten of the axes after the channel)."""
        return Slots([slot for slot in self.ids for _ in range(block)],
                     self.live.repeat_interleave(block), self.value.repeat_interleave(block),
                     [units for units in self.units for _ in range(block)], axis)

    @staticmethod
    def join(parts: list[Slots], axis: int) -> Slots:
        """The channels of ``parts`` one after the other."""
        return Slots([slot for part in parts for slot in part.ids],
                     torch.cat([part.live for part in parts]),
                     torch.cat([part.value for part in parts]),
                     [units for part in parts for units in part.units], axis)


@dataclass
class ChannelEdit:
    """A node whose arguments depend on how many channels survive (pad, slice, view, attr)."""

    node: fx.Node
    kind: str  # "pad", "slice", "aten_slice", "pick", "aten_pick", "reshape", "attr",
    # "batchnorm", "crop", "split", "cat"
    source: fx.Node | None = None
    detail: Any = None


@dataclass(frozen=True)
class LeftWhole:
    """An operation whose neighbourhood is kept whole: the node, its op, and why."""

    node: str
    op: str
    why: str

    def __str__(self) -> str:
        return f"{self.op} ({self.node}): {self.why}"


@dataclass(frozen=True)
class PartialAdd:
    """out = stream + branch where the branch (a layer, maybe with BatchNorm) keeps only its
    live units: they are placed into the stream's channels by an index_select."""

    node: fx.Node
    branch: fx.Node
    layer: fx.Node


@dataclass
class SlotGraph:
    """Everything compaction decides from: slots per value, layers, pins and edits."""

    graph_module: fx.GraphModule
    union: UnionFind = field(default_factory=UnionFind)
    values: dict[fx.Node, Slots] = field(default_factory=dict)
    parts: dict[fx.Node, list[Slots]] = field(default_factory=dict)  # split / chunk outputs
    layers: dict[fx.Node, lc.LayerCall] = field(default_factory=dict)
    pins: dict[int, str] = field(default_factory=dict)  # slot id -> reason
    edits: list[ChannelEdit] = field(default_factory=list)
    unsupported: list[LeftWhole] = field(default_factory=list)
    read: set[Unit] = field(default_factory=set)  # units something reads (pruning)
    partial_adds: list[PartialAdd] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def pin(self, ids: list[int], reason: str) -> None:
        for slot in ids:
            self.pins.setdefault(slot, reason)

    def keep_whole(self, value: Slots, reason: str) -> None:
        """Pin every channel of ``value``; whatever it carries counts as read."""
        self.pin(value.ids, reason)
        self.read_channels(value, torch.ones(value.width, dtype=torch.bool))

    def read_channels(self, value: Slots, channels: torch.Tensor) -> None:
        """The units carried by ``channels`` (bool [C]) of ``value`` are read, unless zero."""
        for channel in torch.nonzero(channels & value.matters).flatten().tolist():
            self.read |= value.units[channel]


def build(graph_module: fx.GraphModule, partial_add_cost: float = PARTIAL_ADD_COST
          ) -> SlotGraph:
    """Slots for every value of a shape-propagated graph."""
    slots = SlotGraph(graph_module)
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    builder = _Builder(slots, modules, calls, partial_add_cost)
    for node in graph_module.graph.nodes:
        builder.visit(node)
    return slots


# Which handler reads each operation: one table for functions (torch.*, F.*, ATen overloads),
# Tensor methods and module types. An operation not listed is never guessed: its
# neighbourhood is pinned (left whole) with the operation named as the reason.
_FUNCTION_HANDLERS: dict[Any, str] = {
    **dict.fromkeys(ops.ELEMENTWISE_FUNCTIONS, "elementwise"),
    **dict.fromkeys(ops.IDENTITY_FUNCTIONS, "identity"),
    **dict.fromkeys(ops.POOL_FUNCTIONS | ops.AVERAGE_POOL_FUNCTIONS, "pool"),
    **dict.fromkeys(ops.ADD_FUNCTIONS, "add"),
    **dict.fromkeys(ops.MUL_FUNCTIONS, "mul"),
    **dict.fromkeys(ops.RESHAPE_FUNCTIONS | ops.UNSQUEEZE_FUNCTIONS, "reshape"),
    **dict.fromkeys(ops.CAT_FUNCTIONS, "cat"),
    **dict.fromkeys(ops.PAD_FUNCTIONS, "pad"),
    ops.aten.constant_pad_nd.default: "constant_pad",
    operator.getitem: "getitem",
    **dict.fromkeys(ops.SPLIT_FUNCTIONS, "split"),
    ops.aten.slice.Tensor: "aten_slice",
    ops.aten.select.int: "select",
    **dict.fromkeys(ops.MEAN_FUNCTIONS, "reduce_spatial"),
    **dict.fromkeys(ops.TRANSPOSE_FUNCTIONS, "transpose"),
    **dict.fromkeys(ops.PERMUTE_FUNCTIONS, "permute"),
    **dict.fromkeys(ops.EXPAND_FUNCTIONS, "expand"),
    **dict.fromkeys(ops.LAYER_NORM_FUNCTIONS, "layer_norm"),
    **dict.fromkeys(ops.GROUP_NORM_FUNCTIONS, "group_norm"),
    **dict.fromkeys(ops.ATTENTION_FUNCTIONS, "attention"),
}
# handlers that understand channels split into heads; others keep such values whole
_HEAD_AWARE = {"identity", "elementwise", "transpose", "permute", "reshape", "attention"}
_METHOD_HANDLERS: dict[str, str] = {
    **dict.fromkeys(ops.ELEMENTWISE_METHODS, "elementwise"),
    **dict.fromkeys(ops.IDENTITY_METHODS, "identity"),
    "add": "add", "add_": "add", "mul": "mul", "mul_": "mul",
    **dict.fromkeys((*ops.RESHAPE_METHODS, "unsqueeze", "squeeze"), "reshape"),
    "mean": "reduce_spatial", "amax": "reduce_spatial",
    "split": "split", "chunk": "split",
    "transpose": "transpose", "permute": "permute",
    "expand": "expand", "expand_as": "expand",
}
_MODULE_HANDLERS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.BatchNorm1d, nn.BatchNorm2d), "batchnorm"),
    (ops.ELEMENTWISE_MODULES, "elementwise"),
    (ops.IDENTITY_MODULES, "identity"),
    (ops.POOL_MODULES, "pool"),
    ((nn.Flatten,), "reshape"),
    ((nn.LayerNorm,), "layer_norm"),
    ((nn.GroupNorm,), "group_norm"),
)


class _Builder:
    def __init__(self, slots: SlotGraph, modules: dict[str, nn.Module], calls: dict[str, int],
                 partial_add_cost: float):
        self.s = slots
        self.modules = modules
        self.calls = calls
        self.partial_add_cost = partial_add_cost

    # -- helpers ------------------------------------------------------------------------------
    def fresh(self, width: int, live: bool = True, axis: int = 1,
              units: list[frozenset[Unit]] | None = None) -> Slots:
        return Slots(self.s.union.new(width), torch.full((width,), live),
                     torch.zeros(width, dtype=torch.float64), units or [NO_UNITS] * width, axis)

    def of(self, argument: Any) -> Slots | None:
        return self.s.values.get(argument) if isinstance(argument, fx.Node) else None

    def on_axis(self, argument: Any, axis: int) -> Slots | None:
        """The slots of ``argument`` with its channels on ``axis``. A value that is kept whole
        anyway (every slot pinned: inputs, outputs of unsupported operations) can be seen along
        any axis, as new pinned slots."""
        value, shape = self.of(argument), _shape(argument)
        if value is None or shape is None or not shape:
            return None
        axis %= len(shape)
        if value.axis == axis:
            return value
        if not all(slot in self.s.pins for slot in value.ids):
            return None
        self.s.keep_whole(value, "read along another axis")
        seen = self.fresh(shape[axis], axis=axis)
        self.s.pin(seen.ids, self.s.pins[value.ids[0]] if value.ids else "network input")
        self.s.values[argument] = seen
        return seen

    def constant(self, argument: Any) -> torch.Tensor | None:
        """A get_attr tensor (through view-like methods) or a Python number, else None."""
        if isinstance(argument, (int, float)) and not isinstance(argument, bool):
            return torch.tensor(float(argument), dtype=torch.float64)
        value = attribute_value(self.s.graph_module, argument)
        return None if value is None else value.detach().double()

    def shared(self, node: fx.Node) -> bool:
        """A module with state called more than once cannot be sliced for one call alone."""
        if node.op != "call_module" or self.calls.get(str(node.target), 0) < 2:
            return False
        module = self.modules[str(node.target)]
        return any(True for _ in module.parameters()) or any(True for _ in module.buffers())

    # -- dispatch ------------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> None:
        result = self.dispatch(node)
        if result is not None:
            self.s.values[node] = result

    def dispatch(self, node: fx.Node) -> Slots | None:
        if node.op == "placeholder":
            shape = _shape(node)
            if shape is None or len(shape) < 2:
                return None
            value = self.fresh(shape[1])
            self.s.pin(value.ids, "network input")
            return value
        if node.op == "get_attr":
            return None
        if node.op == "output":
            for argument in fx.node.map_aggregate(node.args, lambda a: a) or ():
                self._keep_all_whole(argument, "model output")
            return None
        if node.target in ops.SHAPE_QUERIES or (node.target is getattr and len(node.args) > 1
                                                 and node.args[1] in ops.TENSOR_PROPERTIES):
            return None
        if self.shared(node):
            return self.unknown(node, "a module with weights called more than once")
        layer = lc.layer_call(node, self.s.graph_module, self.modules)
        if layer is not None:
            return self.layer(layer) or self.unknown(node, "its input's features are not on "
                                                          "the axis the layer reads")
        name = self._handler_name(node)
        if name is None:
            return self.unknown(node, "operation not in the channel table")
        if name not in _HEAD_AWARE and any(
                isinstance(a, fx.Node) and a in self.s.values and
                self.s.values[a].inner_axis is not None for a in _flatten(list(node.args))):
            return self.unknown(node, "its input's channels are split into attention heads")
        result = getattr(self, name)(node)
        if result is not None or node in self.s.parts:
            return result
        return self.unknown(node, f"arguments the {name} rule does not cover")

    def _handler_name(self, node: fx.Node) -> str | None:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            return next((name for types, name in _MODULE_HANDLERS
                         if isinstance(module, types)), None)
        if node.op == "call_function":
            return _FUNCTION_HANDLERS.get(node.target)
        if node.op == "call_method":
            return _METHOD_HANDLERS.get(str(node.target))
        return None

    # -- layers --------------------------------------------------------------------------------
    def layer(self, layer: lc.LayerCall) -> Slots | None:
        source_node = layer.node.args[0]
        source = self.on_axis(source_node, layer.channel_axis)
        out_shape = _shape(layer.node)
        if source is None or out_shape is None:
            return None
        weight = layer.weight.double()
        in_width = weight.shape[1] * layer.groups
        if source.width != in_width:
            return None
        self.s.layers[layer.node] = layer
        self.s.read_channels(source, layer.reads())
        out = self.fresh(layer.out_units, axis=layer.channel_axis % len(out_shape),
                         units=[frozenset({(layer.name, j)}) for j in range(layer.out_units)])
        if layer.groups > 1:  # a group's inputs and outputs go or stay together
            per_in, per_out = in_width // layer.groups, layer.out_units // layer.groups
            for group in range(layer.groups):
                ids = [*source.ids[group * per_in:(group + 1) * per_in],
                       *out.ids[group * per_out:(group + 1) * per_out]]
                for other in ids[1:]:
                    self.s.union.union(ids[0], other)
        live, value = _layer_state(layer, weight, source)
        return out.with_state(live, value)

    # -- per-channel operations ------------------------------------------------------------------
    def identity(self, node: fx.Node) -> Slots | None:
        return self.of(node.args[0])

    def elementwise(self, node: fx.Node) -> Slots | None:
        source = self.of(node.args[0])
        if source is None:
            return None
        function = self._callable(node)
        constants = function(source.value.float().view(1, -1)).double().view(-1)
        return source.with_state(source.live.clone(), constants)

    def _callable(self, node: fx.Node):
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            return lambda x: module(x.clone())
        if node.op == "call_method":
            return lambda x: getattr(x.clone(), str(node.target))(*node.args[1:], **node.kwargs)
        return lambda x: node.target(x.clone(), *node.args[1:], **node.kwargs)  # type: ignore[operator]

    def batchnorm(self, node: fx.Node) -> Slots | None:
        source = self.on_axis(node.args[0], 1)
        module = self.modules[str(node.target)]
        assert isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
        if source is None or not module.track_running_stats or \
                module.running_var is None:
            return None
        scale = (module.weight.detach().double() if module.affine else
                 torch.ones(source.width, dtype=torch.float64)) / \
            torch.sqrt(module.running_var.double() + module.eps)
        mean = module.running_mean
        assert mean is not None
        shift = (module.bias.detach().double() if module.affine else 0.0) - mean.double() * scale
        live = source.live & (scale != 0)
        value = torch.where(source.live, shift, source.value * scale + shift)
        self.s.edits.append(ChannelEdit(node, "batchnorm", lc.arg(node, 0)))
        return source.with_state(live, value)

    def layer_norm(self, node: fx.Node) -> Slots | None:
        """LayerNorm over the last axes: a removed channel among them would change the mean and
        variance, so those channels stay; over other axes a constant channel becomes a
        position-dependent map (live)."""
        source_node = lc.arg(node, 0, "input")
        shape = _shape(source_node)
        if shape is None:
            return None
        source = self.on_axis(source_node, len(shape) - 1) or self.of(source_node)
        if source is None:
            return None
        if node.op == "call_module":
            normalized = len(self.modules[str(node.target)].normalized_shape)  # type: ignore[arg-type]
        else:
            normalized = len(lc.arg(node, 1, "normalized_shape"))
        if source.axis >= len(shape) - normalized:
            self._keep_normalised(node, source, "LayerNorm")
        return source.with_state(torch.ones_like(source.live), source.value)

    def group_norm(self, node: fx.Node) -> Slots | None:
        """GroupNorm mixes the statistics of the channels of a group: they all stay."""
        source = self.on_axis(lc.arg(node, 0, "input"), 1)
        if source is None:
            return None
        self._keep_normalised(node, source, "GroupNorm")
        return source.with_state(torch.ones_like(source.live), source.value)

    def _keep_normalised(self, node: fx.Node, source: Slots, kind: str) -> None:
        reason = (f"normalised together by {node.name} ({kind} mixes its channels' "
                  "statistics: removing one would change them)")
        self.s.keep_whole(source, reason)
        self.s.notes.append(f"kept whole: {source.width} channels {reason}")

    def pool(self, node: fx.Node) -> Slots | None:
        source = self.on_axis(node.args[0], 1)
        if source is None:
            return None
        module = self.modules.get(str(node.target)) if node.op == "call_module" else None
        padded_average = isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)) and \
            module.count_include_pad and module.padding not in (0, (0,), (0, 0))
        if node.op == "call_function" and node.target in ops.AVERAGE_POOL_FUNCTIONS:
            padded_average = True  # conservative: functional padding arguments vary
        live = source.live | ((source.value != 0) if padded_average else False)
        return source.with_state(live, source.value)

    def add(self, node: fx.Node) -> Slots | None:
        return self._binary(node, "add")

    def mul(self, node: fx.Node) -> Slots | None:
        return self._binary(node, "mul")

    def _binary(self, node: fx.Node, kind: str) -> Slots | None:
        """x + y or x * y: two values whose channels meet on one axis (broadcasting aligns from
        the last axis) unite their slots; a value and a constant (scalar or varying only along
        the value's channel axis) keep the value's slots."""
        left, right = lc.arg(node, 0, "input"), lc.arg(node, 1, "other")
        a, b = self.of(left), self.of(right)
        if self.constant(right) is not None:  # a model constant, even one given slots
            b = None
        elif self.constant(left) is not None:
            a = None
        out_shape = _shape(node)
        if out_shape is None:
            return None
        if a is None or b is None:
            data, data_node, other = (a, left, right) if a is not None else (b, right, left)
            return None if data is None else self._affine(node, data, data_node, other, kind)
        left_shape, right_shape = _shape(left), _shape(right)
        if left_shape is None or right_shape is None:
            return None
        if len(left_shape) - a.axis != len(right_shape) - b.axis:  # one may be kept whole
            a = self.on_axis(left, len(left_shape) - len(right_shape) + b.axis) or a
            b = self.on_axis(right, len(right_shape) - len(left_shape) + a.axis) or b
        if a.width != b.width or len(left_shape) - a.axis != len(right_shape) - b.axis:
            return None
        if kind == "add" and left_shape == right_shape:
            partial = self._partial_add(node, left, right, a, b)
            if partial is not None:
                return partial
        for x, y in zip(a.ids, b.ids, strict=True):
            self.s.union.union(x, y)
        axis = len(out_shape) - (len(left_shape) - a.axis)
        units = _united(a, b)
        if kind == "add":
            return Slots(a.ids, a.live | b.live, a.value + b.value, units, axis)
        zero = (~a.live & (a.value == 0)) | (~b.live & (b.value == 0))
        return Slots(a.ids, (a.live | b.live) & ~zero, a.value * b.value, units, axis)

    def _partial_add(self, node: fx.Node, left: Any, right: Any, a: Slots, b: Slots
                     ) -> Slots | None:
        """Keep the branch's groups apart when its dead units would cost more as zero rows
        (their MACs) than placing the live ones by an index_select (``partial_add_cost`` per
        output element)."""
        for branch, _stream, branch_slots, stream_slots in ((left, right, a, b),
                                                           (right, left, b, a)):
            layer_node = self._branch_layer(branch)
            if layer_node is None or branch_slots.axis != 1:
                continue
            layer = self.s.layers[layer_node]
            dead = int((~branch_slots.live).sum())
            per_unit = layer.weight[0].numel()
            if dead == 0 or dead * per_unit <= self.partial_add_cost * branch_slots.width:
                continue
            self.s.partial_adds.append(PartialAdd(node, branch, layer_node))
            self.s.notes.append(f"{node.name}: partial add; {layer.name} drops its {dead} "
                                f"constant units instead of keeping zero rows "
                                f"({dead * per_unit} weights per position)")
            return Slots(stream_slots.ids, branch_slots.live | stream_slots.live,
                         branch_slots.value + stream_slots.value,
                         _united(branch_slots, stream_slots), stream_slots.axis)
        return None

    def _branch_layer(self, node: Any) -> fx.Node | None:
        """The layer behind ``node`` through BatchNorm / identity, every step used only once."""
        current = node
        while isinstance(current, fx.Node) and len(current.users) == 1:
            if current in self.s.layers:
                layer = self.s.layers[current]
                return current if layer.groups == 1 and layer.kind != "conv_transpose" \
                    else None
            module = self.modules.get(str(current.target)) if current.op == "call_module" \
                else None
            if not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, *ops.IDENTITY_MODULES)) \
                    or self.shared(current):
                return None
            current = current.args[0]
        return None

    def _affine(self, node: fx.Node, data: Slots, data_node: Any, other: Any, kind: str
                ) -> Slots | None:
        if lc.arg(node, 2, "alpha", 1) != 1:
            return None
        constant = self.constant(other)
        out_shape, data_shape = _shape(node), _shape(data_node)
        if constant is None or out_shape is None or data_shape is None or \
                len(out_shape) != len(data_shape):
            return None
        per_channel = _per_channel(constant, _shape(other) or tuple(constant.shape),
                                   out_shape, data.axis, data.width)
        if per_channel is None:
            return None
        attr = attribute_node(other)
        if attr is not None and constant.numel() > 1:
            self.s.edits.append(ChannelEdit(node, "attr", attr, data.width))
        if kind == "add":
            return data.with_state(data.live.clone(), data.value + per_channel)
        return data.with_state(data.live & (per_channel != 0), data.value * per_channel)

    def reduce_spatial(self, node: fx.Node) -> Slots | None:
        """mean / amax over axes other than batch and channel keep channels (and constants)."""
        source = self.of(lc.arg(node, 0, "input"))
        dims = lc.arg(node, 1, "dim")
        shape = _shape(lc.arg(node, 0, "input"))
        if source is None or shape is None or dims is None:
            return None
        axes = {d % len(shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
        if not axes or axes & {0, source.axis}:
            return None
        keepdim = lc.arg(node, 2, "keepdim", False)
        return source.moved(source.axis - (0 if keepdim else
                                           sum(a < source.axis for a in axes)))

    def expand(self, node: fx.Node) -> Slots | None:
        """expand / expand_as / broadcast_to: the channel axis (counted from the end) stays."""
        source_node = lc.arg(node, 0, "input")
        source, before, after = self.of(source_node), _shape(source_node), _shape(node)
        if source is None or before is None or after is None:
            return None
        axis = len(after) - len(before) + source.axis
        return source.moved(axis) if after[axis] == source.width else None

    def transpose(self, node: fx.Node) -> Slots | None:
        source = self.of(lc.arg(node, 0, "input"))
        shape = _shape(lc.arg(node, 0, "input"))
        first, second = lc.arg(node, 1, "dim0"), lc.arg(node, 2, "dim1")
        if source is None or shape is None or not isinstance(first, int) or \
                not isinstance(second, int):
            return None
        swap = {first % len(shape): second % len(shape), second % len(shape): first % len(shape)}
        inner = None if source.inner_axis is None else swap.get(source.inner_axis,
                                                                 source.inner_axis)
        return source.moved(swap.get(source.axis, source.axis), inner)

    def permute(self, node: fx.Node) -> Slots | None:
        source = self.of(lc.arg(node, 0, "input"))
        shape = _shape(lc.arg(node, 0, "input"))
        order: list[Any] = list(node.args[1:]) if node.op == "call_method" \
            else list(lc.arg(node, 1, "dims") or ())
        if len(order) == 1 and isinstance(order[0], (list, tuple)):
            order = list(order[0])
        if source is None or shape is None or not all(isinstance(d, int) for d in order):
            return None
        order = [d % len(shape) for d in order]
        inner = None if source.inner_axis is None else order.index(source.inner_axis)
        return source.moved(order.index(source.axis), inner)

    # -- moving channels --------------------------------------------------------------------------
    def reshape(self, node: fx.Node) -> Slots | None:
        """view / reshape / flatten / (un)squeeze: the channel axis survives when the sizes
        before it multiply to the same count; flattening it with everything after it repeats
        each channel's slot over its block of features."""
        source_node = lc.arg(node, 0, "input")
        source = self.of(source_node)
        before, after = _shape(source_node), _shape(node)
        if source is None or before is None or after is None:
            return None
        if source.inner_axis is not None:
            return self._reshape_heads(node, source_node, source, before, after)
        split = _split_into_heads(before, after, source.axis)
        if split is not None:
            head_axis, head_size = split
            self.s.edits.append(ChannelEdit(node, "reshape", source_node, (head_axis,
                                                                           head_size)))
            return source.in_heads(head_axis, head_axis + 1, head_size)
        placed = _channel_after_reshape(before, after, source.axis)
        if placed is None:
            return None
        axis, block = placed
        if block == 1:
            self.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
            return source.moved(axis)
        if isinstance(source_node, fx.Node) and source_node.op == "placeholder" and axis == 1 \
                and source.axis == 1:
            features = self.fresh(after[1])
            self.s.edits.append(ChannelEdit(node, "crop", source_node))
            self.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
            return features
        self.s.edits.append(ChannelEdit(node, "reshape", source_node, (axis, 1)))
        return source.repeat(block, axis)

    def _reshape_heads(self, node: fx.Node, source_node: Any, source: Slots,
                       before: tuple[int, ...], after: tuple[int, ...]) -> Slots | None:
        """A view of head-split channels: the same shape (heads stay where they are), or heads
        and their features, adjacent and in that order, merged back into one axis."""
        assert source.inner_axis is not None
        if before == after:
            self.s.edits.append(ChannelEdit(node, "reshape", source_node,
                                            (source.axis, source.head_size)))
            return source
        if source.inner_axis != source.axis + 1:
            return None
        merged = (*before[:source.axis], source.width, *before[source.inner_axis + 1:])
        if tuple(after) != merged:
            return None
        self.s.edits.append(ChannelEdit(node, "reshape", source_node, (source.axis, 1)))
        return source.moved(source.axis)

    def attention(self, node: fx.Node) -> Slots | None:
        """scaled_dot_product_attention(q, k, v): output channel (h, d) is v's channel (h, d)
        mixed over tokens by softmax weights that sum to 1, so a constant stays the same
        constant. A head's queries, keys and values go or stay together (one group per head);
        queries and keys count as read."""
        q, k, v = (self.of(lc.arg(node, i, name)) for i, name in enumerate(("query", "key",
                                                                             "value")))
        if q is None or k is None or v is None or lc.arg(node, 4, "dropout_p", 0.0) or \
                lc.arg(node, 7, "enable_gqa", False):
            return None
        layouts = {(x.axis, x.inner_axis, x.head_size, x.width) for x in (q, k, v)}
        if len(layouts) != 1 or q.inner_axis is None:
            return None
        for head in range(v.heads):
            ids = [x.ids[c] for x in (q, k, v)
                   for c in range(head * v.head_size, (head + 1) * v.head_size)]
            for other in ids[1:]:
                self.s.union.union(ids[0], other)
        everything = torch.ones(q.width, dtype=torch.bool)
        self.s.read_channels(q, everything)
        self.s.read_channels(k, everything)
        return v

    def cat(self, node: fx.Node) -> Slots | None:
        """Along the channel axis the parts' channels follow each other; along another axis
        channel c of the result is channel c of every part (their slots unite)."""
        parts = lc.arg(node, 0, "tensors")
        dim = lc.arg(node, 1, "dim", 0)
        shape = _shape(node)
        if not isinstance(parts, (list, tuple)) or shape is None or len(shape) < 2:
            return None
        values = [self.of(p) for p in parts]
        present = [v for v in values if v is not None]
        if len(present) != len(values) or len({v.axis for v in present}) != 1:
            return None
        axis = present[0].axis
        if dim % len(shape) == axis:
            self.s.edits.append(ChannelEdit(node, "cat"))
            return Slots.join(present, axis)
        if len({v.width for v in present}) != 1:
            return None
        first, units = present[0], present[0].units
        for other in present[1:]:
            for x, y in zip(first.ids, other.ids, strict=True):
                self.s.union.union(x, y)
            units = [a | b for a, b in zip(units, other.units, strict=True)]
        live = torch.stack([v.live for v in present]).any(0)
        values_differ = torch.stack([v.value for v in present]).ne(first.value).any(0)
        return Slots(first.ids, live | values_differ, first.value, units, axis)

    def constant_pad(self, node: fx.Node) -> Slots | None:
        """aten.constant_pad_nd(input, pad, value)."""
        return self._pad(node, lc.arg(node, 1, "pad"), "constant", lc.arg(node, 2, "value", 0))

    def pad(self, node: fx.Node) -> Slots | None:
        return self._pad(node, lc.arg(node, 1, "pad"), lc.arg(node, 2, "mode", "constant"),
                         lc.arg(node, 3, "value"))

    def _pad(self, node: fx.Node, pad: Any, mode: Any, fill: Any) -> Slots | None:
        """pad lists (before, after) pairs from the last axis backwards. Zero padding of the
        channel axis adds zero channels; of other axes, it makes a constant v != 0 vary (v
        inside, 0 at the border)."""
        source_node = lc.arg(node, 0, "input")
        source, shape = self.of(source_node), _shape(source_node)
        if source is None or shape is None or not isinstance(pad, (list, tuple)):
            return None
        if mode != "constant" or fill:
            return None
        pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad) - 1, 2)]
        channel_pair = len(shape) - 1 - source.axis
        before, after = pairs[channel_pair] if channel_pair < len(pairs) else (0, 0)
        spatial = any(p != (0, 0) for i, p in enumerate(pairs) if i != channel_pair)
        source = source.with_state(source.live | (spatial & (source.value != 0)),
                                   source.value)
        if (before, after) == (0, 0):
            return source
        if before < 0 or after < 0:
            return None
        zeros_before = self.fresh(before, live=False, axis=source.axis)
        zeros_after = self.fresh(after, live=False, axis=source.axis)
        self.s.edits.append(ChannelEdit(node, "pad", source_node,
                                        (zeros_before.ids, zeros_after.ids, channel_pair)))
        return Slots.join([zeros_before, source, zeros_after], source.axis)

    def split(self, node: fx.Node) -> Slots | None:
        """split / chunk: along channels each part takes its range; otherwise every part keeps
        all channels. The parts are read by getitem."""
        source = self.of(lc.arg(node, 0, "input"))
        shape = _shape(lc.arg(node, 0, "input"))
        size = lc.arg(node, 1, "split_size_or_sections", lc.arg(node, 1, "chunks"))
        dim = lc.arg(node, 2, "dim", 0)
        if source is None or shape is None or size is None:
            return None
        dim %= len(shape)
        if dim != source.axis:
            self.s.parts[node] = [source] * _part_count(node)
            return None
        chunked = node.target in (torch.chunk, ops.aten.chunk.default, "chunk")
        sizes = _part_sizes(source.width, size, chunked)
        if sizes is None:
            return None
        bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.s.parts[node] = [source.pick(list(range(a, b)))
                              for a, b in itertools.pairwise(bounds)]
        self.s.edits.append(ChannelEdit(node, "split", lc.arg(node, 0, "input"), bounds))
        return None

    def getitem(self, node: fx.Node) -> Slots | None:
        """Indexing: slices of other axes keep the channels (strided spatial slices too); a
        step-1 slice of the channel axis keeps a range; None / integers move the axis."""
        if node.args[0] in self.s.parts and isinstance(node.args[1], int):
            return self.s.parts[node.args[0]][node.args[1]]  # type: ignore[index]
        source_node: Any = node.args[0]
        source, shape = self.of(source_node), _shape(source_node)
        if source is None or shape is None:
            return None
        placed = _channel_after_index(node.args[1], len(shape), source.axis)
        if placed is None:
            return None
        axis, position, channel = placed
        if channel == slice(None):
            return source.moved(axis)
        if not isinstance(channel, slice) or (channel.step or 1) < 0:
            return None
        picked = range(source.width)[channel]
        if picked.step != 1:  # stepped: the kept ones are picked by an index tensor
            self.s.edits.append(ChannelEdit(node, "pick", source_node, (position, list(picked))))
        else:
            self.s.edits.append(ChannelEdit(node, "slice", source_node,
                                            (picked.start, picked.stop, position)))
        return source.pick(list(picked)).moved(axis)

    def aten_slice(self, node: fx.Node) -> Slots | None:
        """aten.slice.Tensor(input, dim, start, end, step): channels move only on their axis."""
        source = self.of(lc.arg(node, 0, "self"))
        dim, step = lc.arg(node, 1, "dim", 0), lc.arg(node, 4, "step", 1)
        shape = _shape(lc.arg(node, 0, "self"))
        if source is None or shape is None:
            return None
        dim %= len(shape)
        if dim != source.axis:
            return source
        if not isinstance(step, int) or step < 1:
            return None
        picked = range(source.width)[slice(lc.arg(node, 2, "start"), lc.arg(node, 3, "end"),
                                           step)]
        if step != 1:
            self.s.edits.append(ChannelEdit(node, "aten_pick", lc.arg(node, 0, "self"),
                                            (dim, list(picked))))
        else:
            self.s.edits.append(ChannelEdit(node, "aten_slice", lc.arg(node, 0, "self"),
                                            (picked.start, picked.stop)))
        return source.pick(list(picked))

    def select(self, node: fx.Node) -> Slots | None:
        """aten.select.int(input, dim, index) of another axis drops that axis."""
        source = self.of(lc.arg(node, 0, "self"))
        shape = _shape(lc.arg(node, 0, "self"))
        dim = lc.arg(node, 1, "dim")
        if source is None or shape is None or not isinstance(dim, int):
            return None
        dim %= len(shape)
        if dim == source.axis:
            return None
        return source.moved(source.axis - (dim < source.axis))

    # -- fallback --------------------------------------------------------------------------------
    def unknown(self, node: fx.Node, why: str) -> Slots | None:
        described = f"{node.op} {getattr(node.target, '__name__', node.target)} ({node.name})"
        arguments = fx.node.map_aggregate((node.args, node.kwargs), lambda a: a)
        if node.users and any(isinstance(a, fx.Node) and a in self.s.values
                              for a in _flatten(arguments)):
            op = f"{node.op} {getattr(node.target, '__name__', node.target)}"
            self.s.unsupported.append(LeftWhole(node.name, op, why))
        self._keep_all_whole(arguments, f"left uncompacted around unsupported {described}")
        width = _width(node)
        if not width:
            return None
        value = self.fresh(width)
        self.s.pin(value.ids, f"output of unsupported {described}")
        return value

    def _keep_all_whole(self, argument: Any, reason: str) -> None:
        for item in _flatten(argument):
            slots = self.of(item)
            if slots is not None:
                self.s.keep_whole(slots, reason)
        for item in _flatten(argument):  # split parts read as a whole
            for part in self.s.parts.get(item, []) if isinstance(item, fx.Node) else []:
                self.s.keep_whole(part, reason)


def _united(a: Slots, b: Slots) -> list[frozenset[Unit]]:
    """Per channel, the units of both operands (a zero operand channel carries none)."""
    a_matters, b_matters = a.matters.tolist(), b.matters.tolist()
    return [(x if ka else NO_UNITS) | (y if kb else NO_UNITS)
            for x, y, ka, kb in zip(a.units, b.units, a_matters, b_matters, strict=True)]


def read_units(graph_module: fx.GraphModule) -> set[Unit]:
    """Units something reads, under the graph module's current weights and gates (the graph
    must carry ``tensor_meta`` shapes)."""
    return build(graph_module).read


def _layer_state(layer: lc.LayerCall, weight: torch.Tensor, source: Slots
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which units are live, and the constant value of the others."""
    reads = weight.ne(0)
    if layer.kind != "linear":
        reads = reads.flatten(2).any(2)
        weight = weight.flatten(2).sum(2)  # taps summed: the response to a uniform map
    live_in, value_in = _group_view(source.live, layer), _group_view(source.value, layer)
    uniform = ~live_in if not layer.padded else (~live_in & (value_in == 0))
    live = (reads & ~uniform).any(1)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(layer.out_units,
                                                                          dtype=torch.float64)
    value = bias + (weight * torch.where(live_in, 0.0, value_in)).sum(1)
    return live, value


def _group_view(per_channel: torch.Tensor, layer: lc.LayerCall) -> torch.Tensor:
    """[out, in/g]: for each unit, the entries of the input channels of its group."""
    groups = layer.groups
    per_in = per_channel.shape[0] // groups
    per_out = layer.out_units // groups
    return per_channel.view(groups, 1, per_in).expand(groups, per_out, per_in).reshape(
        layer.out_units, per_in)


def _part_sizes(width: int, size: Any, chunked: bool) -> list[int] | None:
    """Channel counts of the parts of a split (sizes or a part size) or a chunk (a count)."""
    if isinstance(size, (list, tuple)):
        return [int(s) for s in size] if sum(size) == width else None
    if not isinstance(size, int) or size < 1:
        return None
    step = -(-width // size) if chunked else size
    return [min(step, width - start) for start in range(0, width, step)]


def _part_count(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    return len(meta) if isinstance(meta, (list, tuple)) else 0


def _flatten(argument: Any) -> list[Any]:
    if isinstance(argument, (list, tuple)):
        return [item for part in argument for item in _flatten(part)]
    if isinstance(argument, dict):
        return [item for part in argument.values() for item in _flatten(part)]
    return [argument]


def _per_channel(constant: torch.Tensor, shape: tuple[int, ...], out_shape: tuple[int, ...],
                 axis: int, width: int) -> torch.Tensor | None:
    """[C] values of a constant broadcast against a value whose channels lie on ``axis``, when
    it varies along that axis only (or is a scalar), else None."""
    if constant.numel() == 1:
        return constant.reshape(1).expand(width)
    offset = len(out_shape) - len(shape)
    if offset < 0 or any(size != 1 and offset + i != axis for i, size in enumerate(shape)):
        return None
    return constant.reshape(width) if constant.numel() == width else None


def _split_into_heads(before: tuple[int, ...], after: tuple[int, ...], axis: int
                      ) -> tuple[int, int] | None:
    """(head axis, head size) when the view splits the channel axis into two adjacent axes,
    heads first, leaving every other axis as it was."""
    if len(after) != len(before) + 1 or tuple(after[:axis]) != tuple(before[:axis]) or \
            tuple(after[axis + 2:]) != tuple(before[axis + 1:]):
        return None
    heads, head_size = after[axis], after[axis + 1]
    if heads * head_size != before[axis] or heads < 2 or head_size < 2:
        return None
    return axis, head_size


def _channel_after_reshape(before: tuple[int, ...], after: tuple[int, ...], axis: int
                           ) -> tuple[int, int] | None:
    """(axis, block) of the channels once ``before`` is viewed as ``after``: an axis of the
    same size with equal products on both sides (block 1), or the last axis holding the
    channel and everything after it (block = product of the axes after the channel)."""
    lead, trail = math.prod(before[:axis]), math.prod(before[axis + 1:])
    count = 1
    for position, size in enumerate(after):
        if count == lead:
            rest = math.prod(after[position + 1:])
            if size == before[axis] and rest == trail:
                return position, 1
            if size == before[axis] * trail and rest == 1 and trail > 1:
                return position, trail
        count *= size
    return None


def _channel_after_index(index: Any, rank: int, axis: int) -> tuple[int, int, Any] | None:
    """(new axis, position in the index tuple, index entry) of the channel axis under basic
    indexing (slices, integers, None, Ellipsis); None where it is removed or the index is
    advanced."""
    entries = list(index) if isinstance(index, tuple) else [index]
    if any(not isinstance(e, (slice, int, type(None), type(Ellipsis))) or isinstance(e, bool)
           for e in entries):
        return None
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        consumed = sum(e is not None and e is not Ellipsis for e in entries)
        entries[at:at + 1] = [slice(None)] * (rank - consumed)
    entries += [slice(None)] * (rank - sum(e is not None for e in entries))
    dim, out_axis = 0, 0
    for position, entry in enumerate(entries):
        if entry is None:
            out_axis += 1
            continue
        if dim == axis:
            return (out_axis, position, entry) if isinstance(entry, slice) else None
        dim += 1
        out_axis += 0 if isinstance(entry, int) else 1
    return None


def _shape(node: Any) -> tuple[int, ...] | None:
    return lc.shape_of(node)


def _width(node: fx.Node) -> int:
    shape = _shape(node)
    return int(shape[1]) if shape is not None and len(shape) >= 2 else 0
