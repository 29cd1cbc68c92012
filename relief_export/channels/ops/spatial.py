"""Operations over the axes other than batch and channel: pooling, spatial means and maxima,
and padding (pad lists (before, after) pairs from the last axis backwards; zero padding of the
channel axis adds zero channels).

Constants: max pooling and spatial reductions keep a constant channel's value; an average pool
that counts padding, or zero padding of other axes, turns a constant v != 0 into a map that
varies (v inside, less at the border), so the channel becomes live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx, nn

from ...graph import ops
from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import ChannelEdit, Slots
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder


@rule(functions=ops.POOL_FUNCTIONS | ops.AVERAGE_POOL_FUNCTIONS, modules=ops.POOL_MODULES)
def pool(b: Builder, node: fx.Node) -> Slots | None:
    source = b.on_axis(node.args[0], 1)
    if source is None:
        return None
    module = b.modules.get(str(node.target)) if node.op == "call_module" else None
    padded_average = isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)) and \
        module.count_include_pad and module.padding not in (0, (0,), (0, 0))
    if node.op == "call_function" and node.target in ops.AVERAGE_POOL_FUNCTIONS:
        padded_average = True  # conservative: functional padding arguments vary
    live = source.live | ((source.value != 0) if padded_average else False)
    return source.with_state(live, source.value)


@rule(functions=ops.MEAN_FUNCTIONS, methods=("mean", "amax"))
def reduce_spatial(b: Builder, node: fx.Node) -> Slots | None:
    """mean / amax over axes other than batch and channel keep channels (and constants)."""
    source = b.of(lc.arg(node, 0, "input"))
    dims = lc.arg(node, 1, "dim")
    shape = shape_of(lc.arg(node, 0, "input"))
    if source is None or shape is None or dims is None:
        return None
    axes = {d % len(shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
    if not axes or axes & {0, source.axis}:
        return None
    keepdim = lc.arg(node, 2, "keepdim", False)
    return source.moved(source.axis - (0 if keepdim else
                                       sum(a < source.axis for a in axes)))


@rule(functions=(ops.aten.constant_pad_nd.default,))
def constant_pad(b: Builder, node: fx.Node) -> Slots | None:
    """aten.constant_pad_nd(input, pad, value)."""
    return _pad(b, node, lc.arg(node, 1, "pad"), "constant", lc.arg(node, 2, "value", 0))


@rule(functions=ops.PAD_FUNCTIONS)
def pad(b: Builder, node: fx.Node) -> Slots | None:
    return _pad(b, node, lc.arg(node, 1, "pad"), lc.arg(node, 2, "mode", "constant"),
                lc.arg(node, 3, "value"))


def _pad(b: Builder, node: fx.Node, pad: Any, mode: Any, fill: Any) -> Slots | None:
    """pad lists (before, after) pairs from the last axis backwards. Zero padding of the
    channel axis adds zero channels; of other axes, it makes a constant v != 0 vary (v
    inside, 0 at the border)."""
    source_node = lc.arg(node, 0, "input")
    source, shape = b.of(source_node), shape_of(source_node)
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
    zeros_before = b.fresh(before, live=False, axis=source.axis)
    zeros_after = b.fresh(after, live=False, axis=source.axis)
    b.s.edits.append(ChannelEdit(node, "pad", source_node,
                                 (zeros_before.ids, zeros_after.ids, channel_pair)))
    return Slots.join([zeros_before, source, zeros_after], source.axis)
