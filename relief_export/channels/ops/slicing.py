"""Operations that join or cut values: cat, split / chunk (parts read by getitem), basic
indexing, aten.slice and aten.select. Along the channel axis they pick or concatenate channel
ranges; along other axes every part keeps all channels."""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from ...graph import ops
from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import ChannelEdit, Slots
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder


@rule(functions=ops.CAT_FUNCTIONS)
def cat(b: Builder, node: fx.Node) -> Slots | None:
    """Along the channel axis the parts' channels follow each other; along another axis
    channel c of the result is channel c of every part (their slots unite)."""
    parts = lc.arg(node, 0, "tensors")
    dim = lc.arg(node, 1, "dim", 0)
    shape = shape_of(node)
    if not isinstance(parts, (list, tuple)) or shape is None or len(shape) < 2:
        return None
    values = [b.of(p) for p in parts]
    present = [v for v in values if v is not None]
    if len(present) != len(values) or len({v.axis for v in present}) != 1:
        return None
    axis = present[0].axis
    if dim % len(shape) == axis:
        b.s.edits.append(ChannelEdit(node, "cat"))
        return Slots.join(present, axis)
    if len({v.width for v in present}) != 1:
        return None
    first, units = present[0], present[0].units
    for other in present[1:]:
        for x, y in zip(first.ids, other.ids, strict=True):
            b.s.union.union(x, y)
        units = [mine | theirs for mine, theirs in zip(units, other.units, strict=True)]
    live = torch.stack([v.live for v in present]).any(0)
    values_differ = torch.stack([v.value for v in present]).ne(first.value).any(0)
    return Slots(first.ids, live | values_differ, first.value, units, axis)


@rule(functions=ops.SPLIT_FUNCTIONS, methods=("split", "chunk"))
def split(b: Builder, node: fx.Node) -> Slots | None:
    """split / chunk: along channels each part takes its range; otherwise every part keeps
    all channels. The parts are read by getitem."""
    source = b.of(lc.arg(node, 0, "input"))
    shape = shape_of(lc.arg(node, 0, "input"))
    size = lc.arg(node, 1, "split_size_or_sections", lc.arg(node, 1, "chunks"))
    dim = lc.arg(node, 2, "dim", 0)
    if source is None or shape is None or size is None:
        return None
    dim %= len(shape)
    if dim != source.axis:
        b.s.parts[node] = [source] * _part_count(node)
        return None
    chunked = node.target in (torch.chunk, ops.aten.chunk.default, "chunk")
    sizes = _part_sizes(source.width, size, chunked)
    if sizes is None:
        return None
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    b.s.parts[node] = [source.pick(list(range(start, stop)))
                       for start, stop in itertools.pairwise(bounds)]
    b.s.edits.append(ChannelEdit(node, "split", lc.arg(node, 0, "input"), bounds))
    return None


@rule(functions=(operator.getitem,))
def getitem(b: Builder, node: fx.Node) -> Slots | None:
    """Indexing: slices of other axes keep the channels (strided spatial slices too); a
    step-1 slice of the channel axis keeps a range; None / integers move the axis."""
    if node.args[0] in b.s.parts and isinstance(node.args[1], int):
        return b.s.parts[node.args[0]][node.args[1]]  # type: ignore[index]
    source_node: Any = node.args[0]
    source, shape = b.of(source_node), shape_of(source_node)
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
        b.s.edits.append(ChannelEdit(node, "pick", source_node, (position, list(picked))))
    else:
        b.s.edits.append(ChannelEdit(node, "slice", source_node,
                                     (picked.start, picked.stop, position)))
    return source.pick(list(picked)).moved(axis)


@rule(functions=(ops.aten.slice.Tensor,))
def aten_slice(b: Builder, node: fx.Node) -> Slots | None:
    """aten.slice.Tensor(input, dim, start, end, step): channels move only on their axis."""
    source = b.of(lc.arg(node, 0, "self"))
    dim, step = lc.arg(node, 1, "dim", 0), lc.arg(node, 4, "step", 1)
    shape = shape_of(lc.arg(node, 0, "self"))
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
        b.s.edits.append(ChannelEdit(node, "aten_pick", lc.arg(node, 0, "self"),
                                     (dim, list(picked))))
    else:
        b.s.edits.append(ChannelEdit(node, "aten_slice", lc.arg(node, 0, "self"),
                                     (picked.start, picked.stop)))
    return source.pick(list(picked))


@rule(functions=(ops.aten.select.int,))
def select(b: Builder, node: fx.Node) -> Slots | None:
    """aten.select.int(input, dim, index) of another axis drops that axis."""
    source = b.of(lc.arg(node, 0, "self"))
    shape = shape_of(lc.arg(node, 0, "self"))
    dim = lc.arg(node, 1, "dim")
    if source is None or shape is None or not isinstance(dim, int):
        return None
    dim %= len(shape)
    if dim == source.axis:
        return None
    return source.moved(source.axis - (dim < source.axis))


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
