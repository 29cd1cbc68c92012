"""The channel interpreter's data: slots per value, their groups (a union-find), the edits
compaction must make, and the slot graph that holds them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from . import layer_call as lc

Unit = tuple[str, int]
NO_UNITS: frozenset[Unit] = frozenset()

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



def flatten(argument: Any) -> list[Any]:
    """The leaves of nested call arguments (lists, tuples, dicts)."""
    if isinstance(argument, (list, tuple)):
        return [item for part in argument for item in flatten(part)]
    if isinstance(argument, dict):
        return [item for part in argument.values() for item in flatten(part)]
    return [argument]
