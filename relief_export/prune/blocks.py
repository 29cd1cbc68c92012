"""NNrelief with ``blocks=B``: the kept connections of each layer fall into B dense blocks.

A layer with at least 2B inputs (not the network's last) gets its units and its input
channels in B groups, and a connection outside its unit's group scores 0 before the keep
rule, which then runs as usual on what is left (alpha of the in-group total). Each layer's
mask is so block-diagonal under a reordering of its units and channels, which sparse compute
(``--sparse-compute auto``) finds and runs as B blocks of about (O/B) x (I/B).

Input channel groups follow the units that feed them (read through the channel
interpreter): a channel carrying units of a grouped layer takes the group most of them have;
any other channel (a network input, an ungrouped layer's unit) takes i * B // I (contiguous
ranges). Unit groups: unit j prefers the group holding the largest share of its score mass,
m_jg = sum of c_ji over the inputs i in group g; units are placed in order of their strongest
preference, each into its most preferred group with room (at most ceil(O / B) units).
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import fx

from ..channels import build
from ..errors import ReliefError


def check_blocks(blocks: int) -> None:
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= 1024:
        raise ReliefError(f"blocks must be an integer from 1 to 1024, got {blocks!r}")


def in_group_masks(graph_module: fx.GraphModule, contributions: dict[str, torch.Tensor],
                   blocks: int) -> dict[str, torch.Tensor]:
    """Per grouped layer, [out, contributors + 1] True where a connection is inside its
    unit's group (the bias, last, always is)."""
    slots = build(graph_module)
    calls = list(slots.layers.values())
    unit_groups: dict[str, torch.Tensor] = {}
    allowed: dict[str, torch.Tensor] = {}
    for index, call in enumerate(calls):
        scores = contributions.get(call.name)
        source = slots.values.get(call.node.args[0])  # type: ignore[arg-type]
        inputs = scores.shape[1] - 1 if scores is not None else 0
        if scores is None or source is None or index == len(calls) - 1 or call.groups != 1 \
                or call.kind == "conv_transpose" or inputs < 2 * blocks or \
                source.width != inputs:
            continue
        channel_groups = _channel_groups(source.units, unit_groups, blocks)
        units = _unit_groups(scores[:, :-1], channel_groups, blocks)
        unit_groups[call.name] = units
        inside = units[:, None] == channel_groups[None, :]
        allowed[call.name] = torch.cat([inside, torch.ones(len(units), 1, dtype=torch.bool)],
                                       dim=1)
    return allowed


def _channel_groups(carried: list[frozenset[tuple[str, int]]],
                    unit_groups: dict[str, torch.Tensor], blocks: int) -> torch.Tensor:
    width = len(carried)
    groups = torch.empty(width, dtype=torch.long)
    for i, units in enumerate(carried):
        known = Counter(int(unit_groups[layer][unit]) for layer, unit in units
                        if layer in unit_groups)
        groups[i] = known.most_common(1)[0][0] if known else i * blocks // width
    return groups


def _unit_groups(scores: torch.Tensor, channel_groups: torch.Tensor, blocks: int
                 ) -> torch.Tensor:
    """Balanced assignment of units to the groups holding most of their score mass."""
    units = scores.shape[0]
    mass = torch.zeros(units, blocks, dtype=torch.float64)
    mass.index_add_(1, channel_groups, scores.double())
    share = mass / mass.sum(1, keepdim=True).clamp_min(1e-300)
    room = [math.ceil(units / blocks)] * blocks
    result = torch.full((units,), -1, dtype=torch.long)
    for unit in share.max(1).values.argsort(descending=True, stable=True).tolist():
        for group in share[unit].argsort(descending=True, stable=True).tolist():
            if room[group] > 0:
                result[unit], room[group] = group, room[group] - 1
                break
    return result
