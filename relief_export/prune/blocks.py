"""NNrelief with ``blocks=B``: the kept connections of each layer fall into B dense blocks.

A layer with at least 2B inputs (not the network's last) gets its units and its input
channels in B groups, and a connection outside its unit's group scores 0 before the keep
rule, which then runs as usual on what is left (alpha of the in-group total). Each layer's
mask is so block-diagonal under a reordering of its units and channels, which sparse compute
(``--sparse-compute auto``) finds and runs as B blocks of about (O/B) x (I/B). The first pass
removes about (B - 1) / B of the connections at once; an alpha closer to 1 (0.99 for B = 4)
lets the fine-tuning passes recover from it in as many passes as plain NNrelief takes.

Input channel groups follow the units that feed them (read through the channel
interpreter): a channel carrying units of a grouped layer takes the group most of them have;
the other channels (a network input, an ungrouped layer's units) are cut, in order, into B
contiguous ranges of about equal score mass (sum over units of c_ji), so that no group gets
only the unread border of an image. Unit groups: unit j prefers the group holding the
largest share of its score mass, m_jg = sum of c_ji over the inputs i in group g; units are
placed in order of their strongest preference, each into its most preferred group with room
(at most ceil(O / B) units).
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
        channel_groups = _channel_groups(source.units, unit_groups, scores[:, :-1].sum(0),
                                         blocks)
        units = _unit_groups(scores[:, :-1], channel_groups, blocks)
        unit_groups[call.name] = units
        inside = units[:, None] == channel_groups[None, :]
        allowed[call.name] = torch.cat([inside, torch.ones(len(units), 1, dtype=torch.bool)],
                                       dim=1)
    return allowed


def _channel_groups(carried: list[frozenset[tuple[str, int]]],
                    unit_groups: dict[str, torch.Tensor], mass: torch.Tensor, blocks: int
                    ) -> torch.Tensor:
    groups = torch.full((len(carried),), -1, dtype=torch.long)
    for i, units in enumerate(carried):
        known = Counter(int(unit_groups[layer][unit]) for layer, unit in units
                        if layer in unit_groups)
        if known:
            groups[i] = known.most_common(1)[0][0]
    free = torch.nonzero(groups < 0).flatten()
    groups[free] = _equal_mass_ranges(mass[free].double(), blocks)
    return groups


def _equal_mass_ranges(mass: torch.Tensor, blocks: int) -> torch.Tensor:
    """Channels in order cut into ``blocks`` contiguous ranges of about equal score mass:
    channel i goes to floor(B (M_<i + m_i / 2) / M), M the total; i * B // n when M = 0."""
    count = len(mass)
    total = float(mass.sum())
    if total <= 0.0:
        return torch.arange(count) * blocks // max(count, 1)
    middle = torch.cumsum(mass, 0) - mass / 2
    return (middle * blocks / total).floor().long().clamp_(0, blocks - 1)


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
