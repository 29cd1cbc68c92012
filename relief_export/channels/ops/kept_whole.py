"""Normalisations that mix channels' statistics (LayerNorm over the channel axis, GroupNorm):
removing one channel would change the others, so the channels they normalise stay whole. The
output of a normalisation is live (a constant input channel becomes a position-dependent map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from ...graph import ops
from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import Slots
from ..table import rule

if TYPE_CHECKING:
    from ..builder import Builder


@rule(functions=ops.LAYER_NORM_FUNCTIONS, modules=(nn.LayerNorm,))
def layer_norm(b: Builder, node: fx.Node) -> Slots | None:
    """LayerNorm over the last axes: a removed channel among them would change the mean and
    variance, so those channels stay; over other axes a constant channel becomes a
    position-dependent map (live)."""
    source_node = lc.arg(node, 0, "input")
    shape = shape_of(source_node)
    if shape is None:
        return None
    source = b.on_axis(source_node, len(shape) - 1) or b.of(source_node)
    if source is None:
        return None
    if node.op == "call_module":
        normalized = len(b.modules[str(node.target)].normalized_shape)  # type: ignore[arg-type]
    else:
        normalized = len(lc.arg(node, 1, "normalized_shape"))
    if source.axis >= len(shape) - normalized:
        _keep_normalised(b, node, source, "LayerNorm")
    return source.with_state(torch.ones_like(source.live), source.value)


@rule(functions=ops.GROUP_NORM_FUNCTIONS, modules=(nn.GroupNorm,))
def group_norm(b: Builder, node: fx.Node) -> Slots | None:
    """GroupNorm mixes the statistics of the channels of a group: they all stay."""
    source = b.on_axis(lc.arg(node, 0, "input"), 1)
    if source is None:
        return None
    _keep_normalised(b, node, source, "GroupNorm")
    return source.with_state(torch.ones_like(source.live), source.value)


def _keep_normalised(b: Builder, node: fx.Node, source: Slots, kind: str) -> None:
    reason = (f"normalised together by {node.name} ({kind} mixes its channels' "
              "statistics: removing one would change them)")
    b.s.keep_whole(source, reason)
    b.s.notes.append(f"kept whole: {source.width} channels {reason}")
