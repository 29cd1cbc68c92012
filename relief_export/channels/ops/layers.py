"""Layers (Linear, Conv1d/2d, ConvTranspose1d/2d and their functional forms): each output
unit starts a new slot carrying its own unit; grouped layers unite a group's inputs and outputs.

A unit is constant when no nonzero weight reads a live channel (for padded convs, also no
nonzero constant channel, whose border contribution is not uniform); its value is
b_j + sum_i W_ji v_i (taps summed for convs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import layer_call as lc
from ..layer_call import shape_of
from ..structures import Slots

if TYPE_CHECKING:
    from ..builder import Builder


def layer(b: Builder, layer: lc.LayerCall) -> Slots | None:
    source_node = layer.node.args[0]
    source = b.on_axis(source_node, layer.channel_axis)
    out_shape = shape_of(layer.node)
    if source is None or out_shape is None:
        return None
    weight = layer.weight.double()
    in_width = weight.shape[1] * layer.groups
    if source.width != in_width:
        return None
    b.s.layers[layer.node] = layer
    b.s.read_channels(source, layer.reads())
    out = b.fresh(layer.out_units, axis=layer.channel_axis % len(out_shape),
                  units=[frozenset({(layer.name, j)}) for j in range(layer.out_units)])
    if layer.groups > 1:  # a group's inputs and outputs go or stay together
        per_in, per_out = in_width // layer.groups, layer.out_units // layer.groups
        for group in range(layer.groups):
            ids = [*source.ids[group * per_in:(group + 1) * per_in],
                   *out.ids[group * per_out:(group + 1) * per_out]]
            for other in ids[1:]:
                b.s.union.union(ids[0], other)
    live, value = _layer_state(layer, weight, source)
    return out.with_state(live, value)


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

